"""The audited images as a person sees them: the run's data source read with its preprocessing
(resize, crop, channels) but without the normalisation, as uint8 RGB. The report and the ViRelAy
export both show these, so the pictures match the heatmaps pixel for pixel."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ..data.loader import SampleDataset
from ..data.open import open_source
from ..data.preprocess import Preprocess

CHUNK = 256


class DisplayImages:
    """``rgb(indices)``: source samples ``indices`` as (n, H, W, 3) uint8."""

    def __init__(self, provenance: dict):
        spec = dict(provenance["preprocess"])
        spec["mean"], spec["std"] = [], []
        self.preprocess = Preprocess(**spec)
        self.source = open_source(provenance["data_spec"])

    def rgb(self, indices: Sequence[int]) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) == 0:
            return np.zeros((0, 1, 1, 3), np.uint8)
        return np.concatenate(list(self.chunks(indices)))

    def chunks(self, indices: Sequence[int], size: int = CHUNK) -> Iterator[np.ndarray]:
        """The same as :meth:`rgb`, ``size`` samples at a time (memory bounded by the chunk)."""
        indices = np.asarray(indices, dtype=np.int64)
        for start in range(0, len(indices), size):
            part = SampleDataset(self.source, self.preprocess, indices[start:start + size], on_error="stop")
            x = part.batch(range(len(part))).x.numpy()
            x = np.clip(x / self.preprocess.pixel_max, 0.0, 1.0)
            if x.shape[1] == 1:
                x = np.repeat(x, 3, axis=1)
            yield (x.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
