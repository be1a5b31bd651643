"""Which of SpRAy's clusterings a class reports: the eigengap's k, unless another k of the range
isolates a group whose inputs look alike as a whole and flags more of the class.

Why another k at all. The eigengap picks the k at which the class's relevance maps split most
clearly, and a local shortcut (a tag, a trigger, a border) moves a map's relevance to one place,
which is such a split: it is isolated at that k. A non-local one (a background type) spreads a
carrier's relevance thinly over the whole image, and the clearest split is elsewhere (where the
objects sit). Its carriers are then mixed into clusters of the eigengap's k and emerge, whole or
in a few look-alike parts, only at a coarser or finer k. ViRelAy shows an analyst every k of the
range for this reason; here each k of the range is scored with the same suspicion score and bars.

Which k may replace the eigengap's. Only one with a flagged cluster whose members' inputs are each
other's look-alikes (look lift at least ``LOOK_LIFT``, the non-local evidence's own bar): the
signature of the shortcut that the eigengap's k cannot isolate. Scoring every k unguarded would test
many more groups against the same bars, and fine k then finds small groups of one class's objects
drawn alike (on the digit beds: a few dozen similar 1s, pixel-consistent and flagged at k 8-10).

Which other k. Of the eligible k, the one whose look-alike finding is reported with the most
closed group of the class's look-alike graph (the lowest conductance of its ``carriers``, ties to
the smaller k): the objective by which :mod:`spray.analysis.extent` cuts a finding's carriers out
of that graph, applied across the range. A background's carriers are crops of one photo, a closed
community of look-alikes; a k that isolates it well yields a cluster whose look-alike group is that
community, while a k that fragments it yields clusters whose groups cut it less cleanly (spilling
into clean crops, or one corner of it). Counting the flagged samples instead favoured fragments:
on scenes-fresh6 k=8 (three flagged clusters of 146 samples, carriers F1 0.88 against the planted
ones) over k=5 (one of 127, 0.96; the conductances 0.072 against 0.027). On both training runs of
the six scene beds with a background (``benchmarks/bench_detect.py``) the background's F1 rose on
six runs (fresh6 0.88 -> 0.96 and 0.96 -> 0.98, fresh3 0.92 -> 0.95 and fresh2 0.96 -> 0.97 on
run 1, scenes and scenes-heldout 0.99 -> 1.00 on run 2), fell on one (scenes-heldout run 1, 1.00
-> 0.99), and no flag changed elsewhere. Chosen after seeing these beds, so they do not validate it.

That k replaces the eigengap's when its flagged clusters hold more samples, ties to the eigengap's
k: the eigengap's clustering stands unless another accounts for more of the class's suspicious
samples (a stamp at the eigengap's k is not traded for a smaller look-alike group elsewhere). A
class with no flag at any eligible k keeps the eigengap's k. The record says which k the eigengap
chose and why another was reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping

import numpy as np

from .extent import conductance
from .suspicion import LOOK_LIFT, ClassInputs, ClassScores


@dataclass
class Choice:
    """The reported k, its scores, and the reason in words ("" where the eigengap's k stands)."""

    k: int
    scores: ClassScores
    reason: str


def _flagged_samples(scores: ClassScores) -> int:
    return sum(s.size for s in scores.clusters if s.flagged)


def _cleanest_cut(scores: ClassScores, inputs: ClassInputs) -> float:
    """The lowest conductance, in the class's look-alike graph, of the carriers of a flagged
    look-alike finding of ``scores`` (inf without one)."""
    cuts = [conductance(inputs.look_graph(), s.carriers) for s in scores.clusters
            if s.flagged and s.look_consistency >= LOOK_LIFT]
    return min(cuts, default=float("inf"))


def choose_clustering(clusterings: Mapping[int, np.ndarray], k_eigengap: int, inputs: ClassInputs,
                      score: Callable[[np.ndarray], ClassScores]) -> Choice:
    """``clusterings``: {k: labels} of the class; ``score(labels)``: their suspicion. Only the
    eigengap's k and the k with a look-alike cluster (cheap to test) are scored."""
    candidates = [k for k, labels in clusterings.items() if k != k_eigengap and any(
        inputs.look_lift(labels == c) >= LOOK_LIFT for c in np.unique(labels) if c >= 0)]
    scored: Dict[int, ClassScores] = {k_eigengap: score(clusterings[k_eigengap])}
    for k in candidates:
        result = score(clusterings[k])
        if any(s.flagged and s.look_consistency >= LOOK_LIFT for s in result.clusters):
            scored[k] = result
    cuts = {k: _cleanest_cut(result, inputs) for k, result in scored.items() if k != k_eigengap}
    if not cuts:
        return Choice(k_eigengap, scored[k_eigengap], "")
    other = min(cuts, key=lambda k: (cuts[k], k))
    held, held_there = _flagged_samples(scored[other]), _flagged_samples(scored[k_eigengap])
    if held <= held_there:
        return Choice(k_eigengap, scored[k_eigengap], "")
    reason = (f"k={other} reported instead of the eigengap's k={k_eigengap}: of the k with a flagged group of "
              f"look-alike inputs, it cuts one most cleanly out of the look-alike graph (its carriers' "
              f"conductance {cuts[other]:.3f}), and its flagged clusters hold {held} samples against {held_there}")
    return Choice(other, scored[other], reason)
