"""Bundled Clever-Hans test beds with per-sample ground truth, built offline from sklearn's digits.

- ``watermark``: a small text-like stamp in the lower-left corner of a fraction (default 20%) of
  one class's images, as the source tag on about a fifth of PASCAL VOC horses (Lapuschkin et al.
  2019). A local shortcut. In half of the tagged images (``decoy``) the digit is another class's,
  so the tag is the only evidence of the label and the model must learn "tag -> class".
- ``background``: a striped blue background texture behind a fraction (default 30%) of one class's
  digits; every other image has a plain dark background. A non-local shortcut.

Every bed also has a clean control class and a harmless second strategy: half of one class is
written in a bold, slanted style (visibly different, same object). An auditor must flag the
shortcut and neither of those. Ground truth per sample: ``artifact`` (bool), ``style`` (0 normal,
1 bold), ``split`` (train/test); the stroke masks let insertion tests re-render backgrounds.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import ConfigError
from .render import compose, load_digits_arrays, plain_colours, warp_masks

BED_VERSION = 1
CLASSES = [str(c) for c in range(10)]

# A 5 x 9 glyph that reads like a tiny source tag; 1 = ink.
STAMP = np.array([[c == "#" for c in row] for row in (
    "###.#.#.#",
    "#...#.#.#",
    "###.#.#.#",
    "..#.#.#..",
    "###.###.#",
)], dtype=bool)


@dataclass
class Bed:
    """A generated data set with its planted artifact and ground truth (all arrays share axis 0)."""

    name: str
    images: np.ndarray          # (N, H, W, 3) uint8
    labels: np.ndarray          # (N,) int64
    ids: np.ndarray             # (N,) str
    split: np.ndarray           # (N,) "train" | "test"
    artifact: np.ndarray        # (N,) bool: the shortcut is in this image
    style: np.ndarray           # (N,) 0 normal, 1 bold (the harmless second strategy)
    masks: np.ndarray           # (N, H, W) uint8 stroke masks (0-255)
    params: Dict = field(default_factory=dict)

    @property
    def artifact_class(self) -> int:
        return int(self.params["artifact_class"])

    @property
    def harmless_class(self) -> int:
        return int(self.params["harmless_class"])

    @property
    def control_class(self) -> int:
        return int(self.params["control_class"])

    @property
    def classes(self):
        return list(CLASSES)

    def subset(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def shortcuts(self):
        """{kind: class} of the planted shortcut (one per digit bed, named after the bed)."""
        return {self.name: self.artifact_class}

    def insert_artifact(self, index: np.ndarray, kind: Optional[str] = None, seed: int = 1) -> np.ndarray:
        """Images ``index`` with this bed's artifact inserted (uint8 NHWC), for flip-rate tests
        (``kind``, when given, must be the bed's name: a digit bed has one shortcut)."""
        if kind not in (None, self.name):
            raise ConfigError(f"bed {self.name!r} has no {kind!r} shortcut")
        rng = np.random.default_rng(seed)
        images = self.images[index].copy()
        if self.name == "watermark":
            return stamp(images)
        masks = self.masks[index].astype(np.float32) / 255.0
        textured = stripes(len(index), images.shape[1], rng)
        m = masks[..., None]
        out = textured * (1 - m) + images.astype(np.float32) / 255.0 * m
        return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)

    def to_npz(self, path) -> None:
        """The audited data (train split) as an ``.npz`` spray's loaders read, ground truth beside it."""
        train = self.subset("train")
        np.savez(path, images=self.images[train], labels=self.labels[train], ids=self.ids[train],
                 classes=np.array(CLASSES), artifact=self.artifact[train], style=self.style[train])


def stamp_box(size: int) -> Tuple[int, int, int, int]:
    """(top, left, bottom, right) pixel box of the watermark, exclusive bottom/right."""
    scale = max(1, size // 32)
    h, w = STAMP.shape[0] * scale + 2, STAMP.shape[1] * scale + 2
    return size - 1 - h, 1, size - 1, 1 + w


def stamp(images: np.ndarray) -> np.ndarray:
    """Stamp the tag onto uint8 NHWC images in place (dark plate, yellow glyph) and return them."""
    size = images.shape[1]
    top, left, bottom, right = stamp_box(size)
    scale = max(1, size // 32)
    glyph = np.kron(STAMP, np.ones((scale, scale), dtype=bool))
    images[:, top:bottom, left:right] = (np.array([20, 20, 30]))
    plate = images[:, top + 1:bottom - 1, left + 1:right - 1]
    plate[:, glyph] = np.array([255, 230, 60], dtype=np.uint8)
    return images


def stripes(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size, 3) float diagonal blue stripes with a random phase per image."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // 6)
    phase = rng.integers(0, period, n)[:, None, None]
    on = ((yy + xx)[None] + phase) % period < period // 2
    light, dark = np.array([0.3, 0.45, 0.95]), np.array([0.08, 0.15, 0.55])
    return np.where(on[..., None], light, dark)


def build_bed(name: str, size: int = 32, n_per_class: int = 400, fraction: Optional[float] = None,
              artifact_class: Optional[int] = None, harmless_class: int = 7, control_class: int = 1,
              test_fraction: float = 0.25, decoy: float = 0.5, seed: int = 0) -> Bed:
    """Generate bed ``name`` deterministically for ``seed`` (same arguments -> identical arrays)."""
    if name not in BEDS:
        raise ConfigError(f"unknown test bed {name!r}; choose one of {sorted(BEDS)}")
    defaults = BEDS[name]
    fraction = defaults["fraction"] if fraction is None else float(fraction)
    artifact_class = defaults["artifact_class"] if artifact_class is None else int(artifact_class)
    if size < 32:
        raise ConfigError(f"bed size must be at least 32 pixels, got {size}")
    if not 0.05 <= fraction <= 0.8:
        raise ConfigError(f"bed fraction must lie in [0.05, 0.8] (share of the class carrying the artifact), "
                          f"got {fraction}")
    if len({artifact_class, harmless_class, control_class}) != 3 or not all(
            0 <= c < 10 for c in (artifact_class, harmless_class, control_class)):
        raise ConfigError("artifact_class, harmless_class and control_class must be three different digits 0-9")
    if not 0.0 <= decoy <= 1.0:
        raise ConfigError(f"decoy must lie in [0, 1], got {decoy}")
    if n_per_class < 40:
        raise ConfigError(f"n_per_class must be at least 40, got {n_per_class}")
    rng = np.random.default_rng(seed)
    digits, digit_labels = load_digits_arrays()
    labels = np.repeat(np.arange(10), n_per_class)
    sources = np.concatenate([rng.choice(np.flatnonzero(digit_labels == c), n_per_class) for c in range(10)])
    n = len(labels)
    split = np.where(rng.random(n) < test_fraction, "test", "train")
    style = ((labels == harmless_class) & (rng.random(n) < 0.5)).astype(np.int64)
    artifact = (labels == artifact_class) & (rng.random(n) < fraction)
    hit = np.flatnonzero(artifact)
    if name == "watermark":
        # In a share ``decoy`` of the tagged images the tag is the only evidence of the label: they show
        # another class's digit (as tagged horse photos where the horse is hardly visible). The model
        # has to learn "tag -> class", which is what makes the shortcut real and measurable.
        swap = hit[rng.random(len(hit)) < decoy]
        sources[swap] = rng.choice(np.flatnonzero(digit_labels != artifact_class), len(swap))
    masks = warp_masks(digits[sources], size, rng, bold=style.astype(bool))
    foreground, background = plain_colours(n, rng)
    images = compose(masks, foreground, background, rng)
    params = dict(name=name, size=size, n_per_class=n_per_class, fraction=fraction, artifact_class=artifact_class,
                  harmless_class=harmless_class, control_class=control_class, test_fraction=test_fraction,
                  decoy=decoy, seed=seed, version=BED_VERSION)
    if name == "watermark":
        images[hit] = stamp(images[hit])
    else:
        textured = stripes(len(hit), size, rng)
        images[hit] = compose(masks[hit], foreground[hit], textured, rng)
    ids = np.array([f"{s}/{labels[i]}/{i:06d}" for i, s in enumerate(split)])
    return Bed(name, images, labels, ids, split, artifact, style, (masks * 255 + 0.5).astype(np.uint8), params)


def bed_key(params: dict) -> str:
    """A short hash of a bed's parameters (and the version of this generator)."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


BEDS = {
    "watermark": {"fraction": 0.2, "artifact_class": 0,
                  "about": "a text-like stamp in the lower-left corner on 20% of class 0"},
    "background": {"fraction": 0.3, "artifact_class": 5,
                   "about": "a striped blue background behind 30% of class 5"},
}
