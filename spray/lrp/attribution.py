"""Gradient-based attributions used to cross-check LRP, batched (no per-sample Python loop).

Integrated Gradients' relevance sums to ``f(x) - f(baseline)`` (completeness, up to the Riemann
error of ``steps``); gradient x input equals LRP-0 on a bias-free ReLU network. Both make handy
references for the LRP engine's own tests.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor, nn


def _target_grad(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        selected = logits.gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(selected, x)
    return grad


def _targets(model: nn.Module, x: Tensor, target) -> Tensor:
    from .engine import _check_input, _resolve_target
    _check_input(x)
    with torch.no_grad():
        logits = model(x)
    return _resolve_target(target, logits)


def gradient(model: nn.Module, x: Tensor, target=None) -> Tensor:
    """d logit[target] / d x."""
    return _target_grad(model, x, _targets(model, x, target))


def gradient_x_input(model: nn.Module, x: Tensor, target=None) -> Tensor:
    """x * d logit[target] / d x."""
    return x.detach() * gradient(model, x, target)


def integrated_gradients(model: nn.Module, x: Tensor, target=None, steps: int = 32,
                         baseline: Union[float, Tensor] = 0.0, batch_size: Optional[int] = None) -> Tensor:
    """Integrated Gradients with the midpoint rule: ``(x - b) * mean_k grad(b + (k + 1/2)/steps (x - b))``.

    All ``steps`` points of all samples are evaluated together, ``batch_size`` rows at a time
    (default: ``steps`` times the batch).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    target = _targets(model, x, target)
    x = x.detach()
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps
    shape = (steps,) + (1,) * x.ndim
    points = (base[None] + alphas.reshape(shape) * (x - base)[None]).reshape((-1,) + x.shape[1:])
    targets = target.repeat(steps)
    rows = batch_size or points.shape[0]
    grads = torch.cat([_target_grad(model, points[i:i + rows], targets[i:i + rows])
                       for i in range(0, points.shape[0], rows)])
    return (x - base) * grads.reshape((steps,) + x.shape).mean(0)


def smoothgrad(model: nn.Module, x: Tensor, target=None, samples: int = 16, noise: float = 0.1,
               seed: int = 0, batch_size: Optional[int] = None) -> Tensor:
    """Mean gradient over ``samples`` noisy copies, noise std = ``noise`` x each sample's value range."""
    target = _targets(model, x, target)
    x = x.detach()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).reshape((-1,) + (1,) * (x.ndim - 1))
    eps = torch.randn((samples,) + x.shape, generator=gen, dtype=x.dtype).to(x.device)
    points = (x[None] + noise * span[None] * eps).reshape((-1,) + x.shape[1:])
    targets = target.repeat(samples)
    rows = batch_size or points.shape[0]
    grads = torch.cat([_target_grad(model, points[i:i + rows], targets[i:i + rows])
                       for i in range(0, points.shape[0], rows)])
    return grads.reshape((samples,) + x.shape).mean(0)


METHODS = {
    "gradient": gradient,
    "gradient_x_input": gradient_x_input,
    "integrated_gradients": integrated_gradients,
    "smoothgrad": smoothgrad,
}
