"""Which samples carry a background-type finding, and how closely each: the look-alike group around
a flagged cluster, and every sample's closeness to it.

SpRAy clusters relevance maps, and a background's carriers spread their relevance thinly, so the
cluster that reveals a background holds only part of its carriers, mixed with samples SpRAy put
beside them for where their object sits (on ``scenes-fresh2``, 160 members of which 133 carry the
background, of 187 that do). What the carriers share is their input's look: the samples closest
to one in colour distribution are crops of the same photo (a carrier's 10 look-alikes are 98%
carriers there, a clean sample's 12%). So a non-local finding whose members are look-alikes (a
look lift of at least ``LOOK_LIFT``, whether the look or the colour consistency decided it) is
reported with the group that look defines: starting from the cluster, the set of the class's
samples, holding most of the cluster, that is most closed in the look-alike graph (fewest
look-alike links to the rest of the class for its size: the lowest conductance of a sweep over the
samples ordered by their personalised PageRank from the members; Andersen, Chung and Lang 2006's
local partitioning), cut down to one look where it holds two (:func:`one_look`: crops of two
photos whose colours agree, that the cluster mixes, are cut from each other less cleanly than
from the class). No new bar is set: the set is where the look-alike graph is cut most cleanly
around the cluster. A flagged colour finding whose cluster is too small a part of its look-alike
group for the members to be each other's look-alikes (20 crops of a photo with 156 in the class: a
member's look-alikes are mostly outside the cluster) is reported with that group where the group's
own look lift clears the same bar and its typical member belongs to it no less than its typical
sample (as much of it, not its border); that group is walked to from the members that the others
reach (:func:`look_walk`'s ``from_core``), not from a few crops of other photos among them.

A shortcut is assumed to sit on a minority of its class (as the suspicion score does): the sweep
stops at half the class, since beyond it the complement is the more closed side. A local finding
(the same pixels at a fixed place) keeps its cluster where its carriers are defined by those
pixels, as a tag's are: crops that merely look like its members do not carry it. Where the model
looks at the members' look-alikes as at its members (a background seen at one place; see
:func:`spray.analysis.suspicion._looked_at_alike`) it is reported with the look-alike group.

The same closeness ranks the class's samples for review (:func:`look_closeness`), so that the group
reported as carrying a finding is the top of the ranking its samples get, not a set apart from it.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

RESTART = 0.15      # PageRank's restart probability (Page and Brin's damping 0.85)
OWN_BLOCK = 256     # members whose own walks run at once (memory: n x OWN_BLOCK floats)
DENSE_SPLIT = 2000  # groups up to this size are split with a dense eigensolver
STEPS = 60          # power iterations: the remaining error shrinks as 0.85 ** STEPS (< 1e-4)


def look_graph(looks: np.ndarray) -> sp.csr_matrix:
    """The class's symmetric look-alike graph from its (n, k) look-alike indices: an edge where
    either sample is among the other's look-alikes, of weight 2 where each names the other (the
    sum of the directed graph and its transpose). Look-alikes are not mutual in general: a crop in
    a crowded region of colour space is named by many samples it does not name back, so a pair
    that names each other is the stronger evidence of one source. With a binary graph the
    conductance sweep's minimum lay on flat stretches (0.090 at 130-140 samples against 0.093 at 180
    on scenes-heldout run 2); weighted, F1 of the background's carriers went 0.88 -> 0.96 there and
    0.89 -> 0.93 on scenes-fresh6 run 2, no other bed run moved by more than 0.01 (chosen after
    seeing these beds, so they do not validate it)."""
    n, k = looks.shape
    a = sp.csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), looks.ravel())), shape=(n, n))
    a = (a + a.T).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    return a


def _sweep(graph: sp.csr_matrix, order: np.ndarray) -> np.ndarray:
    """(n - 1,): the conductance in ``graph`` of each prefix of ``order`` (sizes 1 .. n-1): the
    weight of the edges it cuts over the smaller of its and the rest's volume (inf for an empty
    volume)."""
    n = len(order)
    degree = np.asarray(graph.sum(1)).ravel()
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    upper = sp.triu(graph, k=1).tocoo()
    lo = np.minimum(position[upper.row], position[upper.col])
    hi = np.maximum(position[upper.row], position[upper.col])
    # an edge is cut by every prefix that holds its earlier end but not its later one
    diff = np.zeros(n + 1)
    np.add.at(diff, lo + 1, upper.data)
    np.add.at(diff, hi + 1, -upper.data)
    cut = np.cumsum(diff)[1:n]
    volume = np.cumsum(degree[order])[:n - 1]
    smaller = np.minimum(volume, degree.sum() - volume)
    return np.where(smaller > 0, cut / np.where(smaller > 0, smaller, 1), np.inf)


def _conductance(graph: sp.csr_matrix, group: np.ndarray) -> float:
    degree = np.asarray(graph.sum(1)).ravel()
    volume = degree[group].sum()
    smaller = min(volume, degree.sum() - volume)
    return float(graph[group][:, ~group].sum() / smaller) if smaller > 0 else np.inf


def _cleanest_split(graph: sp.csr_matrix, group: np.ndarray) -> tuple:
    """(conductance, part): the cleanest cut of the group's own look-alike graph, by a sweep over
    its Fiedler vector (the second eigenvector of its normalised adjacency; Shi and Malik's
    normalised cut, Chung's Cheeger sweep); ``part`` (n,) bool is one side of it. Samples of the
    group without a look-alike link inside it are a side of their own (conductance 0)."""
    index = np.flatnonzero(group)
    sub = graph[index][:, index].tocsr()
    degree = np.asarray(sub.sum(1)).ravel()
    part = np.zeros(len(group), bool)
    if len(index) < 2 or not degree.any():
        return np.inf, part
    if (degree == 0).any():
        part[index[degree == 0]] = True
        return 0.0, part
    scale = sp.diags(1.0 / np.sqrt(degree))
    normalised = scale @ sub @ scale
    if len(index) <= DENSE_SPLIT:
        fiedler = np.linalg.eigh(normalised.toarray())[1][:, -2]
    else:
        from scipy.sparse.linalg import eigsh
        start = np.random.default_rng(0).random(len(index))       # deterministic, not an eigenvector
        values, vectors = eigsh(normalised, k=2, which="LA", v0=start)
        fiedler = vectors[:, int(np.argmin(values))]
    order = np.argsort(fiedler / np.sqrt(degree), kind="stable")
    conductance = _sweep(sub, order)
    best = int(np.argmin(conductance))
    part[index[order[:best + 1]]] = True
    return float(conductance[best]), part


def one_look(graph: sp.csr_matrix, group: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(n,) bool: ``group`` cut down to the one look it holds most of the ``members`` of. A group is
    one look when it is less cleanly cut inside than it is cut from the rest of the class: where
    its own look-alike graph splits with a lower conductance than the group's in the class's graph,
    it is two looks that the sweep took in together (crops of two photos that the cluster mixes),
    and the side holding more of the members (by count; the larger side on a tie) is kept. No bar
    is set: the group's own cut from the class is the measure. The crops of one photo are cut from
    the class far more cleanly than from each other (the scene beds' background carriers:
    0.010-0.029 from the class, 0.06-0.08 inside), a second photo's crops taken in with them are
    not (astronaut and motorcycle crops on scenes-fresh5: 0.036 from the class, 0.029 between
    them). One cut, not a recursion: the kept side is part of a sweep capped at half the class,
    so it may hold only part of its photo's crops and be cut poorly from the rest of them; cut
    again against its own conductance, one photo's crops split down to a few near-identical ones
    (synthetic clusters of a fifth of scenes-fresh2's carriers and 12 crops of another photo:
    F1 0.79 -> 0.88 after one cut, 0.24-0.69 after the recursion)."""
    inside, part = _cleanest_split(graph, group)
    if not inside < _conductance(graph, group):
        return group
    other = group & ~part
    held, held_other = (members & part).sum(), (members & other).sum()
    return part if (held, part.sum()) > (held_other, other.sum()) else other


def look_group(graph: sp.csr_matrix, walk: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(n,) bool: the most look-closed group around a cluster in the class's look-alike ``graph``
    (:func:`look_graph`; see the module's docstring). The samples are ordered by ``walk``, their
    closeness to the cluster's ``members`` (:func:`look_walk`); of the prefixes up to half the
    class that hold most of the members (more than half), the one of lowest conductance is taken,
    and cut down to the one look it holds most of the members of (:func:`one_look`). Without the
    first bar a few near-identical crops inside the cluster, look-alikes only of each other, are
    the cleanest cut of all (conductance near 0) and would be reported as the group "around" a
    cluster they hold a tenth of. Where no prefix qualifies (the walk ranks most members below
    half the class), the cluster's members are the group: a finding is never reported as carried
    by no sample."""
    n = len(walk)
    order = np.argsort(-walk, kind="stable")
    conductance = _sweep(graph, order)
    conductance[n // 2:] = np.inf                     # a minority of the class only
    held = np.cumsum(members[order])[:n - 1]
    conductance[held <= members.sum() / 2] = np.inf    # around the cluster: most of its members
    if not np.isfinite(conductance).any():
        return members.copy()
    group = np.zeros(n, bool)
    group[order[:int(np.argmin(conductance)) + 1]] = True
    return one_look(graph, group, members)


def _personalised_pagerank(walk: sp.csr_matrix, start: np.ndarray) -> np.ndarray:
    """PageRank on the row-stochastic ``walk`` restarting at ``start``: (n,), or (n, b) for b walks
    at once, each column summing to 1."""
    rank = start.copy()
    for _ in range(STEPS):
        rank = RESTART * start + (1 - RESTART) * (walk.T @ rank)
    return rank


def _reached_by_the_others(walk: sp.csr_matrix, members: np.ndarray, rank: np.ndarray,
                           degree: np.ndarray) -> np.ndarray:
    """Per member, the walk from the OTHER members at it, per unit of degree. PageRank is linear in
    its start, so that is the walk from all members less the member's own walk's return to itself,
    which takes one walk per member (``OWN_BLOCK`` at a time)."""
    index = np.flatnonzero(members)
    m = len(index)
    own = np.empty(m)
    for block in range(0, m, OWN_BLOCK):
        cols = index[block:block + OWN_BLOCK]
        unit = np.zeros((len(degree), len(cols)))
        unit[cols, np.arange(len(cols))] = 1.0
        own[block:block + len(cols)] = _personalised_pagerank(walk, unit)[cols, np.arange(len(cols))]
    return np.maximum(m * rank[index] - own, 0) / (m - 1) / degree[index]


def look_walk(graph: sp.csr_matrix, members: np.ndarray, from_core: bool = False) -> np.ndarray:
    """(n,): each sample's closeness to ``members`` in the look-alike ``graph``: its personalised
    PageRank from them (restarting with probability ``RESTART``), per unit of degree, the order in
    which Andersen, Chung and Lang sweep. Unlike the share of a sample's own look-alikes that are
    members, it counts the look-alikes of look-alikes too, so a carrier that few members name as a
    look-alike still ranks with the group it belongs to. Computed once per cluster, it serves both
    :func:`look_group` and :func:`look_closeness`.

    ``from_core``: the walk restarts at each member in proportion to how close the walk from the
    other members comes to it, for a cluster whose members are not each other's look-alikes (a few
    of a photo's many crops). Such a cluster's few members from other photos would each seed a walk
    through their own photo's crops, and the group around it took those in: on scenes-fresh5 run 4
    (an earlier machine's model) a 15-member cluster held 2 crops of other photos (china, gravel),
    which the other 13, all astronaut crops, reach no better than a clean sample (0.001 and 0.014
    of the members' typical closeness, the astronaut crops 0.05-0.52); its group of 188 held 151 of
    the class's 156 astronaut crops and 37 others, 17 of them china crops, and from the core 159
    with 155 of the 156 (F1 0.88 -> 0.98)."""
    degree = np.maximum(np.asarray(graph.sum(1)).ravel(), 1e-12)
    walk = (sp.diags(1.0 / degree) @ graph).tocsr()          # row-stochastic
    m = int(members.sum())
    rank = _personalised_pagerank(walk, members / max(m, 1))
    if from_core and m > 1:
        reached = _reached_by_the_others(walk, members, rank, degree)
        if reached.sum() > 0:
            start = np.zeros(len(degree))
            start[members] = reached / reached.sum()
            rank = _personalised_pagerank(walk, start)
    return rank / degree


def look_closeness(walk: np.ndarray, members: np.ndarray) -> np.ndarray:
    """(n,) in [0, 1]: ``walk`` (:func:`look_walk`) relative to the members' median and capped at
    1: 1 for a sample as close to the group as a typical member, near 0 for one the walk from the
    members hardly reaches. As the sample evidence of the scene beds' backgrounds (12 runs: 6 beds,
    2 trainings) in place of a sample's own share of member look-alikes, it raised the sample AUROC
    within the class on 7 runs and lowered it by at most 0.011 on the others; the lowest went from
    0.939 to 0.954."""
    typical = np.median(walk[members]) if members.any() else 0.0
    return np.minimum(1.0, walk / typical) if typical > 0 else np.zeros(len(members))


__all__ = ["look_closeness", "look_graph", "look_group", "look_walk", "one_look"]
