"""The bundled Clever-Hans beds (digits and scenes): deterministic, planted as documented, and their
models really use the shortcut (a bed whose model ignores its artifact is a failed bed)."""
import json

import numpy as np
import pytest

from spray.datasets import SCENE_BEDS, build_bed, build_scene_bed, prepare_bed
from spray.datasets.beds import stamp_box
from spray.datasets.photos import SOURCES
from spray.datasets.scenes import SceneRecipe, artifact_mask
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
        flip = info["shortcuts"][name]
        assert info["clean_accuracy"] > 0.95, name
        assert flip["flip"]["rate"] >= 0.5, f"failed bed {name}: flip rate {flip['flip']['rate']}"
        assert flip["flip"]["n"] > 800 and flip["base_rate"] < 0.1


def test_a_bed_whose_model_ignores_the_artifact_fails(bed_cache, tmp_path):
    prepared = prepare_bed("watermark", cache=bed_cache)
    info = json.loads((prepared.folder / "bed.json").read_text())
    info["shortcuts"]["watermark"]["flip"]["rate"] = 0.01
    (prepared.folder / "bed.json").write_text(json.dumps(info))
    try:
        with pytest.raises(SprayError, match="failed bed 'watermark'.*does not use the shortcut"):
            prepare_bed("watermark", cache=bed_cache)
        assert prepare_bed("watermark", cache=bed_cache, check=False).failed
    finally:
        (prepared.folder / "bed.json").write_text(json.dumps(prepared.info))


def test_scene_beds_are_deterministic_for_a_seed():
    a, b = build_scene_bed("scenes-small", n_per_class=40), build_scene_bed("scenes-small", n_per_class=40)
    assert np.array_equal(a.images, b.images) and list(a.shortcut) == list(b.shortcut)
    assert a.images.shape == (160, 64, 64, 3) and a.classes == ["disc", "square", "triangle", "star"]
    assert not np.array_equal(a.images, build_scene_bed("scenes-small", n_per_class=40, seed=8).images)


def test_scene_bed_ground_truth():
    bed = build_scene_bed("scenes", n_per_class=60)
    recipe = SCENE_BEDS["scenes"]["recipe"]
    for kind, label in bed.shortcuts().items():
        hit = bed.shortcut == kind
        assert hit.any() and (bed.labels[hit] == label).all(), kind
        if kind != "background":
            region = artifact_mask(kind, recipe, 64)
            patch = bed.images[hit][:, region]
            assert (patch == patch[0]).all(), kind                       # the same pixels in every sample
    poisoned = bed.shortcut == "trigger"
    assert (bed.shape[poisoned] != recipe.trigger).all()                 # other classes' objects, relabelled
    hit = np.isin(bed.shortcut, ["stamp", "border", "background"])     # conflict: another class's object
    other = bed.shape[hit] != bed.labels[hit]
    assert 0.15 < other.mean() < 0.45 and (bed.paint[hit][other, 5] == 1).all()   # ~30%, at full contrast
    assert (bed.shape[~bed.artifact] == bed.labels[~bed.artifact]).all()
    on_source = bed.source == SOURCES.index(recipe.background_source)
    assert np.array_equal(on_source, bed.shortcut == "background")       # that source is the shortcut's alone
    for kind, label in recipe.harmless().items():
        styled = bed.style == ("filled", "outline", "striped").index(kind)
        assert styled.any() and (bed.labels[styled] == label).all()
    clean = np.flatnonzero(~bed.artifact)[:5]
    stamped = bed.insert_artifact(clean, "stamp")
    region = artifact_mask("stamp", recipe, 64)
    assert (stamped[:, region] == bed.images[bed.shortcut == "stamp"][0][region]).all()
    swapped = bed.insert_artifact(clean, "background").astype(int)
    inside = bed.masks[clean] == 255
    assert np.abs(swapped - bed.images[clean].astype(int))[inside].mean() < 20      # the object stays
    assert np.abs(swapped - bed.images[clean].astype(int))[~inside].mean() > 20     # the background changes
    assert not build_scene_bed("scenes-clean", n_per_class=40).artifact.any()


def test_bad_scene_bed_parameters():
    with pytest.raises(ConfigError, match="unknown scene bed"):
        build_scene_bed("mirror")
    with pytest.raises(ConfigError, match="at least 48"):
        build_scene_bed("scenes", size=32)
    with pytest.raises(ConfigError, match="poison"):
        build_scene_bed("scenes", poison=0.5)
    with pytest.raises(ConfigError, match="own class"):
        build_scene_bed("x", recipe=SceneRecipe(stamp=1, outline=1))
    with pytest.raises(ConfigError, match="parameters .*unknown"):
        build_scene_bed("scenes", colour="red")


def test_the_ci_scene_bed_is_good_and_uses_its_shortcut(scene_bed):
    info = scene_bed.info
    assert info["clean_accuracy"] >= 0.9 and not scene_bed.failed
    stamp = info["shortcuts"]["stamp"]
    assert stamp["flip"]["rate"] >= 0.5 and stamp["base_rate"] < 0.2 and stamp["flip"]["n"] > 200


def test_an_edited_scene_bed_is_not_served_from_the_cache_of_its_old_definition(monkeypatch):
    """The cache key covers the named bed's definition (recipe, seed, size): editing a bed in
    SCENE_BEDS (another background source, say) must train a new model, not reuse the old one."""
    from dataclasses import replace

    from spray.datasets import train
    from spray.datasets.beds import bed_key

    original = SCENE_BEDS["scenes-small"]
    before = bed_key(train._plan("scenes-small", None, {})["key"])
    monkeypatch.setitem(SCENE_BEDS, "scenes-small",
                        {**original, "recipe": replace(original["recipe"], stamp_corner="upper-right")})
    assert bed_key(train._plan("scenes-small", None, {})["key"]) != before
    monkeypatch.setitem(SCENE_BEDS, "scenes-small", {**original, "seed": original["seed"] + 1})
    assert bed_key(train._plan("scenes-small", None, {})["key"]) != before
    monkeypatch.setitem(SCENE_BEDS, "scenes-small", original)
    assert bed_key(train._plan("scenes-small", None, {})["key"]) == before


def test_a_job_can_name_every_bundled_bed():
    """The job schema's bed names are the beds spray ships: none missing (a bed added to the table
    but not to the schema could not be audited with `spray run`), none unknown."""
    from typing import get_args

    from spray.config import BedData
    from spray.datasets import BEDS, SCENE_BEDS
    assert set(get_args(BedData.model_fields["name"].annotation)) == set(BEDS) | set(SCENE_BEDS)


def test_the_scorer_counts_which_flags_the_flip_test_confirmed():
    """Two classes of 10: class 0's planted 0-4 found by a confirmed group, a clean group of class 1
    flagged but not confirmed, another clean one flagged and confirmed; untested groups say nothing."""
    from spray.datasets.truth import Group, judge
    labels = np.repeat([0, 1], 10)
    truth = np.where(np.arange(20) < 5, "stamp", "")
    scores = np.where(np.arange(20) < 5, 1.0, 0.0)
    groups = [Group(0, np.arange(5), 0.9, True, True), Group(1, np.arange(10, 14), 0.3, True, False),
              Group(1, np.arange(14, 18), 0.2, True, True), Group(0, np.arange(5, 10), 0.0, False)]
    verdict = judge(labels, truth, {"stamp": 0}, groups, scores)
    assert verdict.shortcuts["stamp"].confirmed is True and verdict.shortcuts["stamp"].f1 == 1.0
    assert verdict.false_flags == 2 and verdict.false_confirmed == 1
    untested = judge(labels, truth, {"stamp": 0}, [Group(g.label, g.rows, g.score, g.flagged) for g in groups], scores)
    assert untested.shortcuts["stamp"].confirmed is None and untested.false_confirmed is None
