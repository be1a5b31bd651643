"""The analysis at scale: class tasks (in-process and on a LocalCluster), reuse of unchanged classes,
resume after kill -9, attention ranking, 2-D maps for the top of the ranking, thread caps."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from spray.analysis import AnalysisParams, analyze_store
from spray.analysis.synthetic import Plant, write_synthetic_store
from spray.analysis.tasks import thread_cap
from spray.cluster import ClusterSpec

PLANTS = [Plant(1, "patch", 0.25, 8.0), Plant(4, "background", 0.25, 2.0)]
FAST = dict(embeddings=(), k_range=(2, 6))


def _store(folder: Path, n_classes=6, per_class=120, **kw) -> Path:
    return write_synthetic_store(folder, n_classes, per_class, size=16, plants=PLANTS, shard_size=50,
                                 images=False, **kw)


def _without_timings(summary: dict) -> list:
    # input_pixels names the data file each class's analysis read (or failed to read): a reused class
    # names the first store's images
    return [{k: v for k, v in r.items() if k not in ("timings", "input_pixels")} for r in summary["classes"]]


def _h5_content(path: Path) -> dict:
    out = {}
    with h5py.File(path, "r") as fh:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        fh.visititems(visit)
    return out


def _assert_same_h5(a: Path, b: Path) -> None:
    ca, cb = _h5_content(a), _h5_content(b)
    assert sorted(ca) == sorted(cb)
    for name in ca:
        np.testing.assert_array_equal(ca[name], cb[name], err_msg=name)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("scale") / "store")


def test_planted_classes_are_flagged_and_ranked_first(small_store, tmp_path):
    summary = analyze_store(small_store, tmp_path / "a", AnalysisParams(**FAST), progress=False)
    ranks = {r["label"]: r["attention"]["rank"] for r in summary["classes"]}
    assert sorted(ranks.values()) == list(range(1, 7))
    assert {ranks[1], ranks[4]} == {1, 2}, ranks
    assert summary["ranking"][:2] in ([1, 4], [4, 1])
    for r in summary["classes"]:
        a = r["attention"]
        assert isinstance(a["score"], float) and a["evidence"]
        assert a["evidence"].startswith("flagged") == any(c["flagged"] for c in r["clusters"])
    assert summary["reuse"] == {"classes_reused": 0, "classes_recomputed": 6, "maps_reused": 0, "maps_computed": 0}


def test_unchanged_classes_are_reused_and_equal_a_fresh_run(small_store, tmp_path):
    """Class 2 resampled (its heatmaps changed) and class 3 grown by 10%: only those two are redone,
    and the merged result equals a fresh analysis of the new store (rows of the later classes shift)."""
    params = AnalysisParams(**FAST)
    analyze_store(small_store, tmp_path / "run", params, progress=False)
    grown = _store(tmp_path / "grown", sizes={3: 132}, resample=[2])
    again = analyze_store(grown, tmp_path / "run", params, progress=False)
    assert again["reuse"]["classes_reused"] == 4 and again["reuse"]["classes_recomputed"] == 2
    fresh = analyze_store(grown, tmp_path / "fresh", params, progress=False)
    assert _without_timings(again) == _without_timings(fresh)
    for name in ("analysis.h5", "virelay.h5"):
        _assert_same_h5(tmp_path / "run" / name, tmp_path / "fresh" / name)
    with h5py.File(tmp_path / "run" / "analysis.h5", "r") as fh:
        assert fh["00000005/index"][0] == 5 * 120 + 12   # class 5 starts after the grown class 3
    # stale parts of the changed classes are gone: one part file per class
    assert len(list((tmp_path / "run" / "parts").glob("*.h5"))) == 6
    # a parameter change recomputes everything
    other = analyze_store(grown, tmp_path / "run", AnalysisParams(**{**FAST, "n_neighbors": 8}), progress=False)
    assert other["reuse"]["classes_reused"] == 0


def test_a_class_result_of_other_analysis_code_is_not_reused(small_store, tmp_path, monkeypatch):
    """An edited analysis (a development install keeps its version number) recomputes every class."""
    from spray.analysis import parts
    params = AnalysisParams(**FAST)
    analyze_store(small_store, tmp_path / "run", params, progress=False)
    monkeypatch.setattr(parts, "code_digest", lambda: "another analysis")
    again = analyze_store(small_store, tmp_path / "run", params, progress=False)
    assert again["reuse"]["classes_reused"] == 0 and again["reuse"]["classes_recomputed"] == 6


RESUME_SCRIPT = """
import sys
from spray.analysis import AnalysisParams, analyze_store
analyze_store(sys.argv[1], sys.argv[2], AnalysisParams(embeddings=(), k_range=(2, 6)), progress=False)
"""


def test_resume_after_kill_9_reuses_finished_classes(tmp_path):
    store = _store(tmp_path / "store", n_classes=8, per_class=200)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, str(store), str(out)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    parts = out / "parts"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if parts.is_dir() and len(list(parts.glob("*.h5"))) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the analysis finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = len(list(parts.glob("*.h5")))
    assert 2 <= finished < 8 and not (out / "analysis.json").exists()
    params = AnalysisParams(embeddings=(), k_range=(2, 6))
    resumed = analyze_store(store, out, params, progress=False)
    assert resumed["reuse"]["classes_reused"] == finished
    assert not list(parts.glob("*.tmp"))
    fresh = analyze_store(store, tmp_path / "fresh", params, progress=False)
    assert _without_timings(resumed) == _without_timings(fresh)
    _assert_same_h5(out / "analysis.h5", tmp_path / "fresh" / "analysis.h5")


@pytest.mark.slow  # a LocalCluster start (~10-50 s here); the demo test runs its analysis on one too
def test_local_cluster_equals_in_process(small_store, tmp_path):
    params = AnalysisParams(**FAST)
    here = analyze_store(small_store, tmp_path / "here", params, progress=False)
    there = analyze_store(small_store, tmp_path / "there", params, progress=False,
                          cluster=ClusterSpec(mode="local", n_workers=2, dashboard=False))
    assert _without_timings(here) == _without_timings(there)
    assert len(there["costs"]["worker_peak_rss_mib"]) == 2  # both workers ran classes
    _assert_same_h5(tmp_path / "here" / "analysis.h5", tmp_path / "there" / "analysis.h5")


def test_2d_maps_for_the_top_of_the_ranking_only(tmp_path):
    store = _store(tmp_path / "store", per_class=60)
    top = analyze_store(store, tmp_path / "a", AnalysisParams(embeddings=("tsne",), k_range=(2, 4), embed_top=2),
                        progress=False)
    with_map = [r["label"] for r in top["classes"] if r["embedding2d"] == ["tsne"]]
    assert sorted(with_map) == sorted(top["ranking"][:2]) and top["embedding"]["virelay"] == []
    with h5py.File(tmp_path / "a" / "analysis.h5", "r") as fh, h5py.File(tmp_path / "a" / "virelay.h5", "r") as vr:
        assert all(("embedding/tsne" in fh[f"{c:08d}"]) == (c in with_map) for c in range(6))
        assert not any("embedding/tsne" in vr[g] for g in vr)       # ViRelAy: same names in every class
    every = analyze_store(store, tmp_path / "a", AnalysisParams(embeddings=("tsne",), k_range=(2, 4), embed_top=None),
                          progress=False)
    assert every["reuse"] == {"classes_reused": 6, "classes_recomputed": 0, "maps_reused": 2, "maps_computed": 4}
    with h5py.File(tmp_path / "a" / "virelay.h5", "r") as vr:
        assert all(vr[f"{g}/embedding/tsne"].shape == (60, 2) for g in vr)
    saved = json.loads((tmp_path / "a" / "analysis.json").read_text())
    assert saved["embedding"]["virelay"] == ["tsne"] and saved["embedding"]["classes"] == {"tsne": 6}


def test_thread_cap_limits_blas_and_openmp():
    from threadpoolctl import threadpool_info
    with thread_cap(1):
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
