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

Among the eligible k (the eigengap's always is), the one whose flagged clusters hold the most
samples is reported, ties to the eigengap's k and then to the smaller k: the clustering that
accounts for most of the class's suspicious samples, so that a shortcut split across clusters at
one k is counted whole where another k keeps it together. A class with no flag at any eligible k
keeps the eigengap's k. The record says which k the eigengap chose and why another was reported.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Mapping

import numpy as np

from .suspicion import LOOK_LIFT, ClassInputs, ClassScores


@dataclass
class Choice:
    """The reported k, its scores, and the reason in words ("" where the eigengap's k stands)."""

    k: int
    scores: ClassScores
    reason: str


def _flagged_samples(scores: ClassScores) -> int:
    return sum(s.size for s in scores.clusters if s.flagged)


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
    best = max(scored, key=lambda k: (_flagged_samples(scored[k]), k == k_eigengap, -k))
    if best == k_eigengap:
        return Choice(k_eigengap, scored[k_eigengap], "")
    held, held_there = _flagged_samples(scored[best]), _flagged_samples(scored[k_eigengap])
    reason = (f"k={best} reported instead of the eigengap's k={k_eigengap}: its flagged clusters hold "
              f"{held} samples against {held_there}, one of them a group of look-alike inputs")
    return Choice(best, scored[best], reason)
