"""Report pictures as sprite sheets (numpy + Pillow, no plotting library): images and heatmaps of
many samples tiled into one file per class, which the pages cut out with CSS. One file instead of
thousands keeps a 1000-class report to a few files per class, and writing it costs no figure
rendering. Heatmaps use a diverging map (red: relevance for the class, blue: against, white: none),
each scaled to its own 99.5th percentile of |R| so that a few extreme pixels do not wash it out."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..render import heatmaps_rgb

PERCENTILE = 99.5
CMAP = "bwr"
PNG_MAX_TILE = 48          # tiles up to this size stay lossless PNG; larger (photos) are JPEG


@dataclass
class Sheet:
    """Where tile ``i`` of a sprite sheet is: column ``i % cols``, row ``i // cols``."""

    file: str
    cols: int
    rows: int
    tile_h: int
    tile_w: int

    def to_dict(self) -> dict:
        return {"file": self.file, "cols": self.cols, "rows": self.rows, "h": self.tile_h, "w": self.tile_w}


def heat_tiles(maps: np.ndarray) -> np.ndarray:
    """(n, H, W) or (n, C, H, W) relevance -> (n, H, W, 3) uint8 in the diverging colour map."""
    if len(maps) == 0:
        return np.zeros((0, 1, 1, 3), np.uint8)
    return heatmaps_rgb(maps, scaling="percentile", percentile=PERCENTILE, cmap=CMAP)


def fit(tiles: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink (n, h, w, 3) tiles so that their larger side is at most ``max_side`` (never enlarged)."""
    n, h, w, _ = tiles.shape
    scale = max_side / max(h, w)
    if scale >= 1:
        return tiles
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.stack([np.asarray(Image.fromarray(t).resize(size, Image.Resampling.LANCZOS)) for t in tiles])


def sheet(tiles: np.ndarray, path: Path, max_side: int = 96, cols: int = 0) -> Sheet:
    """Tile (n, h, w, 3) uint8 images into one picture (``cols`` per row, default about square);
    tiles larger than ``max_side`` are shrunk. Small tiles are saved as PNG, photos as JPEG."""
    tiles = fit(np.asarray(tiles, dtype=np.uint8), max_side)
    n, h, w, _ = tiles.shape
    cols = cols or max(1, int(np.ceil(np.sqrt(n))))
    rows = max(1, int(np.ceil(n / cols)))
    canvas = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    lossless = max(h, w) <= PNG_MAX_TILE
    path = path.with_suffix(".png" if lossless else ".jpg")
    if lossless:
        Image.fromarray(canvas).save(path, compress_level=3)  # ~7x faster than optimize, <1% larger
    else:
        Image.fromarray(canvas).save(path, quality=88)
    return Sheet(path.name, cols, rows, h, w)
