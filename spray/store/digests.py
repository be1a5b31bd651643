"""The cache of sample content digests kept in a store: ``STORE/digests.h5``.

Hashing a data set reads every byte of it. A sample's digest is kept here with the cheap signature
it was computed under (a file's size and mtime, or an array file's signature and row), so the
next run re-reads only samples whose signature changed. It is a cache: a missing or unreadable
file only costs a re-hash, and a failed write is ignored.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import h5py
import numpy as np

from ..errors import StorageError
from .shard import write_h5

log = logging.getLogger("spray.store")
NAME = "digests.h5"


def load_digests(folder: Path) -> Dict[str, Tuple[str, str]]:
    """id -> (signature, digest) from the last run's cache (empty when there is none)."""
    path = Path(folder) / NAME
    if not path.is_file():
        return {}
    try:
        with h5py.File(path, "r") as fh:
            ids = fh["ids"].asstr()[()]
            signatures = fh["signature"].asstr()[()]
            digests = fh["digest"][()]
    except (OSError, KeyError, ValueError) as err:
        log.warning("digest cache %s is unreadable (%s); samples are hashed again", path, err)
        return {}
    return {i: (s, d.decode()) for i, s, d in zip(ids, signatures, digests)}


def save_digests(folder: Path, ids: Sequence[str], signatures: Sequence[Optional[str]], digests: Sequence[str],
                 previous: Dict[str, Tuple[str, str]]) -> None:
    """Keep the digests of samples that have a signature (atomically; only when they changed)."""
    entries = {i: (s, d) for i, s, d in zip(ids, signatures, digests) if s is not None}
    if not entries or all(previous.get(i) == e for i, e in entries.items()) and len(previous) == len(entries):
        return
    keys = list(entries)

    def build(fh: h5py.File) -> None:
        fh.create_dataset("ids", data=np.array(keys, dtype=object), dtype=h5py.string_dtype())
        fh.create_dataset("signature", data=np.array([entries[k][0] for k in keys], dtype=object),
                          dtype=h5py.string_dtype())
        fh.create_dataset("digest", data=np.array([entries[k][1] for k in keys], dtype="S32"))

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        write_h5(Path(folder) / NAME, build)
    except (OSError, StorageError) as err:
        log.info("digest cache not written (%s); the next run hashes the data again", err)
