"""The suspicion score on every bundled bed: the planted artifact's cluster is flagged and ranked
first with F1 >= 0.95 against the ground truth, the harmless second strategy and the clean classes
are not flagged, and pasting the cluster's region flips as often as the bed's own artifact (within
5 points). Plus the score's parts on hand-made maps."""
import numpy as np
import pytest

from spray.pipelines.audit import verify_flagged
from spray.analysis.suspicion import describe_place, score_clusters
from spray.store import HeatmapStore

from .conftest import bed_spec


def _flagged(summary):
    found = [(c["label"], cl) for c in summary["classes"] for cl in c["clusters"] if cl["flagged"]]
    ranked = sorted((cl for c in summary["classes"] for cl in c["clusters"]), key=lambda cl: -cl["score"])
    return found, ranked


@pytest.mark.parametrize("name", ["watermark", "background"])
def test_planted_artifact_is_flagged_first_and_nothing_else(audited_beds, name):
    bed, store, summary = audited_beds[name]
    found, ranked = _flagged(summary)
    assert [label for label, _ in found] == [bed.artifact_class], [(label, cl["reason"]) for label, cl in found]
    (label, cluster), = found
    assert ranked[0] is cluster
    data = np.load(bed.data)
    with HeatmapStore(store) as st:
        position = {i: r for r, i in enumerate(st.ids)}
        members = np.zeros(len(st), bool)
        members[[position[i] for i in cluster["members"]]] = True
        in_class = st.labels == label
        truth = data["artifact"][st.index].astype(bool)
    tp = int((members & truth).sum())
    f1 = 2 * tp / (members.sum() + (truth & in_class).sum())
    assert f1 >= 0.95, f"F1 {f1:.3f}"
    for c in summary["classes"]:
        if c["label"] in (bed.harmless_class, bed.control_class):
            assert not any(cl["flagged"] for cl in c["clusters"])
    reason = cluster["reason"]
    if name == "watermark":
        assert cluster["kind"] == "local" and "lower-left corner" in reason
        top, left, bottom, right = cluster["box"]
        assert bottom >= 28 and left <= 4 and (bottom - top) * (right - left) <= 0.15 * 32 * 32
    else:
        assert cluster["kind"] == "non-local" and "off the object region" in reason


@pytest.mark.parametrize("name", ["watermark", "background"])
def test_flip_rate_of_the_flagged_region_agrees_with_the_bed(audited_beds, name):
    bed, store, summary = audited_beds[name]
    results = verify_flagged(store, store.parent / "analysis", bed_spec(bed), n_images=600)
    (key, flip), = results.items()
    assert key.startswith(f"{bed.artifact_class}/") and flip["n"] >= 500
    assert abs(flip["rate"] - bed.info["flip"]["rate"]) <= 0.05, (flip, bed.info["flip"])


def test_score_parts_on_hand_made_maps():
    rng = np.random.default_rng(0)
    n, size = 200, 16
    yy, xx = np.mgrid[0:size, 0:size]
    blob = np.exp(-((yy - 8) ** 2 + (xx - 8) ** 2) / 8.0)
    maps = blob[None] + 0.05 * rng.random((n, size, size))
    tagged = np.arange(n) < 40
    maps[tagged, 0:3, 12:16] += 2.0  # upper-right tag
    maps /= maps.sum((1, 2), keepdims=True)
    labels = tagged.astype(int)
    result = {s.cluster: s for s in score_clusters(maps, labels, None, factor=(2, 2))}
    tag = result[1]
    assert tag.flagged and tag.kind == "local" and tag.where == "the upper-right corner"
    assert tag.box[0] == 0 and tag.box[3] == 32
    assert not result[0].flagged and result[0].score < 0.1
    assert describe_place((0, 0, 32, 4), (32, 32)) == "a strip along the left side"
    assert describe_place((12, 12, 18, 18), (32, 32)) == "the centre"
