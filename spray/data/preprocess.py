"""Preprocessing from configuration, and the input range it implies.

The zB rule needs the bounds of a valid model input. After scaling pixels to [0, 1] and
normalising with mean/std, channel ``c`` ranges over ``[(0 - mean_c) / std_c, (1 - mean_c) / std_c]``
(255 for 1 when uint8 pixels are not scaled);
:meth:`Preprocess.input_range` derives exactly that, so a job never states it by hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError

Size = Union[int, Sequence[int], None]


def _pair(size: Size, key: str) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"preprocess.{key} must be a positive int or [height, width], got {size}")
    return size


@dataclass
class Preprocess:
    """Resize (shorter side, or exact ``[h, w]``), centre crop, scale to [0, 1], normalise.

    ``channels``: the channel count every sample must have after decoding (1 or 3); images with
    another count are an error unless ``convert`` is set, which converts grey <-> RGB.
    ``scale``: divide uint8 pixels by 255, so pixels lie in [0, 1]; ``scale=False`` feeds them as
    0..255 (a model trained on unscaled pixels), and the zB bounds and the pixel-space checks follow.
    Float inputs are taken as already in the model's pixel range.
    """

    resize: Size = None
    center_crop: Size = None
    mean: List[float] = field(default_factory=list)
    std: List[float] = field(default_factory=list)
    channels: int = 3
    convert: bool = False
    scale: bool = True

    def __post_init__(self):
        self.resize_hw = _pair(self.resize, "resize") if not isinstance(self.resize, int) else None
        self.crop_hw = _pair(self.center_crop, "center_crop")
        if self.channels not in (1, 3):
            raise ConfigError(f"preprocess.channels must be 1 or 3, got {self.channels}")
        if bool(self.mean) != bool(self.std):
            raise ConfigError("preprocess.mean and preprocess.std go together: give both or neither")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values and len(values) not in (1, self.channels):
                raise ConfigError(f"preprocess.{key} needs 1 or {self.channels} values (one per channel), "
                                  f"got {len(values)}")
        if self.std and min(self.std) <= 0:
            raise ConfigError(f"preprocess.std must be positive, got {self.std}")

    def describe(self) -> dict:
        return {"resize": self.resize, "center_crop": self.center_crop, "mean": list(self.mean),
                "std": list(self.std), "channels": self.channels, "convert": self.convert, "scale": self.scale}

    def _stats(self) -> Tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean or [0.0], dtype=torch.float32).expand(self.channels)
        std = torch.tensor(self.std or [1.0], dtype=torch.float32).expand(self.channels)
        return mean, std

    @property
    def pixel_max(self) -> float:
        """The brightest pixel the model sees before normalisation: 1, or 255 unscaled."""
        return 1.0 if self.scale else 255.0

    def input_range(self) -> Tuple[List[float], List[float]]:
        """Per-channel (low, high) of a preprocessed input: the zB rule's bounds."""
        mean, std = self._stats()
        return ((0 - mean) / std).tolist(), ((self.pixel_max - mean) / std).tolist()

    def from_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise [0, 1] pixels (N, C, H, W) as the model expects."""
        mean, std = self._stats()
        return (x * self.pixel_max - mean[:, None, None]) / std[:, None, None]

    def __call__(self, image, where: str = "sample") -> torch.Tensor:
        """One image (PIL image, HWC uint8 array, or CHW float array/tensor) -> CHW float tensor."""
        return self._transform(_to_chw(image, where, self.scale)[None], where)[0]

    def batch(self, images: np.ndarray, where: str = "samples") -> torch.Tensor:
        """Same-sized images stacked (NHWC uint8 or NCHW float) -> NCHW float tensor, in one pass.

        Equal, value for value, to calling the preprocessing on each image: both run the same steps
        (:meth:`_transform`) on a batch, of one image or of many."""
        if images.dtype == np.uint8:
            if images.ndim != 4:
                raise InputError(f"{where}: stacked uint8 images must be NxHxWxC, got shape {images.shape}")
            x = torch.from_numpy(np.array(images.transpose(0, 3, 1, 2))).float()  # own, writable copy
            if self.scale:
                x = x.div_(255.0)
        else:
            x = torch.from_numpy(np.array(images, dtype=np.float32))  # own, writable copy
            if x.ndim != 4:
                raise InputError(f"{where}: stacked float images must be NxCxHxW, got shape {tuple(x.shape)}")
        return self._transform(x, where)

    def _transform(self, x: torch.Tensor, where: str) -> torch.Tensor:
        """Channels, resize, crop and normalisation of an NCHW float batch."""
        if x.shape[1] != self.channels:
            if self.convert and x.shape[1] in (1, 3):
                x = x.mean(1, keepdim=True) if self.channels == 1 else x.expand(-1, 3, -1, -1)
            else:
                raise InputError(f"{where}: image has {x.shape[1]} channel(s), the model takes {self.channels}; "
                                 f"convert the data, or set preprocess.convert: true to convert grey<->RGB")
        if self.resize is not None:
            x = F.interpolate(x, size=self._resize_size(x.shape[2:]), mode="bilinear", align_corners=False,
                              antialias=True)
        if self.crop_hw is not None:
            h, w = x.shape[2:]
            ch, cw = self.crop_hw
            if ch > h or cw > w:
                raise InputError(f"{where}: image of {h}x{w} is smaller than center_crop {ch}x{cw}; "
                                 f"add a resize of at least that size")
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[:, :, top:top + ch, left:left + cw]
        if self.mean:
            mean, std = self._stats()
            x = (x - mean[:, None, None]) / std[:, None, None]
        return x.contiguous()

    def _resize_size(self, hw) -> Tuple[int, int]:
        if isinstance(self.resize, int):
            h, w = hw
            short = self.resize
            return (short, max(1, round(w * short / h))) if h <= w else (max(1, round(h * short / w)), short)
        return self.resize_hw


def _to_chw(image, where: str, scale: bool = True) -> torch.Tensor:
    """Decode to float CHW; uint8 is scaled to [0, 1] (``scale``) or kept as 0..255."""
    if hasattr(image, "mode") and hasattr(image, "size"):  # PIL image
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB" if image.mode in ("RGBA", "P", "CMYK", "YCbCr", "LA") else "L")
        image = np.asarray(image)
    if isinstance(image, np.ndarray):
        if image.dtype == np.uint8:
            arr = image[:, :, None] if image.ndim == 2 else image
            if arr.ndim != 3:
                raise InputError(f"{where}: uint8 image must be HxW or HxWxC, got shape {image.shape}")
            x = torch.from_numpy(np.array(arr.transpose(2, 0, 1))).float()
            return x.div_(255.0) if scale else x
        image = np.asarray(image, dtype=np.float32)
        # a memory-mapped source hands out read-only views: torch needs its own, writable copy
        image = torch.from_numpy(image if image.flags.writeable else image.copy())
    if isinstance(image, torch.Tensor):
        if image.dtype == torch.uint8:
            return _to_chw(image.numpy(), where, scale)
        x = image.float()
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise InputError(f"{where}: float image must be CxHxW, got shape {tuple(image.shape)}")
        return x
    raise InputError(f"{where}: cannot read an image from {type(image).__name__}")
