"""Ten procedurally drawn object classes, rendered as soft masks at any position, scale and rotation.

Each shape is an indicator function on the object's own coordinates (u, v), in units of its radius,
so that one vectorised evaluation draws a batch at different places, sizes and angles; the mask is
the share of 3x3 sub-pixel samples inside the shape (anti-aliased edges). A shape can also be drawn
as an outline (a band along its edge) or with a striped fill: the harmless second strategies of the
scene beds, which change how an object looks but not what it is.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np


def _disc(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.78


def _triangle(u, v):
    # equilateral, centroid at the origin, circumradius 1
    return (v >= -0.5) & (np.sqrt(3) * u + v <= 1.0) & (-np.sqrt(3) * u + v <= 1.0)


def _star(u, v):
    # five points: radius 1 at the tips, 0.42 between them, straight edges in polar form (approximate)
    angle = np.arctan2(v, u)
    sector = np.mod(angle, 2 * np.pi / 5) / (2 * np.pi / 5)
    edge = 0.42 + (1 - 0.42) * np.abs(2 * sector - 1) ** 1.6
    return np.sqrt(u * u + v * v) <= edge


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.32) & (av <= 0.95)) | ((av <= 0.32) & (au <= 0.95))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.55 ** 2)


def _crescent(u, v):
    return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v >= 0.8 ** 2)


def _heart(u, v):
    x, y = 1.15 * u, 1.15 * v + 0.15
    return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0


def _ellipse(u, v):
    return (u / 1.0) ** 2 + (v / 0.42) ** 2 <= 1.0


def _tee(u, v):
    return ((np.abs(u) <= 0.95) & (v >= 0.45) & (v <= 0.95)) | ((np.abs(u) <= 0.27) & (v >= -0.95) & (v <= 0.6))


SHAPES: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disc": _disc, "square": _square, "triangle": _triangle, "star": _star, "cross": _cross,
    "ring": _ring, "crescent": _crescent, "heart": _heart, "ellipse": _ellipse, "tee": _tee,
}
SHAPE_NAMES = list(SHAPES)
STYLES = ("filled", "outline", "striped")
SUPERSAMPLE = 3


def draw(shape: str, size: int, centre: np.ndarray, radius: np.ndarray, angle: np.ndarray,
         style: Optional[np.ndarray] = None, band: float = 2.5, chunk: int = 256) -> np.ndarray:
    """(N, size, size) float32 masks in [0, 1] of ``shape`` at ``centre`` (N, 2: x, y in pixels),
    ``radius`` (N,) pixels and ``angle`` (N,) radians. ``style`` (N,) indexes :data:`STYLES`: an
    outline is a band of ``band`` pixels along the edge; a striped fill keeps every other stripe
    (stripes 3 px wide, at the object's own angle plus 45 degrees). Each object is evaluated in a
    window around it only, then placed into the image."""
    inside = SHAPES[shape]
    n = len(radius)
    style = np.zeros(n, np.int64) if style is None else np.asarray(style)
    out = np.zeros((n, size, size), np.float32)
    if n == 0:
        return out
    s = SUPERSAMPLE
    win = min(size, int(np.ceil(2 * float(np.max(radius)))) + 4)
    local = (np.arange(win * s, dtype=np.float32) + 0.5) / s
    origin = np.clip(np.floor(centre - win / 2).astype(np.int64), 0, size - win)       # (N, 2) x, y
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        cx = (centre[sl, 0] - origin[sl, 0]).astype(np.float32)[:, None, None]
        cy = (centre[sl, 1] - origin[sl, 1]).astype(np.float32)[:, None, None]
        r = radius[sl].astype(np.float32)[:, None, None]
        a = angle[sl].astype(np.float32)[:, None, None]
        dx, dy = local[None, None, :] - cx, local[None, :, None] - cy
        cos, sin = np.cos(a), np.sin(a)
        u, v = (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r
        mask = inside(u, v)
        st = style[sl, None, None]
        if (st == 1).any():
            shrink = 1.0 - band / r
            mask = np.where(st == 1, mask & ~inside(u / shrink, v / shrink), mask)
        if (st == 2).any():
            mask = np.where(st == 2, mask & (np.mod((u - v) * r / 3.0, 2.0) < 1.0), mask)
        soft = mask.reshape(-1, win, s, win, s).mean((2, 4))
        for j, i in enumerate(range(sl.start, sl.stop)):
            x0, y0 = origin[i]
            out[i, y0:y0 + win, x0:x0 + win] = soft[j]
    return out
