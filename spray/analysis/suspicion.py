"""Which clusters look like Clever Hans? A per-cluster score with its evidence in words, and a
suspicion score for every sample.

A shortcut is a thing that looks the same in every sample that carries it: a source tag, a
trigger or a padding border are the same pixels at the same place; a background type is the same
colours wherever the object stands. Objects of one class at different places, sizes and colours
are not. So a cluster's relevance counts as suspicious only where the INPUT there is consistent
across its members and unlike the class's typical sample, never merely because the relevance sits
somewhere else (SpRAy splits a class by where its objects lie; such a cluster's hot spot is its
object, whose pixels differ from member to member).

For a cluster with members m in a class c (maps normalised to unit sum), every comparison is
against the class's TYPICAL sample: the median over all of c, members included, never the rest of
the class. Assumption: a shortcut is carried by a minority of its class (the VOC horse tag by a
fifth; fewer than half in any case), so it does not move the class's median. Against "the rest",
the complement of a shortcut group would look like a finding of its own: a clean majority whose
objects share one colour (yellow tennis balls next to a tagged quarter) is consistent and unlike
the rest (the tagged quarter), in its pixels and in its colours. Against the median it is the
typical sample itself and scores 0. A shortcut on most of a class is the class's typical picture
and cannot be told from its object by any within-class contrast (spray does not flag it).

- local evidence: the cells where the members' mean map exceeds the rest's form candidate blobs; a
  blob is kept when its pixels are consistent: with T the members' per-pixel median there and d_i a
  sample's mean absolute difference from T, ``consistency = 1 - median(d_m) / median(d_c)`` is at
  least ``CONSISTENT`` (the members are at least twice as close to their common picture as the
  class's typical sample is), and grown by neighbouring cells that are consistent on their own (the
  excess may cover only the middle of a tag). ``hot`` = how much more of the members' relevance lies
  in the kept blobs than the class's median share. Kept blobs covering more than half the image are
  a background, left to the non-local evidence;
- non-local evidence: each sample's relevance-weighted colour histogram (4 levels per channel).
  Colours on which the members' median histogram holds at least ``ENRICHED`` times the class's
  median are the cluster's own; ``off`` = how much more of the members' relevance lies on them than
  the class's median share; the consistency is that of the whole histogram (same formula, d_i the
  L1 distance from the members' median histogram): the members look at the same colours. A photo
  background varies in colour from crop to crop, so its members are not close to one common
  histogram, but their inputs are each other's look-alikes: the ``LOOK_NEIGHBOURS`` samples of the
  class nearest to a member by the colour distribution of its whole input are members. Where the
  colour consistency falls short, the look lift (:func:`_look`) stands in for it, with its own bar
  ``LOOK_LIFT``, for a minority of the class only (a look-closed group's complement is look-closed
  too); a sample's evidence is then its closeness to the members in the look-alike graph
  (:func:`spray.analysis.extent.look_closeness`);
- ``separation``: the share of the members' kNN edges that stay inside the cluster (1 -
  conductance; Anders et al. 2022 rank Clever-Hans candidates by how separable they are);
- score = separation x consistency x magnitude for the stronger of the two kinds; flagged when the
  score reaches ``THRESHOLD``, the consistency ``CONSISTENT`` and the separation ``SEPARATED``,
  and the cluster has ``MIN_SIZE`` samples and ``MIN_SHARE`` of its class.

A sample's score is the largest, over its class's clusters, of separation x consistency x that
sample's own magnitude for the cluster's finding (its relevance share in the consistent region
times how closely its pixels match the members' picture on the artifact's own consistent pixels,
not on the whole cells, whose background varies; or its relevance share on the
cluster's own colours beyond the class's median share, times how closely its relevance's colour
profile matches the members': a clean sample whose object has one of a background's colours puts
its relevance on that colour but not on the background's mix of them; without the match such
samples of a small colour finding outranked the carriers of the class's look-alike finding,
scenes-fresh2 sample AUROC 0.89 -> 0.98). Where a cluster's members are look-alikes
(a lift of at least ``LOOK_LIFT``), whichever kind decided, or a flagged colour finding is carried
by a look-alike group (the group's lift clears the bar and the members' lift into it is no lower:
:mod:`spray.analysis.extent`), a sample's closeness to
the members in the look-alike graph counts too (separation x lift x that closeness x the cluster's
excess relevance on its own colours): a
background can also be alike at one corner and be flagged by its pixels there, while its other
members differ at that corner. A tagged sample scores high even where SpRAy put it into another
cluster, so samples can be ranked for review.

Measured with the defaults (development beds; `benchmarks/bench_detect.py` prints the full table):
watermark F1 1.00, background F1 1.00, scenes-small stamp F1 0.98, each ranked first with sample
AUROC 1.00 and no other cluster flagged; SpRAy's position clusters score 0.00 ("inconsistent input").
The constants are ratios with a meaning (twice as close to the common picture as the typical sample,
twice the typical relevance, half the graph edges inside), not fitted to a bed. ``LOOK_LIFT`` (a
quarter of the way from chance to every look-alike a member) was set after looking at the scene
beds, the held-out ones included, so those beds do not validate it. The bar alone does not
separate: of all clusters of the k range that are mostly clean, the highest lift is 0.34 (the clean
rest of a background class, look-closed by exclusion; 0.28 with the look-alikes before
``look_neighbours`` used the Hellinger distance), and none of them is flagged, for want of
relevance on its own colours.

What it cannot see: a shortcut whose carriers the clustering it is given does not group. SpRAy's
eigengap k often mixes a background's carriers into clusters split by where the objects sit, so
:mod:`spray.analysis.choice` scores the other k of the range too. On the validation bed
``scenes-fresh2`` (a background on 49% of its class, which the model uses just enough: 51% flips)
the eigengap's k=2 holds at most 60% carriers in a cluster and nothing is flagged; k=6 isolates
160 samples at 83% carriers, flagged by their look (F1 0.80). A non-local finding whose members
are look-alikes is then reported with the look-alike group around its cluster as its ``carriers``
(:mod:`spray.analysis.extent`; 165 samples there, F1 0.91). So is a local finding whose
look-alikes the model looks at as at its members (:func:`_looked_at_alike`): a background seen at
one place, such as the sky of one photo across the top of its crops, is pixel-consistent there in
the cluster that SpRAy isolates, but its carriers are the crops of that photo, in whichever cluster
(scenes run 1: two such clusters of 60-80 samples, F1 0.60 each against the background's carriers,
their look-alike groups 0.99). Any other finding is carried by its members.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from .extent import look_closeness, look_graph, look_group, look_walk

THRESHOLD = 0.05
CONSISTENT = 0.5
SEPARATED = 0.5
ENRICHED = 2.0
MIN_SHARE = 0.02
MIN_SIZE = 5
BLOB_LEVEL = 0.25
MAX_BLOBS = 8
MAX_LOCAL_AREA = 0.5
GROW_STEPS = 2
COLOUR_LEVELS = 4
LOOK_LIFT = 0.25
LOOK_NEIGHBOURS = 10
LOOK_CANDIDATES = 5     # x LOOK_NEIGHBOURS: the plainly nearest, among which the locally scaled nearest are taken
LOOK_LEVELS = 8
CARRIED_AUROC = 0.75


@dataclass
class Suspicion:
    cluster: int
    size: int
    share: float                       # of the class
    score: float
    flagged: bool
    kind: str                          # "local" (same pixels at a fixed place) or "non-local" (same colours)
    hot: float                         # local magnitude: excess relevance share in the consistent region
    off: float                         # non-local magnitude: excess relevance share on the cluster's own colours
    consistency: float                 # of the deciding kind's evidence (1 = identical in every member)
    local_consistency: float
    colour_consistency: float
    look_consistency: float            # input look: how much more often than chance a member's look-alikes are members
    group_look: float                  # the same lift for the look-alike group that carries it (0: its members do)
    separation: float
    shift: float                       # half the L1 distance between the members' and the rest's mean maps
    box: Tuple[int, int, int, int]     # bounding box of the region (top, left, bottom, right), heatmap pixels
    where: str
    decided_by: str                    # which evidence decided the verdict
    reason: str
    seen_at_one_place: bool = False    # a local finding that is a background (its look-alikes carry it)
    region: np.ndarray = field(repr=False, default=None)   # (h, w) bool cells of the local region
    patch: np.ndarray = field(repr=False, default=None)    # (h*q, w*q) bool: its consistent pixels
    carriers: np.ndarray = field(repr=False, default=None)  # (n,) bool: the samples that carry a flagged finding

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("region", "patch", "carriers"):
            d.pop(name)
        d["box"] = list(self.box)
        return d


@dataclass
class ClassScores:
    clusters: List[Suspicion]
    sample_score: np.ndarray           # (n,) float32, aligned with the class's samples


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


EDGE_BAND = 1 / 8     # the outer band, as a share of each side, in which a frame's pixels lie (words only)


def describe_patch(patch: np.ndarray, box: Tuple[int, int, int, int], shape: Tuple[int, int]) -> Tuple[str, str]:
    """(place, region) in words for a local finding's consistent pixels ``patch`` (pixel grid) and their
    bounding ``box`` (heatmap pixels of ``shape``): "the lower-left corner" and "a 7x11 region at the
    lower-left corner" in general. A box over most of the image says little: pieces of a dashed frame
    at two corners span it, and so does a photo's background around the objects. Then the patch's
    own layout is described: "the image's edges" when nearly all of it (90%) lies in the outer band
    (an eighth of each side), else the share of the image it covers."""
    where = describe_place(box, shape)
    region = f"a {box[2] - box[0]}x{box[3] - box[1]} region at {where}"
    if where != "most of the image" or not patch.any():
        return where, region
    h, w = patch.shape
    bh, bw = max(1, round(h * EDGE_BAND)), max(1, round(w * EDGE_BAND))
    band = np.ones_like(patch)
    band[bh:h - bh, bw:w - bw] = False
    if (patch & band).sum() >= 0.9 * patch.sum():
        return "the image's edges", f"a frame along the image's edges ({patch.mean():.0%} of the image)"
    return where, f"{patch.mean():.0%} of the image, spread over most of it"


def _consistency(d: np.ndarray, members: np.ndarray) -> float:
    """1 - median(d over members) / median(d over the whole class): 1 when every member matches the
    common picture exactly, 0 when members are no closer to it than a typical sample of the class.
    The class's median, members included, is the reference, not the rest of the class: a minority
    does not move it, so the complement of a shortcut group (a clean majority, say all of one
    colour) is as close to its own picture as its class typically is and scores about 0."""
    typical = np.median(d)
    return float(1.0 - np.median(d[members]) / typical) if typical > 0 else 0.0


def _match(d: np.ndarray) -> np.ndarray:
    """Per sample, from its distance ``d`` to the members' common picture: 1 at the picture, 0 at
    or beyond the class's typical distance (its median)."""
    typical = np.median(d)
    return np.clip(1.0 - d / typical, 0, 1) if typical > 0 else np.zeros(len(d))


def _upsample(cells: np.ndarray, q: int) -> np.ndarray:
    return np.kron(cells, np.ones((q, q), dtype=cells.dtype)) if q > 1 else cells


def _deviation(pixels: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(n, H, W): each sample's absolute difference from the members' median picture, pixel by
    pixel (mean over the channels). A region's distance to the members' common picture is its mean
    over the region's pixels (the median is taken pixel by pixel), so one array serves every
    region tried for a cluster."""
    return np.abs(pixels - np.median(pixels[members], axis=0)[None]).mean(-1)


def _cell_means(deviation: np.ndarray, q: int) -> np.ndarray:
    """(n, h, w): ``deviation`` averaged over each cell of ``q`` x ``q`` pixels."""
    n, hq, wq = deviation.shape
    return deviation.reshape(n, hq // q, q, wq // q, q).mean((2, 4)) if q > 1 else deviation


@dataclass
class _Local:
    region: np.ndarray
    hot: float
    consistency: float
    evidence: np.ndarray               # per sample: share in region x match
    patch: np.ndarray                  # consistent pixels in and around the region (pixel grid)


def _local(pooled, members, pixels, q) -> _Local:
    n, h, w = pooled.shape
    q_shape = (h * q, w * q)
    empty = _Local(np.zeros((h, w), bool), 0.0, 0.0, np.zeros(n), np.zeros(q_shape, bool))
    excess = pooled[members].mean(0) - pooled[~members].mean(0)
    positive = np.maximum(excess, 0)
    if positive.max() <= 0 or pixels is None:
        return empty
    deviation = _deviation(pixels, members)
    cells = _cell_means(deviation, q)
    labels, count = ndimage.label(positive > BLOB_LEVEL * positive.max(), structure=np.ones((3, 3)))
    mass = ndimage.sum(positive, labels, range(1, count + 1))
    region = np.zeros((h, w), bool)
    for b in np.argsort(mass)[::-1][:MAX_BLOBS]:
        blob = labels == b + 1
        if _consistency(cells[:, blob].mean(1), members) >= CONSISTENT:
            region |= blob
    region = _grow(region, cells, members)
    if not region.any() or region.mean() > MAX_LOCAL_AREA:
        return empty        # nothing consistent, or most of the image: a background, for the colour evidence
    consistency = _consistency(cells[:, region].mean(1), members)
    share = pooled[:, region].sum(1)
    hot = float(share[members].mean() - np.median(share))
    patch = _patch(region, deviation, members, q)
    # a sample's match is judged on the artifact's own pixels: the cells also hold background,
    # which differs from member to member (a tag on another background is still the tag)
    d = deviation[:, patch].mean(1) if patch.any() else cells[:, region].mean(1)
    return _Local(region, hot, consistency, share * _match(d), patch)


def _patch(region: np.ndarray, deviation: np.ndarray, members: np.ndarray, q: int) -> np.ndarray:
    """The pixels in and one cell around ``region`` that are consistent one by one: the artifact's
    exact outline, which cells of ``q`` pixels only approximate (what the flip test pastes)."""
    around = _upsample(ndimage.binary_dilation(region, structure=np.ones((3, 3))), q)
    d = deviation[:, around]                                           # (n, k)
    typical = np.median(d, axis=0)
    consistent = 1.0 - np.median(d[members], axis=0) / np.maximum(typical, 1e-12) >= CONSISTENT
    patch = np.zeros(around.shape, bool)
    patch[around] = consistent & (typical > 0)
    return patch


def _grow(region: np.ndarray, cells: np.ndarray, members: np.ndarray, steps: int = GROW_STEPS) -> np.ndarray:
    """Add neighbouring cells whose own pixels are consistent too (``cells``: each sample's
    deviation per cell, :func:`_cell_means`): the excess relevance may cover only the middle of a
    tag, the flip test needs all of it."""
    for _ in range(steps):
        ring = ndimage.binary_dilation(region, structure=np.ones((3, 3))) & ~region
        ys, xs = np.nonzero(ring)
        added = [_consistency(cells[:, y, x], members) >= CONSISTENT for y, x in zip(ys, xs)]
        if not any(added):
            break
        region = region.copy()
        region[ys[added], xs[added]] = True
    return region


def _colour_bins(pixels: np.ndarray, levels: int) -> np.ndarray:
    """(n, H, W): each pixel's quantised colour, offset per sample so that one bincount serves all."""
    level = np.clip((pixels * levels).astype(np.int64), 0, levels - 1)
    bins = (level[..., 0] * levels + level[..., 1]) * levels + level[..., 2]
    return bins + (np.arange(len(pixels)) * levels ** 3)[:, None, None]


def colour_histograms(pooled: np.ndarray, pixels: np.ndarray, levels: int = COLOUR_LEVELS) -> np.ndarray:
    """(n, levels**3): each sample's relevance (its normalised map, spread evenly over the pixels of
    a cell) per quantised colour."""
    n, h, w = pooled.shape
    q = pixels.shape[1] // h
    weights = np.repeat(np.repeat(pooled, q, axis=1), q, axis=2) / (q * q)
    hist = np.bincount(_colour_bins(pixels, levels).ravel(), weights=weights.ravel(), minlength=n * levels ** 3)
    return hist.reshape(n, levels ** 3)


@dataclass
class _NonLocal:
    off: float
    consistency: float
    evidence: np.ndarray
    look: float = 0.0


def look_neighbours(pixels: np.ndarray, k: int = LOOK_NEIGHBOURS) -> np.ndarray:
    """(n, k): each sample's nearest samples of its class by the colour distribution of its whole
    input (no relevance): photos from one source are each other's look-alikes. Distributions are
    compared by their Hellinger distance (the Euclidean distance of the square roots of the colour
    frequencies), on ``LOOK_LEVELS`` levels per channel (512 colours): the plain Euclidean distance
    of frequencies is decided by the few largest bins, so two crops that share a dominant colour
    (a sky, a lawn) were look-alikes whatever else they held. Measured against the scene beds'
    ground truth (9 background runs, no relevance involved), a background carrier's 10 look-alikes
    were carriers 0.945-0.993 of the time with the plain distance on 64 colours, 0.987-1.000 with
    the Hellinger distance, and a clean sample's were clean 0.877-0.949, then 0.918-0.988.

    Every sample names ``k`` look-alikes, however far the nearest are, and in a kNN graph a dense
    group (many crops of one photo) is named by the stragglers around it that have no look-alike of
    their own (crops of grey textures under a random tint each, one per tint: a quarter of their
    look-alikes were crops of the one dark photo that looked most like them on scenes-fresh3, while
    those crops named them back 1% of the time; the "hubness" of nearest-neighbour graphs). The
    look-alike group around such a photo then took the stragglers in (scenes-fresh3 run 1: 117
    carriers, 12 of them textures). So the distances are put on each sample's own scale before
    the k nearest are taken: d(i, j) / sqrt(s_i s_j), with s_i the mean distance to i's ``k``
    nearest (the local scaling of Jegou et al. 2007 and of Zelnik-Manor and Perona 2004), among
    the ``LOOK_CANDIDATES`` nearest by plain distance: a straggler is far from everything, so a
    dense group's members, near each other, are no nearer to it than other stragglers. On the
    validation beds' backgrounds (run 1, an earlier machine's models) F1 went 0.95 -> 0.99 (scenes-fresh3),
    0.90 -> 1.00 (scenes-fresh4), 0.94 -> 0.96 (scenes-fresh2), 0.95 -> 0.96 (scenes-fresh6)."""
    from .graph import knn_indices
    n, h, w = pixels.shape[:3]
    counts = np.bincount(_colour_bins(pixels, LOOK_LEVELS).ravel(), minlength=n * LOOK_LEVELS ** 3)
    index, distance, _ = knn_indices(np.sqrt(counts.reshape(n, -1) / (h * w)), LOOK_CANDIDATES * k, "exact")
    k = min(k, index.shape[1])
    scale = np.maximum(distance[:, :k].mean(1), 1e-12)
    scaled = distance / np.sqrt(scale[:, None] * scale[index])
    order = np.argsort(scaled, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(index, order, axis=1)


def _look(neighbours: np.ndarray, members: np.ndarray) -> float:
    """The look lift: the members' mean fraction of look-alikes that are members, beyond chance (the
    cluster's size), as a fraction of what is left above chance: 0 when looks and cluster are
    unrelated, 1 when every member's look-alikes are members. A look-closed group's complement is
    look-closed too, so only a minority of its class can carry this evidence (a majority is the
    class's typical picture)."""
    return _look_into(neighbours, members, members)


def _look_into(neighbours: np.ndarray, members: np.ndarray, group: np.ndarray, typical: bool = False) -> float:
    """The look lift of ``members`` towards ``group`` (which holds them): the members' mean fraction
    of look-alikes in the group, beyond chance (the group's size), as a fraction of what is left
    above chance; 0 for a group of half the class or more (:func:`_look` is the group's own).
    ``typical``: the mean over the three quarters of the members most in the group, so that a few
    members from elsewhere (up to a quarter) do not decide whether the rest belong to it. Not the
    median: a share of 10 look-alikes takes 11 values, and members and group tie at it where the
    members' lower half merely borders the group."""
    chance = float(group.mean())
    if chance >= 0.5:
        return 0.0
    shares = group[neighbours[members]].mean(1)
    if typical:
        shares = np.sort(shares)[len(shares) // 4:]
    return float((shares.mean() - chance) / (1.0 - chance))


def _non_local(hist, members) -> _NonLocal:
    n, bins = hist.shape
    # the members' typical profile against the class's (medians: a minority moves neither)
    hm, typical = np.median(hist[members], axis=0), np.median(hist, axis=0)
    prior = 0.1 / bins      # a pseudo-count: a colour nobody looks at is not "enriched" by noise
    own = (hm + prior) >= ENRICHED * (typical + prior)
    if not own.any():
        return _NonLocal(0.0, 0.0, np.zeros(n))
    share = hist[:, own].sum(1)
    base = float(np.median(share))
    off = float(share[members].mean() - base)
    # consistency of the whole colour profile, not just of the share on the cluster's own colours:
    # the complement of a tagged group also has "own" colours (all but the tag's), but objects of
    # random colours give it no common profile
    d = np.abs(hist - np.median(hist[members], axis=0)[None]).sum(1)
    return _NonLocal(off, _consistency(d, members), np.maximum(share - base, 0) * _match(d))


def _separation(adjacency: Optional[sp.spmatrix], members: np.ndarray) -> float:
    if adjacency is None:
        return 1.0
    inner = adjacency[members]
    volume = inner.sum()
    return float(1.0 - inner[:, ~members].sum() / volume) if volume > 0 else 0.0


def separation_lift(adjacency: Optional[sp.spmatrix], group: np.ndarray) -> float:
    """How much better than chance the class's relevance graph keeps ``group`` (n,) bool apart: the
    share of its members' edges that stay inside it beyond the group's share of the class (what a
    group unrelated to the relevance keeps), as a fraction of what is left above chance (0:
    unrelated, 1: no edge leaves it); the look lift's form, applied to the relevance. 0 for an
    empty group or the whole class; 1 for any other group without a graph."""
    share = float(group.mean()) if len(group) else 0.0
    if share <= 0 or share >= 1:
        return 0.0
    if adjacency is None:
        return 1.0
    return (_separation(adjacency, group) - share) / (1.0 - share)


@dataclass
class ClassInputs:
    """What every clustering of one class is scored against, computed once per class: the input
    pixels, the relevance-weighted colour histograms and each sample's look-alikes (None without
    pixels, or with too few samples for look-alikes)."""

    pixels: Optional[np.ndarray]
    hist: Optional[np.ndarray]
    looks: Optional[np.ndarray]
    graph: Optional[sp.csr_matrix] = None   # the symmetric look-alike graph, made when first needed

    @classmethod
    def of(cls, pooled: np.ndarray, pixels: Optional[np.ndarray]) -> "ClassInputs":
        if pixels is None:
            return cls(None, None, None)
        looks = look_neighbours(pixels) if len(pooled) > LOOK_NEIGHBOURS else None
        return cls(pixels, colour_histograms(pooled, pixels), looks)

    def look_lift(self, members: np.ndarray) -> float:
        """The members' look lift (:func:`_look`); 0 without look-alikes."""
        return _look(self.looks, members) if self.looks is not None and not members.all() else 0.0

    def look_graph(self) -> sp.csr_matrix:
        """The class's symmetric look-alike graph (:func:`spray.analysis.extent.look_graph`)."""
        if self.graph is None:
            self.graph = look_graph(self.looks)
        return self.graph


def score_clusters(pooled: np.ndarray, labels: np.ndarray, adjacency: Optional[sp.spmatrix],
                   factor: Tuple[int, int] = (1, 1), threshold: float = THRESHOLD,
                   pixels: Optional[np.ndarray] = None, inputs: Optional[ClassInputs] = None) -> ClassScores:
    """Suspicion of every cluster in ``labels`` (noise, -1, is not scored) and of every sample.
    ``pooled``: (N, h, w) normalised maps; ``factor``: pooling factor, to report boxes in heatmap
    pixels; ``pixels``: (N, h*q, w*q, 3) input pixels in [0, 1] on a grid aligned with the cells
    (:func:`spray.analysis.features.read_pixels`), or ``inputs`` made of them once for several
    clusterings of the class. Without pixels there is no evidence that a hot spot is an artifact
    rather than an object, and nothing is flagged."""
    n, h, w = pooled.shape
    fh, fw = factor
    shape = (h * fh, w * fw)
    inputs = inputs if inputs is not None else ClassInputs.of(pooled, pixels)
    pixels, hist, looks = inputs.pixels, inputs.hist, inputs.looks
    q = pixels.shape[1] // h if pixels is not None else 1
    out, sample = [], np.zeros(n)
    for c in sorted(int(v) for v in np.unique(labels) if v >= 0):
        members = labels == c
        size, share = int(members.sum()), float(members.mean())
        separation = _separation(adjacency, members)
        if members.all():
            local, non_local = _local(pooled, members, None, q), _NonLocal(0.0, 0.0, np.zeros(n))
            shift = 0.0
        else:
            local = _local(pooled, members, pixels, q)
            non_local = _non_local(hist, members) if hist is not None else _NonLocal(0.0, 0.0, np.zeros(n))
            if looks is not None:
                non_local.look = _look(looks, members)
            shift = float(0.5 * np.abs(pooled[members].mean(0) - pooled[~members].mean(0)).sum())
        local_score = separation * max(local.consistency, 0) * max(local.hot, 0)
        # non-local: the members look at the same colours, or (a photo background varies in colour
        # from crop to crop) their inputs are each other's look-alikes
        by_look = non_local.consistency < CONSISTENT and non_local.look >= LOOK_LIFT
        non_local_consistency = non_local.look if by_look else non_local.consistency
        colour_score = separation * max(non_local_consistency, 0) * max(non_local.off, 0)
        # the same pixels at a fixed place also means the same colours: a local finding that stands
        # on its own takes precedence over the colour evidence it implies
        local_stands = local.consistency >= CONSISTENT and local_score >= threshold
        kind = "local" if local_stands or local_score >= colour_score else "non-local"
        by_look = by_look and kind == "non-local"
        consistency = local.consistency if kind == "local" else non_local_consistency
        score = local_score if kind == "local" else colour_score
        if not by_look:
            evidence = local.evidence if kind == "local" else non_local.evidence
            sample = np.maximum(sample, separation * max(consistency, 0) * evidence)
        # the members' look-alike walk (spray.analysis.extent), whichever kind decided
        walk = look_walk(inputs.look_graph(), members) if non_local.look >= LOOK_LIFT else None
        if walk is not None:
            closeness = look_closeness(walk, members)
            sample = np.maximum(sample, separation * non_local.look * closeness * max(non_local.off, 0))
        consistent = consistency >= (LOOK_LIFT if by_look else CONSISTENT)
        flagged = bool(score >= threshold and consistent and separation >= SEPARATED
                       and size >= MIN_SIZE and share >= MIN_SHARE)
        # a flagged colour finding whose members are too few of their look-alike group to be each other's
        # look-alikes (a cluster with 20 crops of a photo that has 156: a member's look-alikes are mostly
        # outside it) is judged by the group it defines, walked to from the members that the others reach
        # (a few crops of other photos among them do not each seed a walk: look_walk's from_core):
        # carried by it where the group's own look lift clears the bar and the typical members belong to
        # the group at least as much as the group's typical samples (the mean share of look-alikes in
        # it, beyond chance, of the three quarters most in it; over all, 2 such crops of 15 members
        # decided): else the lift is the other samples' and the members merely border them (a
        # synthetic class's 24 colour-alike samples, 0.82 of whose look-alikes lie in a group of 56
        # against the group's own 0.87). A sample's closeness to the group counts as above
        group = None
        if walk is None and flagged and kind == "non-local" and looks is not None:
            candidate = look_walk(inputs.look_graph(), members, from_core=True)
            group = look_group(inputs.look_graph(), candidate, members)
            group_lift = inputs.look_lift(group)
            typical_member = _look_into(looks, members, group, typical=True)
            typical_sample = _look_into(looks, group, group, typical=True)
            if group_lift >= LOOK_LIFT and typical_member >= typical_sample:
                walk = candidate
                sample = np.maximum(sample, separation * group_lift * look_closeness(walk, members)
                                    * max(non_local.off, 0))
            else:
                group = None
        region = local.region if kind == "local" and local.region.any() else None
        if region is not None and local.patch.any():       # the consistent pixels, in heatmap pixels
            ys, xs = np.nonzero(local.patch)
            sy, sx = shape[0] / local.patch.shape[0], shape[1] / local.patch.shape[1]
            box = (int(ys.min() * sy), int(xs.min() * sx), int(np.ceil((ys.max() + 1) * sy)),
                   int(np.ceil((xs.max() + 1) * sx)))
        elif region is not None:
            ys, xs = np.nonzero(region)
            box = (int(ys.min()) * fh, int(xs.min()) * fw, (int(ys.max()) + 1) * fh, (int(xs.max()) + 1) * fw)
        else:
            box = _excess_box(pooled, members, factor)
        patch = local.patch if region is not None else np.zeros(local.patch.shape, bool)
        where, region_words = describe_patch(patch, box, shape)
        decided_by, reason = _explain(kind, by_look, flagged, score, threshold, consistency, separation, local,
                                      non_local, shift, region_words, where, size, share)
        # a non-local finding whose members are look-alikes is carried by the look-alike group around
        # the cluster (spray.analysis.extent), and so is a local one whose look-alikes the model looks
        # at as at its members (a background seen at one place); a tag by the cluster's members
        if group is None and flagged and walk is not None:
            group = look_group(inputs.look_graph(), walk, members)
        seen_at_one_place = kind == "local" and group is not None and _looked_at_alike(non_local.evidence, members, group)
        look_carried = group is not None and (kind == "non-local" or seen_at_one_place)
        carriers = group if look_carried else members
        if seen_at_one_place:
            reason += (f"; the model looks at the samples whose inputs look like its members' as at its members (on "
                       f"their own colours, more than at the rest of the class): a background seen "
                       f"{'over' if where == 'most of the image' else 'at'} {where}, not "
                       f"a tag put on any background")
        if look_carried:
            reason += (f"; carried by the {int(carriers.sum())} samples of the class whose inputs look most like its "
                       f"members' (the look-alike group around it, {int((carriers & ~members).sum())} of them in other "
                       f"clusters, {int((members & ~carriers).sum())} members left out), all listed for review")
        out.append(Suspicion(c, size, share, float(score), flagged, kind, float(local.hot), float(non_local.off),
                             float(consistency), float(local.consistency), float(non_local.consistency),
                             float(non_local.look), inputs.look_lift(carriers) if look_carried else 0.0,
                             separation, shift, box, where, decided_by, reason, bool(seen_at_one_place),
                             local.region if region is not None else np.zeros((h, w), bool),
                             patch,
                             carriers if flagged else np.zeros(n, bool)))
    return ClassScores(out, sample.astype(np.float32))


def _looked_at_alike(evidence: np.ndarray, members: np.ndarray, group: np.ndarray) -> bool:
    """Whether the model looks at a local finding's look-alikes as it looks at its members: the
    samples that the look-alike ``group`` adds to the cluster put more of their relevance on the
    members' own colours (``evidence``, the non-local sample evidence) than the class's other
    samples do, in at least ``CARRIED_AUROC`` of their pairs (the area under the ROC curve; 0.5 is
    chance, 0.75 halfway to always). Then the strategy is the look, a background seen at one place
    (the sky of one photo across the top of its crops, whose crops at other offsets the model reads
    by the same colours), not the pixels there. A tag, a trigger or a border is put on any
    background: its members' look-alikes that lack it are looked at like any sample (0.45-0.63 for
    the scene beds' borders, whose members are look-alikes by the border's own colours; the
    backgrounds 0.83-0.97, and 0.58 for a 12-member cluster; seen before the bar was set, so they
    do not validate it; a later machine's models: borders 0.44-0.68, backgrounds 0.83-0.98 but
    0.73-0.75 for scenes-fresh4's, whose members then carry it, F1 0.81 against its group's 0.99,
    and 0.59 on a second training run of it).
    Judged on relevance rather than on the pixels at the patch: crops of the
    photo at other offsets need not show the same sky there (their pixel match was at chance,
    0.47-0.51, on scenes' background)."""
    from scipy.stats import mannwhitneyu
    added, rest = group & ~members, ~group & ~members
    if not added.any() or not rest.any():
        return False
    u = mannwhitneyu(evidence[added], evidence[rest]).statistic
    return bool(u / (added.sum() * rest.sum()) >= CARRIED_AUROC)


def _excess_box(pooled, members, factor) -> Tuple[int, int, int, int]:
    """Bounding box of the largest blob where the members' mean map exceeds the rest's."""
    n, h, w = pooled.shape
    fh, fw = factor
    if members.all():
        return (0, 0, h * fh, w * fw)
    positive = np.maximum(pooled[members].mean(0) - pooled[~members].mean(0), 0)
    if positive.max() <= 0:
        return (0, 0, h * fh, w * fw)
    labels, count = ndimage.label(positive > BLOB_LEVEL * positive.max(), structure=np.ones((3, 3)))
    mass = ndimage.sum(positive, labels, range(1, count + 1))
    ys, xs = ndimage.find_objects(labels)[int(np.argmax(mass))]
    return (ys.start * fh, xs.start * fw, ys.stop * fh, xs.stop * fw)


def _explain(kind, by_look, flagged, score, threshold, consistency, separation, local, non_local, shift,
             region_words, where, size, share) -> Tuple[str, str]:
    """(which evidence decided, the sentence). The sentence states the verdict first and never
    contradicts it. ``region_words``: the local region, as :func:`describe_patch` words it."""
    patch = region_words
    if flagged:
        if kind == "local":
            what = (f"suspicious (local shortcut, score {score:.2f}): the members carry the same pixels in {patch} "
                    f"(consistency {consistency:.2f}: they are that much closer to their common picture than the "
                    f"class's typical sample) and put {local.hot:.0%} more of their relevance there than the class "
                    f"typically does")
        elif by_look:
            what = (f"suspicious (non-local shortcut, score {score:.2f}): the members' inputs look alike as a whole "
                    f"(the samples closest to a member in colour distribution are members, {consistency:.2f} of the "
                    f"way from chance to always), and {non_local.off:.0%} more of their relevance lies on their "
                    f"own colours than the class typically puts there, strongest at {where}")
        else:
            what = (f"suspicious (non-local shortcut, score {score:.2f}): {non_local.off:.0%} more of the members' "
                    f"relevance lies on colours the class typically hardly looks at, in every member alike "
                    f"(consistency {consistency:.2f}), strongest at {where}")
        decided = "pixel consistency" if kind == "local" else "input look" if by_look else "colour consistency"
        return decided, f"{what}; {separation:.0%} of its graph edges stay inside it"
    if size < MIN_SIZE or share < MIN_SHARE:
        return "size", (f"not flagged: too small to report ({size} samples, {share:.1%} of the class; score "
                        f"{score:.2f})")
    if separation < SEPARATED:
        return "separation", (f"not flagged: only {separation:.0%} of its graph edges stay inside it, so it is a "
                              f"split of the class rather than a strategy of its own (score {score:.2f})")
    if max(local.consistency, non_local.consistency) < CONSISTENT and non_local.look < LOOK_LIFT:
        moved = f"{shift:.0%} of its relevance sits elsewhere than in the rest of the class, strongest at {where}"
        return "inconsistent input", (f"not flagged: {moved}, but the input there differs from member to member "
                                      f"(consistency {max(local.consistency, non_local.consistency, 0):.2f} < "
                                      f"{CONSISTENT}; look-alike inputs {non_local.look:.2f} < {LOOK_LIFT}): an "
                                      f"object at another place or in another look, not an artifact (score "
                                      f"{score:.2f})")
    return "magnitude", (f"not flagged: its consistent part holds too little relevance (score {score:.2f} < "
                         f"{threshold:.2f}; local excess {local.hot:.0%}, on its own colours {non_local.off:.0%})")


def region_mask(result: Suspicion, shape: Tuple[int, int]) -> np.ndarray:
    """Heatmap-pixel mask (``shape``) of a local finding's consistent pixels (what a flip test
    pastes); a non-local finding has none (its flip test swaps backgrounds)."""
    gh, gw = result.patch.shape
    ys = np.arange(shape[0]) * gh // shape[0]
    xs = np.arange(shape[1]) * gw // shape[1]
    return result.patch[np.ix_(ys, xs)]


__all__ = ["ClassScores", "Suspicion", "THRESHOLD", "colour_histograms", "describe_patch", "describe_place",
           "region_mask",
           "score_clusters"]
