"""`spray diff`: a planted change between two runs is found (flag appeared / disappeared, the samples
that moved), an unchanged pair shows no change, and the CLI writes its page and keeps its exit codes."""
import json

import pytest

from spray.analysis import AnalysisParams, analyze_store
from spray.analysis.synthetic import Plant, planted_ids, write_synthetic_store
from spray.cli import EXIT_CONFIG, EXIT_OK, main
from spray.diff import diff_runs, to_text

PER_CLASS, SIZE = 120, 16
OLD, NEW = Plant(1, "patch", 0.25, 8.0), Plant(3, "patch", 0.25, 8.0)


def _run(folder, plants):
    store = write_synthetic_store(folder / "store", 5, PER_CLASS, size=SIZE, plants=plants, shard_size=60, images=True)
    analyze_store(store, folder / "analysis", AnalysisParams(embeddings=(), k_range=(2, 6)), progress=False)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("diff")
    # B: the "retrained model" no longer uses class 1's shortcut and has picked up one in class 3
    return _run(root / "a", [OLD]), _run(root / "b", [NEW])


def test_planted_change_is_found(runs):
    a, b = runs
    d = diff_runs(a, b)
    by_label = {c["label"]: c for c in d["classes"]}
    assert d["flags_appeared"] == 1 and d["flags_disappeared"] == 1
    assert by_label[3]["flags_appeared"] and not by_label[3]["flags_disappeared"]
    assert by_label[1]["flags_disappeared"] and not by_label[1]["flags_appeared"]
    moved_in = set(by_label[3]["moved_into_flagged"])
    planted_new = set(planted_ids(NEW, PER_CLASS, SIZE))
    assert len(moved_in & planted_new) >= 0.9 * len(planted_new) and len(moved_in - planted_new) <= 3
    moved_out = set(by_label[1]["moved_out_of_flagged"])
    assert len(moved_out & set(planted_ids(OLD, PER_CLASS, SIZE))) >= 0.9 * len(planted_ids(OLD, PER_CLASS, SIZE))
    assert not any(by_label[c]["changed"] for c in (0, 2, 4))       # identical samples: nothing changed
    flagged = next(m for m in by_label[3]["clusters"] if m["change"] == "flag appeared")
    assert flagged["flagged_b"] and flagged["score_b"] >= 0.2
    assert flagged["score_a"] is None or flagged["score_change"] > 0   # a new group, or a matched one that rose


def test_same_run_has_no_change(runs):
    a, _ = runs
    d = diff_runs(a, a / "analysis")
    assert d["classes_changed"] == 0 and d["flags_appeared"] == d["flags_disappeared"] == 0


def test_cli_diff_prints_and_writes_its_page(runs, tmp_path, capsys):
    a, b = runs
    assert main(["diff", str(a), str(b), "--out", str(tmp_path / "d"), "--quiet"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "flags appeared: 1, disappeared: 1" in text and "class 3" in text and "flag appeared" in text
    page = (tmp_path / "d" / "diff.html").read_text()
    assert "class3" not in page or "class0003" in page
    assert "class0003" in page and "flag appeared" in page
    assert json.loads((tmp_path / "d" / "diff.json").read_text())["flags_appeared"] == 1
    assert main(["diff", str(a), str(tmp_path / "nowhere"), "--quiet"]) == EXIT_CONFIG
    assert "no analysis.json" in capsys.readouterr().err


def test_flip_rate_change_of_a_persisting_flag_is_reported(runs, tmp_path):
    """The same flagged cluster in both runs (a retrained model that still uses the shortcut), verified
    with other flip rates: the class counts as changed and the change is in text and JSON."""
    import shutil
    a, _ = runs
    d = diff_runs(a, a)
    flagged = next(m for c in d["classes"] for m in c["clusters"] if m["flagged_a"])
    key = f"1/{flagged['a']}"
    for name, rate in (("a", 0.4), ("b", 0.8)):
        shutil.copytree(a / "analysis", tmp_path / name / "analysis", ignore=shutil.ignore_patterns("parts"))
        (tmp_path / name / "analysis" / "verification.json").write_text(json.dumps({key: {"rate": rate, "n": 100}}))
    d = diff_runs(tmp_path / "a", tmp_path / "b")
    c1 = next(c for c in d["classes"] if c["label"] == 1)
    m = next(m for m in c1["clusters"] if m["flagged_a"])
    assert m["change"] == "flagged in both" and m["flip_change"] == pytest.approx(0.4) and c1["changed"]
    assert d["classes_changed"] == 1 and "flip rate 40% -> 80%" in to_text(d)
