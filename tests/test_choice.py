"""Which clustering a class reports: the eigengap's k, unless another k of the range isolates a
look-alike group that it flags (a background the eigengap's clusters mix with the rest of the class),
and never a finer k whose flags are groups of objects drawn alike."""
import numpy as np
import scipy.sparse as sp

from spray.analysis.choice import choose_clustering
from spray.analysis.suspicion import ClassInputs, ClassScores, Suspicion, score_clusters

from .test_suspicion import _maps_with_moving_objects, photo_background_class


def _class_with_a_photo_background(looked_at: bool):
    """200 maps of moving objects; the first 50 over crops of one photo, relevance on it or not."""
    maps, pixels, cx, photo = photo_background_class(looked_at)
    # the eigengap's k=2 splits by where the objects sit, carriers on both sides; k=3 keeps them apart
    by_place = (cx < 8).astype(int)
    clusterings = {2: by_place, 3: np.where(photo, 2, by_place)}
    return maps, pixels, photo, clusterings


def _choose(maps, pixels, clusterings, k_eigengap=2):
    inputs = ClassInputs.of(maps, pixels)
    return choose_clustering(clusterings, k_eigengap, inputs,
                             lambda labels: score_clusters(maps, labels, None, factor=(2, 2), inputs=inputs), None)


def test_a_background_the_eigengaps_clusters_mix_is_reported_at_the_k_that_isolates_it():
    maps, pixels, photo, clusterings = _class_with_a_photo_background(looked_at=True)
    eigengap_k = score_clusters(maps, clusterings[2], None, factor=(2, 2), pixels=pixels)
    assert not any(s.flagged for s in eigengap_k.clusters)     # mixed: nothing to see at k=2
    choice = _choose(maps, pixels, clusterings)
    assert choice.k == 3, choice.reason
    found = [s for s in choice.scores.clusters if s.flagged]
    assert [s.cluster for s in found] == [2] and found[0].decided_by == "input look"
    assert choice.reason.startswith("k=3 reported instead of the eigengap's k=2") and "look-alike" in choice.reason
    assert choice.scores.sample_score[photo].min() > choice.scores.sample_score[~photo].max()


def test_the_eigengaps_k_stands_where_the_look_alike_group_is_not_looked_at():
    maps, pixels, _, clusterings = _class_with_a_photo_background(looked_at=False)
    choice = _choose(maps, pixels, clusterings)
    assert choice.k == 2 and choice.reason == ""
    assert not any(s.flagged for s in choice.scores.clusters)


def test_a_finer_k_whose_flag_is_not_a_look_alike_group_does_not_replace_the_eigengaps():
    """A group whose pixels are the same at one place but whose inputs are not alike as a whole (a
    tag on 40 of 200 scenes of all colours) is flagged at k=3 only; k=3 is not eligible."""
    maps, pixels, cx = _maps_with_moving_objects()
    rng = np.random.default_rng(1)
    pixels = (0.6 * rng.random((len(maps), 1, 1, 3)) + 0.4 * pixels).astype(np.float32)   # scenes of any colour
    tagged = np.arange(len(maps)) < 40
    maps[tagged, 0:3, 12:16] += 0.5 * maps[tagged].sum((1, 2))[:, None, None] / 12
    pixels[tagged, 0:6, 24:32] = [1.0, 0.9, 0.2]
    maps /= maps.sum((1, 2), keepdims=True)
    by_place = (cx < 8).astype(int)
    clusterings = {2: by_place, 3: np.where(tagged, 2, by_place)}
    finer = score_clusters(maps, clusterings[3], None, factor=(2, 2), pixels=pixels)
    assert any(s.flagged and s.kind == "local" for s in finer.clusters)
    assert all(s.look_consistency < 0.25 for s in finer.clusters)
    choice = _choose(maps, pixels, clusterings)
    assert choice.k == 2 and choice.reason == ""


def test_without_pixels_the_eigengaps_k_stands():
    maps, _, photo, clusterings = _class_with_a_photo_background(looked_at=True)
    choice = _choose(maps, None, clusterings)
    assert choice.k == 2 and not any(s.flagged for s in choice.scores.clusters)


def _finding(cluster: int, size: int, carriers: np.ndarray, look: float, group_look: float = None) -> Suspicion:
    """A flagged look-alike finding as ``score_clusters`` reports it (only what the choice reads)."""
    group_look = look if group_look is None else group_look
    return Suspicion(cluster, size, size / len(carriers), 0.2, True, "non-local", 0.0, 0.2, look, 0.0, 0.0, look,
                     group_look, 0.8, 0.3, (0, 0, 1, 1), "most of the image", "input look", "", carriers=carriers)


def _graph_within(groups) -> sp.csr_matrix:
    """A kNN-like graph: each sample linked to 10 others of its own group."""
    rng = np.random.default_rng(0)
    n = len(groups)
    rows, cols = [], []
    for i in range(n):
        same = np.flatnonzero(groups == groups[i])
        for j in rng.choice(same[same != i], 10, replace=False):
            rows.append(i)
            cols.append(j)
    a = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return a.maximum(a.T).tocsr()


def test_of_the_other_k_the_one_whose_carriers_the_relevance_keeps_apart_is_reported():
    """100 crops: 0-39 of the shortcut's photo, 40-54 of a photo that looks like it, 55-99 of others.
    By their look, 0-54 are one closed community. The model reads 0-39 by the background and 40-99
    by their objects, so its relevance graph keeps 0-39 apart. k=3 reports the look community (55
    carriers), k=4 the 40: k=4 is reported, though k=3 flags more (the rule before took the
    cleanest cut of the look-alike graph, k=3's community)."""
    source = np.where(np.arange(100) < 40, 0, np.where(np.arange(100) < 55, 1, 2))
    relevance = _graph_within((source == 0).astype(int))
    shortcut, community = source == 0, source < 2
    scores = {2: ClassScores([], np.zeros(100, np.float32)),
              3: ClassScores([_finding(1, 55, community, 0.9)], np.zeros(100, np.float32)),
              4: ClassScores([_finding(2, 40, shortcut, 0.9)], np.zeros(100, np.float32))}
    clusterings = {k: np.full(100, k) for k in scores}      # the labels only key the stubbed score
    choice = choose_clustering(clusterings, 2, _AnyLook(), lambda labels: scores[int(labels[0])], relevance)
    assert choice.k == 4, choice.reason
    assert "the model's relevance keeps its carriers apart best (1.00 of the way" in choice.reason
    assert "40 samples against 0" in choice.reason
    # the eigengap's k stands where its flags hold as many samples
    scores[2] = ClassScores([_finding(0, 40, community & (np.arange(100) >= 15), 0.9)], np.zeros(100, np.float32))
    choice = choose_clustering(clusterings, 2, _AnyLook(), lambda labels: scores[int(labels[0])], relevance)
    assert choice.k == 2 and choice.reason == ""


class _AnyLook:
    """ClassInputs with look-alikes, so that every k is scored (the stubbed scores carry the lifts
    the choice then reads)."""

    looks = np.zeros((100, 10), np.int64)


def test_a_small_cluster_carried_by_a_look_alike_group_can_move_the_k():
    """k=9 flags 15 crops of a background by their colours; they are no look-alike group of their
    own (lift 0.06) but are carried by the 60 crops whose inputs look like theirs (lift 0.9): the
    signature of a background that no k isolates, so k=9 is reported. The same finding with no
    look-alike group behind it (a colour finding carried by its members) does not move the k."""
    background = np.arange(100) < 60
    relevance = _graph_within(background.astype(int))
    scores = {3: ClassScores([], np.zeros(100, np.float32)),
              9: ClassScores([_finding(7, 15, background, 0.06, group_look=0.9)], np.zeros(100, np.float32))}
    clusterings = {k: np.full(100, k) for k in scores}
    choice = choose_clustering(clusterings, 3, _AnyLook(), lambda labels: scores[int(labels[0])], relevance)
    assert choice.k == 9 and "15 samples against 0" in choice.reason, choice.reason
    scores[9] = ClassScores([_finding(7, 15, np.arange(100) < 15, 0.06, group_look=0.0)], np.zeros(100, np.float32))
    choice = choose_clustering(clusterings, 3, _AnyLook(), lambda labels: scores[int(labels[0])], relevance)
    assert choice.k == 3 and choice.reason == ""
