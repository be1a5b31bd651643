"""The explain stage: hash the selected samples, explain those the store lacks, index them all.

A sample's heatmap is stored under (id, label, content digest), so a run over a grown or changed
data set explains only the new or changed samples and reuses every other heatmap (the log and the
result say how many of each); a run after a crash resumes with the shards it had not finished.

Distribution is :mod:`spray.cluster` (dask.distributed): a LocalCluster by default, an existing
scheduler by address, or a synchronous in-process mode for debugging. Every path is made absolute
here, before a task is shipped. A killed worker's task is re-run elsewhere by the scheduler; shard
files are written atomically, so nothing is written twice or half.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import h5py
import numpy as np

from ..cluster import ClusterSpec, open_client, run_bounded
from ..data.open import open_source
from ..data.sources import Source, select
from ..errors import SprayError
from ..models.loading import check_model, load_model, model_fingerprint
from ..store import Selection, StoreWriter, load_digests, save_digests, store_content
from .._imports import file_sha256
from .plan import make_plan
from .task import ExplainSpec, explain_shard, resolve_composite

log = logging.getLogger("spray.explain")


@dataclass
class ExplainResult:
    """What the explain stage did: samples indexed and skipped, shards and samples computed or
    reused, and what changed since the store's last index (``changes``: new, changed, removed ids)."""

    store: Path
    samples: int
    shards: int
    computed: int
    reused: int
    recomputed: List[str]
    skipped: int
    seconds: float
    computed_samples: int = 0
    reused_samples: int = 0
    changes: Optional[Dict[str, int]] = None
    hashed: Dict[str, float] = field(default_factory=dict)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["store"] = str(self.store)
        out["seconds"] = round(self.seconds, 2)
        out["computed_shards"], out["reused_shards"] = out.pop("computed"), out.pop("reused")
        return out


@dataclass
class Prepared:
    """The checked spec (with its input shape), the store identity, and the selection with digests."""

    spec: ExplainSpec
    identity: dict
    provenance: dict
    selection: Selection
    source: Source
    signatures: list
    cache: dict
    hashed: Dict[str, float]


def versions() -> Dict[str, str]:
    import torch

    from .. import __version__
    return {"spray": __version__, "torch": torch.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version, "numpy": np.__version__}


def _classes_origin(source: Source) -> str:
    if not source.classes_from_labels:
        return ""
    return (f" (counted from the largest label, {len(source.classes) - 1}, as the data gives no class list): "
            f"labels must lie in 0..(model outputs - 1); fix the labels, or give data.classes")


def _model_identity(model_spec: dict) -> dict:
    """What of the model spec a heatmap depends on besides its weights (hashed in model_sha256):
    the factory (its file's content, not where it lies) and its arguments."""
    out = {k: v for k, v in model_spec.items() if k not in ("weights", "pickled", "factory")}
    factory = model_spec.get("factory")
    if factory:
        location, _, attr = factory.rpartition(":")
        out["factory"] = f"sha256:{file_sha256(location)}:{attr}" if location.endswith(".py") else factory
    return out


def prepare(spec: ExplainSpec, classes: Optional[Sequence] = None, ids: Optional[Sequence[str]] = None,
            store: Optional[Path] = None) -> Prepared:
    """Open the data, check the model on one sample, compute the store identity and the selection
    (in (label, id) order) with the content digest of every sample (cached in ``store``)."""
    source = open_source(spec.data)
    selected = select(source, classes, ids)
    if len(selected) == 0:
        raise SprayError("the selection is empty: no samples to explain (check data / classes / ids)")
    preprocess = spec.make_preprocess()
    model = load_model(**spec.model)
    first = int(selected[0])
    sample = preprocess(source.load(first), source.location(first))
    check_model(model, sample, len(source.classes), _classes_origin(source))
    spec = replace(spec, input_shape=tuple(sample.shape))
    weights = [spec.model.get("weights"), spec.model.get("pickled")]
    # what a heatmap depends on besides its sample; explain.on_error, the data's location and the
    # selection decide which samples are explained, never what a heatmap holds
    identity = {"model_sha256": model_fingerprint(model, weights), "model": _model_identity(spec.model),
                "composite": resolve_composite(spec.composite, preprocess), "preprocess": preprocess.describe(),
                "input_shape": list(sample.shape), "target": spec.target, "dtype": spec.dtype,
                "channels": spec.channels}
    provenance = {"versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "data": source.describe(),
                  "data_spec": spec.data, "model_spec": spec.model, "classes": source.classes,
                  "selection": {"classes": list(classes) if classes is not None else None,
                                "ids": list(ids) if ids is not None else None}}
    order = np.array(sorted(selected.tolist(), key=lambda i: (int(source.labels[i]), source.ids[i])), dtype=np.int64)
    cache = load_digests(store) if store is not None else {}
    started = time.perf_counter()
    digests, signatures = source.digests(order, cache)
    unchanged = sum(1 for i, s in zip(order, signatures)
                    if s is not None and cache.get(source.ids[i], (None,))[0] == s)
    hashed = {"samples": len(order), "read": len(order) - unchanged, "seconds": round(time.perf_counter() - started, 2)}
    log.info("data: %d samples, %d hashed, %d unchanged since the last run (size and mtime) in %.1f s",
             len(order), hashed["read"], unchanged, hashed["seconds"])
    selection = Selection([source.ids[i] for i in order], source.labels[order].astype(np.int64), digests, order,
                          spec.data)
    return Prepared(spec, identity, provenance, selection, source, signatures, cache, hashed)


def _changes(store: Path, selection: Selection) -> Optional[Dict[str, int]]:
    """New, changed and removed sample ids against the store's last index (None: no index)."""
    try:
        with h5py.File(store / "heatmaps.h5", "r") as fh:
            old = dict(zip(fh["ids"].asstr()[()], zip(fh["label"][()].tolist(), fh["digest"][()])))
    except (OSError, KeyError):
        return None
    new = changed = 0
    for i, label, d in selection.keys():
        before = old.pop(i, None)
        if before is None:
            new += 1
        elif before != (label, d.encode()):
            changed += 1
    return {"new": new, "changed": changed, "removed": len(old)}


def run_explain(spec: ExplainSpec, store: Path, *, classes: Optional[Sequence] = None,
                ids: Optional[Sequence[str]] = None, shard_size: int = 256,
                cluster: Optional[ClusterSpec] = None, client=None, progress: bool = True,
                on_shard: Optional[Callable[[dict], None]] = None) -> ExplainResult:
    """Explain every selected sample the store lacks into ``store``, and index the selection."""
    from tqdm import tqdm

    started = time.perf_counter()
    cluster = cluster or ClusterSpec()
    store = Path(store).expanduser().absolute()
    prep = prepare(spec.with_absolute_paths(), classes, ids, store)
    selection, spec = prep.selection, prep.spec
    retry = spec.on_error == "stop"  # samples an earlier run skipped are tried again, and stop the run if bad
    why = store_content(store, prep.identity, selection, retry)
    if why is None:
        save_digests(store, selection.ids, prep.signatures, selection.digests, prep.cache)
        result = _reused(store, selection, prep.hashed, time.perf_counter() - started)
        log.info("store %s is up to date: %d samples, every heatmap reused", store, result.samples)
        return result
    with StoreWriter(store, prep.identity, prep.provenance) as writer:
        save_digests(store, selection.ids, prep.signatures, selection.digests, prep.cache)
        todo = writer.missing(selection, retry)
        tasks = make_plan(selection, todo, shard_size, writer.key)
        changes = _changes(store, selection)
        if tasks:
            writer.invalidate_index()
        broken = writer.dropped + writer.lost
        log.info("store %s: %d samples selected, %d heatmaps reused, %d to explain in %d shards%s%s", store,
                 len(selection), len(selection) - int(todo.sum()), int(todo.sum()), len(tasks),
                 "" if changes is None else " (since the last index: {new} new, {changed} changed, {removed} "
                                            "removed)".format(**changes),
                 f"; recomputing {len(broken)} missing or corrupt shard files" if broken else "")
        by_name = {t.spec.filename: t for t in tasks}
        bar = tqdm(total=len(selection), initial=len(selection) - int(todo.sum()), unit="img", desc="explain",
                   disable=not progress, smoothing=0.1, dynamic_ncols=True)

        def finished(rec: dict) -> None:
            writer.record(rec)
            task = by_name[rec["file"]]
            bar.update(task.spec.count)
            log.info("shard %s (class %d, %d samples, %d skipped) in %.2f s (LRP %.2f s) on pid %s", task.spec.name,
                     task.spec.label, rec["count"], rec["skipped"], rec["seconds"],
                     rec.get("lrp_seconds", float("nan")), rec.get("pid"))
            if on_shard is not None:
                on_shard(rec)

        # a few samples (an incremental run's new ones) are explained here: starting local workers
        # (processes, imports, a model each) costs more than they would save
        in_process = client is None and (cluster.mode == "synchronous" or
                                         (cluster.mode == "local" and int(todo.sum()) <= shard_size))
        if tasks and in_process and cluster.mode == "local":
            log.info("%d samples to explain, at most one shard's worth: explained in this process, no local workers "
                     "started", int(todo.sum()))
        try:
            if tasks and in_process:
                import torch
                threads = torch.get_num_threads()
                try:
                    for task in tasks:
                        finished(explain_shard(spec, task, str(store)))
                finally:
                    torch.set_num_threads(threads)
            elif tasks:
                _run_distributed(spec, tasks, str(store), cluster, client, finished)
        finally:
            bar.close()
        done = writer.finalize(selection)
    return ExplainResult(store, done.samples, done.shards, len(tasks), done.shards - len(tasks), broken, done.skipped,
                         time.perf_counter() - started, computed_samples=int(todo.sum()),
                         reused_samples=len(selection) - int(todo.sum()), changes=changes, hashed=prep.hashed)


def _reused(store: Path, selection: Selection, hashed: dict, seconds: float) -> ExplainResult:
    from ..store import HeatmapStore
    with HeatmapStore(store) as st:
        n, shards, skipped = len(st), len(st.shard_files), st.skipped
    return ExplainResult(store, n, shards, 0, shards, [], skipped, seconds, computed_samples=0,
                         reused_samples=len(selection), changes={"new": 0, "changed": 0, "removed": 0}, hashed=hashed)


def _run_distributed(spec: ExplainSpec, todo, store: str, cluster: ClusterSpec, client, finished) -> None:
    key = spec.key[:10]
    with open_client(cluster, client) as client:
        run_bounded(client, partial(explain_shard, spec), todo, args=(store,),
                    key=lambda task: f"explain-{key}-{task.spec.name}", on_result=lambda task, rec: finished(rec))
