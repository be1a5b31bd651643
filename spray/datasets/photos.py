"""Natural backgrounds without downloads: random crops of the photos bundled in scikit-learn
(``load_sample_images``: china, flower) and in scikit-image's wheel (``skimage.data``: eight colour
photos and three grey textures, tinted per crop). scikit-image is the ``beds`` extra (the test
extra installs it); the scene beds name it in their error when it is missing.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError

SKLEARN_PHOTOS = ("china", "flower")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "hubble_deep_field",
                  "immunohistochemistry", "retina")
SKIMAGE_TEXTURES = ("brick", "grass", "gravel")
SOURCES = SKLEARN_PHOTOS + SKIMAGE_PHOTOS + SKIMAGE_TEXTURES


def _skimage_data():
    try:
        import skimage.data
    except ImportError as e:
        raise ConfigError("the scene beds crop their backgrounds from photos bundled with scikit-image: "
                          "`pip install scikit-image` (or `pip install -e .[beds]`)") from e
    return skimage.data


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """(H, W, 3) uint8 of source ``name`` (grey textures repeated to three channels)."""
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image
        return load_sample_image(f"{name}.jpg")
    if name not in SOURCES:
        raise ConfigError(f"unknown background source {name!r}; choose from {SOURCES}")
    data = _skimage_data()
    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


SCALES = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
BLUR = 1.5      # background out of focus (sigma in pixels at 64 px): the object's edges are the sharp ones


@lru_cache(maxsize=None)
def _scaled(name: str, size: int, scale: float) -> np.ndarray:
    """Photo ``name`` resized by ``size / (scale * size)`` (area averaging), float32 in [0, 1]."""
    photo = torch.from_numpy(load_photo(name).copy()).permute(2, 0, 1)[None].float() / 255.0
    h, w = photo.shape[-2:]
    factor = min(1.0 / scale, 1.0)
    out = F.interpolate(photo, size=(max(size, round(h * factor)), max(size, round(w * factor))), mode="area")
    return _blur(out, BLUR * size / 64)[0].permute(1, 2, 0).numpy()


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (1, 3, H, W) tensor (reflected edges)."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).repeat(3, 1, 1, 1)
    x = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(3, 1, 1, -1), groups=3)
    return F.conv2d(x, k.view(3, 1, -1, 1), groups=3)


def crops(sources: List[str], index: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(N, size, size, 3) float32 in [0, 1]: for each sample a random square crop of photo
    ``sources[index[i]]`` covering 1.5-4x ``size`` pixels of the photo per side (six zoom levels),
    resized to ``size``, mirrored at random; grey textures get a random tint."""
    n = len(index)
    out = np.empty((n, size, size, 3), np.float32)
    zoom = rng.integers(0, len(SCALES), n)
    ux, uy, flip = rng.random(n), rng.random(n), rng.random(n) < 0.5
    tint = rng.uniform(0.35, 1.0, (n, 3)).astype(np.float32)
    for i in range(n):
        name = sources[int(index[i])]
        photo = _scaled(name, size, SCALES[zoom[i]])
        h, w = photo.shape[:2]
        top, left = int(uy[i] * (h - size)), int(ux[i] * (w - size))
        crop = photo[top:top + size, left:left + size]
        out[i] = crop[:, ::-1] if flip[i] else crop
        if name in SKIMAGE_TEXTURES:
            out[i] *= tint[i]
    return out
