"""Which classes deserve a look first: an attention score per class and a rank across classes.

At 1000 classes a reader opens a few pages; the index must put the right ones on top. The order is
flagged classes first, then the rest, each group by its score: the evidence that the class holds a
separate, suspicious strategy. Two kinds of evidence are at hand per class:

- the suspicion score of its most suspicious cluster (``spray.analysis.suspicion``: how far the
  cluster's relevance moved into a hot spot or off the object, times how separated it is in the kNN
  graph); below the threshold it is a near miss, and the nearest misses are the next to look at;
- the spectrum (Anders et al. 2022, "Finding and removing Clever Hans", rank classes by the
  eigenvalues of their SpRAy spectral embedding): k eigenvalues near 0 followed by a jump mean k
  groups of explanations the kNN graph barely connects. spray's relative eigengap
  ``(l[k] - l[k-1]) / l[k]`` is that evidence on a 0..1 scale.

Both are put on one scale and averaged, with equal weight (nothing here is fitted to a bed): the
relative eigengap (0..1) and the strongest reportable cluster's suspicion as a share of the flagging
threshold (below 1 for an unflagged class). A class whose graph splits cleanly and whose split-off
group moved its relevance comes first; a clean split of harmless strategies, or a near-miss cluster
in a class that does not split, next. ``evidence`` says in words what put the class where it is.
The benchmark (benchmarks/bench_scale.py) prints the planted classes' ranks under this order, under
the eigengap alone and under the suspicion alone.
"""
from __future__ import annotations

from typing import Iterable, List, Tuple

from .suspicion import MIN_SHARE, MIN_SIZE


def attention(record: dict, threshold: float) -> Tuple[float, str]:
    """(score, evidence) of one class record (``analysis.json``'s per-class entry): the mean of the
    relative eigengap and the strongest reportable (flagged, if any) cluster's suspicion / threshold."""
    gap = float(record["eigengap"]["gap"])
    k = int(record["k"])
    spectrum = f"eigengap {gap:.2f} at k={k}"
    reportable = [c for c in record["clusters"] if c["size"] >= MIN_SIZE and c["share"] >= MIN_SHARE]
    if not reportable:
        return 0.5 * gap, f"no cluster large enough to report; {spectrum}"
    flagged = [c for c in reportable if c["flagged"]]
    top = max(flagged or reportable, key=lambda c: c["score"])
    score = 0.5 * gap + 0.5 * float(top["score"]) / threshold
    what = (f"cluster {top['cluster']} ({top['share']:.0%} of the class, {top['kind']}, at {top['where']}) "
            f"scores {top['score']:.2f}")
    if flagged:
        more = f" (+{len(flagged) - 1} more flagged)" if len(flagged) > 1 else ""
        return score, f"flagged: {what}{more}; {spectrum}"
    return score, f"not flagged; strongest: {what} (threshold {threshold:.2f}); {spectrum}"


def is_flagged(record: dict) -> bool:
    return any(c["flagged"] for c in record["clusters"])


def rank_classes(records: Iterable[dict]) -> List[dict]:
    """Assign ``record["attention"]["rank"]`` (1 = look first: flagged classes, then by score) to
    records that carry an attention score; returns them in rank order."""
    ordered = sorted(records, key=lambda r: (not is_flagged(r), -r["attention"]["score"], r["label"]))
    for rank, record in enumerate(ordered, 1):
        record["attention"]["rank"] = rank
    return ordered
