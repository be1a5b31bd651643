"""A run as a ViRelAy 0.6 project: ``virelay OUT/project.yaml`` opens it.

ViRelAy reads five files, all written here (each to a temporary name, then renamed; the project
file last, so a half-written export never looks finished)::

    OUT/input.h5         data uint8 (N, 3, H, W): the images as the model saw them, without the
                         normalisation; label uint32 (N,). Rows are the store's rows.
    OUT/attribution.h5   attribution float32 (N, C, H, W) with C >= 3, prediction float32 (N, classes)
                         (the logits), label uint32 (N,), in the same rows
    OUT/analysis.h5      per class: index, embedding/spectral (+ eigenvalues), embedding/tsne|umap,
                         cluster/* (see :func:`write_analysis_file`)
    OUT/label-map.json   [{index, word_net_id, name}]; word_net_id is the category name f"{label:08d}",
                         which is how ViRelAy finds a class's human-readable name
    OUT/project.yaml     the project: dataset, attributions, analyses, label map

What ViRelAy 0.6.1 does with them, read from its code, and what follows for the layout:

- Eigenvalues: CoRelAy computes ``eigsh`` of D^-1/2 A D^-1/2 (ascending mu) and stores 1 - mu, i.e.
  the normalised Laplacian's eigenvalues, largest first, the trivial 0 last; its eigenvector columns
  follow the same order. ViRelAy plots the stored values as bars at x = n-1 .. 0, so the smallest
  eigenvalue is drawn at x = 0 and the eigengap of a k-cluster class shows between bars k-1 and k.
  spray keeps the eigenvalues ascending: the export reverses them and the eigenvector columns.
- Clusters: ViRelAy labels a cluster with the stored value + 1. The export stores spray's cluster
  id - 1, so "Cluster 1" in ViRelAy is spray's cluster 1 (spray's cluster 0 shows as "Cluster 0").
- Attributions: ViRelAy sums the channel axis only when there are two or more channels; with one
  channel, 7 of its 8 colour maps fail (HTTP 500). Summed (one-channel) relevance is written as three
  equal channels of a third each, so the sum ViRelAy draws is spray's map exactly.
- Every category must carry the same ``cluster/*`` and ``embedding/*`` names (ViRelAy lists the
  names of the first class and asks every class for them); a clustering missing in some class (a
  small class has a shorter k range) is left out, with a warning.
- Plain h5py must read every file: no blosc filters.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import h5py
import numpy as np
import yaml

from ..errors import ConfigError, SprayError

log = logging.getLogger("spray.export")

ANALYSIS_METHOD = "spray"          # ViRelAy maps '-' to '_' in method names: keep it a plain word
FLAGGED = "spray-flagged"          # one clustering of spray's verdict: Cluster 1 flagged, Cluster 0 not
CHOSEN = "spray-chosen-k"          # the clustering at the k spray chose, per class
CHUNK = 256
PathLike = Union[str, Path]


def category(label: int) -> str:
    return f"{int(label):08d}"


def _shown(labels: np.ndarray) -> np.ndarray:
    """The numbers a person should read in ViRelAy, as stored there (it shows value + 1)."""
    return np.asarray(labels, dtype=np.int32) - 1


def _summary(analysis_h5: Path, summary: Optional[dict]) -> dict:
    if summary is not None:
        return summary
    path = Path(analysis_h5).with_name("analysis.json")
    if not path.is_file():
        raise SprayError(f"{path} not found: the ViRelAy analysis file needs the analysis summary next to "
                         f"{analysis_h5}; run `spray analyze` first")
    return json.loads(path.read_text())


def write_analysis_file(analysis_h5: PathLike, out: PathLike, summary: Optional[dict] = None) -> Path:
    """Convert spray's ``analysis.h5`` into the analysis file ViRelAy 0.6 loads (module docstring).

    Per class: ``index`` (store rows), ``embedding/spectral`` with its ``eigenvalue`` attribute in
    CoRelAy's convention, the 2-D embeddings, every ``cluster/<method>-NN`` of the k range, plus
    ``cluster/spray-chosen-k`` (the clustering at the k spray chose) and ``cluster/spray-flagged``
    (ViRelAy's "Cluster 1": the samples of a flagged finding; "Cluster 0": the rest). ``summary`` is
    the analysis summary (``analysis.json``; read from beside ``analysis_h5`` when not given)."""
    analysis_h5, out = Path(analysis_h5), Path(out)
    summary = _summary(analysis_h5, summary)
    records = {category(r["label"]): r for r in summary["classes"]}
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(analysis_h5, "r") as src:
        names = [c for c in src if c in records]
        if not names:
            raise SprayError(f"{analysis_h5} holds no analysed class; nothing for ViRelAy to show")
        clusterer = summary["params"]["clusterer"]
        clusterings = _common(src, names, "cluster")
        embeddings = _common(src, names, "embedding")
        with h5py.File(tmp, "w") as dst:
            for name in names:
                _write_category(src[name], dst.create_group(name), records[name], clusterer, clusterings, embeddings)
    os.replace(tmp, out)
    return out


def _common(src: h5py.File, names: List[str], group: str) -> List[str]:
    every = [set(src[n][group]) for n in names]
    common = set.intersection(*every)
    dropped = sorted(set.union(*every) - common)
    if dropped:
        log.info("ViRelAy file: %s %s missing in some classes (ViRelAy needs the same names in every class); "
                 "left out", group, dropped)
    return sorted(common)


def _write_category(g: h5py.Group, out: h5py.Group, record: dict, clusterer: str, clusterings: List[str],
                    embeddings: List[str]) -> None:
    out.create_dataset("index", data=g["index"][()].astype(np.uint32))
    eigenvalues = np.asarray(g["eigenvalues"][()], dtype=np.float64)          # ascending (spray)
    vectors = g["embedding/spectral"][()]
    n_eig = vectors.shape[1]
    spectral = out.create_dataset("embedding/spectral", data=vectors[:, ::-1].astype(np.float32))
    spectral.attrs["eigenvalue"] = eigenvalues[::-1].astype(np.float32)         # CoRelAy: largest first
    for name in embeddings:
        if name == "spectral":
            continue
        source = g[f"embedding/{name}"]
        e = out.create_dataset(f"embedding/{name}", data=source[()].astype(np.float32))
        e.attrs["embedding"] = source.attrs.get("embedding", "spectral")
        e.attrs["index"] = np.arange(2)
    for name in clusterings:
        source = g[f"cluster/{name}"]
        k = int(source.attrs.get("k", int(source[()].max()) + 1))
        _clustering(out, name, source[()], k, n_eig)
    chosen = int(record["k"])
    labels = g[f"cluster/{clusterer}-{chosen:02d}"][()]
    _clustering(out, CHOSEN, labels, chosen, n_eig)
    _clustering(out, FLAGGED, _carriers(record, labels), 2, n_eig, k_used=chosen)   # 1 flagged, 0 not


def _carriers(record: dict, labels: np.ndarray) -> np.ndarray:
    """(n,) bool, in the class's order: the samples that carry one of its flagged findings (a
    cluster's members, or for a non-local one the look-alike group around it)."""
    position = {}
    for c in record["clusters"]:
        position.update(zip(c["members"], np.flatnonzero(labels == c["cluster"]).tolist()))
    out = np.zeros(len(labels), bool)
    out[[position[i] for c in record["clusters"] if c["flagged"] for i in c["carriers"]]] = True
    return out


def _clustering(out: h5py.Group, name: str, labels: np.ndarray, k: int, n_eig: int,
                k_used: Optional[int] = None) -> None:
    d = out.create_dataset(f"cluster/{name}", data=_shown(labels))
    d.attrs["embedding"] = "spectral"
    d.attrs["k"] = k
    # spray clusters on its first max(k, 2) eigenvectors (smallest eigenvalues); in CoRelAy's column
    # order those are the last columns
    used = max(k if k_used is None else k_used, 2)
    d.attrs["index"] = np.arange(n_eig - 1, n_eig - 1 - min(used, n_eig), -1)


def export_virelay(run: PathLike, out: Optional[PathLike] = None, compress: bool = False,
                   progress: bool = False) -> Path:
    """Write the ViRelAy project of run folder ``run`` into ``out`` (default ``RUN/virelay``);
    returns the path of ``project.yaml``. ``compress``: gzip the input and attribution files
    (smaller, slower to write; any h5py reads gzip)."""
    from ..report.images import DisplayImages
    from ..store import HeatmapStore

    run = Path(run)
    store_path, analysis = run / "store", run / "analysis"
    if not (analysis / "analysis.h5").is_file() or not (analysis / "analysis.json").is_file():
        raise ConfigError(f"{run} is not an analysed spray run (no analysis/analysis.h5 and analysis.json); give "
                          f"the run folder (the job's `out`) after `spray run` or `spray analyze`")
    out = Path(out) if out is not None else run / "virelay"
    out.mkdir(parents=True, exist_ok=True)
    summary = json.loads((analysis / "analysis.json").read_text())
    with HeatmapStore(store_path) as store:
        prov = store.provenance
        n = len(store)
        images = DisplayImages(prov)
        pixels = int(np.prod(store.shape[2:]))
        log.info("ViRelAy export: %d samples into %s (about %.1f GiB: images and 3-channel float32 heatmaps)", n, out,
                 n * pixels * 3 * 5 / 2**30)
        hw = _write_input(out / "input.h5", images, store.index, store.labels, compress, progress)
        _write_attribution(out / "attribution.h5", store, compress, progress)
        write_analysis_file(analysis / "analysis.h5", out / "analysis.h5", summary)
        names = _class_names(prov, summary, store.labels)
    (out / "label-map.json").write_text(json.dumps(
        [{"index": i, "word_net_id": category(i), "name": name} for i, name in enumerate(names)], indent=1))
    project = {"project": {
        "name": f"spray: {run.resolve().name}",
        "model": _model_name(prov),
        "label_map": "label-map.json",
        "dataset": {"name": str(prov.get("data_spec", {}).get("path", "data")), "type": "hdf5", "path": "input.h5",
                    "input_width": int(hw[1]), "input_height": int(hw[0]),
                    "up_sampling_method": "none", "down_sampling_method": "none"},
        "attributions": {"attribution_method": _composite_name(prov.get("composite")),
                         "attribution_strategy": "predicted_label" if prov.get("target") == "prediction" else "true_label",
                         "sources": ["attribution.h5"]},
        "analyses": [{"analysis_method": ANALYSIS_METHOD, "sources": ["analysis.h5"]}],
    }}
    tmp = out / "project.yaml.tmp"
    tmp.write_text(yaml.safe_dump(project, sort_keys=False))
    os.replace(tmp, out / "project.yaml")
    return out / "project.yaml"


def _bar(total: int, desc: str, progress: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True)


def _options(compress: bool, sample_shape) -> dict:
    chunks = (1,) + tuple(sample_shape)
    return {"chunks": chunks, "compression": "gzip", "compression_opts": 4, "shuffle": True} if compress else \
        {"chunks": chunks}


def _write_input(path: Path, images, source_index: np.ndarray, labels: np.ndarray, compress: bool,
                 progress: bool):
    tmp = path.with_name(path.name + ".tmp")
    n = len(source_index)
    with h5py.File(tmp, "w") as fh, _bar(n, "virelay input", progress) as bar:
        data = None
        offset = 0
        for chunk in images.chunks(source_index, CHUNK):
            chw = chunk.transpose(0, 3, 1, 2)
            if data is None:
                data = fh.create_dataset("data", (n,) + chw.shape[1:], np.uint8, **_options(compress, chw.shape[1:]))
            data[offset:offset + len(chw)] = chw
            offset += len(chw)
            bar.update(len(chw))
        fh.create_dataset("label", data=np.asarray(labels, dtype=np.uint32))
        hw = data.shape[2:]
    os.replace(tmp, path)
    return hw


def _write_attribution(path: Path, store, compress: bool, progress: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    n, channels = len(store), store.shape[1]
    out_channels = channels if channels >= 3 else 3
    sample_shape = (out_channels,) + tuple(store.shape[2:])
    with h5py.File(tmp, "w") as fh, h5py.File(store.folder / "heatmaps.h5", "r") as index, \
            _bar(n, "virelay attribution", progress) as bar:
        logits = index["logits"]
        data = fh.create_dataset("attribution", (n,) + sample_shape, np.float32, **_options(compress, sample_shape))
        prediction = fh.create_dataset("prediction", logits.shape, np.float32)
        for start in range(0, n, CHUNK):
            stop = min(start + CHUNK, n)
            r = store.relevance(slice(start, stop), dtype=np.float32)
            if channels < 3:
                r = np.repeat(r.sum(1, keepdims=True) / 3.0, 3, axis=1)
            data[start:stop] = r
            prediction[start:stop] = logits[start:stop]
            bar.update(len(r))
        fh.create_dataset("label", data=np.asarray(store.labels, dtype=np.uint32))
    os.replace(tmp, path)


def _class_names(prov: dict, summary: dict, labels: np.ndarray) -> List[str]:
    names: Dict[int, str] = {i: str(c) for i, c in enumerate(prov.get("classes") or [])}
    for rec in summary["classes"]:
        names.setdefault(int(rec["label"]), str(rec.get("name", rec["label"])))
    count = max([int(labels.max()) + 1 if len(labels) else 0] + [i + 1 for i in names])
    return [names.get(i, str(i)) for i in range(count)]


def _model_name(prov: dict) -> str:
    model = prov.get("model") or {}
    name = model.get("factory") or model.get("pickled") or "model"
    sha = prov.get("model_sha256")
    return f"{name} (sha256 {sha[:12]})" if sha else str(name)


def _composite_name(composite) -> str:
    if isinstance(composite, dict):
        return f"LRP {composite.get('preset', 'custom composite')}"
    return f"LRP {composite}"
