"""The explain plan: the selected samples the store lacks, sorted by (label, id), cut into shards of
at most ``shard_size`` samples that never span two classes. Each shard is named by a content
address (sha256 over the store's identity key, its label and its samples' ids and content
digests), so a re-run of the same job after a crash cuts and names exactly the same shards, and a
shard file can only ever hold the heatmaps its name promises."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import List

import numpy as np

from ..errors import ConfigError
from ..store import Selection, ShardSpec


@dataclass(frozen=True)
class ShardTask:
    """A shard's plan entry with the source indices of its samples (in order) and their digests,
    which the worker checks against what it reads."""

    spec: ShardSpec
    indices: tuple
    digests: tuple


def shard_address(store_key: str, label: int, ids, digests) -> str:
    h = hashlib.sha256(f"{store_key}\t{int(label)}\n".encode())
    for i, d in zip(ids, digests):
        h.update(f"{i}\t{d}\n".encode())
    return h.hexdigest()[:24]


def make_plan(selection: Selection, todo: np.ndarray, shard_size: int, store_key: str) -> List[ShardTask]:
    """Shards over the samples of ``selection`` (in its (label, id) order) where ``todo`` is set."""
    if shard_size < 1:
        raise ConfigError(f"explain.shard_size must be >= 1, got {shard_size}")
    positions = np.flatnonzero(todo)
    tasks: List[ShardTask] = []
    start = 0
    while start < len(positions):
        label = int(selection.labels[positions[start]])
        stop = start
        while (stop < len(positions) and stop - start < shard_size
               and int(selection.labels[positions[stop]]) == label):
            stop += 1
        chunk = positions[start:stop]
        ids = [selection.ids[p] for p in chunk]
        digests = tuple(selection.digests[p] for p in chunk)
        name = shard_address(store_key, label, ids, digests)
        tasks.append(ShardTask(ShardSpec(name, label, len(chunk), ids[0], ids[-1]),
                               tuple(int(selection.index[p]) for p in chunk), digests))
        start = stop
    return tasks
