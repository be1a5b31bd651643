"""Which clusters look like Clever Hans? A per-cluster score with its reasons in words.

Reference: the class's typical map M, the per-pixel median of its normalised maps (a minority
strategy, such as an artifact on a fifth of the images, does not move a median). Its "object
region" O is the smallest set of cells holding 70% of M's relevance. For a cluster with mean map P:

- ``hot``: the excess share P(box) - M(box) in the bounding box of the largest connected blob where
  P exceeds M (a local shortcut: a tag, a corner, a border);
- ``off``: the excess share P(not O) - M(not O) off the object region (a non-local shortcut: a
  background colour or texture);
- ``separation``: 1 - conductance of the cluster in the kNN graph (the share of its edges that stay
  inside it); a cluster that is not separated from the class is a split, not a strategy;
- score = separation * max(hot, off), flagged when ``score >= THRESHOLD`` and the cluster holds at
  least ``MIN_SHARE`` of the class (and ``MIN_SIZE`` samples).

Validated on the bundled beds (default parameters): planted-artifact clusters score 0.29-0.53,
harmless second strategies and clean classes at most 0.17; the threshold sits between them. The
median reference assumes the shortcut is on a minority of the class: on a majority it becomes what
the class "normally" looks like, and the clean minority is what stands out (the sentence says which
way relevance moved, so a reader can tell).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

THRESHOLD = 0.2
MIN_SHARE = 0.02
MIN_SIZE = 5
OBJECT_MASS = 0.7
PASTE_MASS = 0.6
BLOB_LEVEL = 0.3


@dataclass
class Suspicion:
    cluster: int
    size: int
    share: float                       # of the class
    score: float
    flagged: bool
    kind: str                          # "local" (hot spot) or "non-local" (off the object region)
    hot: float
    off: float
    separation: float
    shift: float                       # half the L1 distance between the cluster's and the class's maps
    box: Tuple[int, int, int, int]     # hot spot (top, left, bottom, right), pixels of the heatmap, exclusive
    where: str
    reason: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["box"] = list(self.box)
        return d


def typical_map(pooled: np.ndarray) -> np.ndarray:
    m = np.median(pooled, axis=0)
    total = m.sum()
    return m / total if total > 0 else np.full(m.shape, 1.0 / m.size)


def object_region(reference: np.ndarray, mass: float = OBJECT_MASS) -> np.ndarray:
    flat = reference.ravel()
    order = np.argsort(flat)[::-1]
    count = int(np.searchsorted(np.cumsum(flat[order]), mass * flat.sum())) + 1
    region = np.zeros(flat.size, bool)
    region[order[:count]] = True
    return region.reshape(reference.shape)


def _hot_spot(diff: np.ndarray):
    positive = np.maximum(diff, 0)
    if positive.max() <= 0:
        return (slice(0, diff.shape[0]), slice(0, diff.shape[1]))
    labels, count = ndimage.label(positive > BLOB_LEVEL * positive.max())
    mass = ndimage.sum(positive, labels, range(1, count + 1))
    return ndimage.find_objects(labels)[int(np.argmax(mass))]


def describe_place(box: Tuple[int, int, int, int], shape: Tuple[int, int]) -> str:
    """'the lower-left corner', 'the top border', 'the centre', ... for a pixel box."""
    top, left, bottom, right = box
    h, w = shape
    cy, cx = (top + bottom) / 2 / h, (left + right) / 2 / w
    vert = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    horiz = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    wide, tall = (right - left) / w, (bottom - top) / h
    if wide > 0.7 and tall > 0.7:
        return "most of the image"
    if tall > 0.7:
        return f"a strip along the {horiz} side" if horiz != "centre" else "a vertical band through the centre"
    if wide > 0.7:
        return f"a strip along the {vert} border" if vert != "middle" else "a horizontal band through the middle"
    if vert == "middle" and horiz == "centre":
        return "the centre"
    if vert == "middle":
        return f"the {horiz} edge"
    if horiz == "centre":
        return f"the {vert} edge"
    return f"the {'upper' if vert == 'top' else 'lower'}-{horiz} corner"


def score_clusters(pooled: np.ndarray, labels: np.ndarray, adjacency: Optional[sp.spmatrix],
                   factor: Tuple[int, int] = (1, 1), threshold: float = THRESHOLD) -> List[Suspicion]:
    """Suspicion of every cluster in ``labels`` (noise, -1, is not scored). ``pooled``: (N, h, w)
    normalised maps; ``factor``: pooling factor, to report boxes in heatmap pixels."""
    reference = typical_map(pooled)
    region = object_region(reference)
    base_off = float(reference[~region].sum())
    n = len(labels)
    fh, fw = factor
    shape = (pooled.shape[1] * fh, pooled.shape[2] * fw)
    out = []
    for c in sorted(int(v) for v in np.unique(labels) if v >= 0):
        members = labels == c
        proto = pooled[members].mean(0)
        total = proto.sum()
        proto = proto / total if total > 0 else proto
        diff = proto - reference
        ys, xs = _hot_spot(diff)
        hot = float(proto[ys, xs].sum() - reference[ys, xs].sum())
        off = float(proto[~region].sum() - base_off)
        shift = float(0.5 * np.abs(diff).sum())
        separation = 1.0
        if adjacency is not None:
            inner = adjacency[members]
            volume = inner.sum()
            separation = float(1.0 - inner[:, ~members].sum() / volume) if volume > 0 else 0.0
        kind = "local" if hot >= off else "non-local"
        score = separation * max(hot, off)
        size = int(members.sum())
        share = size / n
        flagged = bool(score >= threshold and share >= MIN_SHARE and size >= MIN_SIZE)
        box = (ys.start * fh, xs.start * fw, ys.stop * fh, xs.stop * fw)
        place = describe_place(box, shape)
        in_box = float(proto[ys, xs].sum())
        if max(hot, off) < threshold / 2:
            reason = (f"relevance sits where the class typically puts it ({float(proto[~region].sum()):.0%} off the "
                      f"object region, typical {base_off:.0%}; largest excess {hot:.0%} at {place})")
        elif kind == "local":
            reason = (f"{in_box:.0%} of this cluster's relevance sits in a {box[2] - box[0]}x{box[3] - box[1]} patch at "
                      f"{place} (the class's typical map puts {float(reference[ys, xs].sum()):.0%} there), "
                      f"outside the region the rest of the class uses" if off > 0.05 else
                      f"{in_box:.0%} of this cluster's relevance sits in a {box[2] - box[0]}x{box[3] - box[1]} patch at "
                      f"{place} (typical: {float(reference[ys, xs].sum()):.0%}), inside the object region")
        else:
            reason = (f"{float(proto[~region].sum()):.0%} of this cluster's relevance lies off the object region the "
                      f"class typically uses (typical: {base_off:.0%}), spread over the background, strongest at {place}")
        verdict = "suspicious" if flagged else "not flagged"
        reason += (f"; {separation:.0%} of its graph edges stay inside it; score {score:.2f} "
                   f"({verdict}, threshold {threshold:.2f})")
        if score >= threshold and not flagged:
            reason += f"; too small to report ({size} samples, {share:.1%} of the class)"
        out.append(Suspicion(c, size, share, score, flagged, kind, hot, off, separation, shift, box, place, reason))
    return out


def region_mask(result: Suspicion, pooled: np.ndarray, factor: Tuple[int, int]) -> np.ndarray:
    """Heatmap-pixel mask of what a flip test should paste: the hot-spot box (local), or everything off
    the class's object region (non-local). For the paste the object region is drawn tighter
    (``PASTE_MASS`` = 60% of the typical relevance, not 70%) so that the pasted background reaches up
    to the other image's object: on the background bed, 70% left a ring of the original background
    and measured 77% flips against the bed's 98%; 60% measured 96%."""
    fh, fw = factor
    h, w = pooled.shape[1] * fh, pooled.shape[2] * fw
    mask = np.zeros((h, w), bool)
    if result.kind == "local":
        top, left, bottom, right = result.box
        mask[top:bottom, left:right] = True
    else:
        region = object_region(typical_map(pooled), PASTE_MASS)
        mask = ~np.kron(region, np.ones((fh, fw), bool)).astype(bool)
    return mask
