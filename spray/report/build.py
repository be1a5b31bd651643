"""Write the audit report of a run, a folder that opens offline::

    REPORT/index.html              findings first (prototype and examples of every flagged cluster, flip test
                                   with control), what to do next, then every class ranked (paged, filterable)
    REPORT/review.csv              the images of every flagged finding: class, cluster, id, store row, scores
    REPORT/samples.csv             every image of the run with its cluster and suspicion, most suspicious first
    REPORT/summary.json            every class and cluster (members, score, reason, box, flip test)
    REPORT/assets/                 stylesheet, page scripts and plotly.js (from the installed plotly package)
    REPORT/class-<label:08d>/      index.html (interactive map, spectrum, prototypes, clusters), clusters.csv,
                                   samples.csv, summary.json, sprite sheets of previews and prototypes

Reads the store (ids, heatmaps, logits), the analysis folder and the verification results; opens
the data source recorded in the store to show the images.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import h5py
import numpy as np
import pandas as pd
from jinja2 import Environment
from jinja2.loaders import DictLoader

from ..errors import SprayError
from ..store import HeatmapStore
from ..verify import review_order
from . import words
from .figures import fit, heat_tiles, sheet
from .images import DisplayImages
from .templates import CLASS, CLASS_JS, INDEX, INDEX_JS, STYLE

PREVIEWS = 2000        # per class: images kept for hover previews (flagged members and medoids first)
PREVIEW_SIDE = 96      # largest side of a preview tile, pixels
CHUNK = 256


def _env() -> Environment:
    return Environment(loader=DictLoader({"index": INDEX, "class": CLASS}), autoescape=True)


def _write_assets(out: Path) -> None:
    """The pages' stylesheet and scripts, and plotly.js from the installed plotly package: the
    report opens without a network."""
    from plotly.offline import get_plotlyjs
    assets = out / "assets"
    assets.mkdir(exist_ok=True)
    for name, text in (("spray.css", STYLE), ("spray-class.js", CLASS_JS), ("spray-index.js", INDEX_JS)):
        (assets / name).write_text(text)
    plotly = assets / "plotly.min.js"
    js = get_plotlyjs()
    if not plotly.is_file() or plotly.stat().st_size != len(js.encode()):
        tmp = plotly.with_name("plotly.min.js.tmp")
        tmp.write_text(js)
        os.replace(tmp, plotly)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _preview_positions(n: int, labels: np.ndarray, flagged: List[int], medoids: List[np.ndarray], limit: int,
                       seed: int = 0) -> np.ndarray:
    """Which of a class's ``n`` images get a preview: all of them up to ``limit``; beyond, the medoids
    and flagged members first, then a seeded random share of the rest."""
    if n <= limit:
        return np.arange(n)
    first = np.unique(np.concatenate([np.concatenate(medoids) if medoids else np.empty(0, np.int64),
                                      np.flatnonzero(np.isin(labels, flagged))]).astype(np.int64))[:limit]
    rest = np.setdiff1d(np.arange(n), first)
    extra = np.random.default_rng(seed).permutation(rest)[:max(0, limit - len(first))]
    return np.sort(np.concatenate([first, extra]))


def _tiles(store: HeatmapStore, images: DisplayImages, rows: np.ndarray):
    """Preview tiles of store ``rows``: images and heatmaps, shrunk to PREVIEW_SIDE, a chunk at a time."""
    pics, heats = [], []
    for start in range(0, len(rows), CHUNK):
        part = rows[start:start + CHUNK]
        pics.append(fit(images.rgb(store.index[part]), PREVIEW_SIDE))
        heats.append(fit(heat_tiles(store.relevance(part)), PREVIEW_SIDE))
    return np.concatenate(pics), np.concatenate(heats)


def _rounded(values, digits: int = 4) -> list:
    return [round(float(v), digits) for v in values]


def _class_report(store: HeatmapStore, images: DisplayImages, g: h5py.Group, rec: dict, folder: Path,
                  ctx: dict) -> dict:
    """One class's page and tables; returns what the index and summary.json need."""
    label, k = rec["label"], rec["k"]
    clusterer, verification, verified = ctx["clusterer"], ctx["verification"], ctx["verified"]
    rows = g["index"][()].astype(np.int64)
    n = len(rows)
    ks = sorted(int(name.rsplit("-", 1)[1]) for name in g["cluster"] if name.startswith(f"{clusterer}-"))
    clusterings = {kk: g[f"cluster/{clusterer}-{kk:02d}"][()].astype(np.int64) for kk in ks}
    labels = clusterings[k]
    clusters = rec["clusters"]
    flagged = [c["cluster"] for c in clusters if c["flagged"]]
    medoids = [np.searchsorted(rows, g[f"medoids/{c['cluster']}"][()]) for c in clusters
               if f"medoids/{c['cluster']}" in g]
    keep = _preview_positions(n, labels, flagged, medoids, ctx["previews"])
    pics, heats = _tiles(store, images, rows[keep])
    pos = np.full(n, -1, np.int64)
    pos[keep] = np.arange(len(keep))
    sheets = {"images": sheet(pics, folder / "previews-images").to_dict(),
              "heatmaps": sheet(heats, folder / "previews-heatmaps").to_dict()}
    protos = g["prototype"][()]
    shape = list(protos.shape[1:])
    sheets["prototypes"] = sheet(heat_tiles(protos), folder / "prototypes", max_side=max(shape),
                                 cols=len(protos)).to_dict()
    if "sample_score" in g:
        score, score_kind = g["sample_score"][()].astype(np.float64), "sample"
    else:
        by_cluster = {c["cluster"]: c["score"] for c in clusters}
        score, score_kind = np.array([by_cluster.get(int(v), 0.0) for v in labels]), "cluster"
    maps = {m: g[f"embedding/{m}"][()] for m in ("tsne", "umap") if f"embedding/{m}" in g}
    map_words = "t-SNE" if "tsne" in maps else "UMAP" if maps else ""
    map_words = (f"{map_words} of the spectral embedding" if maps else
                 "the spectral embedding's second and third eigenvectors")
    if not maps:
        maps = {"spectral": g["embedding/spectral"][()][:, 1:3]}
    ids = [store.ids[r] for r in rows]
    position_of = {i: p for p, i in enumerate(ids)}
    finding_at = {c["cluster"]: [position_of[m] for m in c["carriers"]] for c in clusters if c["flagged"]}
    in_finding = np.zeros(n, bool)
    in_finding[[p for at in finding_at.values() for p in at]] = True
    eg = rec["eigengap"]
    page_clusters, class_json_clusters, review = [], [], []
    for c in clusters:
        entry = verification.get(f"{label}/{c['cluster']}")
        examples = [{"pos": int(pos[p]), "id": ids[p]} for p in
                    (np.searchsorted(rows, g[f"medoids/{c['cluster']}"][()]) if f"medoids/{c['cluster']}" in g
                     else np.flatnonzero(labels == c["cluster"]))[:ctx["examples"]] if pos[p] >= 0]
        page_clusters.append({
            **{key: c[key] for key in ("cluster", "size", "share", "score", "flagged", "kind", "where", "reason")},
            "examples": examples, "flip": entry,
            "flip_words": words.flip(entry, rec["name"], c["flagged"], verified),
            "box_words": words.box(c["box"], shape, c["where"]) if c["kind"] == "local" else
                         f"none, a non-local finding ({c['where']})",
            "box": c["box"] if c["kind"] == "local" else None,
            "score_words": words.score(c, ctx["threshold"]), "n_carriers": len(c["carriers"]),
            "separation_words": words.separation(c["separation"], ctx["n_neighbors"])})
        class_json_clusters.append({
            "id": c["cluster"], "size": c["size"], "members": c["members"], "carriers": c["carriers"],
            "medoids": c["medoids"],
            "score": c["score"], "flagged": c["flagged"], "kind": c["kind"], "reason": c["reason"],
            "hot_spot_box": c["box"], "where": c["where"], "flip_rate": entry["rate"] if entry else None,
            "flip": entry})
        if c["flagged"]:
            review += [{"class": label, "class_name": rec["name"], "cluster": c["cluster"], "id": ids[p],
                        "row": int(rows[p]), "cluster_suspicion": round(c["score"], 4),
                        "flip_rate": None if not entry else round(entry["rate"], 4)} for p in finding_at[c["cluster"]]]
    accuracy_words = words.accuracy(rec["accuracy"])
    eigengap_words = words.eigengap(int(eg["k"]), eg["gap"], eg["runner_up"], eg["runner_up_gap"], rec["eigenvalues"])
    if rec["k_reason"]:   # the reported clustering is not the eigengap's
        eigengap_words += f" Shown: {rec['k_reason']}."
    page = {"name": rec["name"], "label": label, "n": n, "k": k, "ks": ks, "flagged": flagged,
            "review_count": sum(len(at) for at in finding_at.values()), "accuracy_words": accuracy_words,
            "components": rec["graph_components"], "map_words": map_words, "maps": list(maps),
            "score_kind": score_kind, "sheets": sheets, "shape": shape, "clusters": page_clusters,
            "eigengap_words": eigengap_words,
            "prototypes": [{"title": f"whole class, {n} images", "box": None, "flagged": False}] +
                          [{"title": f"cluster {c['cluster']}: {c['size']} images, suspicion {c['score']:.2f}",
                            "box": pc["box"], "flagged": c["flagged"]} for c, pc in zip(clusters, page_clusters)]}
    data = {"label": label, "name": rec["name"], "n": n, "k": k, "ids": ids, "rows": rows.tolist(),
            "maps": list(maps), "emb": {m: {"x": _rounded(xy[:, 0]), "y": _rounded(xy[:, 1])} for m, xy in maps.items()},
            "clusterings": {str(kk): v.tolist() for kk, v in clusterings.items()}, "flagged": flagged,
            "carriers": {str(c): at for c, at in finding_at.items()},
            "score": _rounded(score), "score_kind": score_kind,
            "score_max": float(max(2 * ctx["threshold"], float(score.max()) if n else 0.0)),
            "pos": pos.tolist(), "previews": ctx["previews"], "sheets": sheets, "threshold": ctx["threshold"],
            "spectrum": {"values": _rounded(rec["eigenvalues"][:20]), "k": int(eg["k"]),
                         "runner_up": eg["runner_up"]}}
    _write_text(folder / "index.html", ctx["env"].get_template("class").render(c=page, data=data))
    pd.DataFrame([{"cluster": c["cluster"], "size": c["size"], "share": round(c["share"], 4),
                   "score": round(c["score"], 4), "flagged": c["flagged"], "kind": c["kind"],
                   "hot": round(c["hot"], 4), "off": round(c["off"], 4), "separation": round(c["separation"], 4),
                   "box_top_left_bottom_right_px": " ".join(map(str, c["box"])), "where": c["where"],
                   "flip_rate": None if not e["flip"] else round(e["flip"]["rate"], 4),
                   "consistency": round(c.get("consistency", float("nan")), 4), "decided_by": c.get("decided_by"),
                   "control_rate": (e["flip"] or {}).get("control_rate"),
                   "confirmed": (e["flip"] or {}).get("confirmed"), "reason": c["reason"],
                   "review_ids": " ".join(c["carriers"]) if c["flagged"] else ""}
                  for c, e in zip(clusters, page_clusters)]).to_csv(folder / "clusters.csv", index=False)
    samples = pd.DataFrame({"id": ids, "row": rows, "label": store.labels[rows].astype(int),
                            "prediction": store.predictions[rows].astype(int), "cluster": labels.astype(int),
                            "cluster_flagged": np.isin(labels, flagged),
                            "in_finding": in_finding,
                            "score": np.round(score, 6)})
    samples.to_csv(folder / "samples.csv", index=False)
    class_json = {"label": label, "name": rec["name"], "n": n, "k": k, "k_reason": rec["k_reason"],
                  "eigengap": eg, "accuracy": rec["accuracy"],
                  "clusters": class_json_clusters,
                  "samples": {"file": "samples.csv", **{key: samples[key].tolist() for key in ("id", "cluster", "score")}}}
    if "attention" in rec:
        class_json["attention"] = rec["attention"]
    _write_text(folder / "summary.json", json.dumps(class_json, indent=1))
    href = f"{folder.name}/index.html"
    findings = [{**pc, "class_name": rec["name"], "label": label, "href": href, "prefix": f"{folder.name}/",
                 "sheets": sheets, "shape": shape, "examples": pc["examples"][:4]}
                for c, pc in zip(clusters, page_clusters) if c["flagged"]]
    top = max((c["score"] for c in clusters), default=0.0)
    attention = rec.get("attention")
    why = (attention or {}).get("evidence") or (
        f"flagged: {', '.join(words_short(c) for c in clusters if c['flagged'])}" if flagged else
        f"highest cluster suspicion {top:.2f} (threshold {ctx['threshold']:.2f})")
    first = min((review_order(f["score"], (f["flip"] or {}).get("confirmed")) for f in findings), default=None)
    row = {"label": label, "name": rec["name"], "href": href, "n": n, "k": k, "flagged": flagged,
           "top_score": round(top, 4), "why": why, "attention": attention,
           "flag_score": max((c["score"] for c in clusters if c["flagged"]), default=None),
           "confirmed": bool(first and first[0] == 0)}
    return {"row": row, "findings": findings, "json": class_json, "review": review, "samples": samples}


def words_short(c: dict) -> str:
    return f"cluster {c['cluster']} ({c['size']} images, suspicion {c['score']:.2f}, {c['where']})"


def rank_classes(rows: List[dict]) -> List[dict]:
    """Flags first (a class with a finding the flip test confirmed before one without, then the
    highest flagged suspicion first: :func:`spray.verify.review_order`), then the analysis's
    attention rank where it has one, else the highest cluster suspicion; ``rank`` counts from 1."""
    def key(r):
        if r["flagged"]:
            return (0, *review_order(r["flag_score"], r.get("confirmed")), r["label"])
        attention = r.get("attention") or {}
        if "rank" in attention:
            return (1, 0, attention["rank"], r["label"])
        return (2, -r["top_score"], 0, r["label"])
    ranked = sorted(rows, key=key)
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return ranked


def write_index(out: Path, run: dict, findings: List[dict], ranked: List[dict], review_count: int,
                skipped: List[dict]) -> Path:
    """The run's index.html: findings, what to do next, and every class ranked (``ranked``)."""
    _write_assets(out)
    _write_text(out / "index.html", _env().get_template("index").render(
        run=run, flagged=findings, classes=ranked, review_count=review_count, skipped=skipped))
    return out / "index.html"


def write_report(store_path, analysis_dir, out, verification: Optional[Dict[str, dict]] = None,
                 run: Optional[dict] = None, examples: int = 8, previews: int = PREVIEWS) -> Path:
    analysis_dir, out = Path(analysis_dir), Path(out)
    summary_path = analysis_dir / "analysis.json"
    if not summary_path.is_file():
        raise SprayError(f"{analysis_dir} has no analysis.json; run `spray analyze` first")
    analysis = json.loads(summary_path.read_text())
    verified = verification is not None
    out.mkdir(parents=True, exist_ok=True)
    params = analysis["params"]
    ctx = {"env": _env(), "clusterer": params["clusterer"], "threshold": params["threshold"],
           "n_neighbors": params["n_neighbors"], "verification": verification or {}, "verified": verified,
           "examples": examples, "previews": previews}
    results = []
    with HeatmapStore(store_path) as store, h5py.File(analysis_dir / "analysis.h5", "r") as ah5:
        prov = store.provenance
        images = DisplayImages(prov)
        for rec in analysis["classes"]:
            folder = out / f"class-{rec['label']:08d}"
            if folder.exists():
                shutil.rmtree(folder)  # a previous report's sprites may have another format
            folder.mkdir()
            results.append(_class_report(store, images, ah5[f"{rec['label']:08d}"], rec, folder, ctx))
        run = {"name": "spray audit", **(run or {})}
        accuracy = float(np.mean(store.labels == store.predictions))
        run.update({"samples": len(store), "classes": [r["label"] for r in analysis["classes"]],
                    "n_classes": len(analysis["classes"]), "accuracy": accuracy,
                    "accuracy_words": words.accuracy(accuracy, run.get("bed")),
                    "composite": prov.get("composite"), "composite_words": words.composite(prov.get("composite")),
                    "created": prov.get("created", ""), "threshold": params["threshold"], "store": str(store_path)})
    findings = sorted((f for r in results for f in r["findings"]),
                      key=lambda f: review_order(f["score"], (f["flip"] or {}).get("confirmed")))
    ranked = rank_classes([r["row"] for r in results])
    run["has_attention"] = any(r.get("attention") for r in ranked)
    review = [row for f in findings for r in results for row in r["review"]
              if row["class"] == f["label"] and row["cluster"] == f["cluster"]]
    pd.DataFrame(review, columns=["class", "class_name", "cluster", "id", "row", "cluster_suspicion",
                                  "flip_rate"]).to_csv(out / "review.csv", index=False)
    write_index(out, run, findings, ranked, len(review), analysis.get("skipped_classes", []))
    flagged_json = [{"class": f["label"], "cluster": f["cluster"], "score": f["score"],
                     "flip_rate": (f["flip"] or {}).get("rate"), "control_rate": (f["flip"] or {}).get("control_rate"),
                     "confirmed": (f["flip"] or {}).get("confirmed")} for f in findings]
    samples = pd.concat([r["samples"] for r in results], ignore_index=True) if results else pd.DataFrame()
    if len(samples):
        samples = samples.sort_values("score", ascending=False, kind="stable")
    samples.to_csv(out / "samples.csv", index=False)       # every sample of the run, most suspicious first
    top = json.loads(samples.head(20).to_json(orient="records")) if len(samples) else []
    _write_text(out / "summary.json", json.dumps({"run": run, "flagged": flagged_json,
                                                 "classes": [r["json"] for r in results],
                                                 "samples": {"file": "samples.csv", "top": top}}, indent=1, default=str))
    return out / "index.html"
