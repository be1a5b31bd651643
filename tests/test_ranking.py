"""The class ranking: flags first, then the evidence that stands out most from the run's ordinary class."""
import numpy as np
import pytest

from spray.analysis.ranking import rank_classes, robust_z

THRESHOLD = 0.05


def _record(label, gap, score=None, flagged=False, k=3):
    clusters = [] if score is None else [{"cluster": 1, "size": 100, "share": 0.3, "score": score,
                                          "flagged": flagged, "kind": "non-local", "where": "the centre"}]
    return {"label": label, "k": k, "eigengap": {"k": k, "gap": gap}, "clusters": clusters}


def _noise_classes(n=60, seed=0):
    """Ordinary classes: relative eigengaps near 0.55, near-miss suspicions up to ~0.6 of the threshold."""
    rng = np.random.default_rng(seed)
    return [_record(i, float(rng.normal(0.55, 0.015)), float(rng.uniform(0, 0.6 * THRESHOLD)))
            for i in range(n)]


def test_a_clean_split_of_harmless_strategies_is_ranked_right_after_the_flags():
    """A class whose kNN graph splits in two (eigengap 1.0) with nothing suspicious in it stands further
    out on its eigengap than any near miss does on suspicion: with the raw values averaged it went
    below a dozen near misses; measured against the run's classes it comes right after the flags."""
    records = _noise_classes()
    records.append(_record(100, 1.0, 0.2, flagged=True, k=2))          # a flagged shortcut
    records.append(_record(101, 1.0, 0.0, k=2))                        # two harmless strategies
    records.append(_record(102, 0.55, 0.9 * THRESHOLD))                # the nearest near miss
    ranked = rank_classes(records, THRESHOLD)
    assert [r["label"] for r in ranked[:3]] == [100, 101, 102]
    assert [r["attention"]["rank"] for r in ranked] == list(range(1, len(records) + 1))
    split = ranked[1]["attention"]
    assert split["score"] == split["eigengap_z"] > 10 and split["evidence"].startswith("eigengap 1.00 at k=2")
    assert ranked[2]["attention"]["evidence"].startswith("not flagged; strongest: cluster 1")
    assert ranked[0]["attention"]["evidence"].startswith("flagged: cluster 1")
    assert "robust SD" not in ranked[0]["attention"]["evidence"].split(";")[0]   # flags come first anyway
    assert not any("-0.0 " in r["attention"]["evidence"] for r in ranked)


def test_the_ranking_depends_on_the_run_not_on_the_order_of_its_classes():
    records = _noise_classes(30, seed=1) + [_record(50, 0.9, 0.01, k=2)]
    first = [r["label"] for r in rank_classes([dict(r) for r in records], THRESHOLD)]
    again = [r["label"] for r in rank_classes([dict(r) for r in reversed(records)], THRESHOLD)]
    assert first == again and first[0] == 50


def test_robust_z_ignores_the_outliers_and_survives_equal_values():
    z = robust_z(np.array([1.0, 1.1, 0.9, 1.0, 50.0]))
    assert abs(z[0]) < 1e-12 and z[-1] > 100       # the outlier does not widen the scale
    mostly_equal = robust_z(np.array([0.0, 0.0, 0.0, 1.0]))    # MAD 0: the smallest spread stands in
    assert np.all(mostly_equal[:3] == 0) and mostly_equal[3] == pytest.approx(100.0)
    assert np.all(robust_z(np.array([0.3, 0.3])) == 0)
    # classes that agree closer than the printed precision: no spread below 0.01 is divided by
    close = robust_z(np.array([0.0, 1e-5, 2e-5, 0.0, 0.5]))
    assert close[-1] == pytest.approx(50.0, abs=0.01) and abs(close[1]) <= 1e-3
    assert np.all(robust_z(np.array([0.3])) == 0)
