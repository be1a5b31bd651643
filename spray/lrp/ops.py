"""Layers that are linear in their input, seen through one interface.

A rule needs two things from a layer: its forward pass with substituted parameters (``forward``),
and the transpose of its linear map applied to a tensor (``vjp``). Conv, dense (as modules or
as the functional calls a forward makes), average pooling and an un-folded batch norm all provide
both, so every rule works on every one of them. ``vjp`` never asks autograd for a weight gradient:
convolutions go straight to the input half of ``convolution_backward``.

A batch norm that follows a layer is folded into it *for the rules* (``weight``/``bias`` are the
folded ones), while the attached model's forward (``exact``) still runs the layer and the batch
norm with the model's own kernels: its logits are bitwise the model's. Folded weights in float32
alone move a deep random-init ResNet's logits by up to 5e-4 relative (resnet101: 3.9e-4), far above
the self-check's 1e-5, and the baseline gradient pass runs the batch norm too.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Modifier = Callable[[Tensor], Tensor]


def batch_norm_affine(bn: nn.Module) -> tuple:
    """An eval-mode batch norm as ``x * scale + shift`` (per channel)."""
    with torch.no_grad():
        scale = bn.running_var.add(bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
    return scale.detach(), shift.detach()


def eval_batch_norm(bn: nn.Module, x: Tensor) -> Tensor:
    """``bn(x)`` in eval mode with the kernel its own forward calls (bitwise the same)."""
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _versions(*tensors) -> tuple:
    return tuple(None if t is None else (id(t), t._version) for t in tensors)


class LinearOp:
    """A module that computes ``W x + b`` for some linear ``W``: the object rules act on."""

    def __init__(self, module: Optional[nn.Module]):
        self.module = module
        self._cache: dict = {}
        #: set by the engine from the graph: the input comes out of a ReLU (no negative entries)
        self.input_nonnegative = False
        #: the output handed to the rule is a ReLU's (fused), so denominators built from it are >= 0
        self.output_nonnegative = False
        #: an eval-mode batch norm folded into this layer (see the module docstring)
        self.batch_norm: Optional[nn.Module] = None
        self._folded: Optional[tuple] = None

    @property
    def layer_weight(self) -> Optional[Tensor]:
        """The weight the layer's own forward uses."""
        return getattr(self.module, "weight", None)

    @property
    def layer_bias(self) -> Optional[Tensor]:
        return getattr(self.module, "bias", None)

    @property
    def weight(self) -> Optional[Tensor]:
        """The weight the rules see: the layer's, with a following batch norm folded in."""
        return self._fold()[0] if self.batch_norm is not None else self.layer_weight

    @property
    def bias(self) -> Optional[Tensor]:
        return self._fold()[1] if self.batch_norm is not None else self.layer_bias

    def fold(self, bn: nn.Module) -> None:
        """Fold eval-mode ``bn``, which alone reads this layer's output, into the rules' parameters."""
        self.batch_norm = bn

    def _source_version(self) -> tuple:
        """Versions of every tensor the rules' parameters derive from (layer, and a folded batch norm)."""
        bn = self.batch_norm
        extra = () if bn is None else (bn.weight, bn.bias, bn.running_mean, bn.running_var)
        return _versions(self.layer_weight, self.layer_bias, *extra)

    def _fold(self, hold: bool = True) -> tuple:
        """The folded (weight, bias), held for later batches when ``hold`` (a rule reads them
        directly); a rule that reads only modified copies (``params``) lets them go."""
        bn, weight, bias = self.batch_norm, self.layer_weight, self.layer_bias
        version = self._source_version()
        if self._folded is not None and self._folded[0] == version:
            return self._folded[1]
        scale, shift = batch_norm_affine(bn)
        with torch.no_grad():
            shape = (-1,) + (1,) * (weight.ndim - 1)
            new_weight = weight.detach() * scale.reshape(shape).to(weight)
            base = bias.detach() if bias is not None else torch.zeros_like(shift)
            new_bias = base * scale.to(base) + shift.to(base)
        if hold:
            self._folded = (version, (new_weight, new_bias))
        return new_weight, new_bias

    def exact(self, x: Tensor) -> Tensor:
        """The layer's output (followed by its folded batch norm) as the model itself computes it."""
        z = self.forward(x, self.layer_weight, self.layer_bias)
        return z if self.batch_norm is None else eval_batch_norm(self.batch_norm, z)

    def forward(self, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    def vjp(self, grad: Tensor, weight: Optional[Tensor], input_shape: torch.Size) -> Tensor:
        raise NotImplementedError

    def params(self, key: str, weight_fn: Modifier, bias_fn: Optional[Modifier]) -> tuple:
        """Modified (weight, bias), computed once per parameter version and reused across batches.

        ``bias_fn=None`` drops the bias (zennit's ``zero_params=['bias']``).
        """
        version = self._source_version()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        weight, bias = self._fold(hold=False) if self.batch_norm is not None else (self.layer_weight, self.layer_bias)
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
    def layer_weight(self):
        return self._weight

    @property
    def layer_bias(self):
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
    def layer_weight(self):
        return self.module.weight if self.module is not None else self._weight

    @property
    def layer_bias(self):
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
    def layer_weight(self):
        return None

    @property
    def layer_bias(self):
        return None

    def forward(self, x, weight, bias):
        return self._forward(x)

    def vjp(self, grad, weight, input_shape):
        return _autograd_vjp(self._forward, grad, input_shape)


class AffineOp(LinearOp):
    """A batch norm in eval mode that could not be folded into a preceding layer: x * s + t for the
    rules; its own kernel in the attached forward (``exact``)."""

    def __init__(self, module: nn.Module):
        super().__init__(module)
        self._scale, self._shift = batch_norm_affine(module)

    @property
    def layer_weight(self):
        return self._scale

    @property
    def layer_bias(self):
        return self._shift

    def exact(self, x):
        return eval_batch_norm(self.module, x)

    def _shape(self, t: Tensor, ndim: int) -> Tensor:
        return t.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, x, weight, bias):
        out = x * self._shape(weight, x.ndim)
        return out if bias is None else out + self._shape(bias, x.ndim)

    def vjp(self, grad, weight, input_shape):
        return grad * self._shape(weight, grad.ndim)
