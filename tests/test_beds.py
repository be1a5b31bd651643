"""The bundled Clever-Hans beds: deterministic, planted as documented, and their models really use
the shortcut (a bed whose model ignores its artifact is a failed bed)."""
import numpy as np
import pytest

from spray.datasets import build_bed, prepare_bed
from spray.datasets.beds import stamp_box
from spray.errors import ConfigError, SprayError


def test_beds_are_deterministic_for_a_seed():
    for name in ("watermark", "background"):
        a, b = build_bed(name, n_per_class=50, seed=3), build_bed(name, n_per_class=50, seed=3)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.artifact, b.artifact)
        assert list(a.ids) == list(b.ids)
        assert not np.array_equal(a.images, build_bed(name, n_per_class=50, seed=4).images)


def test_planted_ground_truth():
    bed = build_bed("watermark", size=48, n_per_class=200)
    assert bed.images.shape == (2000, 48, 48, 3)
    share = bed.artifact[bed.labels == bed.artifact_class].mean()
    assert 0.14 < share < 0.26 and not bed.artifact[bed.labels != bed.artifact_class].any()
    top, left, bottom, right = stamp_box(48)
    tagged = bed.images[bed.artifact][:, top:bottom, left:right]
    assert (tagged == tagged[0]).all(axis=(1, 2, 3)).all()  # the same stamp everywhere
    style = bed.style[bed.labels == bed.harmless_class]
    assert 0.35 < style.mean() < 0.65 and not bed.style[bed.labels != bed.harmless_class].any()
    inserted = bed.insert_artifact(np.array([1, 2]))
    assert (inserted[:, top:bottom, left:right] == tagged[0]).all()


def test_bad_bed_parameters():
    with pytest.raises(ConfigError, match="unknown test bed"):
        build_bed("mirror")
    with pytest.raises(ConfigError, match="at least 32"):
        build_bed("watermark", size=16)
    with pytest.raises(ConfigError, match="fraction"):
        build_bed("background", fraction=0.95)


def test_trained_beds_use_their_shortcut(bed_cache):
    for name in ("watermark", "background"):
        info = prepare_bed(name, cache=bed_cache).info
        assert info["clean_accuracy"] > 0.95, name
        assert info["flip"]["rate"] >= 0.5, f"failed bed {name}: flip rate {info['flip']['rate']}"
        assert info["flip"]["n"] > 800


def test_a_bed_whose_model_ignores_the_artifact_fails(bed_cache, tmp_path):
    import json
    prepared = prepare_bed("watermark", cache=bed_cache)
    info = json.loads((prepared.folder / "bed.json").read_text())
    info["flip"]["rate"] = 0.01
    (prepared.folder / "bed.json").write_text(json.dumps(info))
    try:
        with pytest.raises(SprayError, match="failed bed 'watermark'.*does not use the shortcut"):
            prepare_bed("watermark", cache=bed_cache)
    finally:
        info["flip"]["rate"] = prepared.info["flip"]["rate"]
        (prepared.folder / "bed.json").write_text(json.dumps(info))
