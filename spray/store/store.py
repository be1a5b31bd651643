"""The heatmap store: a folder of verified shard files presented as one HDF5 file.

Layout::

    STORE/manifest.json      provenance (model sha256, composite, preprocessing, data fingerprint, ...)
                             and the plan: shards in class-then-id order
    STORE/done.jsonl         one line per verified shard (append-only, survives kill -9)
    STORE/shards/*.h5        one file per explain task (written .tmp -> verified -> renamed)
    STORE/heatmaps.h5        the index: ``relevance`` as a virtual dataset over the shards, plus ids,
                             labels, predictions, targets and logits; classes are contiguous row ranges
    STORE/skipped.csv        samples left out, with the reason

A virtual dataset reads a missing source file silently as fill values, so the reader checks every
shard file against the manifest before it serves a single row, and refuses a store with holes.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import h5py
import numpy as np

from ..errors import ConfigError, SprayError
from .lock import StoreLock
from .shard import FIELDS, CorruptShard, read_shard_fields, verify_shard

FORMAT = 1
log = logging.getLogger("spray.store")


class StoreIncomplete(SprayError):
    """The store has missing or unverified shards; reading it would return fill values."""


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: ``count`` samples of class ``label``, ids ``first_id`` .. ``last_id``."""

    shard: int
    label: int
    count: int
    first_id: str
    last_id: str

    @property
    def filename(self) -> str:
        return f"shards/shard-{self.shard:06d}.h5"


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def identity_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class StoreWriter:
    """Creates or resumes a store for one plan; holds the store's lock while open.

    ``identity``: what must match for a resume (model, composite, preprocessing, data, options);
    ``provenance``: identity plus informational fields (versions, creation time)."""

    def __init__(self, folder: Union[str, Path], identity: dict, shards: Sequence[ShardSpec],
                 provenance: Optional[dict] = None):
        self.folder = Path(folder)
        self.identity = identity
        self.shards = list(shards)
        self.provenance = {**(provenance or {}), **identity}
        self.lock = StoreLock(self.folder)
        self.done: Dict[int, dict] = {}
        self.recomputed: List[int] = []

    # -- opening ---------------------------------------------------------------------------------
    def open(self) -> "StoreWriter":
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "shards").mkdir(exist_ok=True)
        self.lock.acquire()
        if self.lock.took_over_from:
            log.warning("took over the lock of a dead run (pid %s)", self.lock.took_over_from.get("pid"))
        try:
            self._open_manifest()
            self._scan()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _open_manifest(self) -> None:
        manifest = self.folder / "manifest.json"
        key = identity_key(self.identity)
        plan = [asdict(s) for s in self.shards]
        if manifest.exists():
            old = json.loads(manifest.read_text())
            if old.get("key") != key or old.get("shards") != plan:
                differs = sorted(k for k in set(old.get("identity", {})) | set(self.identity)
                                 if old.get("identity", {}).get(k) != self.identity.get(k))
                if not differs and old.get("shards") != plan:
                    differs = ["the shard plan (selection or shard size)"]
                raise ConfigError(
                    f"store {self.folder} was made for another run (differs in: {', '.join(differs)}); it will not "
                    f"mix heatmaps of two configurations. Give explain a new store path, or delete {self.folder} "
                    f"to start anew")
            return
        if any(self.folder.iterdir()) and not (set(p.name for p in self.folder.iterdir()) <= {"shards", ".lock"}):
            raise ConfigError(f"{self.folder} exists and is not a spray store; choose an empty or new folder")
        _write_json(manifest, {"format": FORMAT, "key": key, "identity": self.identity,
                               "provenance": self.provenance, "shards": plan,
                               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def _scan(self) -> None:
        """Delete stale temp files; accept every shard file that verifies; drop corrupt ones."""
        for tmp in (self.folder / "shards").glob("*.tmp"):
            tmp.unlink()
            log.info("deleted stale temp file %s", tmp.name)
        recorded = {}
        done_path = self.folder / "done.jsonl"
        if done_path.exists():
            for line in done_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    recorded[int(rec["shard"])] = rec
                except (ValueError, KeyError):
                    continue  # a line torn by a kill
        done_lines = []
        for spec in self.shards:
            path = self.folder / spec.filename
            if not path.exists():
                continue
            try:
                attrs = verify_shard(path, expect_checksum=recorded.get(spec.shard, {}).get("checksum"))
            except CorruptShard as err:
                log.warning("%s; recomputing shard %d", err, spec.shard)
                path.unlink()
                self.recomputed.append(spec.shard)
                continue
            rec = {"shard": spec.shard, "count": int(attrs["count"]), "checksum": attrs["checksum"],
                   "skipped": len(json.loads(attrs.get("skipped", "[]")))}
            self.done[spec.shard] = rec
            done_lines.append(json.dumps(rec))
        tmp = done_path.with_name("done.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in done_lines))
        os.replace(tmp, done_path)
        if len(self.done) < len(self.shards):
            (self.folder / "heatmaps.h5").unlink(missing_ok=True)

    # -- writing ---------------------------------------------------------------------------------
    def todo(self) -> List[ShardSpec]:
        return [s for s in self.shards if s.shard not in self.done]

    def path_of(self, spec: ShardSpec) -> Path:
        return self.folder / spec.filename

    def record(self, rec: dict) -> None:
        """Note a shard as written and verified (appends one line; safe against kills)."""
        self.done[int(rec["shard"])] = rec
        with open(self.folder / "done.jsonl", "a") as fh:
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def finalize(self) -> Path:
        """Write the index file over all shards (all must be done).

        Streams shard by shard: the heatmaps are referenced (a virtual dataset), never read, and the
        small per-sample fields are copied into pre-sized datasets, so the client's memory is one
        shard's fields whatever the size of the run."""
        missing = [s.shard for s in self.shards if s.shard not in self.done]
        if missing:
            raise StoreIncomplete(f"cannot index {self.folder}: shards {missing[:10]} are not written")
        counts = [int(self.done[spec.shard]["count"]) for spec in self.shards]  # verified on record
        n = sum(counts)
        first = next((spec for spec, count in zip(self.shards, counts) if count), None)
        if first is None:
            raise StoreIncomplete(f"{self.folder}: every sample was skipped; nothing to index (see skipped.csv)")
        head = read_shard_fields(self.path_of(first))
        layout = h5py.VirtualLayout((n,) + tuple(head.relevance_shape[1:]), head.relevance_dtype)
        tmp = self.folder / "heatmaps.h5.tmp"
        skipped_tmp = self.folder / "skipped.csv.tmp"
        with h5py.File(tmp, "w") as fh, open(skipped_tmp, "w", newline="") as skipped_fh:
            writer = csv.writer(skipped_fh)
            writer.writerow(["id", "index", "reason"])
            fields = {name: fh.create_dataset(name, (n,) + getattr(head, name).shape[1:], getattr(head, name).dtype)
                      for name in FIELDS[1:]}
            ids = fh.create_dataset("ids", (n,), dtype=h5py.string_dtype())
            shard_column = fh.create_dataset("shard", (n,), dtype=np.int64)
            offset = 0
            for spec, count in zip(self.shards, counts):
                part = read_shard_fields(self.path_of(spec))
                if len(part) != count:
                    raise CorruptShard(f"shard {self.path_of(spec)} holds {len(part)} samples, its record says "
                                       f"{count}; delete it and re-run the same job to recompute it")
                for s in part.skipped:
                    writer.writerow([s["id"], s["index"], s["reason"]])
                if count:
                    rows = slice(offset, offset + count)
                    layout[rows] = h5py.VirtualSource(spec.filename, "relevance", shape=part.relevance_shape)
                    for name, dataset in fields.items():
                        dataset[rows] = getattr(part, name)
                    ids[rows] = np.array(part.ids, dtype=object)
                    shard_column[rows] = spec.shard
                offset += count
            fh.create_virtual_dataset("relevance", layout, fillvalue=np.nan)
            fh.attrs["provenance"] = json.dumps(self.provenance, sort_keys=True, default=str)
            fh.attrs["format"] = FORMAT
        os.replace(tmp, self.folder / "heatmaps.h5")
        os.replace(skipped_tmp, self.folder / "skipped.csv")
        return self.folder / "heatmaps.h5"

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> "StoreWriter":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


class HeatmapStore:
    """Read access to a finished store; refuses stores with missing shards."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not manifest.is_file():
            raise ConfigError(f"{self.folder} is not a spray heatmap store (no manifest.json); run `spray explain` "
                              f"to make one")
        self.manifest = json.loads(manifest.read_text())
        self.shards = [ShardSpec(**s) for s in self.manifest["shards"]]
        missing = [s.filename for s in self.shards if not (self.folder / s.filename).is_file()]
        if missing:
            raise StoreIncomplete(f"store {self.folder} has holes: {len(missing)} of {len(self.shards)} shard files "
                                  f"missing (e.g. {missing[:3]}); reading it would return fill values. Re-run the "
                                  f"same explain job to recompute them")
        index = self.folder / "heatmaps.h5"
        if not index.is_file():
            raise StoreIncomplete(f"store {self.folder} is unfinished (no heatmaps.h5); re-run the same explain job "
                                  f"to finish it")
        self._fh = h5py.File(index, "r")
        fh = self._fh
        self.ids = [i.decode() if isinstance(i, bytes) else str(i) for i in fh["ids"][()]]
        self.labels = fh["label"][()]
        self.predictions = fh["prediction"][()]
        self.targets = fh["target"][()]
        self.index = fh["index"][()]
        self.provenance = json.loads(fh.attrs["provenance"])

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "HeatmapStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def shape(self):
        return self._fh["relevance"].shape

    @property
    def classes(self) -> List[int]:
        return sorted(int(c) for c in np.unique(self.labels))

    @property
    def logits(self) -> np.ndarray:
        return self._fh["logits"][()]

    def rows_of(self, label: int, by: str = "label") -> np.ndarray:
        """Row numbers of class ``label``; by label they are one contiguous range."""
        values = self.labels if by == "label" else self.predictions if by == "prediction" else None
        if values is None:
            raise ConfigError(f"group rows by 'label' or 'prediction', not {by!r}")
        return np.flatnonzero(values == label)

    def relevance(self, rows: Union[slice, np.ndarray, Sequence[int]], dtype=np.float32) -> np.ndarray:
        """Relevance maps of ``rows``; contiguous runs are read as slabs (fast), not row by row."""
        data = self._fh["relevance"]
        if isinstance(rows, slice):
            return data[rows].astype(dtype)
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return np.empty((0,) + data.shape[1:], dtype)
        out = np.empty((len(rows),) + data.shape[1:], dtype)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        start = 0
        for run in np.split(np.arange(len(rows)), breaks):
            lo, hi = sorted_rows[run[0]], sorted_rows[run[-1]] + 1
            out[order[start:start + len(run)]] = data[lo:hi]
            start += len(run)
        return out

    def verify(self) -> List[str]:
        """Recompute every shard's checksum; returns the problems found (empty: intact)."""
        problems = []
        done = {}
        for line in (self.folder / "done.jsonl").read_text().splitlines() if (self.folder / "done.jsonl").exists() else []:
            try:
                rec = json.loads(line)
                done[int(rec["shard"])] = rec
            except (ValueError, KeyError):
                continue
        for spec in self.shards:
            try:
                verify_shard(self.folder / spec.filename, expect_checksum=done.get(spec.shard, {}).get("checksum"))
            except CorruptShard as err:
                problems.append(str(err))
        return problems

    def describe(self) -> dict:
        labels, counts = np.unique(self.labels, return_counts=True)
        skipped = 0
        if (self.folder / "skipped.csv").exists():
            skipped = max(0, len((self.folder / "skipped.csv").read_text().splitlines()) - 1)
        size = sum(p.stat().st_size for p in (self.folder / "shards").glob("*.h5"))
        return {"store": str(self.folder), "samples": len(self), "shards": len(self.shards),
                "relevance_shape": list(self.shape[1:]), "dtype": str(self._fh["relevance"].dtype),
                "classes": {int(c): int(k) for c, k in zip(labels, counts)}, "skipped": skipped,
                "bytes_on_disk": size, "bytes_per_sample": round(size / max(1, len(self)), 1),
                "accuracy": float(np.mean(self.labels == self.predictions)) if len(self) else None,
                "provenance": self.provenance}
