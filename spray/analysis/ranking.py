"""Which classes deserve a look first: an attention score per class and a rank across classes.

At 1000 classes a reader opens a few pages; the index must put the right ones on top. The order is
flagged classes first, then the rest, each group by its score: the strongest evidence that the class
holds a separate strategy. Two kinds of evidence are at hand per class:

- the suspicion score of its most suspicious reportable cluster (``spray.analysis.suspicion``: how far
  the cluster's relevance moved into a hot spot or off the object, times how separated it is in the
  kNN graph), as a share of the flagging threshold; below 1 it is a near miss;
- the spectrum (Anders et al. 2022, "Finding and removing Clever Hans", rank classes by the
  eigenvalues of their SpRAy spectral embedding): k eigenvalues near 0 followed by a jump mean k
  groups of explanations the kNN graph barely connects. spray's relative eigengap
  ``(l[k] - l[k-1]) / l[k]`` is that evidence on a 0..1 scale.

The two are on different scales, and what is ordinary on each depends on the run (the kNN graph of
1300 look-alike heatmaps has a relative eigengap near 0.55 whatever the class; a near-miss suspicion
is a few hundredths). So each evidence is measured against the run's own classes: a robust z-score,
``(value - median) / (1.4826 * MAD)`` over the classes of this run, which the few unusual classes do
not move (a spread below 0.01, the precision the report prints, counts as 0.01). A class's score
is its larger z: the evidence that stands out most from the ordinary class, whichever it is (a
clean split into harmless strategies is worth a look as much as a near-miss cluster; nothing is
weighted or fitted to a bed). Ties go to the larger sum of both. ``evidence`` says in words what
put the class where it is. The benchmark (benchmarks/bench_scale.py) prints the
planted classes' ranks under this order, under the eigengap alone and under the suspicion alone.
"""
from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np

from .suspicion import MIN_SHARE, MIN_SIZE

MAD_TO_SIGMA = 1.4826   # the MAD of a normal distribution is 0.6745 sigma
#: the smallest spread a z-score divides by: both evidences are fractions (the gap of 0..1, suspicion
#: in units of the threshold) that the report prints to two decimals; a difference of less than 0.01
#: means nothing, and a run whose classes agree closer than that must not turn it into 1000s of SDs
MIN_SCALE = 0.01


def evidence(record: dict, threshold: float) -> Dict[str, object]:
    """The raw evidence of one class record (``analysis.json``'s per-class entry): the relative
    eigengap, the strongest reportable (flagged, if any) cluster's suspicion / threshold, and words."""
    gap = float(record["eigengap"]["gap"])
    reportable = [c for c in record["clusters"] if c["size"] >= MIN_SIZE and c["share"] >= MIN_SHARE]
    flagged = [c for c in reportable if c["flagged"]]
    if not reportable:
        return {"gap": gap, "suspicion": 0.0, "reportable": False, "cluster": "no cluster large enough to report"}
    top = max(flagged or reportable, key=lambda c: c["score"])
    what = (f"cluster {top['cluster']} ({top['share']:.0%} of the class, {top['kind']}, at {top['where']}) "
            f"scores {top['score']:.2f}")
    if flagged:
        more = f" (+{len(flagged) - 1} more flagged)" if len(flagged) > 1 else ""
        what = f"flagged: {what}{more}"
    else:
        what = f"not flagged; strongest: {what}"
    return {"gap": gap, "suspicion": float(top["score"]) / threshold, "reportable": True, "cluster": what}


def robust_z(values: np.ndarray) -> np.ndarray:
    """(value - median) / (1.4826 MAD) over ``values``, the spread no less than ``MIN_SCALE`` (also where
    over half the values are equal: MAD 0)."""
    values = np.asarray(values, dtype=np.float64)
    centre = float(np.median(values))
    scale = MAD_TO_SIGMA * float(np.median(np.abs(values - centre)))
    return (values - centre) / max(scale, MIN_SCALE)


def _sd(z: float) -> str:
    """A z-score in words: one decimal below 10, whole numbers above (no "-0.0")."""
    z = float(z)
    if abs(z) >= 10:
        return f"{z:+.0f} robust SD"
    return f"{round(z, 1) + 0.0:+.1f} robust SD"


def is_flagged(record: dict) -> bool:
    return any(c["flagged"] for c in record["clusters"])


def rank_classes(records: Iterable[dict], threshold: float) -> List[dict]:
    """Set ``record["attention"]`` = {score, rank, evidence, eigengap_z, suspicion_z} on every record
    (rank 1 = look first: flagged classes, then by score) and return the records in rank order."""
    records = list(records)
    if not records:
        return []
    raw = [evidence(r, threshold) for r in records]
    z_gap = robust_z(np.array([e["gap"] for e in raw]))
    z_sus = robust_z(np.array([e["suspicion"] for e in raw]))
    gap_median = float(np.median([e["gap"] for e in raw]))
    flagged = {id(r): is_flagged(r) for r in records}
    for record, e, zg, zs in zip(records, raw, z_gap, z_sus):
        k = int(record["eigengap"]["k"])   # the eigengap's k, whichever k is reported
        spectrum = f"eigengap {e['gap']:.2f} at k={k} ({_sd(zg)} from the run's median class, {gap_median:.2f})"
        if not e["reportable"]:
            cluster = e["cluster"]
        elif flagged[id(record)]:   # flagged classes come first whatever their z
            cluster = f"{e['cluster']} (threshold {threshold:.2f})"
        else:
            cluster = f"{e['cluster']} (threshold {threshold:.2f}; {_sd(zs)} from the run's median class)"
        first, second = (spectrum, cluster) if zg > zs and not flagged[id(record)] else (cluster, spectrum)
        record["attention"] = {"score": float(max(zg, zs)), "eigengap_z": float(zg), "suspicion_z": float(zs),
                               "evidence": f"{first}; {second}"}
    ordered = sorted(records, key=lambda r: (not flagged[id(r)], -r["attention"]["score"],
                                             -(r["attention"]["eigengap_z"] + r["attention"]["suspicion_z"]),
                                             r["label"]))
    for rank, record in enumerate(ordered, 1):
        record["attention"]["rank"] = rank
    return ordered
