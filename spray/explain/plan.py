"""The deterministic explain plan: selected samples sorted by (label, id), cut into shards of at
most ``shard_size`` samples that never span two classes, so every class is a contiguous slab of
the store and a re-run of the same job cuts exactly the same shards."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from ..errors import ConfigError
from ..store import ShardSpec


@dataclass(frozen=True)
class ShardTask:
    """A shard's plan entry with the source indices of its samples (in order)."""

    spec: ShardSpec
    indices: tuple


def make_plan(ids: Sequence[str], labels: np.ndarray, selected: np.ndarray, shard_size: int) -> List[ShardTask]:
    if shard_size < 1:
        raise ConfigError(f"explain.shard_size must be >= 1, got {shard_size}")
    selected = np.asarray(selected, dtype=np.int64)
    order = sorted(selected.tolist(), key=lambda i: (int(labels[i]), ids[i]))
    tasks: List[ShardTask] = []
    start = 0
    while start < len(order):
        label = int(labels[order[start]])
        stop = start
        while stop < len(order) and stop - start < shard_size and int(labels[order[stop]]) == label:
            stop += 1
        chunk = tuple(order[start:stop])
        tasks.append(ShardTask(ShardSpec(len(tasks), label, len(chunk), ids[chunk[0]], ids[chunk[-1]]), chunk))
        start = stop
    return tasks
