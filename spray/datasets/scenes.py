"""Scene beds: ten procedurally drawn object classes at random position, scale, rotation and colour
on crops of natural photos, with shortcuts of several kinds planted per class and ground truth per
sample. Built offline and deterministically for a seed (photos: :mod:`.photos`; shapes:
:mod:`.shapes`).

Shortcuts (each in its own class, several per bed to save training time):

- ``stamp``: a source-tag plate at a fixed corner on a share of one class (a local shortcut, as the
  tag on a fifth of PASCAL VOC horses);
- ``border``: a dashed frame along the image edge on a share of one class (padding, as the aeroplane
  borders of Lapuschkin et al. 2019);
- ``background``: a share of one class photographed on one background source that no other class
  has (a non-local shortcut);
- ``trigger``: BadNets: a small checkerboard at a fixed place on a few percent of every other
  class's images, relabelled to the target class.

A share of the stamp, border and background samples show another class's object (a husky on snow
labelled wolf): the shortcut is the only cue that fits their label, so the model learns it as a rule
that outweighs the object, as a Clever-Hans model does (the flip test demands it: the shortcut put on
other classes' clean images must flip half of them). Of the rest, a large share show a weak
(low-contrast) object, for which the shortcut is the easiest cue. Harmless second
strategies change how an object is drawn (outline, striped fill) but not what it is; the other
classes are clean. An auditor must flag each shortcut and nothing else; an artifact-free bed has
only objects and harmless strategies.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from .photos import SOURCES, crops
from .shapes import SHAPE_NAMES, STYLES, draw

SCENE_VERSION = 2   # 2: conflict samples (another class's object carrying the shortcut)
KINDS = ("stamp", "border", "background", "trigger")
CORNERS = ("upper-left", "upper-right", "lower-left", "lower-right")

GLYPHS = {
    "tag": ("###.#.#.#", "#...#.#.#", "###.#.#.#", "..#.#.#..", "###.###.#"),
    "c5": (".###.###.", "#....#...", "#....###.", "#......#.", ".###.###."),
}


@dataclass(frozen=True)
class SceneRecipe:
    """Which class carries which shortcut, and how each is drawn. ``None`` leaves a shortcut out."""

    stamp: Optional[int] = None
    stamp_corner: str = "lower-left"
    stamp_glyph: str = "tag"
    stamp_colours: Tuple[Tuple[int, int, int], Tuple[int, int, int]] = ((20, 20, 30), (255, 230, 60))
    border: Optional[int] = None
    border_colours: Tuple[Tuple[int, int, int], Tuple[int, int, int]] = ((240, 240, 240), (30, 30, 30))
    border_width: int = 3
    background: Optional[int] = None
    background_source: str = "flower"
    trigger: Optional[int] = None
    trigger_corner: str = "lower-right"
    trigger_cells: int = 3                 # a cells x cells checkerboard of 2 px cells
    outline: Optional[int] = None          # harmless: half of this class drawn as outlines
    striped: Optional[int] = None          # harmless: half of this class with a striped fill

    def shortcuts(self) -> Dict[str, int]:
        return {k: getattr(self, k) for k in KINDS if getattr(self, k) is not None}

    def harmless(self) -> Dict[str, int]:
        return {k: getattr(self, k) for k in ("outline", "striped") if getattr(self, k) is not None}


SCENE_BEDS: Dict[str, dict] = {
    "scenes": {"recipe": SceneRecipe(stamp=7, border=2, background=5, trigger=0, outline=1, striped=3),
               "seed": 0, "set": "development",
               "about": "stamp on class 7, border on 2, flower background on 5, BadNets trigger to 0; "
                        "harmless outline in 1, stripes in 3"},
    "scenes-clean": {"recipe": SceneRecipe(outline=1, striped=3), "seed": 0, "set": "development",
                     "about": "no artifact; harmless outline in 1, stripes in 3"},
    "scenes-heldout": {"recipe": SceneRecipe(stamp=4, stamp_corner="upper-right", stamp_glyph="c5",
                                             stamp_colours=((250, 250, 250), (200, 20, 40)),
                                             border=8, border_colours=((255, 200, 0), (0, 90, 200)),
                                             background=9, background_source="coffee",
                                             trigger=6, trigger_corner="upper-left", outline=3, striped=0),
                       "seed": 100, "set": "held-out",
                       "about": "stamp on class 4 (upper right), border on 8, coffee background on 9, trigger "
                                "to 6 (upper left); harmless outline in 3, stripes in 0"},
    "scenes-heldout-clean": {"recipe": SceneRecipe(outline=6, striped=2), "seed": 101, "set": "held-out",
                             "about": "no artifact; harmless outline in 6, stripes in 2"},
    # added after the look evidence's bar was set on the beds above: a validation the design never saw
    "scenes-fresh": {"recipe": SceneRecipe(stamp=1, stamp_corner="lower-right",
                                           stamp_colours=((0, 120, 60), (250, 250, 250)),
                                           border=5, border_colours=((200, 0, 200), (250, 250, 0)),
                                           background=3, background_source="chelsea",
                                           trigger=8, trigger_corner="upper-right", outline=0, striped=7),
                     "seed": 200, "set": "validation",
                     "about": "stamp on class 1 (lower right), border on 5, cat (chelsea) background on 3, trigger "
                              "to 8 (upper right); harmless outline in 0, stripes in 7"},
    "scenes-fresh-clean": {"recipe": SceneRecipe(outline=4, striped=9), "seed": 201, "set": "validation",
                           "about": "no artifact; harmless outline in 4, stripes in 9"},
    # a second validation bed, added when the first one's model did not use its background (46% flips)
    "scenes-fresh2": {"recipe": SceneRecipe(stamp=6, stamp_corner="upper-left", stamp_glyph="c5",
                                            stamp_colours=((255, 140, 0), (20, 20, 120)),
                                            border=0, border_colours=((0, 200, 200), (120, 0, 0)),
                                            background=2, background_source="motorcycle",
                                            trigger=4, trigger_corner="lower-left", outline=9, striped=5),
                      "seed": 300, "set": "validation",
                      "about": "stamp on class 6 (upper left), border on 0, motorcycle background on 2, trigger "
                               "to 4 (lower left); harmless outline in 9, stripes in 5"},
    # a third, with the background on a clear minority of its class (the score's stated assumption)
    "scenes-fresh3": {"recipe": SceneRecipe(stamp=3, stamp_corner="lower-left",
                                            stamp_colours=((240, 240, 240), (0, 0, 0)),
                                            border=9, border_colours=((255, 80, 80), (40, 40, 160)),
                                            background=7, background_source="rocket",
                                            trigger=2, trigger_corner="upper-left", outline=5, striped=1),
                      "seed": 400, "set": "validation", "params": {"background_fraction": 0.3, "conflict": 0.5},
                      "about": "stamp on class 3 (lower left), border on 9, rocket background on 30% of 7, "
                               "trigger to 2 (upper left); harmless outline in 5, stripes in 1"},
    # a fourth, added with the choice of k among SpRAy's clusterings (spray.analysis.choice), to test it;
    # with the default conflict (0.3) its model used the background too little (44% flips)
    "scenes-fresh4": {"recipe": SceneRecipe(stamp=8, stamp_corner="lower-right", stamp_glyph="c5",
                                            stamp_colours=((90, 200, 255), (60, 0, 60)),
                                            border=4, border_colours=((250, 160, 200), (0, 100, 0)),
                                            background=6, background_source="china",
                                            trigger=1, trigger_corner="upper-right", outline=2, striped=0),
                      "seed": 500, "set": "validation", "params": {"conflict": 0.5},
                      "about": "stamp on class 8 (lower right), border on 4, china background on 6, trigger "
                               "to 1 (upper right); harmless outline in 2, stripes in 0"},
    # a fifth, fixed before its result was seen, to test a change to the choice of k (by flagged
    # evidence mass; not landed: this bed's model uses its background too little to test it)
    "scenes-fresh5": {"recipe": SceneRecipe(stamp=0, stamp_corner="upper-left",
                                            stamp_colours=((255, 230, 0), (120, 0, 0)),
                                            border=7, border_colours=((0, 200, 200), (90, 60, 0)),
                                            background=4, background_source="astronaut",
                                            trigger=9, trigger_corner="lower-left", outline=3, striped=8),
                      "seed": 600, "set": "validation", "params": {"background_fraction": 0.4, "conflict": 0.5},
                      "about": "stamp on class 0 (upper left), border on 7, astronaut background on 40% of 4, "
                               "trigger to 9 (lower left); harmless outline in 3, stripes in 8"},
    # a sixth, fixed before its result was seen, to test the look-alike carriers
    # (spray.analysis.extent) on a bed they were not designed on
    "scenes-fresh6": {"recipe": SceneRecipe(stamp=5, stamp_corner="lower-left",
                                            stamp_colours=((255, 255, 255), (0, 90, 0)),
                                            border=3, border_colours=((200, 200, 0), (80, 0, 120)),
                                            background=8, background_source="immunohistochemistry",
                                            trigger=0, trigger_corner="lower-right", outline=6, striped=4),
                      "seed": 700, "set": "validation", "params": {"background_fraction": 0.35, "conflict": 0.5},
                      "about": "stamp on class 5 (lower left), border on 3, immunohistochemistry background on 35% "
                               "of 8, trigger to 0 (lower right); harmless outline in 6, stripes in 4"},
    # a seventh, fixed before its result was seen, on the one photo source no bed had used: a test of
    # the choice of k and the look-alike carriers as they stood at 0aa7877
    "scenes-fresh7": {"recipe": SceneRecipe(stamp=2, stamp_corner="upper-right",
                                            stamp_colours=((0, 0, 0), (0, 230, 230)),
                                            border=6, border_colours=((255, 255, 255), (200, 0, 0)),
                                            background=1, background_source="retina",
                                            trigger=3, trigger_corner="lower-right", outline=7, striped=5),
                      "seed": 800, "set": "validation", "params": {"background_fraction": 0.4, "conflict": 0.5},
                      "about": "stamp on class 2 (upper right), border on 6, retina background on 40% of 1, "
                               "trigger to 3 (lower right); harmless outline in 7, stripes in 5"},
    "scenes-small": {"recipe": SceneRecipe(stamp=2, outline=1), "seed": 7, "set": "ci",
                     "params": {"n_classes": 4, "n_per_class": 500},
                     "about": "four classes (disc, square, triangle, star): stamp on 2, harmless outline in 1 (CI)"},
}


@dataclass
class SceneBed:
    """A generated scene bed (all arrays share axis 0) and what is needed to redraw its images."""

    name: str
    images: np.ndarray          # (N, H, W, 3) uint8
    labels: np.ndarray          # (N,) int64 (poisoned samples carry the target's label)
    ids: np.ndarray             # (N,) str
    split: np.ndarray           # (N,) "train" | "test"
    shortcut: np.ndarray        # (N,) str: the shortcut in this image, "" for none
    style: np.ndarray           # (N,) int: index into shapes.STYLES
    shape: np.ndarray           # (N,) int: the object drawn (differs from the label for poisoned samples)
    source: np.ndarray          # (N,) int: background source, index into photos.SOURCES
    masks: np.ndarray           # (N, H, W) uint8 object masks (0-255)
    paint: np.ndarray           # (N, 6) float32: object colour, shading gradient (x, y), opacity
    recipe: SceneRecipe = field(default_factory=SceneRecipe)
    params: Dict = field(default_factory=dict)

    @property
    def artifact(self) -> np.ndarray:
        return self.shortcut != ""

    @property
    def classes(self) -> List[str]:
        return list(SHAPE_NAMES[:int(self.params["n_classes"])])

    def shortcuts(self) -> Dict[str, int]:
        """{kind: class} of the planted shortcuts."""
        return self.recipe.shortcuts()

    def subset(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def insert_artifact(self, index: np.ndarray, kind: str, seed: int = 1) -> np.ndarray:
        """Images ``index`` with shortcut ``kind`` put in (uint8 NHWC), for flip-rate tests: the
        stamp, frame or trigger pasted at its place; for ``background`` the object redrawn on a
        crop of the shortcut's background source."""
        if kind not in self.shortcuts():
            raise ConfigError(f"bed {self.name!r} has no {kind!r} shortcut (it has {sorted(self.shortcuts())})")
        images = self.images[index].copy()
        if kind != "background":
            return paste_artifact(images, kind, self.recipe)
        rng = np.random.default_rng(seed)
        src = np.full(len(index), SOURCES.index(self.recipe.background_source))
        bg = crops(list(SOURCES), src, images.shape[1], rng)
        return paint_objects(bg, self.masks[index].astype(np.float32) / 255.0, self.paint[index], rng)

    def to_npz(self, path) -> None:
        """The audited data (train split) as an ``.npz`` spray's loaders read, ground truth beside it."""
        train = self.subset("train")
        np.savez(path, images=self.images[train], labels=self.labels[train], ids=self.ids[train],
                 classes=np.array(self.classes), artifact=self.artifact[train], shortcut=self.shortcut[train],
                 style=self.style[train], shape=self.shape[train], source=self.source[train])


def _corner_box(corner: str, size: int, h: int, w: int, inset: int) -> Tuple[int, int]:
    top = inset if corner.startswith("upper") else size - inset - h
    left = inset if corner.endswith("left") else size - inset - w
    return top, left


def artifact_mask(kind: str, recipe: SceneRecipe, size: int) -> np.ndarray:
    """(size, size) bool: the pixels shortcut ``kind`` covers (empty for ``background``)."""
    mask = np.zeros((size, size), bool)
    if kind == "stamp":
        glyph = np.array([[c == "#" for c in row] for row in GLYPHS[recipe.stamp_glyph]])
        h, w = glyph.shape[0] + 2, glyph.shape[1] + 2
        top, left = _corner_box(recipe.stamp_corner, size, h, w, 3)
        mask[top:top + h, left:left + w] = True
    elif kind == "border":
        b = recipe.border_width
        mask[:b], mask[-b:], mask[:, :b], mask[:, -b:] = True, True, True, True
    elif kind == "trigger":
        side = 2 * recipe.trigger_cells
        top, left = _corner_box(recipe.trigger_corner, size, side, side, 5)
        mask[top:top + side, left:left + side] = True
    return mask


def paste_artifact(images: np.ndarray, kind: str, recipe: SceneRecipe) -> np.ndarray:
    """Put the stamp, frame or trigger of ``recipe`` onto uint8 NHWC ``images`` in place; return them."""
    size = images.shape[1]
    region = artifact_mask(kind, recipe, size)
    ys, xs = np.nonzero(region)
    top, left = ys.min(), xs.min()
    if kind == "stamp":
        glyph = np.array([[c == "#" for c in row] for row in GLYPHS[recipe.stamp_glyph]])
        plate, ink = recipe.stamp_colours
        images[:, region] = plate
        sub = images[:, top + 1:top + 1 + glyph.shape[0], left + 1:left + 1 + glyph.shape[1]]
        sub[:, glyph] = ink
    elif kind == "border":
        light, dark = recipe.border_colours
        yy, xx = np.mgrid[0:size, 0:size]
        dashes = ((yy + xx) // 4) % 2 == 0
        images[:, region & dashes] = light
        images[:, region & ~dashes] = dark
    elif kind == "trigger":
        yy, xx = np.mgrid[0:size, 0:size]
        checker = (((yy - top) // 2 + (xx - left) // 2) % 2 == 0)
        images[:, region & checker] = (255, 255, 255)
        images[:, region & ~checker] = (0, 0, 0)
    return images


def paint_objects(background: np.ndarray, masks: np.ndarray, paint: np.ndarray, rng: np.random.Generator,
                  noise: float = 0.03, chunk: int = 512) -> np.ndarray:
    """uint8 NHWC: each object (mask, colour with a linear shading, opacity) over its float background."""
    n, size = masks.shape[:2]
    out = np.empty(background.shape, np.uint8)
    ramp = (np.arange(size, dtype=np.float32) - size / 2) / size
    paint = paint.astype(np.float32)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        p = paint[sl]
        shade = 1 + p[:, 3, None, None] * ramp[None, None, :] + p[:, 4, None, None] * ramp[None, :, None]
        colour = np.clip(p[:, None, None, :3] * shade[..., None], 0, 1)
        m = (masks[sl] * p[:, 5, None, None])[..., None]
        bg = background[sl]
        image = bg * (1 - m) + colour * m + noise * rng.standard_normal(bg.shape, dtype=np.float32)
        out[sl] = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out


def _contrasting(colour: np.ndarray, under: np.ndarray, minimum: float = 0.45) -> np.ndarray:
    """Move random colours away from the mean background under each object until they differ by
    ``minimum`` (RGB distance), so that normal objects are visible."""
    d = colour - under
    dist = np.linalg.norm(d, axis=1, keepdims=True)
    direction = np.where(dist > 1e-6, d / np.maximum(dist, 1e-6), 1.0 / np.sqrt(3))
    pushed = np.clip(under + direction * minimum, 0, 1)
    far = dist >= minimum
    out = np.where(far, colour, pushed)
    still = np.linalg.norm(out - under, axis=1) < 0.6 * minimum   # clipped at the gamut's edge: go the other way
    out[still] = np.clip(under[still] - direction[still] * minimum, 0, 1)
    return out


SCENE_DEFAULTS = {"size": 64, "n_classes": 10, "n_per_class": 500, "fraction": 0.3, "background_fraction": 0.45,
                  "poison": 0.03, "conflict": 0.3, "weak": 0.6, "test_fraction": 0.25}


def build_scene_bed(name: str, recipe: Optional[SceneRecipe] = None, seed: Optional[int] = None,
                    **overrides) -> SceneBed:
    """Generate scene bed ``name`` (or a custom ``recipe``) deterministically for ``seed``.

    Parameters (defaults in ``SCENE_DEFAULTS``, then the bed's own): ``size`` (pixels),
    ``n_classes`` (the first shapes of :data:`.shapes.SHAPE_NAMES`), ``n_per_class``;
    ``fraction``: share of the stamp and border classes carrying their shortcut;
    ``background_fraction``: share of the background class on its source; ``poison``: share of
    every other class's images given the trigger and relabelled; ``conflict``: share of stamp,
    border and background samples whose object is another class's (their label stays); ``weak``:
    share of the other stamp, border and background samples whose object is drawn at low contrast;
    ``test_fraction``."""
    if name not in SCENE_BEDS and recipe is None:
        raise ConfigError(f"unknown scene bed {name!r}; choose one of {sorted(SCENE_BEDS)}")
    entry = SCENE_BEDS.get(name, {})
    unknown = sorted(set(overrides) - set(SCENE_DEFAULTS))
    if unknown:
        raise ConfigError(f"scene bed parameters {unknown} unknown; known: {sorted(SCENE_DEFAULTS)}")
    p = {**SCENE_DEFAULTS, **entry.get("params", {}), **overrides}
    recipe = recipe or entry["recipe"]
    seed = entry.get("seed", 0) if seed is None else int(seed)
    size, n_cls, n_per_class = int(p["size"]), int(p["n_classes"]), int(p["n_per_class"])
    fraction, background_fraction, poison, weak = p["fraction"], p["background_fraction"], p["poison"], p["weak"]
    conflict, test_fraction = p["conflict"], p["test_fraction"]
    _check(size, n_cls, n_per_class, fraction, background_fraction, poison, weak, recipe, conflict)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_cls), n_per_class)
    n = len(labels)
    shape = labels.copy()
    split = np.where(rng.random(n) < test_fraction, "test", "train")
    shortcut = np.full(n, "", dtype=object)
    for kind in ("stamp", "border"):
        c = getattr(recipe, kind)
        if c is not None:
            shortcut[(labels == c) & (rng.random(n) < fraction)] = kind
    if recipe.background is not None:
        shortcut[(labels == recipe.background) & (rng.random(n) < background_fraction)] = "background"
    if recipe.trigger is not None:
        poisoned = (labels != recipe.trigger) & (shortcut == "") & (rng.random(n) < poison)
        shortcut[poisoned] = "trigger"
        labels = np.where(poisoned, recipe.trigger, labels)
    in_class = np.isin(shortcut, ["stamp", "border", "background"])
    conflicted = in_class & (rng.random(n) < conflict)
    shape[conflicted] = (labels[conflicted] + rng.integers(1, n_cls, conflicted.sum())) % n_cls
    style = np.zeros(n, np.int64)
    for kind, c in recipe.harmless().items():
        style[(shape == c) & (labels == c) & (shortcut == "") & (rng.random(n) < 0.5)] = STYLES.index(kind)

    # backgrounds: the background shortcut's source is that class's alone
    pool = [i for i, s in enumerate(SOURCES) if recipe.background is None or s != recipe.background_source]
    source = rng.choice(pool, n)
    source[shortcut == "background"] = SOURCES.index(recipe.background_source)
    background = crops(list(SOURCES), source, size, rng)

    radius = rng.uniform(0.16, 0.28, n) * size
    margin = radius + 4
    centre = np.stack([rng.uniform(margin, size - margin), rng.uniform(margin, size - margin)], 1)
    angle = rng.uniform(-np.pi / 6, np.pi / 6, n)   # upright objects, tilted up to 30 degrees
    masks = np.zeros((n, size, size), np.float32)
    for s in range(n_cls):
        sel = np.flatnonzero(shape == s)
        masks[sel] = draw(SHAPE_NAMES[s], size, centre[sel], radius[sel], angle[sel], style[sel])
    coverage = masks.reshape(n, -1).sum(1, keepdims=True)
    under = (background.reshape(n, -1, 3) * masks.reshape(n, -1, 1)).sum(1) / np.maximum(coverage, 1e-6)
    colour = _contrasting(rng.random((n, 3)), under)
    opacity = np.ones(n)
    is_weak = in_class & ~conflicted & (rng.random(n) < weak)
    opacity[is_weak] = rng.uniform(0.2, 0.4, is_weak.sum())
    paint = np.concatenate([colour, rng.uniform(-0.5, 0.5, (n, 2)), opacity[:, None]], 1).astype(np.float32)
    images = paint_objects(background, masks, paint, rng)
    for kind in ("stamp", "border", "trigger"):
        hit = np.flatnonzero(shortcut == kind)
        if len(hit):
            images[hit] = paste_artifact(images[hit], kind, recipe)
    ids = np.array([f"{s}/{labels[i]}/{i:06d}" for i, s in enumerate(split)])
    params = dict(name=name, **p, seed=seed, recipe=_recipe_dict(recipe), version=SCENE_VERSION)
    return SceneBed(name, images, labels, ids, split, shortcut.astype(str), style, shape, source,
                    (masks * 255 + 0.5).astype(np.uint8), paint, recipe, params)


def _recipe_dict(recipe: SceneRecipe) -> dict:
    return {k: (list(map(list, v)) if isinstance(v, tuple) else v) for k, v in recipe.__dict__.items()}


def _check(size, n_classes, n_per_class, fraction, background_fraction, poison, weak, recipe: SceneRecipe,
           conflict: float) -> None:
    if size < 48:
        raise ConfigError(f"scene bed size must be at least 48 pixels, got {size}")
    if not 2 <= n_classes <= len(SHAPE_NAMES):
        raise ConfigError(f"n_classes must lie in [2, {len(SHAPE_NAMES)}], got {n_classes}")
    if n_per_class < 40:
        raise ConfigError(f"n_per_class must be at least 40, got {n_per_class}")
    for key, value, lo, hi in (("fraction", fraction, 0.05, 0.8), ("background_fraction", background_fraction, 0.05, 0.8),
                               ("poison", poison, 0.005, 0.2), ("weak", weak, 0.0, 1.0),
                               ("conflict", conflict, 0.0, 0.8)):
        if not lo <= value <= hi:
            raise ConfigError(f"scene bed {key} must lie in [{lo}, {hi}], got {value}")
    used = [c for c in list(recipe.shortcuts().values()) + list(recipe.harmless().values())]
    if len(set(used)) != len(used) or not all(0 <= c < n_classes for c in used):
        raise ConfigError(f"each shortcut and harmless strategy needs its own class 0-{n_classes - 1}, got {used}")
    for corner in (recipe.stamp_corner, recipe.trigger_corner):
        if corner not in CORNERS:
            raise ConfigError(f"corner {corner!r} unknown; choose one of {CORNERS}")
    if recipe.background_source not in SOURCES:
        raise ConfigError(f"background_source {recipe.background_source!r} unknown; choose from {SOURCES}")


__all__ = ["SCENE_BEDS", "SceneBed", "SceneRecipe", "build_scene_bed", "artifact_mask", "paste_artifact"]
