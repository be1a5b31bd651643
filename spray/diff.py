"""What changed between two audits: ``spray diff RUN_A RUN_B``.

Two runs of the same job over a data snapshot that grew, or over a retrained model. Per class (by
label) the clusters of the chosen k are matched across the runs by member overlap (Jaccard over the
sample ids both runs hold, one-to-one by the Hungarian method; a pair sharing less than
``MATCH_MIN`` is no match), and the diff reports: flagged clusters that appeared or disappeared (a
flagged cluster whose match is unflagged or absent), clusters that appeared or disappeared at all,
samples that moved into or out of flagged clusters (and new samples that landed in one), the change
of each matched cluster's suspicion and flip rate (``NOTABLE`` or more marks the class as changed),
and of the class's attention score and rank.

Output: text (the CLI prints it), a JSON document and a self-contained HTML page that links each
class to its page in RUN_B's report.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from .errors import ConfigError, SprayError

MATCH_MIN = 0.3
NOTABLE = 0.05  # a change of suspicion or flip rate (absolute) that the diff reports for a matched cluster
LIST_MAX = 20   # sample ids shown per list in text and HTML (JSON has them all)


def _analysis_dir(run: Union[str, Path]) -> Path:
    run = Path(run)
    for folder in (run / "analysis", run):
        if (folder / "analysis.json").is_file():
            return folder
    raise ConfigError(f"{run}: no analysis.json in {run / 'analysis'} or {run}; give a run folder (the job's out:) "
                      f"whose analysis finished (`spray analyze JOB`)")


def _load(run: Union[str, Path]) -> dict:
    folder = _analysis_dir(run)
    try:
        analysis = json.loads((folder / "analysis.json").read_text())
        verification = (json.loads((folder / "verification.json").read_text())
                        if (folder / "verification.json").is_file() else {})
    except (OSError, ValueError) as err:
        raise SprayError(f"{folder}: unreadable analysis results ({err}); re-run `spray analyze` on that job") from None
    run_folder = folder.parent if folder.name == "analysis" else folder
    return {"folder": run_folder, "classes": {int(c["label"]): c for c in analysis["classes"]},
            "verification": verification, "threshold": analysis.get("params", {}).get("threshold")}


def _flip(verification: dict, label: int, cluster: Optional[int]) -> Optional[float]:
    if cluster is None:
        return None
    entry = verification.get(f"{label}/{cluster}")
    return None if not entry else float(entry["rate"])


def match_clusters(a: List[dict], b: List[dict], common: set) -> List[tuple]:
    """One-to-one pairs (index in a or None, index in b or None, overlap) by member overlap."""
    from scipy.optimize import linear_sum_assignment
    sets_a = [set(c["members"]) & common for c in a]
    sets_b = [set(c["members"]) & common for c in b]
    overlap = np.zeros((len(a), len(b)))
    for i, sa in enumerate(sets_a):
        for j, sb in enumerate(sets_b):
            union = len(sa | sb)
            overlap[i, j] = len(sa & sb) / union if union else 0.0
    pairs, used_a, used_b = [], set(), set()
    if len(a) and len(b):
        for i, j in zip(*linear_sum_assignment(-overlap)):
            if overlap[i, j] >= MATCH_MIN:
                pairs.append((int(i), int(j), float(overlap[i, j])))
                used_a.add(int(i))
                used_b.add(int(j))
    pairs += [(i, None, 0.0) for i in range(len(a)) if i not in used_a]
    pairs += [(None, j, 0.0) for j in range(len(b)) if j not in used_b]
    return pairs


def _flagged_samples(record: dict) -> set:
    """The ids that carry one of a class's flagged findings (``carriers``; a run analysed before
    spray reported carriers has only its flagged clusters' members)."""
    return {m for c in record["clusters"] if c["flagged"] for m in c.get("carriers", c["members"])}


def diff_class(label: int, ra: dict, rb: dict, va: dict, vb: dict) -> dict:
    ids_a = {m for c in ra["clusters"] for m in c["members"]}
    ids_b = {m for c in rb["clusters"] for m in c["members"]}
    common = ids_a & ids_b
    clusters = []
    for i, j, overlap in match_clusters(ra["clusters"], rb["clusters"], common):
        ca = ra["clusters"][i] if i is not None else None
        cb = rb["clusters"][j] if j is not None else None
        entry = {"a": None if ca is None else ca["cluster"], "b": None if cb is None else cb["cluster"],
                 "overlap": round(overlap, 4),
                 "size_a": None if ca is None else ca["size"], "size_b": None if cb is None else cb["size"],
                 "score_a": None if ca is None else ca["score"], "score_b": None if cb is None else cb["score"],
                 "flagged_a": bool(ca and ca["flagged"]), "flagged_b": bool(cb and cb["flagged"]),
                 "flip_a": _flip(va, label, None if ca is None else ca["cluster"]),
                 "flip_b": _flip(vb, label, None if cb is None else cb["cluster"])}
        entry["score_change"] = (None if ca is None or cb is None else round(cb["score"] - ca["score"], 4))
        entry["flip_change"] = (None if entry["flip_a"] is None or entry["flip_b"] is None
                                else round(entry["flip_b"] - entry["flip_a"], 4))
        entry["change"] = ("flag appeared" if entry["flagged_b"] and not entry["flagged_a"] else
                           "flag disappeared" if entry["flagged_a"] and not entry["flagged_b"] else
                           "appeared" if ca is None else "disappeared" if cb is None else
                           "flagged in both" if entry["flagged_a"] else "matched")
        clusters.append(entry)
    flagged_a, flagged_b = _flagged_samples(ra), _flagged_samples(rb)
    att_a, att_b = ra.get("attention") or {}, rb.get("attention") or {}
    out = {"label": label, "name": rb.get("name", ra.get("name", str(label))), "n_a": ra["n"], "n_b": rb["n"],
           "k_a": ra["k"], "k_b": rb["k"], "clusters": clusters,
           "flags_appeared": [c["b"] for c in clusters if c["change"] == "flag appeared"],
           "flags_disappeared": [c["a"] for c in clusters if c["change"] == "flag disappeared"],
           "clusters_appeared": [c["b"] for c in clusters if c["change"] == "appeared"],
           "clusters_disappeared": [c["a"] for c in clusters if c["change"] == "disappeared"],
           "moved_into_flagged": sorted((flagged_b - flagged_a) & common),
           "moved_out_of_flagged": sorted((flagged_a - flagged_b) & common),
           "new_in_flagged": sorted(flagged_b - ids_a), "samples_added": len(ids_b - ids_a),
           "samples_removed": len(ids_a - ids_b),
           "attention_a": att_a.get("score"), "attention_b": att_b.get("score"),
           "rank_a": att_a.get("rank"), "rank_b": att_b.get("rank")}
    scores = [c["score_change"] for c in clusters if c["score_change"] is not None]
    out["largest_score_change"] = max(scores, key=abs) if scores else None
    for c in clusters:
        c["notable"] = any(abs(c[key] or 0.0) >= NOTABLE for key in ("score_change", "flip_change"))
    out["changed"] = bool(out["flags_appeared"] or out["flags_disappeared"] or out["clusters_appeared"]
                          or out["clusters_disappeared"] or out["moved_into_flagged"] or out["moved_out_of_flagged"]
                          or out["new_in_flagged"] or out["k_a"] != out["k_b"] or any(c["notable"] for c in clusters))
    return out


def diff_runs(run_a: Union[str, Path], run_b: Union[str, Path]) -> dict:
    """The diff of two finished runs (run folders or their analysis folders) as a JSON-ready dict."""
    a, b = _load(run_a), _load(run_b)
    both = sorted(set(a["classes"]) & set(b["classes"]))
    classes = [diff_class(label, a["classes"][label], b["classes"][label], a["verification"], b["verification"])
               for label in both]
    return {"run_a": str(a["folder"]), "run_b": str(b["folder"]), "match_min": MATCH_MIN,
            "classes_only_in_a": sorted(set(a["classes"]) - set(b["classes"])),
            "classes_only_in_b": sorted(set(b["classes"]) - set(a["classes"])),
            "flags_appeared": sum(len(c["flags_appeared"]) for c in classes),
            "flags_disappeared": sum(len(c["flags_disappeared"]) for c in classes),
            "classes_changed": sum(c["changed"] for c in classes), "classes_compared": len(classes),
            "classes": classes}


def _ids(ids: List[str]) -> str:
    shown = ", ".join(ids[:LIST_MAX])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > LIST_MAX else "")


def _num(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def to_text(d: dict) -> str:
    lines = [f"spray diff {d['run_a']} -> {d['run_b']}",
             f"{d['classes_compared']} classes compared, {d['classes_changed']} changed; flags appeared: "
             f"{d['flags_appeared']}, disappeared: {d['flags_disappeared']}"]
    if d["classes_only_in_a"] or d["classes_only_in_b"]:
        lines.append(f"classes only in A: {d['classes_only_in_a']}; only in B: {d['classes_only_in_b']}")
    for c in d["classes"]:
        if not c["changed"]:
            continue
        lines.append(f"class {c['label']} ({c['name']}): n {c['n_a']} -> {c['n_b']}, k {c['k_a']} -> {c['k_b']}, "
                     f"attention rank {_num(c['rank_a'], '{}')} -> {_num(c['rank_b'], '{}')}")
        for m in c["clusters"]:
            if m["change"] in ("matched", "flagged in both") and m["overlap"] >= 0.9 and not m["notable"]:
                continue  # the same cluster, the same suspicion and flip rate
            lines.append(f"  cluster {_num(m['a'], '{}')} -> {_num(m['b'], '{}')}: {m['change']} (overlap "
                         f"{m['overlap']:.2f}; suspicion {_num(m['score_a'])} -> {_num(m['score_b'])}; flip rate "
                         f"{_num(m['flip_a'], '{:.0%}')} -> {_num(m['flip_b'], '{:.0%}')})")
        for key, what in (("moved_into_flagged", "moved into flagged clusters"),
                          ("moved_out_of_flagged", "moved out of flagged clusters"),
                          ("new_in_flagged", "new samples in flagged clusters")):
            if c[key]:
                lines.append(f"  {len(c[key])} {what}: {_ids(c[key])}")
    if not d["classes_changed"]:
        lines.append("no cluster or flag changed")
    return "\n".join(lines)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>spray diff</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{{ style }}</style></head>
<body>
<h1>What changed</h1>
<p class="muted">A: <code>{{ d.run_a }}</code><br>B: <code>{{ d.run_b }}</code></p>
<p>{{ d.classes_compared }} classes compared, <b>{{ d.classes_changed }}</b> changed;
flags appeared: <b>{{ d.flags_appeared }}</b>, disappeared: <b>{{ d.flags_disappeared }}</b>.
Clusters are matched by member overlap (Jaccard over the samples both runs hold, at least {{ d.match_min }}).
{% if d.classes_only_in_a or d.classes_only_in_b %}Classes only in A: {{ d.classes_only_in_a }}; only in B:
{{ d.classes_only_in_b }}.{% endif %}</p>
{% for c in changed %}
<div class="card{% if c.flags_appeared %} flagged{% endif %}">
<b>{% if c.href %}<a href="{{ c.href }}">class {{ c.name }}</a>{% else %}class {{ c.name }}{% endif %}</b>
<span class="muted">(label {{ c.label }}): n {{ c.n_a }} &rarr; {{ c.n_b }}, k {{ c.k_a }} &rarr; {{ c.k_b }},
attention rank {{ c.rank_a or "-" }} &rarr; {{ c.rank_b or "-" }}</span>
<table><tr><th>cluster A &rarr; B</th><th>change</th><th>overlap</th><th>size</th><th>suspicion</th><th>flip rate</th></tr>
{% for m in c.clusters %}<tr{% if m.flagged_b %} class="flagged"{% endif %}>
<td>{{ m.a if m.a is not none else "-" }} &rarr; {{ m.b if m.b is not none else "-" }}</td><td>{{ m.change }}</td>
<td>{{ "%.2f"|format(m.overlap) }}</td><td>{{ m.size_a or "-" }} &rarr; {{ m.size_b or "-" }}</td>
<td>{{ fmt(m.score_a) }} &rarr; {{ fmt(m.score_b) }}</td><td>{{ pct(m.flip_a) }} &rarr; {{ pct(m.flip_b) }}</td></tr>
{% endfor %}</table>
{% for key, what in lists %}{% if c[key] %}<p>{{ c[key]|length }} {{ what }}: <code>{{ ids(c[key]) }}</code></p>{% endif %}{% endfor %}
</div>
{% else %}<p class="ok">No cluster or flag changed.</p>{% endfor %}
<p class="muted">Machine-readable: <a href="diff.json">diff.json</a>.</p>
</body></html>
"""


def to_html(d: dict, page_dir: Path) -> str:
    from jinja2 import Environment

    from .report.templates import STYLE
    report = Path(d["run_b"]) / "report"
    changed = []
    for c in d["classes"]:
        if c["changed"]:
            target = report / f"class-{c['label']:08d}" / "index.html"
            changed.append({**c, "href": os.path.relpath(target, page_dir) if target.is_file() else None})
    lists = [("moved_into_flagged", "moved into flagged clusters"), ("moved_out_of_flagged", "moved out of flagged "
             "clusters"), ("new_in_flagged", "new samples in flagged clusters")]
    return Environment(autoescape=True).from_string(PAGE).render(
        d=d, changed=changed, lists=lists, style=STYLE, ids=_ids, fmt=_num, pct=lambda x: _num(x, "{:.0%}"))


def write_diff(d: dict, out: Union[str, Path]) -> Dict[str, Path]:
    """``diff.json`` and ``diff.html`` in ``out`` (written to temp names, then renamed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "diff.json", "html": out / "diff.html"}
    for kind, text in (("json", json.dumps(d, indent=1)), ("html", to_html(d, out))):
        tmp = paths[kind].with_name(paths[kind].name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, paths[kind])
    return paths
