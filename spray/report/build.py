"""Write the audit report of a run: per class an HTML page with its figures, ``clusters.csv`` and
``summary.json``; at the run level an ``index.html`` that ranks every flagged cluster across classes
first, and a ``summary.json`` with every class and cluster (members, score, reason, box, flip rate).

Reads the store (ids, heatmaps), the analysis folder and the verification results; opens the data
source recorded in the store to show example images.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

import h5py
import numpy as np
import pandas as pd
from jinja2 import Environment
from jinja2.loaders import DictLoader

from ..data.open import open_source
from ..data.preprocess import Preprocess
from ..errors import SprayError
from ..render import image_rgb
from ..store import HeatmapStore
from . import figures
from .templates import CLASS, INDEX, STYLE

WEAK_FLIP = 0.05


def _env() -> Environment:
    return Environment(loader=DictLoader({"index": INDEX, "class": CLASS}), autoescape=True)


def _flip_text(flip: Optional[dict]) -> str:
    if not flip:
        return ""
    text = f"flips {flip['rate']:.0%} of {flip['n']} other-class images to this class"
    if flip.get("control_rate") is not None:
        text += f" (control: {flip['control_rate']:.0%}, {flip['control']})"
    return text


def _flip_note(flagged: bool, flip: Optional[dict], verified: bool) -> str:
    if not flagged:
        return ""
    if not verified:
        return "Not verified: the artifact-insertion test was not run (verify.enabled is false)."
    if flip is None:
        return "Not verified: no other-class images to paste onto."
    if flip.get("confirmed") is False:
        return (f"Not confirmed: {flip.get('method', 'the test')} flips {flip['rate']:.1%} of other classes' images, "
                f"not clearly more than its control ({flip['control_rate']:.1%}: {flip['control']}).")
    if flip["rate"] < WEAK_FLIP:
        return (f"Weaker finding: pasting this region onto other classes' images flips only {flip['rate']:.1%} of "
                f"them, so the model may not rely on it alone.")
    return ""


def _display_preprocess(provenance: dict) -> Preprocess:
    p = dict(provenance["preprocess"])
    p["mean"], p["std"] = [], []
    return Preprocess(**p)


def _sample_table(store: HeatmapStore, group, labels: np.ndarray, rec: dict) -> pd.DataFrame:
    """One row per sample of a class: id, label, prediction, cluster, whether that cluster is flagged,
    and the sample's own suspicion score (``sample_score`` in analysis.h5), to rank samples for review."""
    rows = group["index"][()]
    score = group["sample_score"][()] if "sample_score" in group else np.full(len(rows), np.nan, np.float32)
    flagged = {c["cluster"] for c in rec["clusters"] if c["flagged"]}
    return pd.DataFrame({"id": [store.ids[r] for r in rows], "label": store.labels[rows].astype(int),
                         "prediction": store.predictions[rows].astype(int), "cluster": labels.astype(int),
                         "cluster_flagged": [int(c) in flagged for c in labels],
                         "score": np.round(score.astype(np.float64), 6)})


def write_report(store_path, analysis_dir, out, verification: Optional[Dict[str, dict]] = None,
                 run: Optional[dict] = None, examples: int = 8) -> Path:
    analysis_dir, out = Path(analysis_dir), Path(out)
    summary_path = analysis_dir / "analysis.json"
    if not summary_path.is_file():
        raise SprayError(f"{analysis_dir} has no analysis.json; run `spray analyze` first")
    analysis = json.loads(summary_path.read_text())
    verified = verification is not None
    verification = verification or {}
    out.mkdir(parents=True, exist_ok=True)
    env = _env()
    flagged_rows, class_rows, classes_json, sample_tables = [], [], [], []
    with HeatmapStore(store_path) as store, h5py.File(analysis_dir / "analysis.h5", "r") as ah5:
        prov = store.provenance
        source = open_source(prov["data_spec"])
        display = _display_preprocess(prov)
        threshold = analysis["params"]["threshold"]
        clusterer = analysis["params"]["clusterer"]
        for rec in analysis["classes"]:
            label = rec["label"]
            folder = out / f"class-{label:08d}"
            folder.mkdir(exist_ok=True)
            g = ah5[f"{label:08d}"]
            k = rec["k"]
            labels = g[f"cluster/{clusterer}-{k:02d}"][()]
            flagged = [c["cluster"] for c in rec["clusters"] if c["flagged"]]
            figs = {"spectrum": figures.spectrum(rec["eigenvalues"], k, rec["eigengap"]["runner_up"],
                                                 folder / "spectrum.png")}
            emb = next((m for m in ("tsne", "umap") if f"embedding/{m}" in g), None)
            if emb:
                xy, caption = g[f"embedding/{emb}"][()], f"{emb.upper()} of the spectral embedding, coloured by cluster"
            else:
                xy, caption = g["embedding/spectral"][()][:, 1:3], "Spectral embedding (eigenvectors 2 and 3)"
            figs["scatter"] = figures.scatter(xy, labels, flagged, folder / "scatter.png", f"class {rec['name']}")
            protos = g["prototype"][()]
            titles = [f"class (n={rec['n']})"] + [f"cluster {c['cluster']} n={c['size']} s={c['score']:.2f}"
                                                  for c in rec["clusters"]]
            boxes = [None] + [c["box"] for c in rec["clusters"]]
            figs["prototypes"] = figures.prototypes(protos, titles, boxes, [False] + [c["flagged"] for c in rec["clusters"]],
                                                    folder / "prototypes.png")
            clusters = []
            for c in rec["clusters"]:
                key = f"{label}/{c['cluster']}"
                flip = verification.get(key)
                ex_rows = g[f"medoids/{c['cluster']}"][()][:examples]
                heat = store.relevance(ex_rows).sum(1)
                images, captions = [], []
                for row, hm in zip(ex_rows, heat):
                    index = int(store.index[row])
                    images.append(image_rgb(display(source.load(index), source.location(index)), 0.0, 1.0))
                    captions.append(store.ids[row][-18:])
                fig = figures.examples(images, list(heat), captions, folder / f"cluster-{c['cluster']}.png")
                entry = {**{k2: v for k2, v in c.items() if k2 not in ("members", "medoids")}, "figure": fig,
                         "flip": flip, "flip_text": _flip_text(flip), "flip_note": _flip_note(c["flagged"], flip, verified)}
                clusters.append(entry)
                if c["flagged"]:
                    flagged_rows.append({**entry, "class_name": rec["name"], "label": label,
                                         "href": f"class-{label:08d}/index.html"})
            page = {"name": rec["name"], "label": label, "n": rec["n"], "k": k, "gap": rec["eigengap"]["gap"],
                    "runner_up": rec["eigengap"]["runner_up"], "runner_up_gap": rec["eigengap"]["runner_up_gap"],
                    "components": rec["graph_components"], "accuracy": rec["accuracy"], "flagged": flagged,
                    "figures": figs, "scatter_caption": caption, "clusters": clusters}
            (folder / "index.html").write_text(env.get_template("class").render(c=page, style=STYLE))
            table = pd.DataFrame([{"cluster": c["cluster"], "size": c["size"], "share": round(c["share"], 4),
                                   "score": round(c["score"], 4), "flagged": c["flagged"], "kind": c["kind"],
                                   "hot": round(c["hot"], 4), "off": round(c["off"], 4),
                                   "separation": round(c["separation"], 4), "box": " ".join(map(str, c["box"])),
                                   "where": c["where"], "flip_rate": None if not c["flip"] else round(c["flip"]["rate"], 4),
                                   "consistency": round(c.get("consistency", float("nan")), 4),
                                   "decided_by": c.get("decided_by"),
                                   "control_rate": (c["flip"] or {}).get("control_rate"),
                                   "confirmed": (c["flip"] or {}).get("confirmed"),
                                   "reason": c["reason"]} for c in clusters])
            table.to_csv(folder / "clusters.csv", index=False)
            class_json = {"label": label, "name": rec["name"], "n": rec["n"], "k": k, "eigengap": rec["eigengap"],
                          "accuracy": rec["accuracy"],
                          "clusters": [{"id": c["cluster"], "size": c["size"], "members": c["members"],
                                        "medoids": c["medoids"], "score": c["score"], "flagged": c["flagged"],
                                        "kind": c["kind"], "reason": c["reason"], "hot_spot_box": c["box"],
                                        "where": c["where"],
                                        "flip_rate": None if not verification.get(f"{label}/{c['cluster']}") else
                                        verification[f"{label}/{c['cluster']}"]["rate"],
                                        "flip": verification.get(f"{label}/{c['cluster']}")}
                                       for c in rec["clusters"]]}
            samples = _sample_table(store, g, labels, rec)
            samples.to_csv(folder / "samples.csv", index=False)
            sample_tables.append(samples)
            class_json["samples"] = {"file": "samples.csv", **{k: samples[k].tolist() for k in ("id", "cluster", "score")}}
            (folder / "summary.json").write_text(json.dumps(class_json, indent=1))
            classes_json.append(class_json)
            class_rows.append({**page, "href": f"class-{label:08d}/index.html"})
        flagged_rows.sort(key=lambda f: -f["score"])
        run = {"name": "spray audit", **(run or {})}
        run.update({"samples": len(store), "classes": [r["label"] for r in analysis["classes"]],
                    "accuracy": float(np.mean(store.labels == store.predictions)),
                    "composite": json.dumps(prov.get("composite"))[:120], "created": prov.get("created", ""),
                    "threshold": threshold, "store": str(store_path)})
    (out / "index.html").write_text(env.get_template("index").render(
        run=run, flagged=flagged_rows, classes=class_rows, skipped=analysis.get("skipped_classes", []), style=STYLE))
    ranked = [{"class": f["label"], "cluster": f["cluster"], "score": f["score"], "flip_rate": (f["flip"] or {}).get("rate"),
               "control_rate": (f["flip"] or {}).get("control_rate"), "confirmed": (f["flip"] or {}).get("confirmed")}
              for f in flagged_rows]
    samples = pd.concat(sample_tables, ignore_index=True) if sample_tables else pd.DataFrame()
    if len(samples):
        samples = samples.sort_values("score", ascending=False, kind="stable")
    samples.to_csv(out / "samples.csv", index=False)
    top = json.loads(samples.head(20).to_json(orient="records")) if len(samples) else []
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps({"run": run, "flagged": ranked, "classes": classes_json,
                               "samples": {"file": "samples.csv", "top": top}}, indent=1, default=str))
    os.replace(tmp, out / "summary.json")
    return out / "index.html"
