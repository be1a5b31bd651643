"""Layers that are linear in their input, seen through one interface.

A rule needs two things from a layer: its forward pass with substituted parameters (``forward``),
and the transpose of its linear map applied to a tensor (``vjp``). Conv, dense (as modules or
as the functional calls a forward makes), average pooling and an un-folded batch norm all provide both, so every rule works on every one of them.
``vjp`` never asks autograd for a weight gradient: convolutions go straight to the input half of
``convolution_backward``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Modifier = Callable[[Tensor], Tensor]


class LinearOp:
    """A module that computes ``W x + b`` for some linear ``W``: the object rules act on."""

    def __init__(self, module: nn.Module):
        self.module = module
        self._cache: dict = {}
        #: set by the engine from the graph: the input comes out of a ReLU (no negative entries)
        self.input_nonnegative = False
        #: the output handed to the rule is a ReLU's (fused), so denominators built from it are >= 0
        self.output_nonnegative = False

    @property
    def weight(self) -> Optional[Tensor]:
        return getattr(self.module, "weight", None)

    @property
    def bias(self) -> Optional[Tensor]:
        return getattr(self.module, "bias", None)

    def forward(self, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def vjp(self, grad: Tensor, weight: Optional[Tensor], input_shape: torch.Size) -> Tensor:
        raise NotImplementedError

    def params(self, key: str, weight_fn: Modifier, bias_fn: Optional[Modifier]) -> tuple:
        """Modified (weight, bias), computed once per parameter version and reused across batches.

        ``bias_fn=None`` drops the bias (zennit's ``zero_params=['bias']``).
        """
        weight, bias = self.weight, self.bias
        version = (
            None if weight is None else (id(weight), weight._version),
            None if bias is None else (id(bias), bias._version),
        )
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        with torch.no_grad():
            new_w = None if weight is None else weight_fn(weight.detach())
            new_b = None if (bias is None or bias_fn is None) else bias_fn(bias.detach())
        self._cache[key] = (version, (new_w, new_b))
        return new_w, new_b


class ConvOp(LinearOp):
    """Conv1d/2d/3d with any padding mode."""

    def forward(self, x, weight, bias):
        return self.module._conv_forward(x, weight, bias)

    def vjp(self, grad, weight, input_shape):
        m = self.module
        if m.padding_mode == "zeros" and not isinstance(m.padding, str):
            return _conv_input_grad(grad, weight, input_shape, m.stride, m.padding, m.dilation, m.groups)
        # Other padding modes pad explicitly before the convolution: let autograd do the transpose.
        return _autograd_vjp(lambda p: m._conv_forward(p, weight, None), grad, input_shape)


class FunctionalConvOp(LinearOp):
    """A functional ``F.conv1d/2d/3d`` call as made in a forward: the weight it really received.

    This is how a conv subclass with a forward of its own (weight standardisation, "same" padding
    done with ``F.pad``) is explained: by the convolution it computes, never by its base class.
    """

    def __init__(self, fn, weight: Tensor, bias: Optional[Tensor], stride, padding, dilation, groups: int):
        super().__init__(None)
        self.fn, self._weight, self._bias = fn, weight, bias
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups

    @property
    def weight(self):
        return self._weight

    @property
    def bias(self):
        return self._bias

    def forward(self, x, weight, bias):
        return self.fn(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def vjp(self, grad, weight, input_shape):
        if isinstance(self.padding, str):
            return _autograd_vjp(lambda p: self.forward(p, weight, None), grad, input_shape)
        n = weight.ndim - 2
        return _conv_input_grad(grad, weight, input_shape, _tuple(self.stride, n), _tuple(self.padding, n),
                                _tuple(self.dilation, n), self.groups)


def _tuple(value, n: int) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [value] * n


def _conv_input_grad(grad, weight, input_shape, stride, padding, dilation, groups) -> Tensor:
    """The input half of ``convolution_backward``: no weight gradient is ever computed."""
    dummy = grad.new_empty(1).expand(input_shape)
    n = weight.ndim - 2
    return torch.ops.aten.convolution_backward(
        grad, dummy, weight, None, list(stride), list(padding), list(dilation),
        False, [0] * n, groups, [True, False, False],
    )[0]


def _autograd_vjp(forward: Callable[[Tensor], Tensor], grad: Tensor, input_shape) -> Tensor:
    proxy = torch.zeros(input_shape, dtype=grad.dtype, device=grad.device, requires_grad=True)
    with torch.enable_grad():
        out = forward(proxy)
    return torch.autograd.grad(out, proxy, grad)[0]


class DenseOp(LinearOp):
    """nn.Linear, or a functional ``F.linear`` call (``weight``/``bias`` given: the ones it received)."""

    def __init__(self, module: Optional[nn.Module], weight: Optional[Tensor] = None, bias: Optional[Tensor] = None):
        super().__init__(module)
        self._weight, self._bias = weight, bias

    @property
    def weight(self):
        return self.module.weight if self.module is not None else self._weight

    @property
    def bias(self):
        return self.module.bias if self.module is not None else self._bias

    def forward(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def vjp(self, grad, weight, input_shape):
        return (grad @ weight).reshape(input_shape)


class PoolOp(LinearOp):
    """Average pooling (fixed or adaptive): linear, parameter-free."""

    def __init__(self, module: nn.Module, forward: Callable[[Tensor], Tensor]):
        super().__init__(module)
        self._forward = forward

    @property
    def weight(self):
        return None

    @property
    def bias(self):
        return None

    def forward(self, x, weight, bias):
        return self._forward(x)

    def vjp(self, grad, weight, input_shape):
        return _autograd_vjp(self._forward, grad, input_shape)


class AffineOp(LinearOp):
    """A batch norm in eval mode that could not be folded into a preceding layer: x * s + t."""

    def __init__(self, module: nn.Module):
        super().__init__(module)
        with torch.no_grad():
            scale = module.running_var.add(module.eps).rsqrt()
            if module.weight is not None:
                scale = scale * module.weight
            shift = -module.running_mean * scale
            if module.bias is not None:
                shift = shift + module.bias
        self._scale, self._shift = scale.detach(), shift.detach()

    @property
    def weight(self):
        return self._scale

    @property
    def bias(self):
        return self._shift

    def _shape(self, t: Tensor, ndim: int) -> Tensor:
        return t.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, x, weight, bias):
        out = x * self._shape(weight, x.ndim)
        return out if bias is None else out + self._shape(bias, x.ndim)

    def vjp(self, grad, weight, input_shape):
        return grad * self._shape(weight, grad.ndim)
