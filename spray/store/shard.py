"""One shard file per explain task: written as ``*.tmp``, verified, then renamed into place.

HDF5 takes one writer per file, so parallel workers never share a file. A shard holds, per sample,
the relevance map (float16 by default), id, source index, label, prediction, explained target,
logits and the content digest of the sample it was computed from; its attributes hold the count
and a sha256 over all of it, so a reader can prove a shard is whole (fletcher32 on every chunk
catches bit rot on read as well). Skipped samples are listed with their reason, label and digest.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import h5py
import hdf5plugin
import numpy as np

from ..errors import SprayError, storage_error, write_failure

FIELDS = ("relevance", "index", "label", "prediction", "target", "logits", "digest")
DIGEST_DTYPE = "S32"  # a sample's content digest: 32 hex characters (128 bits of sha256)


class CorruptShard(SprayError):
    """A shard file is unreadable, incomplete or fails its checksum."""


@dataclass(kw_only=True)
class SampleFields:
    """The small per-sample arrays of one shard (axis 0 = samples, in plan order)."""

    ids: List[str]
    index: np.ndarray
    label: np.ndarray
    prediction: np.ndarray
    target: np.ndarray
    logits: np.ndarray
    digest: np.ndarray
    skipped: List[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(kw_only=True)
class ShardData(SampleFields):
    """All arrays of one shard: the heatmaps and the per-sample fields."""

    relevance: np.ndarray


@dataclass(kw_only=True)
class ShardFields(SampleFields):
    """A shard without its heatmaps: what the index needs (their shape and dtype, and the small
    per-sample fields), at a fraction of the memory."""

    relevance_shape: tuple
    relevance_dtype: np.dtype


def checksum(data: ShardData) -> str:
    """sha256 over every stored array and the ids (what verification recomputes)."""
    digest = hashlib.sha256()
    for name in FIELDS:
        arr = np.ascontiguousarray(getattr(data, name))
        digest.update(f"{name}:{arr.dtype.str}:{arr.shape}".encode())
        digest.update(arr.tobytes())
    digest.update("\n".join(data.ids).encode())
    return digest.hexdigest()


def _codec(dtype) -> dict:
    # blosc-lz4 with byte shuffle: 600 MB/s written here, against ~20 MB/s for gzip
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))


def write_h5(path: Path, build: Callable[[h5py.File], None], check: Optional[Callable[[Path], object]] = None,
             in_memory: bool = True) -> None:
    """An HDF5 file built by ``build``, written to ``path`` atomically (temp file, fsync, ``check``
    on the temp file, rename); a full disk or a read-only folder is raised as one sentence.

    ``in_memory`` (for files of a few hundred MB at most): built in memory and written with one
    plain write, so HDF5 never meets the full disk (h5py, half-written on a full disk, fails again
    while closing and leaves the library unusable in that process)."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        if in_memory:
            buffer = io.BytesIO()
            with h5py.File(buffer, "w") as fh:
                build(fh)
            with open(tmp, "wb") as fh:
                fh.write(buffer.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
        else:
            with h5py.File(tmp, "w") as fh:
                build(fh)
                fh.flush()
                os.fsync(fh.id.get_vfd_handle())
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    except Exception as err:
        failed = write_failure(err)
        if failed is None:
            raise
        raise storage_error(failed, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_shard(path: Path, data: ShardData, attrs: Optional[dict] = None) -> str:
    """Write ``data`` to ``path`` atomically (built in memory, temp file, verify, rename); returns
    the checksum."""
    digest = checksum(data)
    write_h5(Path(path), lambda fh: _fill(fh, data, digest, attrs),
             lambda tmp: verify_shard(tmp, expect_count=len(data), expect_checksum=digest))
    return digest


def _fill(fh: h5py.File, data: ShardData, digest: str, attrs: Optional[dict]) -> None:
    n = len(data)
    rel = data.relevance
    if n:
        chunk = (min(n, max(1, (1 << 20) // max(1, rel[0].nbytes))),) + rel.shape[1:]
        fh.create_dataset("relevance", data=rel, chunks=chunk, fletcher32=True, **_codec(rel.dtype))
        # its chunks leave HDF5's cache now, not when the dataset object happens to be freed (a dask
        # worker's profiler can hold it a while): the same shard is then the same bytes, and size
        fh.flush()
    else:
        fh.create_dataset("relevance", data=rel)
    for name in FIELDS[1:]:
        fh.create_dataset(name, data=getattr(data, name))
    fh.create_dataset("ids", data=np.array(data.ids, dtype=object), dtype=h5py.string_dtype())
    fh.attrs["count"] = n
    fh.attrs["checksum"] = digest
    fh.attrs["skipped"] = json.dumps(data.skipped)
    for key, value in (attrs or {}).items():
        fh.attrs[key] = value


def _read(path: Path, with_relevance: bool, fields: Sequence[str] = FIELDS[1:]) -> dict:
    """Keyword arguments for :class:`ShardData` or :class:`ShardFields` (raises :class:`CorruptShard`)."""
    try:
        with h5py.File(path, "r") as fh:
            out = {name: fh[name][()] for name in fields}
            out["ids"] = [i.decode() if isinstance(i, bytes) else str(i) for i in fh["ids"][()]]
            out["skipped"] = json.loads(fh.attrs.get("skipped", "[]"))
            if with_relevance:
                out["relevance"] = fh["relevance"][()]
            else:
                out["relevance_shape"], out["relevance_dtype"] = fh["relevance"].shape, fh["relevance"].dtype
    except (OSError, KeyError, ValueError) as err:
        raise CorruptShard(f"shard {path} is unreadable or incomplete ({err})") from None
    return out


def read_shard_keys(path: Path) -> dict:
    """What a shard holds, without heatmaps or logits: ``ids``, ``label``, ``digest`` and ``skipped``."""
    return _read(path, with_relevance=False, fields=("label", "digest"))


def read_shard(path: Path) -> ShardData:
    """All arrays of a shard (raises :class:`CorruptShard` when it cannot be read)."""
    return ShardData(**_read(path, with_relevance=True))


def read_shard_fields(path: Path) -> ShardFields:
    """A shard's small fields and its relevance dataset's shape/dtype, without reading the heatmaps."""
    return ShardFields(**_read(path, with_relevance=False))


def verify_shard(path: Path, expect_count: Optional[int] = None, expect_checksum: Optional[str] = None) -> dict:
    """Reopen ``path``, recompute its checksum and compare with its attributes (and expectations)."""
    data = read_shard(path)
    try:
        with h5py.File(path, "r") as fh:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in fh.attrs.items()}
    except OSError as err:
        raise CorruptShard(f"shard {path} is unreadable ({err})") from None
    actual = checksum(data)
    if attrs.get("checksum") != actual:
        raise CorruptShard(f"shard {path} fails its checksum (stored {attrs.get('checksum')}, data {actual})")
    if expect_checksum is not None and actual != expect_checksum:
        raise CorruptShard(f"shard {path} holds other data than recorded (checksum {actual} != {expect_checksum})")
    if expect_count is not None and len(data) != expect_count:
        raise CorruptShard(f"shard {path} holds {len(data)} samples, {expect_count} expected")
    attrs["count"] = len(data)
    return attrs
