"""Augmented RGB digits rendered from scikit-learn's bundled 8x8 digits (offline, seeded).

Each sample is a stroke mask (the digit after a random affine warp), a foreground colour, a
background (plain colour, or a texture supplied by a test bed) and pixel noise. The mask is kept:
beds use it to put backgrounds behind the digit, for ground truth and for insertion tests.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F


def load_digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float32 in [0, 1] and int64 labels, from scikit-learn's bundled copy."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def warp_masks(sources: np.ndarray, size: int, rng: np.random.Generator, bold: Optional[np.ndarray] = None) -> np.ndarray:
    """Random affine warps (rotation +-12 deg, scale 0.75-0.95, shift +-8%) of 8x8 digits to size x size
    stroke masks in [0, 1]. ``bold`` (bool per sample): thicker strokes and a strong slant (a second
    writing style)."""
    n = len(sources)
    x = torch.from_numpy(sources)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    angle = rng.uniform(-12, 12, n) * math.pi / 180
    scale = rng.uniform(0.75, 0.95, n)
    shift = rng.uniform(-0.08, 0.08, (n, 2))
    shear = np.zeros(n)
    if bold is not None:
        shear = np.where(bold, rng.uniform(0.35, 0.5, n), 0.0)
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    theta = np.zeros((n, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos, -sin + shear, shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin, cos, shift[:, 1]
    grid = F.affine_grid(torch.from_numpy(theta), (n, 1, size, size), align_corners=False)
    masks = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    if bold is not None and bold.any():
        k = max(3, (size // 16) | 1)
        thick = F.max_pool2d(masks, k, stride=1, padding=k // 2)
        masks = torch.where(torch.from_numpy(bold)[:, None, None, None], thick, masks)
    return masks[:, 0].clamp(0, 1).numpy()


def compose(masks: np.ndarray, foreground: np.ndarray, background: np.ndarray, rng: np.random.Generator,
            noise: float = 0.06) -> np.ndarray:
    """uint8 NHWC images: ``background`` (N,3) colours or (N,H,W,3) textures, digit in ``foreground``."""
    m = masks[..., None]
    bg = background[:, None, None, :] if background.ndim == 2 else background
    image = bg * (1 - m) + foreground[:, None, None, :] * m
    image = image + rng.normal(0, noise, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def plain_colours(n: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Random bright foreground and dark background colours (N, 3) each."""
    return rng.uniform(0.55, 1.0, (n, 3)), rng.uniform(0.0, 0.3, (n, 3))
