"""Open a data source from its job-file mapping (``type`` + that type's keys)."""
from __future__ import annotations

from typing import Mapping

from ..errors import ConfigError
from .sources import FactorySource, HDF5Source, ImageFolder, NpzSource, Source


def open_source(spec: Mapping) -> Source:
    """``{"type": "image_folder"|"npz"|"hdf5"|"factory", ...}`` -> a :class:`Source`."""
    spec = dict(spec)
    kind = spec.pop("type", None)
    classes = spec.pop("classes", None)
    if kind == "image_folder":
        return ImageFolder(spec.pop("path"), classes=classes)
    if kind == "npz":
        return NpzSource(spec.pop("path"), classes=classes)
    if kind == "hdf5":
        return HDF5Source(spec.pop("path"), images=spec.pop("images", "images"), labels=spec.pop("labels", "labels"),
                          ids=spec.pop("ids", None), classes=classes)
    if kind == "factory":
        return FactorySource(spec.pop("factory"), spec.pop("kwargs", None), classes=classes)
    raise ConfigError(f"data.type {kind!r} is not a file source; use image_folder, npz, hdf5 or factory")
