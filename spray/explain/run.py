"""The explain stage: plan shards, run them on dask workers (or in-process), fill the store.

Distribution is :mod:`spray.cluster` (dask.distributed): a LocalCluster by default, an existing
scheduler by address, or a synchronous in-process mode for debugging. A killed worker's task is
re-run elsewhere by the scheduler; shard files are written atomically, so nothing is written twice
or half.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..cluster import ClusterSpec, open_client, run_bounded
from ..data.open import open_source
from ..data.sources import select
from ..errors import SprayError
from ..models.loading import check_model, load_model, model_fingerprint
from ..store import StoreWriter
from .plan import make_plan
from .task import ExplainSpec, explain_shard, resolve_composite

log = logging.getLogger("spray.explain")


@dataclass
class ExplainResult:
    store: Path
    samples: int
    shards: int
    computed: int
    reused: int
    recomputed: List[int]
    skipped: int
    seconds: float

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds else float("nan")


def versions() -> Dict[str, str]:
    import h5py
    import torch

    from .. import __version__
    return {"spray": __version__, "torch": torch.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version, "numpy": np.__version__}


def prepare(spec: ExplainSpec, classes: Optional[Sequence] = None, ids: Optional[Sequence[str]] = None,
            shard_size: int = 256):
    """Open the data, check the model on one sample, and compute the plan and the store identity."""
    source = open_source(spec.data)
    selected = select(source, classes, ids)
    if len(selected) == 0:
        raise SprayError("the selection is empty: no samples to explain (check data / classes / ids)")
    preprocess = spec.make_preprocess()
    model = load_model(**spec.model)
    first = int(selected[0])
    sample = preprocess(source.load(first), source.location(first))
    check_model(model, sample, len(source.classes))
    spec = replace(spec, input_shape=tuple(sample.shape))
    weights = [spec.model.get("weights"), spec.model.get("pickled")]
    identity = {"model_sha256": model_fingerprint(model, weights), "model": spec.model,
                "composite": resolve_composite(spec.composite, preprocess), "preprocess": preprocess.describe(),
                "input_shape": list(sample.shape), "data_fingerprint": source.fingerprint(),
                "data": source.describe(), "data_spec": spec.data, "classes": source.classes, "target": spec.target, "dtype": spec.dtype,
                "channels": spec.channels, "on_error": spec.on_error,
                "selection": {"classes": list(classes) if classes is not None else None,
                              "ids": list(ids) if ids is not None else None}}
    tasks = make_plan(source.ids, source.labels, selected, shard_size)
    return spec, tasks, identity


def run_explain(spec: ExplainSpec, store: Path, *, classes: Optional[Sequence] = None,
                ids: Optional[Sequence[str]] = None, shard_size: int = 256,
                cluster: Optional[ClusterSpec] = None, client=None, progress: bool = True,
                on_shard: Optional[Callable[[dict], None]] = None) -> ExplainResult:
    """Explain every selected sample into ``store`` (resuming a store of the same configuration)."""
    from tqdm import tqdm

    started = time.perf_counter()
    cluster = cluster or ClusterSpec()
    spec, tasks, identity = prepare(spec, classes, ids, shard_size)
    provenance = {"versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    by_id = {t.spec.shard: t for t in tasks}
    with StoreWriter(store, identity, [t.spec for t in tasks], provenance) as writer:
        todo = [by_id[s.shard] for s in writer.todo()]
        reused = len(tasks) - len(todo)
        total = sum(t.spec.count for t in tasks)
        done_samples = sum(t.spec.count for t in tasks if t.spec.shard in writer.done)
        log.info("store %s: %d shards planned, %d reused, %d to compute%s", store, len(tasks), reused, len(todo),
                 f" (recomputing corrupt shards {writer.recomputed})" if writer.recomputed else "")
        bar = tqdm(total=total, initial=done_samples, unit="img", desc="explain", disable=not progress,
                   smoothing=0.1, dynamic_ncols=True)

        def finished(rec: dict) -> None:
            writer.record(rec)
            bar.update(by_id[rec["shard"]].spec.count)
            log.info("shard %d (class %d, %d samples, %d skipped) in %.2f s (LRP %.2f s) on pid %s",
                     rec["shard"], by_id[rec["shard"]].spec.label, rec["count"], rec["skipped"], rec["seconds"],
                     rec.get("lrp_seconds", float("nan")), rec.get("pid"))
            if on_shard is not None:
                on_shard(rec)

        try:
            if todo and cluster.mode == "synchronous" and client is None:
                import torch
                threads = torch.get_num_threads()
                try:
                    for task in todo:
                        finished(explain_shard(spec, task, str(store)))
                finally:
                    torch.set_num_threads(threads)
            elif todo:
                _run_distributed(spec, todo, str(store), cluster, client, finished)
        finally:
            bar.close()
        writer.finalize()
    skipped = sum(int(r.get("skipped", 0)) for r in writer.done.values())
    return ExplainResult(Path(store), total - skipped, len(tasks), len(todo), reused, writer.recomputed, skipped,
                         time.perf_counter() - started)


def _run_distributed(spec: ExplainSpec, todo, store: str, cluster: ClusterSpec, client, finished) -> None:
    key = spec.key[:10]
    with open_client(cluster, client) as client:
        run_bounded(client, partial(explain_shard, spec), todo, args=(store,),
                    key=lambda task: f"explain-{key}-{task.spec.shard}", on_result=lambda task, rec: finished(rec))
