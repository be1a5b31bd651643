"""Lazy, batched reading of a :class:`Source` through a torch DataLoader.

Memory is bounded by the batch size and the prefetch, never by the data set. Sources that hold
same-sized arrays (npz, HDF5, in-memory arrays) are read and preprocessed a whole batch at a time;
other sources (image folders) are decoded one sample at a time, in the loader's workers when asked.
A bad sample either stops the run with an error that names it (``on_error="stop"``) or is skipped
and recorded with its reason (``"skip"``); a batch with a bad sample is redone sample by sample, so
both paths report the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import ConfigError, InputError
from .preprocess import Preprocess
from .sources import Source

ON_ERROR = ("stop", "skip")


@dataclass
class Skipped:
    """A sample left out of a run, and why."""

    index: int
    id: str
    reason: str


@dataclass
class Batch:
    """Preprocessed images with their labels, ids and source indices; ``skipped`` lists bad samples."""

    x: torch.Tensor
    labels: torch.Tensor
    ids: List[str]
    indices: np.ndarray
    skipped: List[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def read_preprocessed(source: Source, preprocess: Preprocess, indices: np.ndarray) -> Optional[torch.Tensor]:
    """Source rows ``indices`` (ascending, distinct) in one read and one preprocessing pass, or None
    where the source reads one sample at a time or a sample fails (then read them one by one: that
    names the bad sample)."""
    images = source.load_many(indices)
    if images is None:
        return None
    try:
        return preprocess.batch(images, f"{source.describe().get('path', source.kind)} "
                                        f"rows {int(indices[0])}..{int(indices[-1])}")
    except InputError:
        return None


class SampleDataset(Dataset):
    """``source`` restricted to ``indices`` and preprocessed; items are tuples or :class:`Skipped`."""

    def __init__(self, source: Source, preprocess: Preprocess, indices: Optional[Sequence[int]] = None,
                 on_error: str = "stop", shape: Optional[Tuple[int, int, int]] = None):
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.source, self.preprocess, self.on_error = source, preprocess, on_error
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.shape = tuple(shape) if shape is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        index = int(self.indices[j])
        try:
            where = self.source.location(index)
            x = self.preprocess(self.source.load(index), where)
            if self.shape is not None and tuple(x.shape) != self.shape:
                raise InputError(f"{where}: preprocessed to shape {tuple(x.shape)}, the run expects "
                                 f"{self.shape}; add resize/center_crop to preprocess")
            if not torch.isfinite(x).all():
                raise InputError(f"{where}: image contains NaN or infinite values")
        except InputError as err:
            if self.on_error == "skip":
                return Skipped(index, self.source.ids[index], str(err))
            raise
        return x, int(self.source.labels[index]), self.source.ids[index], index

    def batch(self, positions: range) -> Batch:
        """Items ``positions`` as one batch: one read and one preprocessing pass where the source
        reads many samples at once and all of them are good; else item by item."""
        indices = self.indices[positions.start:positions.stop]
        x = read_preprocessed(self.source, self.preprocess, indices)
        if (x is not None and (self.shape is None or tuple(x.shape[1:]) == self.shape)
                and bool(torch.isfinite(x).all())):
            return Batch(x, torch.from_numpy(self.source.labels[indices]).long(),
                         [self.source.ids[i] for i in indices], indices.copy())
        return collate([self[j] for j in positions])  # item by item names the bad sample


def collate(items) -> Batch:
    good = [it for it in items if not isinstance(it, Skipped)]
    skipped = [it for it in items if isinstance(it, Skipped)]
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), [], np.empty(0, np.int64), skipped)
    return Batch(torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good], dtype=torch.long),
                 [g[2] for g in good], np.asarray([g[3] for g in good], dtype=np.int64), skipped)


def batches(dataset: SampleDataset, batch_size: int = 64, num_workers: int = 0) -> Iterator[Batch]:
    """Batches in index order. ``num_workers`` > 0 decodes in worker processes (not inside dask
    tasks: dask's worker processes are daemonic and cannot start children)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers == 0:
        for start in range(0, len(dataset), batch_size):
            yield dataset.batch(range(start, min(start + batch_size, len(dataset))))
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate, persistent_workers=False)
    yield from loader
