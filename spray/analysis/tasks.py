"""The analysis of one class as a task: runs on any dask worker (or in-process), reads its class's
slab from the store, writes its own part file and returns a small record.

Threads: BLAS/OpenMP (and numba, where UMAP or pynndescent run) are capped with threadpoolctl for
the task's duration. A dask worker with T threads runs T classes at once, so each task gets one
thread and the worker uses its T cores and no more; in-process, the one class at a time gets the
job's ``cluster.threads_per_worker``. Uncapped, k-means and t-SNE measured 10-40x slower on a busy
2-core machine (threads of several processes fighting over the cores).
"""
from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import SprayError
from ..store import HeatmapStore
from .estimator import embed_2d
from .features import pool_maps, read_pixels, reduce_dimension
from .graph import EXACT_MAX
from .parts import part_path, write_embedding, write_part
from .choice import choose_clustering
from .suspicion import ClassInputs, region_mask, score_clusters


PixelReader = Callable[[Tuple[int, int], Tuple[int, int]], np.ndarray]


@dataclass
class ClassTask:
    """One class to analyse: its store rows now, and what the record needs of its samples."""

    label: int
    name: str
    key: str
    rows: np.ndarray
    ids: List[str]
    labels: np.ndarray
    predictions: np.ndarray

    @property
    def n(self) -> int:
        return len(self.rows)


_STORES: Dict[Tuple[str, float], HeatmapStore] = {}


def _store(folder: str) -> HeatmapStore:
    """The store, opened once per process (and again when its index was rewritten)."""
    index = Path(folder) / "heatmaps.h5"
    key = (str(folder), index.stat().st_mtime)
    if key not in _STORES:
        for old in [k for k in _STORES if k[0] == str(folder)]:
            _STORES.pop(old).close()
        _STORES[key] = HeatmapStore(folder)
    return _STORES[key]


def close_stores() -> None:
    while _STORES:
        _STORES.popitem()[1].close()


def uses_numba(params, n: int) -> bool:
    return "umap" in params.embeddings or params.knn == "approximate" or (params.knn == "auto" and n > EXACT_MAX)


@contextmanager
def thread_cap(threads: int, numba: bool = False):
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=threads):
        if numba:
            import numba as nb
            before = nb.get_num_threads()
            nb.set_num_threads(min(threads, nb.config.NUMBA_NUM_THREADS))
            try:
                yield
            finally:
                nb.set_num_threads(before)
        else:
            yield


def prototypes(relevance: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(k + 1, H, W): the class's aggregated LRP (mean of maps normalised to unit absolute sum), then
    each cluster's."""
    maps = relevance.sum(1) if relevance.ndim == 4 else relevance
    scale = np.abs(maps).reshape(len(maps), -1).sum(1)
    maps = maps / np.where(scale > 0, scale, 1.0)[:, None, None]
    out = [maps.mean(0)] + [maps[labels == c].mean(0) if (labels == c).any() else np.zeros(maps.shape[1:])
                            for c in range(k)]
    return np.stack(out).astype(np.float32)


def medoids(embedding: np.ndarray, labels: np.ndarray, k: int, count: int) -> List[np.ndarray]:
    """Per cluster, positions of the ``count`` members closest to its centroid in the spectral embedding."""
    x = embedding[:, :max(k, 2)]
    out = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        centre = x[members].mean(0)
        order = np.argsort(((x[members] - centre) ** 2).sum(1), kind="stable")
        out.append(members[order[:count]])
    return out


def analyze_maps(relevance: np.ndarray, task: ClassTask, params, pixels: Optional[PixelReader] = None):
    """SpRAy and suspicion of one class's heatmaps -> (arrays, attributes, record), arrays
    named as in ``analysis.h5`` (medoids as positions within the class).

    ``pixels(cells, factor)``: the class's input pixels on the pooled maps' grid (see
    :func:`~spray.analysis.features.read_pixels`), which the suspicion score compares across members."""
    sp = params.estimator(embeddings=()).fit(relevance)
    grid, pixel_problem = None, "no pixel reader given"
    if pixels is not None:
        try:
            grid, pixel_problem = pixels(sp.pooled_.shape[1:], sp.pool_factor_), None
        except (SprayError, OSError) as err:   # the data moved or is unreadable since the explain stage
            pixel_problem = str(err)
    inputs = ClassInputs.of(sp.pooled_, grid)
    choice = choose_clustering(sp.clusterings_, sp.k_, inputs, lambda labels: score_clusters(
        sp.pooled_, labels, sp.graph_, sp.pool_factor_, params.threshold, inputs=inputs), sp.graph_)
    labels = sp.clusterings_[choice.k]
    n_clusters = int(labels.max()) + 1  # k for k-means/agglomerative; found by density for (H)DBSCAN
    scores = choice.scores
    susp = scores.clusters
    meds = medoids(sp.embedding_, labels, n_clusters, params.n_examples)
    ids = np.asarray(task.ids, dtype=object)
    arrays = {"eigenvalues": sp.eigenvalues_, "embedding/spectral": sp.embedding_.astype(np.float32),
              "prototype": prototypes(relevance, labels, n_clusters),
              "sample_score": scores.sample_score.astype(np.float32)}
    attrs = {}
    for k, at_k in sp.clusterings_.items():
        name = f"cluster/{params.clusterer}-{k:02d}"
        arrays[name] = at_k.astype(np.int64)
        attrs[name] = {"embedding": "spectral", "k": k, "index": np.arange(len(sp.eigenvalues_))}
    for c, m in enumerate(meds):
        arrays[f"medoids/{c}"] = m.astype(np.int64)
    for s in susp:
        if s.flagged and s.kind == "local":
            arrays[f"mask/{s.cluster}"] = region_mask(s, relevance.shape[-2:])
    record = {
        "label": int(task.label), "name": task.name, "n": int(task.n), "k": int(choice.k), "k_reason": choice.reason,
        "eigengap": {"k": sp.eigengap_.k, "gap": sp.eigengap_.gap, "runner_up": sp.eigengap_.runner_up,
                     "runner_up_gap": sp.eigengap_.runner_up_gap,
                     "gaps": {str(a): b for a, b in sp.eigengap_.gaps.items()}},
        "eigenvalues": sp.eigenvalues_.tolist(), "graph_components": int(sp.n_graph_components_),
        "knn": sp.knn_method_, "solver": sp.solver_, "degenerate_maps": int(sp.degenerate_.sum()),
        "accuracy": float(np.mean(task.predictions == task.labels)),
        "timings": {a: round(b, 3) for a, b in sp.timings_.items() if a != "embed2d"},
        "input_pixels": "read" if pixel_problem is None else f"unavailable ({pixel_problem}): nothing can be flagged",
        "clusters": [{**s.to_dict(), "members": ids[labels == s.cluster].tolist(),
                      "carriers": ids[s.carriers].tolist(), "medoids": ids[meds[s.cluster]].tolist()}
                     for s in susp],
    }
    return arrays, attrs, record


def _task_info(started: float) -> dict:
    return {"seconds": round(time.perf_counter() - started, 3), "pid": os.getpid(),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def run_class(task: ClassTask, store: str, params, parts: str, threads: int) -> dict:
    """Analyse one class into its part file; returns ``{"label", "record", "read_seconds", "seconds",
    "pid", "peak_rss_mib"}`` (peak: the process's, since it started)."""
    started = time.perf_counter()
    with thread_cap(threads, uses_numba(params, task.n)):
        opened = _store(store)
        relevance = opened.relevance(task.rows)
        read = time.perf_counter() - started

        def pixels(cells, factor):
            return read_pixels(opened.provenance, opened.index[task.rows], cells, factor)
        arrays, attrs, record = analyze_maps(relevance, task, params, pixels)
    write_part(part_path(Path(parts), task.label, task.key), task.key, arrays, record, attrs)
    return {"label": task.label, "record": record, "read_seconds": round(read, 3), **_task_info(started)}


def run_embedding(task: ClassTask, store: str, params, parts: str, threads: int, method: str) -> dict:
    """The 2-D map (t-SNE/UMAP) of one analysed class, from its part file's spectral embedding (or
    from the pooled maps for ``embed_on: pooled``), into its own file."""
    import h5py
    started = time.perf_counter()
    with thread_cap(threads, method == "umap"):
        if params.embed_on == "spectral":
            with h5py.File(part_path(Path(parts), task.label, task.key), "r") as fh:
                source = fh["class/embedding/spectral"][()]
        else:
            pooled = pool_maps(_store(store).relevance(task.rows), params.pool, params.mode)
            source = reduce_dimension(pooled.features(), params.pca, params.random_state)
        xy = embed_2d(source, method, params.random_state)
    write_embedding(part_path(Path(parts), task.label, task.key, method), task.key, xy,
                    time.perf_counter() - started)
    return {"label": task.label, "method": method, **_task_info(started)}

