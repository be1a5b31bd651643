"""The heatmap store: content-addressed shard files presented as one HDF5 file.

Layout::

    STORE/manifest.json      the store's identity (model sha256, composite, preprocessing, dtype, ...):
                             what a heatmap depends on besides its sample; another identity is refused
                             (the provenance of the current content, data and versions, is in the index)
    STORE/done.jsonl         one line per verified shard: file, count, checksum, size and mtime
    STORE/shards/*.h5        one file per explain task (written .tmp -> verified -> renamed), named by
                             a content address: sha256 over the identity and its samples' (id, label,
                             content digest)
    STORE/heatmaps.h5        the index over the current selection, class-contiguous, (label, id) order:
                             ``relevance`` as a virtual dataset over the shards, ids, labels, predictions,
                             targets, logits, content digests, and the table of shard files it reads;
                             the samples' positions in the data source (``index``) and the data spec
                             (provenance) they point into, through which the analysis and the flip test
                             read pixels: data that moves or is reordered rewrites the index, recomputes no heatmap
    STORE/digests.h5         the cache of sample digests (see :mod:`spray.store.digests`)
    STORE/skipped.csv        selected samples left out, with the reason

A sample's heatmap is found by its key (id, label, content digest) in any verified shard, so a run
over a grown or changed data set computes only the samples that are new or changed, and an index
over old and new shards is the same, row for row, as the index of a fresh run. A shard whose file
changed since it was recorded is verified again (checksum) before it is trusted.

A virtual dataset reads a missing source file silently as fill values, so the reader checks every
shard file it references before it serves a single row, and refuses a store with holes.
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import h5py
import numpy as np

from ..errors import ConfigError, SprayError, storage_error
from .lock import StoreLock
from .shard import DIGEST_DTYPE, CorruptShard, read_shard_fields, read_shard_keys, verify_shard, write_h5

FORMAT = 2
INDEX_IN_MEMORY_BYTES = 256 * 2**20  # a smaller index is built in memory and written in one write
log = logging.getLogger("spray.store")
SampleKey = Tuple[str, int, str]  # (id, label, content digest): what a heatmap is computed from


class StoreIncomplete(SprayError):
    """The store has missing or unverified shards; reading it would return fill values."""


@dataclass(frozen=True)
class ShardSpec:
    """One planned shard: ``count`` samples of class ``label``, ids ``first_id`` .. ``last_id``;
    ``name`` is its content address."""

    name: str
    label: int
    count: int
    first_id: str
    last_id: str

    @property
    def filename(self) -> str:
        return f"shards/{self.label:08d}-{self.name}.h5"


@dataclass
class Selection:
    """The samples a store is asked to hold, in index order (label, then id): their ids, labels,
    content digests and positions in the data source."""

    ids: List[str]
    labels: np.ndarray
    digests: List[str]
    index: np.ndarray
    data: Optional[dict] = None  # the data spec ``index`` points into

    def __len__(self) -> int:
        return len(self.ids)

    def source(self) -> str:
        """sha256 over the data spec and the selected samples' positions in it: where their pixels
        are read from (the analysis and the flip test read them through the index)."""
        h = hashlib.sha256(json.dumps(self.data, sort_keys=True, default=str).encode())
        h.update(np.ascontiguousarray(self.index, dtype=np.int64).tobytes())
        return h.hexdigest()

    def keys(self) -> Iterator[SampleKey]:
        return zip(self.ids, (int(x) for x in self.labels), self.digests)

    def digest(self, store_key: str) -> str:
        """sha256 over the store's identity key and every selected sample's key, in order."""
        return _rows_digest(store_key, self.ids, self.labels, self.digests)


def _rows_digest(store_key: str, ids: Sequence[str], labels: Sequence[int], digests: Sequence) -> str:
    h = hashlib.sha256(store_key.encode())
    for i, label, d in zip(ids, labels, digests):
        h.update(f"{i}\t{int(label)}\t{d.decode() if isinstance(d, bytes) else d}\n".encode())
    return h.hexdigest()


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def identity_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def _stat(path: Path) -> Tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _read_done(folder: Path) -> Dict[str, dict]:
    """The last record per shard file from ``done.jsonl`` (a line torn by a kill is ignored)."""
    done: Dict[str, dict] = {}
    path = folder / "done.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                done[str(rec["file"])] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return done


def check_manifest(folder: Path, identity: dict) -> Optional[dict]:
    """The store's manifest, checked against ``identity`` (None when there is no store yet)."""
    manifest = Path(folder) / "manifest.json"
    if not manifest.exists():
        return None
    old = json.loads(manifest.read_text())
    if old.get("format") != FORMAT:
        raise ConfigError(f"store {folder} was written by another version of spray (store format {old.get('format')}, "
                          f"this one reads {FORMAT}); delete {folder} to start anew, or give explain a new store path")
    if old.get("key") != identity_key(identity):
        differs = sorted(k for k in set(old.get("identity", {})) | set(identity)
                         if old.get("identity", {}).get(k) != identity.get(k))
        raise ConfigError(
            f"store {folder} was made for another run (differs in: {', '.join(differs)}); it will not mix "
            f"heatmaps of two configurations. Give explain a new store path, or delete {folder} to start anew")
    return old


@dataclass
class Finalized:
    """What :meth:`StoreWriter.finalize` did: index rows, skipped samples, shard files, and whether
    the index was rewritten."""

    samples: int
    skipped: int
    shards: int
    rewritten: bool
    removed: List[str] = field(default_factory=list)


class StoreWriter:
    """Creates or updates a store of one identity; holds the store's lock while open.

    ``identity``: what a heatmap depends on besides its sample (model, composite, preprocessing,
    dtype, ...); ``provenance``: informational fields (versions, creation time, the data)."""

    def __init__(self, folder: Union[str, Path], identity: dict, provenance: Optional[dict] = None):
        self.folder = Path(folder)
        self.identity = identity
        self.key = identity_key(identity)
        self.provenance = {**(provenance or {}), **identity}
        self.lock = StoreLock(self.folder)
        self.done: Dict[str, dict] = {}
        self.dropped: List[str] = []    # shard files that failed verification (deleted, recomputed)
        self.lost: List[str] = []       # recorded shard files that are gone
        self._rows: Dict[SampleKey, Tuple[str, int]] = {}
        self._skips: Dict[SampleKey, str] = {}

    # -- opening ---------------------------------------------------------------------------------
    def open(self) -> "StoreWriter":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except OSError as err:
            raise storage_error(err, self.folder) from None
        if self.lock.took_over_from:
            log.warning("took over the lock of a dead run (pid %s)", self.lock.took_over_from.get("pid"))
        try:
            if check_manifest(self.folder, self.identity) is None:
                if any(p.name not in ("shards", ".lock", "digests.h5") and not p.name.endswith(".tmp")
                       for p in self.folder.iterdir()):
                    raise ConfigError(f"{self.folder} exists and is not a spray store; choose an empty or new folder")
                _write_json(self.folder / "manifest.json",
                            {"format": FORMAT, "key": self.key, "identity": self.identity,
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            (self.folder / "shards").mkdir(exist_ok=True)
            self._scan()
        except OSError as err:
            self.lock.release()
            raise storage_error(err, self.folder) from None
        except BaseException:
            self.lock.release()
            raise
        return self

    def _scan(self) -> None:
        """Delete stale temp files; trust every recorded shard whose file is unchanged (size and
        mtime), verify the others by checksum, drop what fails; then catalogue their samples."""
        for tmp in list(self.folder.glob("*.tmp")) + list((self.folder / "shards").glob("*.tmp")):
            tmp.unlink()
            log.info("deleted stale temp file %s", tmp.name)
        recorded = _read_done(self.folder)
        on_disk = {f"shards/{p.name}" for p in (self.folder / "shards").glob("*.h5")}
        self.lost = sorted(set(recorded) - on_disk)
        for name in self.lost:
            log.warning("shard %s is missing (deleted?); its %s samples are computed again", name,
                        recorded[name].get("count"))
        for name in sorted(on_disk):
            path = self.folder / name
            rec = recorded.get(name)
            size, mtime = _stat(path)
            if rec is not None and (rec.get("size"), rec.get("mtime_ns")) == (size, mtime):
                self.done[name] = rec
                continue
            try:
                attrs = verify_shard(path, expect_checksum=rec.get("checksum") if rec else None)
            except CorruptShard as err:
                log.warning("%s; deleting it, its samples are computed again", err)
                path.unlink()
                self.dropped.append(name)
                continue
            self.done[name] = {**(rec or {}), "file": name, "count": int(attrs["count"]),
                               "checksum": attrs["checksum"], "size": size, "mtime_ns": mtime,
                               "skipped": len(json.loads(attrs.get("skipped", "[]")))}
        tmp = self.folder / "done.jsonl.tmp"
        tmp.write_text("".join(json.dumps(self.done[name]) + "\n" for name in sorted(self.done)))
        os.replace(tmp, self.folder / "done.jsonl")
        for name in sorted(self.done):
            self._catalogue(name)

    def _catalogue(self, name: str) -> None:
        keys = read_shard_keys(self.folder / name)
        for row, key in enumerate(zip(keys["ids"], (int(x) for x in keys["label"]),
                                      (d.decode() for d in keys["digest"]))):
            self._rows.setdefault(key, (name, row))
        for s in keys["skipped"]:
            self._skips.setdefault((s["id"], int(s["label"]), s["digest"]), s["reason"])

    # -- what is there, what is missing ------------------------------------------------------------
    def missing(self, selection: Selection, retry_skipped: bool) -> np.ndarray:
        """Mask of the selected samples the store holds no heatmap for (nor, unless
        ``retry_skipped``, a recorded skip)."""
        return np.array([key not in self._rows and (retry_skipped or key not in self._skips)
                         for key in selection.keys()], dtype=bool)

    def path_of(self, spec: ShardSpec) -> Path:
        return self.folder / spec.filename

    def invalidate_index(self) -> None:
        """Readers must not take the index of the last run for this one while shards are computed."""
        (self.folder / "heatmaps.h5").unlink(missing_ok=True)

    def record(self, rec: dict) -> None:
        """Note a shard as written and verified (appends one line; safe against kills)."""
        name = str(rec["file"])
        size, mtime = _stat(self.folder / name)
        rec = {**rec, "size": size, "mtime_ns": mtime}
        try:
            with open(self.folder / "done.jsonl", "a") as fh:
                fh.write(json.dumps(rec) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            raise storage_error(err, self.folder / "done.jsonl") from None
        self.done[name] = rec
        self._catalogue(name)

    # -- the index -------------------------------------------------------------------------------
    def finalize(self, selection: Selection) -> Finalized:
        """Write the index over ``selection`` (every sample must be held or skipped); unchanged
        when it already describes the same rows in the same files.

        Streams shard by shard: the heatmaps are referenced (a virtual dataset), never read, and the
        small per-sample fields are copied into pre-sized datasets, so the client's memory is one
        shard's fields whatever the size of the run."""
        sources, skipped = [], []
        for pos, key in enumerate(selection.keys()):
            where = self._rows.get(key)
            if where is not None:
                sources.append(where)
            elif key in self._skips:
                skipped.append((pos, self._skips[key]))
            else:
                raise StoreIncomplete(f"cannot index {self.folder}: sample {key[0]!r} has no heatmap yet; re-run "
                                      f"the same explain job to compute it")
        if not sources:
            raise StoreIncomplete(f"{self.folder}: every sample was skipped; nothing to index (see skipped.csv)")
        keep = np.ones(len(selection), dtype=bool)
        keep[[p for p, _ in skipped]] = False
        rows = np.flatnonzero(keep)
        files = list(dict.fromkeys(f for f, _ in sources))
        file_id = {f: k for k, f in enumerate(files)}
        src_file = np.array([file_id[f] for f, _ in sources], dtype=np.int32)
        src_row = np.array([r for _, r in sources], dtype=np.int64)
        selected = selection.digest(self.key)
        content = hashlib.sha256(f"{selected}\n".encode() + "\n".join(
            selection.ids[p] for p, _ in skipped).encode()).hexdigest()
        table = [(f, self.done[f]["size"], self.done[f]["mtime_ns"], self.done[f]["checksum"]) for f in files]
        source = selection.source()
        layout_key = hashlib.sha256(json.dumps([content, source, table, src_file.tolist(),
                                                src_row.tolist()]).encode()).hexdigest()
        index_path = self.folder / "heatmaps.h5"
        rewritten = _index_attr(index_path, "layout") != layout_key
        try:
            if rewritten:
                self._write_index(selection, rows, files, src_file, src_row, table,
                                  {"selection": selected, "content": content, "source": source,
                                   "layout": layout_key})
                _write_skipped(self.folder / "skipped.csv",
                               [(selection.ids[p], int(selection.index[p]), reason) for p, reason in skipped])
            removed = self._remove_superseded(selection, set(files))
        except OSError as err:
            raise storage_error(err, self.folder) from None
        return Finalized(len(rows), len(skipped), len(files), rewritten, removed)

    def _write_index(self, selection: Selection, rows: np.ndarray, files: List[str], src_file: np.ndarray,
                     src_row: np.ndarray, table: list, digests: dict) -> None:
        n = len(rows)
        # runs of index rows that are consecutive rows of one shard file: one mapping or copy each
        breaks = np.flatnonzero((np.diff(src_file) != 0) | (np.diff(src_row) != 1)) + 1
        starts = np.concatenate([[0], breaks])
        stops = np.concatenate([breaks, [n]])
        runs_of_file: Dict[int, List[Tuple[int, int]]] = {}
        for a, b in zip(starts, stops):
            runs_of_file.setdefault(int(src_file[a]), []).append((int(a), int(b)))
        head = read_shard_fields(self.folder / files[0])

        def build(fh: h5py.File) -> None:
            layout = h5py.VirtualLayout((n,) + tuple(head.relevance_shape[1:]), head.relevance_dtype)
            fields = {name: fh.create_dataset(name, (n,) + getattr(head, name).shape[1:], getattr(head, name).dtype)
                      for name in ("prediction", "target", "logits")}
            for k, name in enumerate(files):
                part = read_shard_fields(self.folder / name)
                if len(part) != self.done[name]["count"]:
                    raise CorruptShard(f"shard {self.folder / name} holds {len(part)} samples, its record says "
                                       f"{self.done[name]['count']}; delete it and re-run the same explain job")
                source = h5py.VirtualSource(name, "relevance", shape=part.relevance_shape)
                for a, b in runs_of_file[k]:
                    r0 = int(src_row[a])
                    layout[a:b] = source[r0:r0 + (b - a)]
                    for field_name, dataset in fields.items():
                        dataset[a:b] = getattr(part, field_name)[r0:r0 + (b - a)]
            fh.create_virtual_dataset("relevance", layout, fillvalue=np.nan)
            fh.create_dataset("ids", data=np.array([selection.ids[r] for r in rows], dtype=object),
                              dtype=h5py.string_dtype())
            fh.create_dataset("index", data=selection.index[rows].astype(np.int64))
            fh.create_dataset("label", data=selection.labels[rows].astype(np.int64))
            fh.create_dataset("digest", data=np.array([selection.digests[r] for r in rows], dtype=DIGEST_DTYPE))
            fh.create_dataset("shard", data=src_file)
            fh.create_dataset("shard_row", data=src_row)
            g = fh.create_group("shard_files")
            g.create_dataset("file", data=np.array([t[0] for t in table], dtype=object), dtype=h5py.string_dtype())
            g.create_dataset("size", data=np.array([t[1] for t in table], dtype=np.int64))
            g.create_dataset("mtime_ns", data=np.array([t[2] for t in table], dtype=np.int64))
            g.create_dataset("checksum", data=np.array([t[3] for t in table], dtype=object), dtype=h5py.string_dtype())
            fh.attrs["provenance"] = json.dumps(self.provenance, sort_keys=True, default=str)
            fh.attrs["format"] = FORMAT
            fh.attrs["key"] = self.key
            for name, value in digests.items():
                fh.attrs[name] = value

        per_row = head.logits[:1].nbytes + 120  # logits, small fields, id, mapping share
        write_h5(self.folder / "heatmaps.h5", build, in_memory=n * per_row < INDEX_IN_MEMORY_BYTES)

    def _remove_superseded(self, selection: Selection, referenced: set) -> List[str]:
        """Delete shard files that hold only older versions of samples selected now (each of their
        ids is selected with another content or label); files with anything else are kept."""
        current = dict(zip(selection.ids, zip((int(x) for x in selection.labels), selection.digests)))
        removed = []
        for name in sorted(set(self.done) - referenced):
            keys = read_shard_keys(self.folder / name)
            held = list(zip(keys["ids"], (int(x) for x in keys["label"]), (d.decode() for d in keys["digest"])))
            held += [(s["id"], int(s["label"]), s["digest"]) for s in keys["skipped"]]
            if held and all(i in current and current[i] != (label, d) for i, label, d in held):
                (self.folder / name).unlink()
                self.done.pop(name)
                removed.append(name)
        if removed:
            tmp = self.folder / "done.jsonl.tmp"
            tmp.write_text("".join(json.dumps(self.done[name]) + "\n" for name in sorted(self.done)))
            os.replace(tmp, self.folder / "done.jsonl")
            log.info("removed %d shard files that held only earlier versions of changed samples", len(removed))
        return removed

    def close(self) -> None:
        self.lock.release()

    def __enter__(self) -> "StoreWriter":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def _index_attr(path: Path, name: str) -> Optional[str]:
    try:
        with h5py.File(path, "r") as fh:
            return fh.attrs.get(name)
    except (OSError, KeyError):
        return None


def _write_skipped(path: Path, rows: Sequence[tuple]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "index", "reason"])
        writer.writerows(rows)
    os.replace(tmp, path)


def store_content(folder: Union[str, Path], identity: dict, selection: Selection, retry_skipped: bool) -> Optional[str]:
    """None when the store at ``folder`` already holds exactly ``selection`` for ``identity`` (its
    index is current and intact); else why it does not. Reads only."""
    folder = Path(folder)
    try:
        if check_manifest(folder, identity) is None:
            return "no store yet"
    except ConfigError:
        return "the store was made for another configuration"
    try:
        with HeatmapStore(folder) as store:
            if store.selection != selection.digest(identity_key(identity)):
                return "the data or the selection changed"
            if store.source != selection.source():
                return "the data moved or its samples were reordered (the index is rewritten, no heatmap recomputed)"
            if retry_skipped and store.skipped:
                return f"{store.skipped} skipped samples are tried again (explain.on_error: stop)"
    except (StoreIncomplete, CorruptShard) as err:
        return str(err)
    return None


class HeatmapStore:
    """Read access to a finished store; refuses stores with missing or changed shards."""

    def __init__(self, folder: Union[str, Path]):
        self.folder = Path(folder)
        manifest = self.folder / "manifest.json"
        if not manifest.is_file():
            raise ConfigError(f"{self.folder} is not a spray heatmap store (no manifest.json); run `spray explain` "
                              f"to make one")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ConfigError(f"store {self.folder} was written by another version of spray (store format "
                              f"{self.manifest.get('format')}, this one reads {FORMAT}); delete it and run the "
                              f"explain stage again")
        index = self.folder / "heatmaps.h5"
        if not index.is_file():
            raise StoreIncomplete(f"store {self.folder} is unfinished (no heatmaps.h5); re-run the same explain job "
                                  f"to finish it")
        try:
            self._fh = h5py.File(index, "r")
            fh = self._fh
            self.ids = list(fh["ids"].asstr()[()])
            self.labels = fh["label"][()]
            self.predictions = fh["prediction"][()]
            self.targets = fh["target"][()]
            self.index = fh["index"][()]
            self.digests = fh["digest"][()]
            self._shard = fh["shard"][()]
            g = fh["shard_files"]
            self.shard_files = list(g["file"].asstr()[()])
            self._recorded = list(zip(g["size"][()], g["mtime_ns"][()], g["checksum"].asstr()[()]))
            self.provenance = json.loads(fh.attrs["provenance"])
            self.key = fh.attrs["key"]
            self.selection = fh.attrs["selection"]
            self.content = fh.attrs["content"]
            self.source = fh.attrs["source"]
        except (OSError, KeyError) as err:
            raise CorruptShard(f"the index {index} of store {self.folder} is unreadable ({err}); re-run the same "
                               f"explain job to rewrite it") from None
        self.skipped = 0
        if (self.folder / "skipped.csv").exists():
            self.skipped = max(0, len((self.folder / "skipped.csv").read_text().splitlines()) - 1)
        self._check_shards()

    def _check_shards(self) -> None:
        """Every shard the index reads must exist; one whose size or mtime changed since it was
        indexed must still pass its checksum."""
        missing = [f for f in self.shard_files if not (self.folder / f).is_file()]
        if missing:
            self.close()
            raise StoreIncomplete(f"store {self.folder} has holes: {len(missing)} of {len(self.shard_files)} shard "
                                  f"files missing (e.g. {missing[:3]}); reading it would return fill values. Re-run "
                                  f"the same explain job (`spray explain JOB` or `spray run JOB`) to recompute them")
        for k, (name, (size, mtime, checksum)) in enumerate(zip(self.shard_files, self._recorded)):
            if _stat(self.folder / name) != (int(size), int(mtime)):
                try:
                    verify_shard(self.folder / name, expect_checksum=checksum)
                except CorruptShard as err:
                    self.close()
                    raise CorruptShard(self._fix(err, k)) from None

    def _fix(self, err: Exception, shard: int) -> str:
        n = int((self._shard == shard).sum())
        return (f"{err}. Delete {self.folder / self.shard_files[shard]} and re-run the explain stage (`spray run JOB` "
                f"or `spray explain JOB`) to recompute its {n} samples")

    def close(self) -> None:
        if getattr(self, "_fh", None) is not None:
            self._fh.close()
            self._fh = None

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

    def class_digest(self, label: int, by: str = "label") -> str:
        """sha256 over the store's identity and the (id, label, content digest) of the class's rows:
        it changes exactly when one of the class's heatmaps would (a sample added, removed, changed
        or relabelled, another model or composite), so a class's analysis can be reused under it."""
        rows = self.rows_of(label, by)
        return _rows_digest(f"{self.key}\t{by}\t{int(label)}", [self.ids[r] for r in rows], self.labels[rows],
                            self.digests[rows])

    def relevance(self, rows: Union[slice, np.ndarray, Sequence[int]], dtype=np.float32) -> np.ndarray:
        """Relevance maps of ``rows``; contiguous runs are read as slabs (fast), not row by row.
        A shard that fails on read (checksum, a flipped byte) or has gone is named, with the fix."""
        data = self._fh["relevance"]
        if isinstance(rows, slice):
            rows = np.arange(len(self))[rows]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows),) + data.shape[1:], dtype)
        if len(rows) == 0:
            return out
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) != 1) + 1
        start = 0
        try:
            for run in np.split(np.arange(len(rows)), breaks):
                lo, hi = sorted_rows[run[0]], sorted_rows[run[-1]] + 1
                out[order[start:start + len(run)]] = data[lo:hi]
                start += len(run)
        except OSError as err:
            raise self._read_failed(rows, err) from None
        if np.isnan(out).any():  # a virtual dataset reads a vanished shard as its fill value
            raise self._read_failed(rows, None)
        return out

    def _read_failed(self, rows: np.ndarray, err: Optional[OSError]) -> SprayError:
        for k in np.unique(self._shard[rows]):
            path = self.folder / self.shard_files[k]
            if not path.is_file():
                return StoreIncomplete(f"shard {path} of store {self.folder} disappeared while it was read. Re-run "
                                       f"the explain stage (`spray run JOB` or `spray explain JOB`) to recompute it")
            try:
                verify_shard(path, expect_checksum=self._recorded[k][2])
            except CorruptShard as bad:
                return CorruptShard(self._fix(bad, int(k)))
        return CorruptShard(f"reading heatmaps from store {self.folder} failed ({err}); run `spray inspect "
                            f"{self.folder} --verify` to find the damaged file")

    def verify(self) -> List[str]:
        """Recompute every referenced shard's checksum; returns the problems found (empty: intact)."""
        problems = []
        for name, (_, _, checksum) in zip(self.shard_files, self._recorded):
            try:
                verify_shard(self.folder / name, expect_checksum=checksum)
            except CorruptShard as err:
                problems.append(str(err))
        return problems

    def describe(self) -> dict:
        labels, counts = np.unique(self.labels, return_counts=True)
        size = sum((self.folder / f).stat().st_size for f in self.shard_files)
        on_disk = sum(p.stat().st_size for p in (self.folder / "shards").glob("*.h5"))
        return {"store": str(self.folder), "samples": len(self), "shards": len(self.shard_files),
                "relevance_shape": list(self.shape[1:]), "dtype": str(self._fh["relevance"].dtype),
                "classes": {int(c): int(k) for c, k in zip(labels, counts)}, "skipped": self.skipped,
                "bytes_on_disk": on_disk, "bytes_per_sample": round(size / max(1, len(self)), 1),
                "unreferenced_bytes": on_disk - size, "content": self.content,
                "accuracy": float(np.mean(self.labels == self.predictions)) if len(self) else None,
                "provenance": self.provenance}

