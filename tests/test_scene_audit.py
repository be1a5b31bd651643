"""A realistic bed end to end through the job pipeline (explain -> analyze -> verify -> report):
objects at random places, sizes and colours on photo crops, a source-tag stamp on a share of one
class and a harmless outline style in another. The stamp is flagged, ranked first, confirmed by a
flip test that beats its control, and nothing else is flagged; every sample gets a score."""
import json

import numpy as np
import pandas as pd
import pytest

from spray.pipelines.audit import run_job
from spray.config import JobConfig
from spray.datasets.truth import ground_truth, judge, spray_groups, spray_sample_scores
from spray.store import HeatmapStore


@pytest.fixture(scope="module")
def scene_run(scene_bed, tmp_path_factory):
    out = tmp_path_factory.mktemp("scene") / "run"
    job = JobConfig.model_validate({"name": "scene bed", "out": str(out), "data": {"type": "bed", "name": "scenes-small"},
                                    "explain": {"composite": "epsilon_gamma_box", "shard_size": 512},
                                    "cluster": {"mode": "synchronous"}, "analysis": {"embeddings": []}})
    run_job(job, progress=False)
    return out


def test_the_stamp_is_flagged_first_and_nothing_else(scene_bed, scene_run):
    summary = json.loads((scene_run / "analysis" / "analysis.json").read_text())
    with HeatmapStore(scene_run / "store") as st:
        truth = ground_truth(scene_bed.data, st.index)
        scores = spray_sample_scores(scene_run / "analysis" / "analysis.h5", len(st))
        result = judge(st.labels, truth, scene_bed.shortcuts, spray_groups(summary, st.ids), scores)
    stamp = result.shortcuts["stamp"]
    reasons = [cl["reason"] for c in summary["classes"] for cl in c["clusters"] if cl["flagged"]]
    assert result.false_flags == 0, reasons
    assert stamp.f1 >= 0.9 and stamp.ranked_first and stamp.auroc >= 0.95, stamp
    flagged = [cl for c in summary["classes"] for cl in c["clusters"] if cl["flagged"]]
    assert all(cl["kind"] == "local" and "lower-left corner" in cl["reason"] for cl in flagged)


def test_the_flip_test_confirms_it_against_its_control(scene_bed, scene_run):
    verification = json.loads((scene_run / "analysis" / "verification.json").read_text())
    assert verification and all(key.startswith("2/") for key in verification)
    for entry in verification.values():
        assert entry["confirmed"] and entry["rate"] >= 0.5 and entry["control_rate"] < 0.5 * entry["rate"], entry
    summary = json.loads((scene_run / "analysis" / "analysis.json").read_text())
    with HeatmapStore(scene_run / "store") as st:
        truth = ground_truth(scene_bed.data, st.index)
        scores = spray_sample_scores(scene_run / "analysis" / "analysis.h5", len(st))
        result = judge(st.labels, truth, scene_bed.shortcuts, spray_groups(summary, st.ids, verification), scores)
    assert result.shortcuts["stamp"].confirmed is True and result.false_confirmed == 0


def test_every_sample_has_a_score_in_the_report(scene_run):
    summary = json.loads((scene_run / "report" / "summary.json").read_text())
    samples = pd.read_csv(scene_run / "report" / "samples.csv")
    with HeatmapStore(scene_run / "store") as st:
        assert len(samples) == len(st) and set(samples["id"]) == set(st.ids)
    assert {"id", "label", "prediction", "cluster", "score", "cluster_flagged", "in_finding"} <= set(samples.columns)
    review = pd.read_csv(scene_run / "report" / "review.csv")
    assert len(review) and set(samples["id"][samples["in_finding"]]) == set(review["id"])
    assert np.isfinite(samples["score"]).all()
    top = samples.sort_values("score", ascending=False).head(20)
    assert (top["label"] == 2).all()
    assert summary["samples"]["file"] == "samples.csv" and summary["samples"]["top"][0]["label"] == 2
