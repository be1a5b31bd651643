"""Run SpRAy over a heatmap store, one task per class, and write the results.

Classes run as tasks on the job's dask cluster (the one the explain stage uses: a LocalCluster, an
existing scheduler, or in-process for tests and debugging). Each task reads its class's contiguous
slab from the store and writes its own part file (``spray.analysis.parts``); a class whose samples,
heatmaps and parameters are unchanged is reused from its part file, so a killed run resumes class by
class and a grown data set re-analyses only the classes that changed. The classes are then ranked
(``spray.analysis.ranking``), 2-D maps are computed for the first ``embed_top`` classes of the
ranking, and everything is merged into:

- ``analysis.h5``: per class ``/<label:08d>/`` with ``index`` (store rows), ``eigenvalues``
  (Laplacian, ascending), ``embedding/*``, ``cluster/<method>-NN`` for the whole k range,
  ``prototype`` (class mean map, then one per cluster of the chosen k), ``medoids/<cluster>``,
  ``mask/<cluster>`` (what a flip test pastes, for flagged local findings), ``sample_score`` (every
  sample's suspicion, aligned with ``index``) and the JSON record as an attribute;
- ``virelay.h5``: the analysis file ViRelAy loads (:func:`spray.export.write_analysis_file`);
- ``analysis.json``: per class n, k, eigengap, runner-up, graph components, per-cluster suspicion and
  ``attention`` (score, rank, evidence); what was reused; which 2-D embedding, for which classes.

Why 2-D maps only for the top of the ranking: t-SNE of one class of ~1300 samples measured 8.5 s on
one busy core against 0.7 s for everything else SpRAy does (UMAP 6 s warm, 26 s cold; openTSNE's FFT
variant 53 s and Barnes-Hut 6.9 s at that size). At 1000 classes the maps alone would take longer than
the rest of the analysis ten times over, for pages nobody opens; the report shows the spectral
embedding's eigenvectors 2 and 3 where a class has no map.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..cluster import ClusterSpec, open_client, run_bounded
from ..errors import ConfigError
from ..export import write_analysis_file
from ..store import HeatmapStore
from . import parts as P
from .estimator import SpRAy
from .ranking import is_flagged, rank_classes
from .suspicion import THRESHOLD
from .tasks import ClassTask, close_stores, run_class, run_embedding

log = logging.getLogger("spray.analysis")
EMBED_TOP = 50


@dataclass
class AnalysisParams:
    pool: Optional[int] = 16
    mode: str = "abs"
    n_neighbors: int = 10
    knn: str = "auto"
    weights: str = "binary"
    pca: Optional[int] = None
    n_eigval: int = 32
    k_range: Tuple[int, int] = (2, 10)
    clusterer: str = "kmeans"
    embeddings: Sequence[str] = ("tsne",)
    embed_on: str = "spectral"
    random_state: int = 0
    group_by: str = "label"
    min_class_size: int = 20
    n_examples: int = 8
    threshold: float = THRESHOLD
    classes: Optional[List[int]] = field(default=None)
    embed_top: Optional[int] = EMBED_TOP     # 2-D maps for the first N classes of the ranking; None: all

    def estimator(self, embeddings: Optional[Sequence[str]] = None) -> SpRAy:
        return SpRAy(pool=self.pool, mode=self.mode, n_neighbors=self.n_neighbors, knn=self.knn, weights=self.weights,
                     pca=self.pca, n_eigval=self.n_eigval, k_range=tuple(self.k_range), clusterer=self.clusterer,
                     embeddings=tuple(self.embeddings if embeddings is None else embeddings), embed_on=self.embed_on,
                     random_state=self.random_state)


class _Executor:
    """Runs task functions in-process or on the cluster; the client is opened on first need, once."""

    def __init__(self, cluster: ClusterSpec, client, stack: ExitStack):
        self.cluster, self.client, self.stack = cluster, client, stack
        self.in_process = cluster.mode == "synchronous" and client is None
        self.opened = False

    @property
    def threads(self) -> int:
        return self.cluster.threads_per_worker if self.in_process else 1

    def map(self, fn: Callable, items: Sequence, key: Callable, on_result: Callable, args: tuple) -> None:
        if not items:
            return
        if self.in_process:
            for item in items:
                on_result(item, fn(item, *args))
            return
        if not self.opened:
            self.client = self.stack.enter_context(open_client(self.cluster, self.client))
            self.opened = True
        run_bounded(self.client, fn, items, key=key, on_result=on_result, args=args)


def plan(store: HeatmapStore, params: AnalysisParams) -> Tuple[List[ClassTask], List[dict]]:
    """The class tasks (with their reuse keys) and the classes skipped as too small."""
    class_names = store.provenance.get("classes") or []
    present = store.classes if params.group_by == "label" else sorted(int(c) for c in np.unique(store.predictions))
    wanted = present if params.classes is None else list(params.classes)
    unknown = [c for c in wanted if c not in present]
    if unknown:
        raise ConfigError(f"analysis.classes {unknown} have no samples in the store (present: {present})")
    ids = np.asarray(store.ids, dtype=object)
    params_hash = P.params_key(params)
    tasks, skipped = [], []
    for label in wanted:
        rows = store.rows_of(label, params.group_by)
        if len(rows) < params.min_class_size:
            skipped.append({"label": int(label), "n": int(len(rows)),
                            "reason": f"fewer than {params.min_class_size} samples"})
            log.warning("class %s: %d samples, fewer than min_class_size=%d; skipped", label, len(rows),
                        params.min_class_size)
            continue
        class_ids = ids[rows].tolist()
        key = P.class_key(params_hash, label, params.group_by, class_ids, store.class_digest(label, params.group_by))
        tasks.append(ClassTask(int(label), class_names[label] if label < len(class_names) else str(label), key,
                               rows, class_ids, store.labels[rows], store.predictions[rows]))
    return tasks, skipped


def analyze_store(store_path, out: Path, params: Optional[AnalysisParams] = None, progress: bool = True,
                  cluster: Optional[ClusterSpec] = None, client=None) -> dict:
    """SpRAy for every class of the store (or ``params.classes``); returns the analysis summary.

    ``cluster``: where the class tasks run (default: in-process, one thread)."""
    from tqdm import tqdm
    params = params or AnalysisParams()
    cluster = cluster or ClusterSpec(mode="synchronous", threads_per_worker=1)
    out = Path(out)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with HeatmapStore(store_path) as store:
        tasks, skipped = plan(store, params)
    plan_seconds = time.perf_counter() - started
    records: Dict[int, dict] = {}
    todo = []
    for task in tasks:
        record = P.read_record(P.part_path(parts, task.label, task.key), task.key)
        if record is None:
            todo.append(task)
        else:
            records[task.label] = {**record, "name": task.name}
    log.info("analysis: %d classes, %d reused (samples and parameters unchanged), %d to compute%s", len(tasks),
             len(records), len(todo), "" if cluster.mode == "synchronous" and client is None else
             f" on the cluster ({cluster.mode})")
    workers: Dict[int, float] = {}
    costs: Dict[int, dict] = {}
    store_arg = str(store_path)

    def done_class(task: ClassTask, result: dict) -> None:
        record = result["record"]
        records[task.label] = record
        workers[result["pid"]] = max(workers.get(result["pid"], 0.0), result["peak_rss_mib"])
        costs[task.label] = {"seconds": result["seconds"], "read_seconds": result["read_seconds"], "n": task.n}
        bar.update(1)
        flagged = [c["cluster"] for c in record["clusters"] if c["flagged"]]
        if record.get("input_pixels", "read") != "read":
            log.warning("class %s: input pixels %s", task.label, record["input_pixels"])
        eigengap = record["eigengap"]
        log.info("class %s: n=%d eigengap k=%d (gap %.2f, runner-up k=%d), reported k=%d, flagged %s; %.2f s on pid %s",
                 task.label, record["n"], eigengap["k"], eigengap["gap"], eigengap["runner_up"], record["k"],
                 flagged or "none", result["seconds"], result["pid"])
        if record["k_reason"]:
            log.info("class %s: %s", task.label, record["k_reason"])

    maps: Dict[str, Dict[int, Path]] = {m: {} for m in params.embeddings}
    embed_costs: Dict[str, List[float]] = {m: [] for m in params.embeddings}
    with ExitStack() as stack:
        executor = _Executor(cluster, client, stack)
        bar = tqdm(total=len(tasks), initial=len(records), desc="analyze", unit="class", disable=not progress)
        try:
            executor.map(run_class, todo, key=lambda t: f"analyze-{t.key[:12]}-{t.label}", on_result=done_class,
                         args=(store_arg, params, str(parts), executor.threads))
        finally:
            bar.close()
        ranked = rank_classes([records[t.label] for t in tasks], params.threshold)
        chosen = ranked if params.embed_top is None else ranked[:params.embed_top]
        by_label = {t.label: t for t in tasks}
        embed_todo = []
        for method in params.embeddings:
            for record in chosen:
                task = by_label[record["label"]]
                path = P.part_path(parts, task.label, task.key, method)
                maps[method][task.label] = path
                if not P.has_embedding(path, task.key):
                    embed_todo.append((task, method))

        def done_map(item, result: dict) -> None:
            embed_costs[result["method"]].append(result["seconds"])
            workers[result["pid"]] = max(workers.get(result["pid"], 0.0), result["peak_rss_mib"])

        executor.map(_embed_item, embed_todo, key=lambda item: f"embed-{item[1]}-{item[0].key[:12]}-{item[0].label}",
                     on_result=done_map, args=(store_arg, params, str(parts), executor.threads))
    close_stores()
    n_maps = {m: len(v) for m, v in maps.items()}
    virelay_methods = [m for m in params.embeddings if n_maps[m] == len(tasks)]
    for method in params.embeddings:
        if method not in virelay_methods and tasks:
            log.warning("analysis: %s maps for the first %d of %d classes in the ranking (analysis.embed_top); "
                        "virelay.h5 carries the spectral embedding only (ViRelAy needs the same embeddings in every "
                        "class): set analysis.embed_top: null for %s in every class", method, n_maps[method],
                        len(tasks), method)
    for task in tasks:
        records[task.label]["embedding2d"] = [m for m in params.embeddings if task.label in maps[m]]
    ordered = [records[t.label] for t in tasks]
    reuse = {"classes_reused": len(tasks) - len(todo), "classes_recomputed": len(todo),
             "maps_reused": sum(n_maps.values()) - len(embed_todo), "maps_computed": len(embed_todo)}
    summary = {"store": str(store_path), "params": asdict(params), "classes": ordered, "skipped_classes": skipped,
               "ranking": [r["label"] for r in ranked],
               "embedding": {"methods": list(params.embeddings), "classes": n_maps, "embed_top": params.embed_top,
                             "on": params.embed_on, "virelay": virelay_methods,
                             "elsewhere": "spectral embedding (eigenvectors 2 and 3)"},
               "reuse": reuse, "flagged_classes": sum(is_flagged(r) for r in ordered)}
    entries = [{"label": t.label, "rows": t.rows, "record": records[t.label],
                "part": P.part_path(parts, t.label, t.key),
                "embeddings": {m: maps[m][t.label] for m in params.embeddings if t.label in maps[m]}} for t in tasks]
    merge_started = time.perf_counter()
    P.merge(out, entries, params.embed_on, {k: v for k, v in summary.items() if k != "classes"})
    keep = [e["part"] for e in entries] + [p for m in maps.values() for p in m.values()]
    P.remove_stale(parts, [t.label for t in tasks], keep)
    summary["costs"] = {"plan_seconds": round(plan_seconds, 2), "classes": costs, "maps": {m: round(sum(v), 2) for m, v in embed_costs.items()},
                        "merge_seconds": round(time.perf_counter() - merge_started, 2),
                        "worker_peak_rss_mib": {str(pid): mib for pid, mib in workers.items()}}
    summary["seconds"] = round(time.perf_counter() - started, 2)
    tmp = out / "analysis.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    os.replace(tmp, out / "analysis.json")
    if ordered:
        write_analysis_file(out / "analysis.h5", out / "virelay.h5", summary)
    else:
        (out / "virelay.h5").unlink(missing_ok=True)  # nothing for ViRelAy; a previous run's file would mislead
    log.info("analysis: %d classes (%d reused, %d recomputed), %d flagged, %d 2-D maps computed (%d reused) in %.1f s",
             len(tasks), reuse["classes_reused"], reuse["classes_recomputed"], summary["flagged_classes"],
             reuse["maps_computed"], reuse["maps_reused"], summary["seconds"])
    return summary


def _embed_item(item, store: str, params: AnalysisParams, parts: str, threads: int) -> dict:
    task, method = item
    return run_embedding(task, store, params, parts, threads, method)

