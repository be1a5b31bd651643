"""Per-class result files of the analysis, the keys they are reused under, and their merge.

Every class task writes its own file, ``analysis/parts/<label:08d>-<key16>.h5`` (temp file, fsync,
rename: a killed task leaves no half file), so tasks on many workers never share an HDF5 file and a
re-run reuses every finished class. The key is a sha256 over what the result depends on: the
analysis parameters, the class's sample ids in store order and the store's digest of the class
(:meth:`HeatmapStore.class_digest`: the store's identity and each sample's id, label and content
digest, i.e. what its heatmaps were computed from). A class is therefore redone exactly when its
samples, their heatmaps, the parameters or the analysis code changed (the key holds a digest of
this package's source, so an edited or upgraded analysis never serves a result of the old one).

Part files hold positions within the class, never store rows: when another class grows, this
class's rows shift, and the merge maps positions to the current rows. 2-D maps (t-SNE/UMAP) go to
``<label:08d>-<key16>.<method>.h5`` beside it.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import h5py
import numpy as np

from .. import __version__

PART_FORMAT = 1
# parameters that do not change a class's result: the class selection, which classes are analysed
# at all, and the 2-D maps (kept in their own files)
NOT_IN_KEY = ("classes", "min_class_size", "embeddings", "embed_top")


def params_key(params) -> str:
    fields = {k: v for k, v in asdict(params).items() if k not in NOT_IN_KEY}
    return _sha(PART_FORMAT, __version__, code_digest(), fields)


@lru_cache(maxsize=None)
def code_digest() -> str:
    """sha256 of the source of :mod:`spray.analysis`, which computes every class result: a
    development install changes it without a new version number."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _sha(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def class_key(params_hash: str, label: int, group_by: str, ids: Sequence[str], class_digest: str) -> str:
    return _sha(params_hash, int(label), group_by, list(ids), class_digest)


def part_path(parts: Path, label: int, key: str, method: Optional[str] = None) -> Path:
    suffix = f".{method}" if method else ""
    return Path(parts) / f"{int(label):08d}-{key[:16]}{suffix}.h5"


@contextmanager
def _atomic_h5(path: Path) -> Iterator[h5py.File]:
    """A writable h5py file at a temp name, renamed into place (flushed and synced) when the block
    succeeds; on an error the temp file is removed and ``path`` is left as it was."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fh = h5py.File(tmp, "w")
    try:
        yield fh
        fh.flush()
        os.fsync(fh.id.get_vfd_handle())
        fh.close()
        os.replace(tmp, path)
    finally:
        if fh.id.valid:
            fh.close()
        tmp.unlink(missing_ok=True)


def write_part(path: Path, key: str, arrays: Dict[str, np.ndarray], record: dict,
               attrs: Optional[Dict[str, dict]] = None) -> None:
    """``arrays``: dataset name -> array, named as in the class's group of ``analysis.h5``, except that
    ``medoids/*`` hold positions within the class; ``attrs``: dataset name -> its attributes."""
    with _atomic_h5(path) as fh:
        group = fh.create_group("class")
        for name, value in arrays.items():
            d = group.create_dataset(name, data=value)
            for a, v in (attrs or {}).get(name, {}).items():
                d.attrs[a] = v
        fh.create_dataset("record", data=json.dumps(record, default=str).encode())
        fh.attrs["key"] = key
        fh.attrs["format"] = PART_FORMAT


def write_embedding(path: Path, key: str, xy: np.ndarray, seconds: float) -> None:
    with _atomic_h5(path) as fh:
        fh.create_dataset("xy", data=xy.astype(np.float32))
        fh.attrs["key"] = key
        fh.attrs["seconds"] = seconds


def read_record(path: Path, key: str) -> Optional[dict]:
    """The record of a finished part file with this key, or None (absent, other key, unreadable)."""
    try:
        with h5py.File(path, "r") as fh:
            if fh.attrs.get("key") != key:
                return None
            return json.loads(fh["record"][()].decode())
    except (OSError, KeyError, ValueError):
        return None


def has_embedding(path: Path, key: str) -> bool:
    try:
        with h5py.File(path, "r") as fh:
            return fh.attrs.get("key") == key and "xy" in fh
    except (OSError, KeyError):
        return False


def merge(out: Path, entries: Sequence[dict], embed_on: str, summary_attrs: dict) -> None:
    """Write ``analysis.h5`` from the part files (temp file, then renamed); ViRelAy's file is made
    from it (:func:`spray.export.write_analysis_file`).

    ``entries``: per class ``{"label", "rows" (current store rows), "part", "record", "embeddings":
    {method: path}}`` in class order."""
    out = Path(out)
    tmp_main = out / "analysis.h5.tmp"
    with h5py.File(tmp_main, "w") as main:
        for entry in entries:
            _merge_class(main, entry, embed_on)
        main.attrs["summary"] = json.dumps(summary_attrs, default=str)
    os.replace(tmp_main, out / "analysis.h5")


def _merge_class(main, entry, embed_on) -> None:
    name = f"{int(entry['label']):08d}"
    rows = np.asarray(entry["rows"], dtype=np.int64)
    record = entry["record"]
    with h5py.File(entry["part"], "r") as part:
        part.copy(part["class"], main, name=name)
    g = main[name]
    g.create_dataset("index", data=rows.astype(np.uint32))
    for c in g.get("medoids", {}):
        g[f"medoids/{c}"][...] = rows[g[f"medoids/{c}"][()]]
    for method, path in entry["embeddings"].items():
        with h5py.File(path, "r") as fh:
            e = g.create_dataset(f"embedding/{method}", data=fh["xy"][()])
        e.attrs["embedding"] = embed_on
        e.attrs["index"] = np.arange(2)
    g.attrs["record"] = json.dumps({k: v for k, v in record.items() if k != "clusters"}, default=str)
    g.attrs["k"] = record["k"]


def remove_stale(parts: Path, labels: Sequence[int], keep: Sequence[Path]) -> int:
    """Delete the part files of ``labels`` that are not in ``keep`` (results of older inputs), and
    stray temp files of killed tasks; parts of classes not analysed this time stay. Returns how many."""
    keep_names = {Path(p).name for p in keep}
    prefixes = {f"{int(label):08d}-" for label in labels}
    removed = 0
    for path in Path(parts).glob("*.h5*"):
        stale = path.name[:9] in prefixes and path.name not in keep_names
        if stale or path.name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
