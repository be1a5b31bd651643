"""The README's main job runs end to end (on a small setting)."""
import json

from spray.cli import main


def test_demo_writes_heatmaps_and_a_summary(tmp_path):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.9
    assert (tmp_path / "heatmaps.png").stat().st_size > 10_000
    assert "explained logit" in (tmp_path / "conservation.txt").read_text()
