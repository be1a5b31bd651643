"""Relevance maps as pictures: a diverging colormap centred at zero, and overlays on the input.

Red is relevance for the explained class, blue against it, white none. Scaling is symmetric
(``|R| <= max |R|``) or, robust to a few extreme pixels, by a percentile of ``|R|``.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
from matplotlib import colormaps

ArrayLike = Union[np.ndarray, "torch.Tensor"]  # noqa: F821


def _numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def relevance_map(relevance: ArrayLike) -> np.ndarray:
    """(H, W) float64 from relevance of shape (H, W) or (C, H, W) (channels summed)."""
    r = _numpy(relevance).astype(np.float64)
    if r.ndim == 3:
        r = r.sum(0)
    if r.ndim != 2:
        raise ValueError(f"relevance must be (H, W) or (C, H, W), got shape {r.shape}")
    return r


def scale_relevance(r: np.ndarray, scaling: str = "symmetric", percentile: float = 99.5) -> np.ndarray:
    """Map relevance to [-1, 1] keeping 0 at 0."""
    return scale_relevance_many(r[None], scaling, percentile)[0]


def scale_relevance_many(r: np.ndarray, scaling: str = "symmetric", percentile: float = 99.5) -> np.ndarray:
    """:func:`scale_relevance` of each (H, W) map of an (N, H, W) stack, each by its own bound."""
    flat = np.abs(r).reshape(len(r), -1)
    if scaling == "symmetric":
        bound = flat.max(1) if flat.size else np.zeros(len(r))
    elif scaling == "percentile":
        bound = np.percentile(flat, percentile, axis=1) if flat.size else np.zeros(len(r))
    else:
        raise ValueError(f"scaling must be 'symmetric' or 'percentile', got {scaling!r}")
    good = np.isfinite(bound) & (bound > 0)
    safe = np.where(good, bound, 1.0)[:, None, None]
    return np.where(good[:, None, None], np.clip(r / safe, -1.0, 1.0), 0.0)


def heatmap_rgb(relevance: ArrayLike, scaling: str = "symmetric", percentile: float = 99.5,
                cmap: str = "bwr") -> np.ndarray:
    """uint8 (H, W, 3) image of relevance; 0 maps to the colormap's centre."""
    return heatmaps_rgb(relevance_map(relevance)[None], scaling, percentile, cmap)[0]


def heatmaps_rgb(maps: ArrayLike, scaling: str = "symmetric", percentile: float = 99.5,
                 cmap: str = "bwr") -> np.ndarray:
    """uint8 (N, H, W, 3) images of an (N, H, W) or (N, C, H, W) relevance stack (channels summed),
    each scaled on its own, in one pass."""
    r = _numpy(maps).astype(np.float64)
    if r.ndim == 4:
        r = r.sum(1)
    if r.ndim != 3:
        raise ValueError(f"relevance stack must be (N, H, W) or (N, C, H, W), got shape {r.shape}")
    v = scale_relevance_many(r, scaling, percentile)
    rgb = colormaps[cmap]((v + 1.0) / 2.0)[..., :3]
    return (rgb * 255).round().astype(np.uint8)


def image_rgb(image: ArrayLike, low: Optional[float] = None, high: Optional[float] = None) -> np.ndarray:
    """uint8 (H, W, 3) from an image tensor (C, H, W) float or (H, W, C) uint8; floats are min-max scaled
    unless ``low``/``high`` give the value range."""
    a = _numpy(image)
    if a.dtype == np.uint8:
        a = a if a.ndim == 3 and a.shape[-1] in (1, 3) else np.moveaxis(a, 0, -1)
    else:
        a = a.astype(np.float64)
        if a.ndim == 3 and a.shape[0] in (1, 3):
            a = np.moveaxis(a, 0, -1)
        lo = a.min() if low is None else low
        hi = a.max() if high is None else high
        a = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
        a = (a * 255).round().astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return a


def overlay(image: ArrayLike, relevance: ArrayLike, alpha: float = 0.75, scaling: str = "symmetric",
            percentile: float = 99.5, cmap: str = "bwr") -> np.ndarray:
    """The heatmap over a grey version of the image; opacity grows with |relevance|."""
    gray = image_rgb(image).astype(np.float64).mean(-1, keepdims=True)
    v = scale_relevance(relevance_map(relevance), scaling, percentile)
    heat = colormaps[cmap]((v + 1.0) / 2.0)[..., :3] * 255
    weight = alpha * np.abs(v)[..., None]
    return ((1 - weight) * gray + weight * heat).round().clip(0, 255).astype(np.uint8)
