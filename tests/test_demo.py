"""The main job end to end at CI size (the report's browser tests: tests/test_report.py)."""
import json

from spray.cli import main


def test_demo_flags_the_watermark_first_and_not_the_harmless_class(demo_run, capsys):
    summary = json.loads((demo_run / "report" / "summary.json").read_text())
    first = summary["flagged"][0]
    assert first["class"] == 0 and first["flip_rate"] > 0.3
    classes = {c["label"]: c for c in summary["classes"]}
    assert not any(cl["flagged"] for cl in classes[7]["clusters"])  # the harmless second strategy
    assert not any(cl["flagged"] for cl in classes[1]["clusters"])  # the control class
    index = (demo_run / "report" / "index.html").read_text()
    assert index.index("lower-left corner") < index.index("Classes")
    for c in classes.values():
        for cl in c["clusters"]:
            assert {"id", "size", "members", "score", "flagged", "reason", "hot_spot_box", "flip_rate"} <= set(cl)
    folder = demo_run / "report" / "class-00000000"
    assert (folder / "clusters.csv").read_text().startswith("cluster,size,share,score,flagged")
    for name in ("prototypes.png", "previews-images.png", "previews-heatmaps.png", "samples.csv", "summary.json"):
        assert (folder / name).stat().st_size > 1000, name
    flagged = next(c for c in classes[0]["clusters"] if c["flagged"])
    review = (demo_run / "report" / "review.csv").read_text().splitlines()
    assert review[0].startswith("class,class_name,cluster,id,row") and len(review) == 1 + flagged["size"]
    assert " ".join(flagged["members"]) in (folder / "clusters.csv").read_text()   # review_ids
    # idempotent: a second run reuses every stage
    assert main(["demo", "--small", "--out", str(demo_run), "--quiet"]) == 0
    stages = json.loads((demo_run / "stages.json").read_text())
    assert set(stages) == {"explain", "analyze", "verify", "report"}
