"""Synthetic heatmap stores with planted strategies, written straight into the store format.

For tests and benchmarks of the analysis at scale (1000 classes x 1300 heatmaps in minutes, no
model): every class's maps are its object (a Gaussian blob at a class-specific place and width, with
per-sample jitter and noise); planted classes give a share of their samples a second strategy:

- ``patch``: a compact hot spot in a corner (a source tag, a watermark): a local shortcut;
- ``background``: relevance spread over the image's border (a background shortcut): non-local;
- ``style``: the object drawn wider and brighter (a harmless second way to draw the class).

Images (HDF5, ``images`` NHWC uint8, ``labels``, ``ids``) are written beside the store, so that the
report can show examples: a class tint, the object, and the planted patch or border where planted.
The store's provenance points at them like a real run's does.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import h5py
import numpy as np

from ..store import Selection, ShardData, ShardSpec, StoreWriter, write_shard

KINDS = ("patch", "background", "style")


@dataclass(frozen=True)
class Plant:
    """A second strategy on ``share`` of class ``label``'s samples (``strength``: its relevance
    relative to the object's)."""

    label: int
    kind: str = "patch"
    share: float = 0.2
    strength: float = 1.0


def _class_maps(label: int, n: int, size: int, seed: int, plant: Optional[Plant], noise: float,
                sample_seed: Optional[int] = None):
    """(n, 1, size, size) float16 maps and the planted mask of class ``label``."""
    rng = np.random.default_rng([seed, label])
    cy, cx = rng.uniform(0.4, 0.6, 2) * size
    width = rng.uniform(0.14, 0.2) * size
    sample_rng = rng if sample_seed is None else np.random.default_rng([seed, label, sample_seed])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    shift = sample_rng.normal(0, 0.04 * size, (n, 2, 1, 1)).astype(np.float32)
    planted = np.zeros(n, bool)
    if plant is not None:
        planted[sample_rng.permutation(n)[:int(round(plant.share * n))]] = True
    w = np.full((n, 1, 1), width, np.float32)
    if plant is not None and plant.kind == "style":
        w[planted] *= 1.0 + 0.6 * plant.strength
    maps = np.exp(-((yy - cy - shift[:, 0]) ** 2 + (xx - cx - shift[:, 1]) ** 2) / (2 * w ** 2))
    maps *= sample_rng.uniform(0.8, 1.2, (n, 1, 1)).astype(np.float32)
    if plant is not None and plant.kind == "patch":
        p = max(2, size // 8)
        maps[planted, size - p - 1:size - 1, 1:p + 1] += plant.strength
    elif plant is not None and plant.kind == "background":
        border = np.ones((size, size), np.float32)
        border[size // 6:size - size // 6, size // 6:size - size // 6] = 0
        maps[planted] += 0.25 * plant.strength * border
    maps += noise * sample_rng.random((n, size, size), dtype=np.float32)
    return maps[:, None].astype(np.float16), planted


def _images(label: int, maps: np.ndarray, planted: np.ndarray, plant: Optional[Plant]) -> np.ndarray:
    """(n, size, size, 3) uint8: a background tint and an object colour drawn per sample (objects of one
    class come in many colours, as in the scene beds), the object's shape from its map, and the planted
    patch (white) or border (green)."""
    size, n = maps.shape[-1], len(maps)
    rng = np.random.default_rng(label)
    tint = rng.uniform(30, 230, (n, 1, 1, 3)).astype(np.float32)
    colour = rng.uniform(0, 255, (n, 1, 1, 3)).astype(np.float32)
    obj = maps[:, 0].astype(np.float32)
    obj = (obj / np.maximum(obj.max((1, 2), keepdims=True), 1e-6))[..., None]
    img = 0.5 * tint * (1 - obj) + colour * obj
    idx = np.flatnonzero(planted)
    if plant is not None and plant.kind in ("patch", "background") and len(idx):
        sub = img[idx]
        if plant.kind == "patch":
            p = max(2, size // 8)
            sub[:, size - p - 1:size - 1, 1:p + 1] = 255
        else:
            ring = np.ones((size, size), bool)
            ring[size // 6:size - size // 6, size // 6:size - size // 6] = False
            sub[:, ring] = (0, 160, 0)
        img[idx] = sub
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_store(folder: Union[str, Path], n_classes: int, per_class: int = 1300,
                          size: int = 32, plants: Sequence[Plant] = (), seed: int = 0, shard_size: int = 256,
                          noise: float = 0.3, images: bool = True, resample: Sequence[int] = (),
                          sizes: Optional[Dict[int, int]] = None) -> Path:
    """Write a finished store of ``n_classes`` classes into ``folder``; returns its path.

    ``per_class`` samples per class (``sizes``: label -> count for classes of another size). ``resample``: classes whose samples are drawn afresh (other
    noise, same distribution), as after re-explaining them. ``images``: write the images file the
    report shows (source index = position in it); without it, a sample's source index is stable
    (``label * 10**6 + i``), as in a data set that grows by appending."""
    folder = Path(folder)
    by_label = {p.label: p for p in plants}
    unknown = [p.kind for p in plants if p.kind not in KINDS]
    if unknown:
        raise ValueError(f"plant kinds {unknown} unknown; choose from {KINDS}")
    counts = [(sizes or {}).get(c, int(per_class)) for c in range(n_classes)]
    names = [f"class{c:04d}" for c in range(n_classes)]
    image_path = folder.parent / f"{folder.name}-images.h5"
    specs, shard = [], 0
    for label, count in enumerate(counts):
        for start in range(0, count, shard_size):
            stop = min(count, start + shard_size)
            specs.append(ShardSpec(f"synthetic-{seed}-{shard:06d}{'-r' if label in resample else ''}", label,
                                   stop - start, f"{names[label]}/{start:06d}", f"{names[label]}/{stop - 1:06d}"))
            shard += 1
    total = sum(counts)
    # what the heatmaps depend on besides their samples (the store identity); the data is provenance
    identity = {"model_sha256": f"synthetic-{seed}", "model": {"synthetic": True},
                "composite": {"synthetic": "planted Gaussian maps"},
                "preprocess": {"resize": None, "center_crop": None, "mean": [], "std": [], "channels": 3,
                               "convert": False, "scale": True},
                "input_shape": [3, size, size], "target": "label", "dtype": "float16", "channels": "sum"}
    provenance = {"created": "synthetic", "data": {"type": "hdf5", "path": str(image_path), "classes": names},
                  "data_spec": {"type": "hdf5", "path": str(image_path), "ids": "ids", "classes": names},
                  "classes": names, "selection": {"classes": None, "ids": None},
                  "plants": [p.__dict__ for p in plants], "resampled": sorted(int(c) for c in resample)}
    folder.parent.mkdir(parents=True, exist_ok=True)
    image_fh = h5py.File(image_path.with_suffix(".h5.tmp"), "w") if images else None
    if image_fh is not None:
        chunks = (256, size, size, 3)
        image_ds = image_fh.create_dataset("images", (total, size, size, 3), np.uint8, chunks=chunks, compression="lzf")
        image_fh.create_dataset("labels", data=np.repeat(np.arange(n_classes), counts))
        all_ids = [f"{names[c]}/{i:06d}" for c in range(n_classes) for i in range(counts[c])]
        image_fh.create_dataset("ids", data=np.array(all_ids, dtype=object), dtype=h5py.string_dtype())
    offset = 0
    selection = Selection([], np.empty(0, np.int64), [], np.empty(0, np.int64), provenance["data_spec"])
    with StoreWriter(folder, identity, provenance) as writer:
        by_class: Dict[int, list] = {}
        for spec in specs:
            by_class.setdefault(spec.label, []).append(spec)
        for label, class_specs in by_class.items():
            plant = by_label.get(label)
            maps, planted = _class_maps(label, counts[label], size, seed, plant, noise,
                                        sample_seed=1 if label in resample else None)
            if image_fh is not None:
                image_ds[offset:offset + counts[label]] = _images(label, maps, planted, plant)
            start = 0
            for spec in class_specs:
                part = slice(start, start + spec.count)
                n = spec.count
                ids = [f"{names[label]}/{i:06d}" for i in range(start, start + n)]
                logits = np.zeros((n, n_classes), np.float32)
                logits[:, label] = 1.0
                index = np.arange(offset + start, offset + start + n) if images else label * 10 ** 6 + np.arange(start, start + n)
                # a sample's content digest: its map stands in for the image it was explained from
                digests = [hashlib.sha256(m.tobytes()).hexdigest()[:32] for m in maps[part]]
                data = ShardData(relevance=maps[part], ids=ids, index=index,
                                 label=np.full(n, label, np.int64), prediction=np.full(n, label, np.int64),
                                 target=np.full(n, label, np.int64), logits=logits,
                                 digest=np.array(digests, dtype="S32"))
                checksum = write_shard(writer.path_of(spec), data, {"name": spec.name, "label": label})
                writer.record({"file": spec.filename, "count": n, "checksum": checksum, "skipped": 0,
                               "planted": int(planted[part].sum())})
                selection.ids += ids
                selection.digests += digests
                selection.labels = np.concatenate([selection.labels, data.label])
                selection.index = np.concatenate([selection.index, index])
                start += n
            offset += counts[label]
        writer.finalize(selection)
    if image_fh is not None:
        image_fh.close()
        image_path.with_suffix(".h5.tmp").replace(image_path)
    return folder


def planted_ids(plant: Plant, per_class: int, size: int = 32, seed: int = 0, noise: float = 0.3) -> list:
    """Ids of the samples that carry ``plant`` in a store written with these arguments."""
    _, planted = _class_maps(plant.label, per_class, size, seed, plant, noise)
    return [f"class{plant.label:04d}/{i:06d}" for i in np.flatnonzero(planted)]
