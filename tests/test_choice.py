"""Which clustering a class reports: the eigengap's k, unless another k of the range isolates a
look-alike group that it flags (a background the eigengap's clusters mix with the rest of the class),
and never a finer k whose flags are groups of objects drawn alike."""
import numpy as np

from spray.analysis.choice import choose_clustering
from spray.analysis.suspicion import ClassInputs, score_clusters

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
                             lambda labels: score_clusters(maps, labels, None, factor=(2, 2), inputs=inputs))


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
