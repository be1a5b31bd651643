"""Run SpRAy class by class over a heatmap store and write the results.

Outputs in ``out``:
- ``analysis.h5``: per class ``/<label:08d>/`` with ``index`` (store rows), ``eigenvalues``
  (Laplacian, ascending), ``embedding/*``, ``cluster/<method>-NN`` for the whole k range,
  ``prototype`` (class mean map, then one per cluster of the chosen k), ``medoids/<cluster>``,
  ``mask/<cluster>`` (what a flip test pastes, for flagged clusters) and the JSON record as an attribute;
- ``virelay.h5``: the analysis file ViRelAy loads (:func:`spray.export.write_analysis_file`);
- ``analysis.json``: per class n, k, eigengap, runner-up, graph components and per-cluster suspicion.
Classes are read from the store as contiguous slabs, one at a time, so memory is one class.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import h5py
import numpy as np

from ..errors import ConfigError
from ..export import write_analysis_file
from ..store import HeatmapStore
from .estimator import SpRAy
from .suspicion import THRESHOLD, region_mask, score_clusters

log = logging.getLogger("spray.analysis")


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

    def estimator(self) -> SpRAy:
        return SpRAy(pool=self.pool, mode=self.mode, n_neighbors=self.n_neighbors, knn=self.knn, weights=self.weights,
                     pca=self.pca, n_eigval=self.n_eigval, k_range=tuple(self.k_range), clusterer=self.clusterer,
                     embeddings=tuple(self.embeddings), embed_on=self.embed_on, random_state=self.random_state)


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


def analyze_class(store: HeatmapStore, label: int, params: AnalysisParams):
    rows = store.rows_of(label, params.group_by)
    relevance = store.relevance(rows)
    sp = params.estimator().fit(relevance)
    k = sp.k_
    n_clusters = int(sp.labels_.max()) + 1  # k for k-means/agglomerative; found by density for (H)DBSCAN
    susp = score_clusters(sp.pooled_, sp.labels_, sp.graph_, sp.pool_factor_, params.threshold)
    protos = prototypes(relevance, sp.labels_, n_clusters)
    meds = medoids(sp.embedding_, sp.labels_, n_clusters, params.n_examples)
    masks = {s.cluster: region_mask(s, sp.pooled_, sp.pool_factor_) for s in susp if s.flagged}
    ids = np.asarray(store.ids, dtype=object)
    record = {
        "label": int(label), "n": int(len(rows)), "k": int(k),
        "eigengap": {"k": sp.eigengap_.k, "gap": sp.eigengap_.gap, "runner_up": sp.eigengap_.runner_up,
                     "runner_up_gap": sp.eigengap_.runner_up_gap,
                     "gaps": {str(a): b for a, b in sp.eigengap_.gaps.items()}},
        "eigenvalues": sp.eigenvalues_.tolist(), "graph_components": int(sp.n_graph_components_),
        "knn": sp.knn_method_, "solver": sp.solver_, "degenerate_maps": int(sp.degenerate_.sum()),
        "accuracy": float(np.mean(store.predictions[rows] == store.labels[rows])),
        "timings": {a: round(b, 3) for a, b in sp.timings_.items()},
        "clusters": [{**s.to_dict(), "members": ids[rows[sp.labels_ == s.cluster]].tolist(),
                      "medoids": ids[rows[meds[s.cluster]]].tolist()} for s in susp],
    }
    return rows, sp, protos, meds, masks, record


def analyze_store(store_path, out: Path, params: Optional[AnalysisParams] = None, progress: bool = True) -> dict:
    """SpRAy for every class of the store (or ``params.classes``); returns the analysis summary."""
    from tqdm import tqdm
    params = params or AnalysisParams()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp_main = out / "analysis.h5.tmp"
    summary = {"store": str(store_path), "params": asdict(params), "classes": [], "skipped_classes": []}
    with HeatmapStore(store_path) as store:
        class_names = store.provenance.get("classes") or []
        present = store.classes if params.group_by == "label" else sorted(int(c) for c in np.unique(store.predictions))
        wanted = present if params.classes is None else list(params.classes)
        unknown = [c for c in wanted if c not in present]
        if unknown:
            raise ConfigError(f"analysis.classes {unknown} have no samples in the store (present: {present})")
        with h5py.File(tmp_main, "w") as main:
            for label in tqdm(wanted, desc="analyze", unit="class", disable=not progress):
                n = len(store.rows_of(label, params.group_by))
                if n < params.min_class_size:
                    summary["skipped_classes"].append({"label": int(label), "n": n,
                                                       "reason": f"fewer than {params.min_class_size} samples"})
                    log.warning("class %s: %d samples, fewer than min_class_size=%d; skipped", label, n,
                                params.min_class_size)
                    continue
                rows, sp, protos, meds, masks, record = analyze_class(store, label, params)
                record["name"] = class_names[label] if label < len(class_names) else str(label)
                _write_class(main, label, rows, sp, protos, meds, masks, record, params)
                summary["classes"].append(record)
                flagged = [c["cluster"] for c in record["clusters"] if c["flagged"]]
                log.info("class %s: n=%d k=%d (gap %.2f, runner-up k=%d) flagged %s", label, record["n"], record["k"],
                         record["eigengap"]["gap"], record["eigengap"]["runner_up"], flagged or "none")
            main.attrs["summary"] = json.dumps({k: v for k, v in summary.items() if k != "classes"}, default=str)
    os.replace(tmp_main, out / "analysis.h5")
    if summary["classes"]:
        write_analysis_file(out / "analysis.h5", out / "virelay.h5", summary)
    else:
        (out / "virelay.h5").unlink(missing_ok=True)  # nothing for ViRelAy; a previous run's file would mislead
    summary["seconds"] = round(time.perf_counter() - started, 2)
    tmp = out / "analysis.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    os.replace(tmp, out / "analysis.json")
    return summary


def _write_class(main, label, rows, sp, protos, meds, masks, record, params) -> None:
    g = main.create_group(f"{int(label):08d}")
    g.create_dataset("index", data=rows.astype(np.uint32))
    g.create_dataset("embedding/spectral", data=sp.embedding_.astype(np.float32))  # column i: eigenvalues[i]
    for method, xy in sp.embeddings2d_.items():
        e = g.create_dataset(f"embedding/{method}", data=xy.astype(np.float32))
        e.attrs["embedding"] = "spectral" if params.embed_on == "spectral" else "pooled"
    for k, labels in sp.clusterings_.items():
        g.create_dataset(f"cluster/{params.clusterer}-{k:02d}", data=labels.astype(np.int64)).attrs["k"] = k
    g.create_dataset("eigenvalues", data=sp.eigenvalues_)
    g.create_dataset("prototype", data=protos)
    for c, m in enumerate(meds):
        g.create_dataset(f"medoids/{c}", data=rows[m].astype(np.int64))
    for c, mask in masks.items():
        g.create_dataset(f"mask/{c}", data=mask)
    g.attrs["record"] = json.dumps({k: v for k, v in record.items() if k != "clusters"}, default=str)
    g.attrs["k"] = record["k"]
