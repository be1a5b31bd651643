"""Heatmaps -> per-sample feature vectors for the graph: channel sum, absolute or positive part,
sum-pooling to a target size, normalisation per sample (with a guard for maps whose relevance sums
to ~0, where dividing gives inf/NaN), optional PCA for large maps. And the input pixels behind the
maps, read through the data source recorded in a store's provenance, on a grid aligned with the
pooled cells (the suspicion score asks whether a hot spot's pixels are the same in every member)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ConfigError

MODES = ("abs", "positive", "signed")


@dataclass
class Pooled:
    """Pooled maps (N, h, w), the pooling factor per axis, and which maps were degenerate."""

    maps: np.ndarray
    factor: Tuple[int, int]
    degenerate: np.ndarray

    def features(self) -> np.ndarray:
        return self.maps.reshape(len(self.maps), -1)


def pool_maps(relevance: np.ndarray, size: Union[int, Tuple[int, int], None] = 16, mode: str = "abs",
              normalize: bool = True, eps: float = 1e-12) -> Pooled:
    """(N, C, H, W) or (N, H, W) relevance -> (N, h, w) sum-pooled maps, each summing to 1 when
    ``normalize`` (over absolute values for mode "signed"). ``size`` must divide H and W."""
    if mode not in MODES:
        raise ConfigError(f"analysis.mode must be one of {MODES}, got {mode!r}")
    r = np.asarray(relevance, dtype=np.float32)
    if r.ndim == 4:
        r = r.sum(1)
    if r.ndim != 3:
        raise ConfigError(f"heatmaps must be (N, C, H, W) or (N, H, W), got shape {relevance.shape}")
    n, h, w = r.shape
    if mode == "abs":
        r = np.abs(r)
    elif mode == "positive":
        r = np.maximum(r, 0)
    if size is None:
        th, tw = h, w
    else:
        th, tw = (size, size) if isinstance(size, int) else tuple(size)
    if h % th or w % tw:
        raise ConfigError(f"analysis.pool size {th}x{tw} must divide the heatmap size {h}x{w}")
    fh, fw = h // th, w // tw
    pooled = r.reshape(n, th, fh, tw, fw).sum((2, 4))
    total = np.abs(pooled).reshape(n, -1).sum(1)
    scale = np.abs(r).reshape(n, -1).max(1) if n else np.zeros(0)
    degenerate = total <= eps * np.maximum(scale, eps) * th * tw
    if normalize:
        safe = np.where(degenerate, 1.0, total)
        pooled = pooled / safe[:, None, None]
        pooled[degenerate] = 0.0
    return Pooled(pooled.astype(np.float32), (fh, fw), degenerate)


def reduce_dimension(features: np.ndarray, n_components: Optional[int], random_state: int = 0) -> np.ndarray:
    """Randomised PCA to ``n_components`` (None or >= feature count: unchanged)."""
    if n_components is None or n_components >= features.shape[1] or n_components >= len(features):
        return features
    from sklearn.decomposition import PCA
    return PCA(n_components, svd_solver="randomized", random_state=random_state).fit_transform(features).astype(np.float32)


PIXELS_PER_CELL = 4
_SOURCES: dict = {}


def _opened(spec: Mapping):
    """The data source of ``spec``, opened once per process and again when its file or folder changed:
    opening reads and checks every id and label (2 s at 1.3M samples), which each class's pixel read
    would otherwise pay again."""
    import json
    import os

    from ..data.open import open_source
    path = spec.get("path")
    stamp = os.stat(path).st_mtime_ns if isinstance(path, str) and os.path.exists(path) else None
    key = (json.dumps(spec, sort_keys=True, default=str), stamp)
    if key not in _SOURCES:
        _SOURCES.clear()
        _SOURCES[key] = open_source(spec)
    return _SOURCES[key]


def _display_batch(source, display, indices: np.ndarray):
    """Samples ``indices`` preprocessed, in their order: one read in increasing order where the source
    reads many at once (a chunked HDF5 file decodes each chunk once, not once per sample), else one
    sample at a time."""
    import torch

    from ..data.loader import read_preprocessed
    order = np.argsort(indices, kind="stable")
    ascending = indices[order]
    x = read_preprocessed(source, display, ascending) if len(np.unique(ascending)) == len(ascending) else None
    if x is not None:
        out = torch.empty_like(x)
        out[torch.from_numpy(order)] = x
        return out
    return torch.stack([display(source.load(int(i)), source.location(int(i))) for i in indices])


def read_pixels(provenance: Mapping, indices: Sequence[int], cells: Tuple[int, int],
                factor: Tuple[int, int], per_cell: int = PIXELS_PER_CELL) -> np.ndarray:
    """(N, h*q, w*q, 3) float32 pixels in [0, 1] of data-source samples ``indices``, preprocessed as
    the explain stage did (resize, crop) but not normalised, then area-averaged to ``q = min(pool
    factor, per_cell)`` pixels per cell side: the grid of an ``(h, w)``-cell pooled map. Grey
    images are repeated to three channels."""
    import torch.nn.functional as F

    from ..data.preprocess import Preprocess
    spec = dict(provenance["preprocess"])
    spec["mean"], spec["std"] = [], []
    display = Preprocess(**spec)
    scale = 1.0 if spec.get("scale", True) else 255.0
    source = _opened(provenance["data_spec"])
    h, w = cells
    q = max(1, min(int(factor[0]), int(factor[1]), per_cell))
    out = np.empty((len(indices), h * q, w * q, 3), np.float32)
    for start in range(0, len(indices), 256):
        x = _display_batch(source, display, np.asarray(indices[start:start + 256], dtype=np.int64)) / scale
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x[:, :3], size=(h * q, w * q), mode="area") if x.shape[-2:] != (h * q, w * q) else x
        out[start:start + len(x)] = x.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return out
