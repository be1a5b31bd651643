"""The suspicion score on the bundled digit beds: the planted artifact's cluster is flagged and
ranked first with F1 >= 0.9 against the ground truth, the harmless second strategy and the clean
classes are not flagged, its samples rank first by their own score, and the flip test with a
control confirms it. Plus the score's evidence on hand-made maps: a tag whose pixels are the same
in every member is flagged, a cluster of objects that merely sit elsewhere is not."""
import copy
import json
import shutil

import numpy as np
import pytest

from spray.pipelines.audit import verify_flagged
from spray.analysis.extent import look_group, look_walk
from spray.analysis.suspicion import ClassInputs, describe_patch, describe_place, score_clusters
from spray.datasets.truth import ground_truth, judge, spray_groups, spray_sample_scores
from spray.store import HeatmapStore

from .conftest import bed_spec


def verdict(bed, store, summary):
    with HeatmapStore(store) as st:
        truth = ground_truth(bed.data, st.index)
        scores = spray_sample_scores(store.parent / "analysis" / "analysis.h5", len(st))
        return judge(st.labels, truth, bed.shortcuts, spray_groups(summary, st.ids), scores)


@pytest.mark.parametrize("name", ["watermark", "background"])
def test_planted_artifact_is_flagged_first_and_nothing_else(audited_beds, name):
    bed, store, summary = audited_beds[name]
    found = [(c["label"], cl) for c in summary["classes"] for cl in c["clusters"] if cl["flagged"]]
    assert {label for label, _ in found} == {bed.artifact_class}, [(label, cl["reason"]) for label, cl in found]
    result = verdict(bed, store, summary)
    shortcut = result.shortcuts[name]
    assert result.false_flags == 0 and shortcut.ranked_first and shortcut.rank == 1
    assert shortcut.f1 >= 0.9 and shortcut.auroc >= 0.95, shortcut
    for c in summary["classes"]:
        if c["label"] in (bed.harmless_class, bed.control_class):
            assert not any(cl["flagged"] for cl in c["clusters"])
    cluster = max((cl for _, cl in found), key=lambda cl: cl["score"])
    reason = cluster["reason"]
    assert reason.startswith("suspicious")
    if name == "watermark":
        assert cluster["kind"] == "local" and "lower-left corner" in reason
        top, left, bottom, right = cluster["box"]
        assert bottom >= 28 and left <= 4 and (bottom - top) * (right - left) <= 0.15 * 32 * 32
    else:
        assert cluster["kind"] == "non-local" and "colours" in reason


@pytest.mark.parametrize("name", ["watermark", "background"])
def test_flip_test_confirms_the_finding_against_its_control(audited_beds, name):
    bed, store, summary = audited_beds[name]
    results = verify_flagged(store, store.parent / "analysis", bed_spec(bed), n_images=600)
    assert results and all(key.startswith(f"{bed.artifact_class}/") for key in results)
    best = max(results.values(), key=lambda r: r["rate"])
    assert best["n"] >= 500 and best["confirmed"] and best["rate"] > best["control_rate"] + 0.3, best
    if best["method"] == "paste region":      # the tag's own pixels: as strong as the bed's own insertion
        assert best["rate"] >= bed.info["shortcuts"][name]["flip"]["rate"] - 0.15, (best, bed.info["shortcuts"])


def test_a_local_finding_seen_at_one_place_is_verified_by_a_background_swap(audited_beds, tmp_path):
    """A local finding the analysis calls a background seen at one place is the photo, not the
    pixels at the place: the flip test swaps backgrounds for it (against the class's other
    backgrounds), and pastes the region for the same finding called a tag."""
    bed, store, summary = audited_beds["watermark"]
    summary = copy.deepcopy(summary)
    analysis = tmp_path / "analysis"
    shutil.copytree(store.parent / "analysis", analysis)
    methods = {}
    for seen in (False, True):
        for c in summary["classes"]:
            for cl in c["clusters"]:
                cl["seen_at_one_place"] = seen and cl["flagged"] and cl["kind"] == "local"
        (analysis / "analysis.json").write_text(json.dumps(summary))
        results = verify_flagged(store, analysis, bed_spec(bed), n_images=100)
        assert results
        methods[seen] = {r["method"] for r in results.values()}
    assert methods == {False: {"paste region"}, True: {"swap background"}}, methods


def _maps_with_moving_objects(n=200, size=16, seed=0):
    """Maps of objects at random places (relevance follows them) over random pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(4, 12, n), rng.uniform(4, 12, n)
    maps = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 4.0)
    pixels = (0.5 * rng.random((n, 2 * size, 2 * size, 3))).astype(np.float32)
    return maps, pixels, cx


def test_a_fixed_tag_is_flagged_and_a_moving_object_is_not():
    maps, pixels, cx = _maps_with_moving_objects()
    n = len(maps)
    tagged = np.arange(n) < 40
    maps[tagged, 0:3, 12:16] += 0.5 * maps[tagged].sum((1, 2))[:, None, None] / 12   # upper-right tag
    pixels[tagged, 0:6, 24:32] = [1.0, 0.9, 0.2]                                    # the same pixels in each
    left = ~tagged & (cx < 7)                                                        # objects on the left
    maps /= maps.sum((1, 2), keepdims=True)
    labels = np.where(tagged, 1, np.where(left, 2, 0))
    scores = score_clusters(maps, labels, None, factor=(2, 2), pixels=pixels)
    result = {s.cluster: s for s in scores.clusters}
    tag = result[1]
    assert tag.flagged and tag.kind == "local" and tag.where == "the upper-right corner"
    assert tag.box == (0, 24, 6, 32) and tag.local_consistency > 0.9 and tag.decided_by == "pixel consistency"
    assert tag.reason.startswith("suspicious (local shortcut")
    assert np.array_equal(tag.carriers, labels == 1)          # a local finding is carried by its members
    moving = result[2]
    assert not moving.flagged and moving.shift > 0.3 and moving.decided_by == "inconsistent input"
    assert moving.reason.startswith("not flagged") and "differs from member to member" in moving.reason
    assert not result[0].flagged
    assert scores.sample_score.shape == (n,) and scores.sample_score.dtype == np.float32
    assert scores.sample_score[tagged].min() > scores.sample_score[~tagged].max()


def test_a_tag_on_a_background_unlike_the_other_members_scores_as_high_as_they_do():
    """A sample's match is judged on the tag's own pixels: the cells around a tag that does not fill
    them also hold background, and a tagged sample whose background there is unlike the other
    members' still carries the same tag (scored 0 when its match counted the whole cells)."""
    maps, pixels, _ = _maps_with_moving_objects(seed=6)
    n = len(maps)
    tagged = np.arange(n) < 40
    maps[tagged, 0:3, 12:16] += 0.5 * maps[tagged].sum((1, 2))[:, None, None] / 12
    pixels[:10, 0:6, 24:32] = 1.0                       # a white background behind ten of the tags
    pixels[tagged, 1:5, 25:31] = [1.0, 0.9, 0.2]        # the tag fills the cells' middle only
    maps /= maps.sum((1, 2), keepdims=True)
    scores = score_clusters(maps, tagged.astype(int), None, factor=(2, 2), pixels=pixels)
    tag = {s.cluster: s for s in scores.clusters}[1]
    assert tag.flagged and tag.kind == "local", tag.reason
    assert scores.sample_score[:10].min() > 0.5 * np.median(scores.sample_score[tagged]), scores.sample_score[:10]
    assert scores.sample_score[tagged].min() > scores.sample_score[~tagged].max()


def test_a_consistent_background_is_flagged_non_local():
    maps, pixels, _ = _maps_with_moving_objects(seed=1)
    n = len(maps)
    textured = np.arange(n) < 50
    maps[textured] = 0.3 * maps[textured] + 0.7 * maps[textured].sum((1, 2))[:, None, None] / 256
    pixels[textured] = np.array([0.1, 0.2, 0.9]) + 0.05 * np.random.default_rng(2).random((50, 32, 32, 3))
    maps /= maps.sum((1, 2), keepdims=True)
    scores = score_clusters(maps, textured.astype(int), None, factor=(2, 2), pixels=pixels)
    found = {s.cluster: s for s in scores.clusters}[1]
    assert found.flagged and found.kind == "non-local" and found.decided_by == "colour consistency"
    assert "colours the class typically hardly looks at" in found.reason
    assert found.look_consistency >= 0.25 and np.array_equal(found.carriers, textured)   # its look-alike group


def test_a_colour_finding_ranks_its_members_above_samples_on_one_of_its_colours():
    """A background of two colours (blue and green, everywhere in its 50 members' inputs) against
    ten clean samples whose whole input is that blue: all their relevance lies on one of the
    finding's colours, more than a member's, but their colour profile is unlike the members' (no
    green). A sample's evidence counts its relevance on the finding's colours as far as its profile
    matches the members' (as a local finding's counts its share as far as its pixels match), so the
    members rank above them (without the match the ten ranked first)."""
    maps, pixels, _ = _maps_with_moving_objects(seed=1)
    n = len(maps)
    members, blue = np.arange(n) < 50, (np.arange(n) >= 50) & (np.arange(n) < 60)
    maps[members] = 0.3 * maps[members] + 0.7 * maps[members].sum((1, 2))[:, None, None] / 256
    checker = (np.add.outer(np.arange(32), np.arange(32)) % 2 == 0)[None, :, :, None]
    noise = 0.05 * np.random.default_rng(2).random((50, 32, 32, 3))
    pixels[members] = np.where(checker, [0.1, 0.2, 0.9], [0.1, 0.9, 0.2]) + noise
    pixels[blue] = [0.1, 0.2, 0.9]
    maps /= maps.sum((1, 2), keepdims=True)
    scores = score_clusters(maps, members.astype(int), None, factor=(2, 2), pixels=pixels)
    found = {s.cluster: s for s in scores.clusters}[1]
    assert found.flagged and found.kind == "non-local" and found.decided_by == "colour consistency", found.reason
    assert scores.sample_score[blue].max() < scores.sample_score[members].min(), scores.sample_score[blue]


def _photo_crops(n: int, size: int, seed: int, dominant: float = 0.4) -> np.ndarray:
    """Crops of one photo: a ``dominant`` share of brown texture everywhere, the rest a hue that runs
    across the photo, so that crops from far apart share only the brown and crops from nearby share
    nearly all (a photo background source)."""
    rng = np.random.default_rng(seed)
    width = 8 * size
    hue = np.linspace(0, 1, width)
    photo = np.stack([0.5 + 0.5 * np.cos(2 * np.pi * (hue - k / 3)) for k in range(3)], -1)   # (width, 3)
    starts = rng.integers(0, width - size, n)
    crops = np.stack([np.broadcast_to(photo[x:x + size][:, None], (size, size, 3)).transpose(1, 0, 2)
                      for x in starts]).copy()
    crops[rng.random(crops.shape[:3]) < dominant] = [0.6, 0.4, 0.2]
    return (crops + 0.03 * rng.random(crops.shape)).astype(np.float32)


def photo_background_class(looked_at: bool):
    """(maps, pixels, cx, photo): 200 maps of moving objects, the first 50 over crops of one photo,
    with their relevance on it or not."""
    maps, pixels, cx = _maps_with_moving_objects(seed=4)
    n = len(maps)
    photo = np.arange(n) < 50
    objects = np.repeat(np.repeat(maps > 0.05 * maps.max((1, 2), keepdims=True), 2, 1), 2, 2)
    background = photo[:, None, None] & ~objects                 # the object keeps its own pixels
    pixels[background] = _photo_crops(n, pixels.shape[1], seed=5, dominant=0.25)[background]
    if looked_at:
        maps[photo] = 0.3 * maps[photo] + 0.7 * maps[photo].sum((1, 2))[:, None, None] / 256
    maps /= maps.sum((1, 2), keepdims=True)
    return maps, pixels, cx, photo


@pytest.mark.parametrize("looked_at", [True, False])
def test_a_photo_background_is_flagged_by_its_look_alike_inputs_only_where_the_model_looks_at_it(looked_at):
    """Crops of one photo differ in colour from crop to crop (no common colour profile), but each
    crop's look-alikes are crops of the same photo: a non-local finding when the members' relevance
    lies on them; the same group is no finding when its relevance stays on its objects."""
    maps, pixels, _, photo = photo_background_class(looked_at)
    scores = score_clusters(maps, photo.astype(int), None, factor=(2, 2), pixels=pixels)
    found = {s.cluster: s for s in scores.clusters}[1]
    assert found.colour_consistency < 0.5 and found.look_consistency > 0.5, found
    if looked_at:
        assert found.flagged and found.kind == "non-local" and found.decided_by == "input look", found.reason
        assert found.reason.startswith("suspicious (non-local shortcut") and "look alike" in found.reason
        assert scores.sample_score[photo].min() > scores.sample_score[~photo].max()
    else:
        assert not found.flagged and found.reason.startswith("not flagged"), found.reason
        assert not any(s.flagged for s in scores.clusters)


def test_look_alikes_are_judged_by_every_colour_not_only_by_the_dominant_one():
    """Every input is mostly one grey (30-97% of its pixels); 40 of 100 fill the rest with one red,
    the others with anything. By the plain distance of colour frequencies the grey's share decides,
    and a red-filled input with much grey had inputs of the same grey share as look-alikes (92% of
    the 40's look-alikes were red-filled); by the Hellinger distance the shared red counts too
    (99.5%; 95.75% once each distance is put on its samples' own scale, which makes the 60 inputs
    of random colours, each far from every other, a little nearer to the 40)."""
    from spray.analysis.suspicion import look_neighbours
    rng = np.random.default_rng(0)
    n, size = 100, 16
    share = rng.uniform(0.3, 0.97, n)
    pixels = rng.random((n, size, size, 3)).astype(np.float32)
    u = rng.random((n, size, size))
    pixels[u < share[:, None, None]] = [0.5, 0.5, 0.5]
    red = np.arange(n) < 40
    pixels[(u >= share[:, None, None]) & red[:, None, None]] = [0.9, 0.1, 0.1]
    looks = look_neighbours(pixels)
    assert red[looks[red]].mean() >= 0.95, red[looks[red]].mean()


def test_stragglers_without_look_alikes_of_their_own_do_not_name_a_dense_photo_group():
    """40 crops of one dark photo are each other's close look-alikes; 80 crops of grey texture under
    a random dark tint each have none of their own (each is far from every other). By the plain
    Hellinger distance 13% of the stragglers' look-alikes were crops of the photo (a dense group
    is every straggler's nearest), which the look-alike group around the photo then took in; on each
    sample's own scale of distance none are, and the photo's crops still name only each other."""
    from spray.analysis.suspicion import look_neighbours
    rng = np.random.default_rng(0)
    n, size = 120, 16
    photo = np.arange(n) < 40
    pixels = np.empty((n, size, size, 3), np.float32)
    pixels[photo] = np.array([0.12, 0.16, 0.32]) + rng.normal(0, 0.05, (40, size, size, 3))
    tint = rng.uniform(0.05, 0.6, (n - 40, 1, 1, 3))
    pixels[~photo] = tint * (1 + rng.normal(0, 0.5, (n - 40, size, size, 1)))
    looks = look_neighbours(np.clip(pixels, 0, 1))
    assert photo[looks[~photo]].mean() <= 0.02, photo[looks[~photo]].mean()
    assert photo[looks[photo]].mean() >= 0.99, photo[looks[photo]].mean()


def test_a_look_finding_is_carried_by_the_look_alike_group_around_its_cluster():
    """SpRAy's cluster holds only part of a background's carriers, mixed with others that SpRAy put
    beside them; the finding reports the look-alike group around it: every crop of the photo, and
    none of the samples that merely share the cluster."""
    maps, pixels, _, photo = photo_background_class(looked_at=True)
    n = len(maps)
    cluster = (photo & (np.arange(n) >= 10)) | ((np.arange(n) >= 50) & (np.arange(n) < 56))   # 40 crops + 6 others
    scores = score_clusters(maps, cluster.astype(int), None, factor=(2, 2), pixels=pixels)
    found = {s.cluster: s for s in scores.clusters}[1]
    assert found.flagged and found.decided_by == "input look", found.reason
    assert np.array_equal(found.carriers, photo), (np.flatnonzero(found.carriers ^ photo))
    assert "carried by the 50 samples of the class" in found.reason and "10 of them in other clusters" in found.reason
    assert not {s.cluster: s for s in scores.clusters}[0].carriers.any()     # unflagged: carries nothing


def _a_background_with_a_small_colour_cluster():
    """(maps, pixels, background, cluster): a two-colour background on 60 samples of 200, whose
    relevance is spread over it, and SpRAy's cluster of 12 of them."""
    maps, pixels, _ = _maps_with_moving_objects(seed=1)
    n = len(maps)
    background = np.arange(n) < 60
    cluster = np.arange(n) < 12
    maps[background] = 0.3 * maps[background] + 0.7 * maps[background].sum((1, 2))[:, None, None] / 256
    checker = (np.add.outer(np.arange(32), np.arange(32)) % 2 == 0)[None, :, :, None]
    noise = 0.05 * np.random.default_rng(2).random((60, 32, 32, 3))
    pixels[background] = np.where(checker, [0.1, 0.2, 0.9], [0.1, 0.9, 0.2]) + noise
    maps /= maps.sum((1, 2), keepdims=True)
    return maps, pixels, background, cluster


def test_a_small_colour_cluster_of_a_background_is_carried_by_the_look_alike_group_it_defines():
    """A two-colour background on 60 samples; SpRAy's cluster holds 12 of them (flagged: their
    relevance lies on the same colours). A member's look-alikes are mostly the other 48, so the 12
    are no look-alike group of their own (lift under the bar), but the group around them is: the
    60 carry the finding and rank above the rest of the class (before, the 12 carried it)."""
    maps, pixels, background, cluster = _a_background_with_a_small_colour_cluster()
    scores = score_clusters(maps, cluster.astype(int), None, factor=(2, 2), pixels=pixels)
    found = {s.cluster: s for s in scores.clusters}[1]
    assert found.flagged and found.kind == "non-local" and found.decided_by == "colour consistency", found.reason
    assert found.look_consistency < 0.25 <= found.group_look, (found.look_consistency, found.group_look)
    assert np.array_equal(found.carriers, background), np.flatnonzero(found.carriers ^ background)
    assert "carried by the 60 samples of the class" in found.reason
    assert scores.sample_score[background].min() > scores.sample_score[~background].max()


def test_a_colour_cluster_that_only_borders_a_look_alike_group_is_not_carried_by_it():
    """As above, but the 12 members' look-alikes are drawn from outside the background: the group
    that the look-alike graph closes around them is the other crops' (its lift clears the bar), and
    the members' own lift into it is below the group's, so it is not theirs: the members carry the
    finding, and nothing is borrowed from the group."""
    maps, pixels, background, cluster = _a_background_with_a_small_colour_cluster()
    inputs = ClassInputs.of(maps, pixels)
    rng = np.random.default_rng(5)
    for i in np.flatnonzero(cluster):
        inputs.looks[i] = rng.choice(np.flatnonzero(~background), inputs.looks.shape[1], replace=False)
    group = look_group(inputs.look_graph(), look_walk(inputs.look_graph(), cluster), cluster)
    assert inputs.look_lift(group) >= 0.25             # the rule's first condition alone would carry it
    found = {s.cluster: s for s in score_clusters(maps, cluster.astype(int), None, factor=(2, 2),
                                                  inputs=inputs).clusters}[1]
    assert found.flagged and found.kind == "non-local", found.reason
    assert found.group_look == 0.0 and np.array_equal(found.carriers, cluster)
    assert "carried by" not in found.reason


@pytest.mark.parametrize("others_looked_at", [True, False])
def test_a_background_seen_at_one_place_is_carried_by_its_look_alike_group(others_looked_at):
    """The sky of one photo across the top of its crops: a cluster of 35 of the 50 crops puts its
    relevance there, where its pixels are the same in every member (a local finding). Where the
    model looks at the other 15 crops by the photo's colours too (spread over the image, so SpRAy
    put them elsewhere), the finding is a background seen at one place and is carried by its
    look-alike group, all 50 (the cluster's 35 before). Where it looks at their objects only, they
    do not carry the model's strategy and the cluster's members carry it."""
    maps, pixels, _, photo = photo_background_class(looked_at=False)
    n = len(maps)
    pixels[photo, :8] = np.array([0.5, 0.7, 1.0]) + 0.03 * np.random.default_rng(7).random((50, 8, 32, 3))
    cluster = photo & (np.arange(n) >= 15)
    maps[cluster] = 0.3 * maps[cluster]
    maps[cluster, :4] += 0.7 / 64
    others = photo & ~cluster
    if others_looked_at:
        maps[others] = 0.3 * maps[others] + 0.7 / 256
    else:           # on their objects' own pixels, none on the photo around them
        maps[others] *= maps[others] > 0.05 * maps[others].max((1, 2), keepdims=True)
    maps /= maps.sum((1, 2), keepdims=True)
    scores = score_clusters(maps, cluster.astype(int), None, factor=(2, 2), pixels=pixels)
    found = {s.cluster: s for s in scores.clusters}[1]
    assert found.flagged and found.kind == "local", found.reason
    if others_looked_at:
        assert np.array_equal(found.carriers, photo), np.flatnonzero(found.carriers ^ photo)
        assert "a background seen at a strip along the top border" in found.reason
        assert "carried by the 50 samples" in found.reason
    else:
        assert np.array_equal(found.carriers, cluster), np.flatnonzero(found.carriers ^ cluster)
        assert "background seen" not in found.reason and "carried by" not in found.reason
    assert found.seen_at_one_place == others_looked_at and found.to_dict()["seen_at_one_place"] == others_looked_at


def test_the_look_alike_group_is_the_cleanest_cut_and_a_minority_of_its_class():
    """Two look-alike groups (each sample's look-alikes in its own group): from a seed that mixes
    them, the group is the one the seed mostly holds, cut where the look-alike graph is cut; a
    group of most of the class is never returned (its complement is the minority)."""
    from spray.analysis.extent import look_graph, look_group, look_walk
    rng = np.random.default_rng(0)
    n, k = 200, 10
    group = np.arange(n) < 60
    looks = np.stack([rng.choice(np.flatnonzero(group == group[i]), k) for i in range(n)])
    seed = (group & (np.arange(n) % 3 > 0)) | (np.arange(n) >= 190)     # 40 of the 60, and 10 others
    graph = look_graph(looks)
    assert np.array_equal(look_group(graph, look_walk(graph, seed), seed), group)
    majority = np.arange(n) >= 60
    assert look_group(graph, look_walk(graph, majority), majority).sum() <= n // 2


def test_the_look_alike_group_holds_most_of_its_cluster_not_a_closed_clique_inside_it():
    """A cluster of 80 look-alikes of which 10 are look-alikes only of each other (a component of
    their own, conductance 0): the group around the cluster is the 70, not the 10 (the sweep
    takes in both; they are two looks, and the group is the one holding most of the cluster)."""
    from spray.analysis.extent import look_graph, look_group, look_walk
    rng = np.random.default_rng(1)
    n, k = 240, 6
    clique, cluster = np.arange(n) < 10, np.arange(n) < 80
    pools = [np.flatnonzero(clique), np.flatnonzero(cluster & ~clique), np.flatnonzero(~cluster)]
    side = np.where(clique, 0, np.where(cluster, 1, 2))
    looks = np.stack([rng.choice(pools[side[i]][pools[side[i]] != i], k, replace=False) for i in range(n)])
    # the 70 are look-alikes of each other and, a little, of the rest of the class
    looks[10:80, -1] = rng.choice(pools[2], 70)
    graph = look_graph(looks)
    group = look_group(graph, look_walk(graph, cluster), cluster)
    assert not group[clique].any() and (group & cluster).sum() >= 60, (group[clique].sum(), (group & cluster).sum())
    # a walk that ranks the members last leaves no prefix of half the class holding most of them:
    # the group is the cluster itself, never empty
    last = np.where(cluster, 0.0, 1.0)
    assert np.array_equal(look_group(graph, last, cluster), cluster)


def test_separation_lift_is_how_far_a_group_keeps_its_graph_edges_beyond_chance():
    """Two cliques of 4 joined by one edge: each clique keeps 12 of its 13 edge ends, chance (its
    share of the class) is 1/2, so the lift is (12/13 - 1/2) / (1/2); a group across both cliques
    keeps fewer than chance; an empty or whole group has no lift, and without a graph every group
    is kept apart."""
    import scipy.sparse as sps

    from spray.analysis.suspicion import separation_lift
    a = np.zeros((8, 8))
    a[:4, :4] = a[4:, 4:] = 1
    np.fill_diagonal(a, 0)
    a[3, 4] = a[4, 3] = 1
    graph = sps.csr_matrix(a)
    left = np.arange(8) < 4
    assert separation_lift(graph, left) == pytest.approx((12 / 13 - 0.5) / 0.5)
    mixed = np.isin(np.arange(8), [0, 1, 4, 5])
    assert separation_lift(graph, mixed) < 0
    assert separation_lift(graph, np.zeros(8, bool)) == 0 == separation_lift(graph, np.ones(8, bool))
    assert separation_lift(None, mixed) == 1


def test_look_closeness_ranks_a_group_above_samples_that_merely_resemble_some_members():
    """A group of 60 look-alikes, of which the cluster holds 30: the other 30 name only 2 members
    among their 10 look-alikes (the rest are each other), while 20 samples of the class outside the
    group name 3 members and otherwise the class's rest. A sample's own share of member look-alikes
    ranks those 20 above the group's other half; the closeness (look-alikes of look-alikes) ranks the
    whole group first, 1 for a typical member, in [0, 1] throughout."""
    from spray.analysis.extent import look_closeness, look_graph, look_walk
    rng = np.random.default_rng(0)
    n, k = 200, 10
    index = np.arange(n)
    members, outer, near, rest = index < 30, (index >= 30) & (index < 60), (index >= 60) & (index < 80), index >= 60

    def pick(pool, count, i):
        pool = np.flatnonzero(pool)
        return rng.choice(pool[pool != i], count, replace=False)
    looks = np.stack([pick(members, k, i) if members[i] else np.r_[pick(members, 2, i), pick(outer, 8, i)]
                      if outer[i] else np.r_[pick(members, 3, i), pick(rest, 7, i)] if near[i] else pick(rest, k, i)
                      for i in range(n)])
    share = members[looks].mean(1)
    assert share[near].max() > share[outer].min()                # the one-step share mixes them
    graph = look_graph(looks)
    closeness = look_closeness(look_walk(graph, members), members)
    assert closeness.min() >= 0 and closeness.max() <= 1
    assert (closeness[members] == 1.0).mean() >= 0.5              # a typical member: 1
    assert closeness[outer].min() > closeness[rest].max()


def test_nothing_is_flagged_without_pixels():
    maps, _, _ = _maps_with_moving_objects()
    labels = (np.arange(len(maps)) < 40).astype(int)
    assert not any(s.flagged for s in score_clusters(maps / maps.sum((1, 2), keepdims=True), labels, None).clusters)


def test_describe_place():
    assert describe_place((0, 0, 32, 4), (32, 32)) == "a strip along the left side"
    assert describe_place((12, 12, 18, 18), (32, 32)) == "the centre"


def test_a_patch_over_most_of_the_image_is_worded_by_its_own_layout():
    corner = np.zeros((32, 32), bool)
    corner[:6, 24:] = True
    assert describe_patch(corner, (0, 24, 6, 32), (32, 32)) == ("the upper-right corner",
                                                                "a 6x8 region at the upper-right corner")
    frame = np.zeros((32, 32), bool)                  # pieces of a dashed frame at two corners
    frame[:2, :12] = frame[:12, :2] = frame[-2:, 20:] = frame[20:, -2:] = True
    assert describe_patch(frame, (0, 0, 32, 32), (32, 32)) == (
        "the image's edges", f"a frame along the image's edges ({frame.mean():.0%} of the image)")
    around = np.ones((32, 32), bool)                  # a photo's background around the objects
    around[8:24, 8:24] = False
    assert describe_patch(around, (0, 0, 32, 32), (32, 32)) == (
        "most of the image", f"{around.mean():.0%} of the image, spread over most of it")


def test_a_frame_found_at_two_corners_is_reported_at_the_image_edges():
    maps, pixels, _ = _maps_with_moving_objects()
    n = len(maps)
    framed = np.arange(n) < 40
    for cells in (np.s_[0:2, 0:5], np.s_[11:16, 14:16]):          # the model looks at two pieces of it
        maps[(framed,) + cells] += 0.3 * maps[framed].sum((1, 2))[:, None, None] / 10
    frame = np.zeros((32, 32), bool)
    frame[:2] = frame[-2:] = frame[:, :2] = frame[:, -2:] = True
    pixels[:, frame] = np.where(framed[:, None, None], np.array([0.9, 0.1, 0.9], np.float32), pixels[:, frame])
    maps /= maps.sum((1, 2), keepdims=True)
    found = {s.cluster: s for s in score_clusters(maps, framed.astype(int), None, factor=(2, 2),
                                                  pixels=pixels).clusters}[1]
    assert found.flagged and found.kind == "local" and found.where == "the image's edges"
    assert "the same pixels in a frame along the image's edges" in found.reason
    assert "region at" not in found.reason


def _one_colour_class_with_a_minority_stamp(n=120, stamped=30, size=16, seed=3):
    """A class whose objects are all one colour (yellow tennis balls) near one place, a source tag on
    a minority whose objects are faint (the tag is their evidence): SpRAy's two clusters are the tag
    group and the clean majority, each "consistent and unlike the other"."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.normal(8, 0.7, n), rng.normal(8, 0.7, n)
    maps = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2) / 6.0)
    pixels = (0.6 * rng.random((n, 2 * size, 2 * size, 3))).astype(np.float32)
    py, px = np.mgrid[0:2 * size, 0:2 * size]
    tag = np.arange(n) < stamped
    for i in range(n):
        ball = (py - 2 * cy[i]) ** 2 + (px - 2 * cx[i]) ** 2 <= 36
        opacity = 0.3 if tag[i] else 1.0
        pixels[i][ball] = (1 - opacity) * pixels[i][ball] + opacity * np.array([0.95, 0.9, 0.1])
    maps[tag] = 0.3 * maps[tag]
    maps[tag, 12:16, 0:4] += 0.7 * maps[~tag].sum((1, 2)).mean() / 16      # lower-left tag
    pixels[tag, 24:32, 0:8] = [0.1, 0.1, 0.15]
    pixels[tag, 26:30, 2:6] = [1.0, 1.0, 1.0]
    maps /= maps.sum((1, 2), keepdims=True)
    return maps, pixels, tag


def test_a_one_colour_majority_is_not_the_shortcut_of_its_stamped_minority():
    """The evidence is measured against the class's typical profile (its median, which a minority
    does not move), not against the rest of the cluster's class: otherwise the clean majority's
    object colours and object pixels are "consistent and unlike the rest" (the rest being the tag
    group) and the majority is flagged as the complement of the real finding."""
    maps, pixels, tag = _one_colour_class_with_a_minority_stamp()
    scores = score_clusters(maps, tag.astype(int), None, factor=(2, 2), pixels=pixels)
    found = {s.cluster: s for s in scores.clusters}
    assert found[1].flagged and found[1].kind == "local" and found[1].where == "the lower-left corner", found[1].reason
    majority = found[0]
    assert not majority.flagged, majority.reason
    assert majority.local_consistency < 0.5 and majority.colour_consistency < 0.5, majority
    assert scores.sample_score[tag].min() > scores.sample_score[~tag].max()


@pytest.fixture(scope="module")
def fresh5_class4():
    """scenes-fresh5's class 4 training crops (inputs only, no model): its look-alike graph, which
    are of the astronaut photo (the background shortcut) and each crop's photo source."""
    pytest.importorskip("skimage")
    from spray.analysis.extent import look_graph
    from spray.analysis.suspicion import look_neighbours
    from spray.datasets.scenes import build_scene_bed
    bed = build_scene_bed("scenes-fresh5")
    train = bed.subset("train")
    rows = train[bed.labels[train] == 4]
    looks = look_neighbours(bed.images[rows].astype(np.float32) / 255)
    return looks, look_graph(looks), bed.shortcut[rows] == "background", bed.source[rows]


def test_a_look_alike_group_of_two_photos_is_cut_to_the_one_its_cluster_holds_most_of(fresh5_class4, monkeypatch):
    """A cluster of 30 astronaut crops and 12 of the class's 25 motorcycle crops (the colours of
    the two photos are alike, the model tells them apart): the sweep around it takes in every
    motorcycle crop, since the two photos' crops are cut from each other less cleanly than from
    the rest of the class (conductance 0.029 against 0.036); the group is cut there, to the
    astronaut crops, which are cut from the class far more cleanly than from each other."""
    from spray.analysis import extent
    from spray.datasets.photos import SOURCES
    looks, graph, astronaut, source = fresh5_class4
    motorcycle = source == SOURCES.index("motorcycle")
    rng = np.random.default_rng(0)
    for _ in range(3):
        cluster = np.zeros(len(astronaut), bool)
        cluster[rng.choice(np.flatnonzero(astronaut), 30, replace=False)] = True
        cluster[rng.choice(np.flatnonzero(motorcycle), 12, replace=False)] = True
        walk = look_walk(graph, cluster)
        group = look_group(graph, walk, cluster)
        assert (group & astronaut).sum() >= 140 and (group & motorcycle).sum() == 0, (group & motorcycle).sum()
        assert (group & ~astronaut).sum() <= 5
        with monkeypatch.context() as m:
            m.setattr(extent, "one_look", lambda graph, group, members: group)
            assert (look_group(graph, walk, cluster) & motorcycle).sum() == motorcycle.sum()
    # the astronaut crops alone are one look: no cut inside them is as clean as theirs from the class
    assert np.array_equal(extent.one_look(graph, astronaut, astronaut), astronaut)


def test_a_small_clusters_look_alike_group_is_walked_to_from_its_core_not_from_its_strays(fresh5_class4):
    """scenes-fresh5's class 4 (inputs only, no model): 156 of its 379 crops are of the astronaut
    photo. A cluster of 13 of them and one crop each of the china photo and of gravel (SpRAy's
    clusters are rarely pure) is no look-alike group of its own; walked to from all 15 members,
    the group around it took in up to 24 of the class's 27 china crops (the stray seeds a walk
    through its own photo's crops); from the members that the others reach, at most 4, and the
    typical members still belong to the group (the carrying rule's mean over the three quarters of
    the members most in it; the mean over all members, which the two strays pull down, said no)."""
    from spray.analysis.suspicion import _look_into
    from spray.datasets.photos import SOURCES
    looks, graph, astronaut, source = fresh5_class4
    china = source == SOURCES.index("china")
    rng = np.random.default_rng(0)
    plain, cored = [], []
    for _ in range(6):
        cluster = np.zeros(len(astronaut), bool)
        cluster[rng.choice(np.flatnonzero(astronaut), 13, replace=False)] = True
        for name in ("china", "gravel"):
            cluster[rng.choice(np.flatnonzero(source == SOURCES.index(name)))] = True
        plain.append((look_group(graph, look_walk(graph, cluster), cluster) & china).sum())
        group = look_group(graph, look_walk(graph, cluster, from_core=True), cluster)
        cored.append((group & china).sum())
        assert (group & astronaut).sum() >= 150, (group & astronaut).sum()
        assert _look_into(looks, cluster, group, typical=True) >= _look_into(looks, group, group, typical=True)
        assert _look_into(looks, cluster, group) < _look_into(looks, group, group)
    assert max(cored) <= 4 and sum(plain) >= 3 * sum(cored), (plain, cored)
