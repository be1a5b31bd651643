"""Data sets a user brings: an image folder, an ``.npz``, an HDF5 file, or a Python factory.

Every source knows, without decoding a single image, each sample's stable id and label, so the
explain stage can plan shards and select subsets up front; images are read lazily one at a time.
Ids are the relative path (image folder), the given ``ids`` array, or the index as a string.

Every sample also has a content digest (:meth:`Source.digests`): sha256 of its stored bytes (the
file, or the array row with its dtype and shape). The heatmap store finds a sample's heatmap by
(id, label, digest), so a grown or changed data set is explained only where it changed. Digests
are cached with a cheap signature (size and mtime of a file) that spares re-reading unchanged files.
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
import zipfile
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .._imports import load_object
from ..errors import ConfigError, InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
log = logging.getLogger("spray.data")
#: a compressed .npz member above this size is worth a warning: every process decompresses it whole
COMPRESSED_WARN_BYTES = 256 * 2**20
DIGEST_CHARS = 32  # 128 bits of sha256 per sample
UNREADABLE = "-" * DIGEST_CHARS  # the digest of a file that cannot be read now
DigestCache = Mapping[str, Tuple[str, str]]  # id -> (signature, digest) from an earlier run


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()[:DIGEST_CHARS]


def _file_signature(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


class Source:
    """Base: ``ids`` (list of str), ``labels`` (int64 array), ``classes`` (names), ``load(i)``."""

    kind = "source"
    classes_from_labels = False  # True: no class list was given, so it is 0..(largest label)
    verify_on_read = True        # a worker re-checks the digests of what it reads (cheap: no decoding)
    ids: List[str]
    labels: np.ndarray
    classes: List[str]

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> Any:
        """The raw image of sample ``index`` (PIL image, HWC uint8 array or CHW float array)."""
        raise NotImplementedError

    def load_many(self, indices: np.ndarray) -> Optional[np.ndarray]:
        """The raw images of ``indices`` stacked (NHWC uint8 or NCHW float32) in one read, or None
        where this source reads one sample at a time (then the loader calls :meth:`load`)."""
        return None

    def location(self, index: int) -> str:
        """Where sample ``index`` comes from, for error messages."""
        return f"{self.describe().get('path', self.kind)} sample {self.ids[index]!r}"

    def describe(self) -> dict:
        return {"type": self.kind}

    def digests(self, indices: Sequence[int], cache: Optional[DigestCache] = None) -> Tuple[List[str], List[Optional[str]]]:
        """The content digest of each sample in ``indices``, and the signature it holds under.

        ``cache`` (id -> (signature, digest), from an earlier run) spares reading a sample whose
        signature is unchanged; sources without a cheap signature are read and hashed every time."""
        indices = [int(i) for i in indices]
        signatures = self.signatures(indices)
        out: List[Optional[str]] = [None] * len(indices)
        todo = []
        for j, (i, sig) in enumerate(zip(indices, signatures)):
            hit = cache.get(self.ids[i]) if cache and sig is not None else None
            if hit is not None and hit[0] == sig:
                out[j] = hit[1]
            else:
                todo.append(j)
        for j, d in zip(todo, self._digest_many([indices[j] for j in todo])):
            out[j] = d
        return out, signatures

    def signatures(self, indices: Sequence[int]) -> List[Optional[str]]:
        """A cheap stand-in per sample that changes whenever its content may have (None: none)."""
        return [None] * len(indices)

    def digest(self, index: int) -> str:
        """sha256 (32 hex characters) of sample ``index``'s stored content."""
        raise NotImplementedError

    def _digest_many(self, indices: Sequence[int]) -> Iterable[str]:
        return (self.digest(i) for i in indices)

    def _check(self, where: str) -> None:
        if len(self.ids) != len(self.labels):
            raise InputError(f"{where}: {len(self.ids)} ids but {len(self.labels)} labels")
        if len(set(self.ids)) != len(self.ids):
            seen, dup = set(), None
            for i in self.ids:
                if i in seen:
                    dup = i
                    break
                seen.add(i)
            raise InputError(f"{where}: sample id {dup!r} occurs more than once; ids must be unique")
        n = len(self.classes)
        bad = np.flatnonzero((self.labels < 0) | (self.labels >= n))
        if len(bad):
            i = int(bad[0])
            raise InputError(f"{where}: sample {self.ids[i]!r} has label {int(self.labels[i])}, outside "
                             f"0..{n - 1} ({n} classes; {len(bad)} such samples); fix the labels or give "
                             f"the full class list")


class ImageFolder(Source):
    """``root/<class>/<file>`` (torchvision's convention); class index = position in ``classes``
    (default: the sorted folder names); ids are paths relative to ``root``."""

    kind = "image_folder"

    def __init__(self, root, classes: Optional[Sequence[str]] = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"image folder {self.root} does not exist or is not a directory")
        folders = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if classes is None:
            classes = folders
        else:
            missing = [c for c in classes if c not in folders]
            if missing:
                raise InputError(f"image folder {self.root}: class folder(s) {missing} not found; "
                                 f"present: {folders}")
        if not classes:
            raise InputError(f"image folder {self.root} has no class sub-folders (expected root/<class>/<image>)")
        self.classes = list(classes)
        ids, labels = [], []
        for label, name in enumerate(self.classes):
            for dirpath, dirnames, filenames in os.walk(self.root / name):
                dirnames.sort()
                for fname in sorted(filenames):
                    if fname.lower().endswith(IMAGE_SUFFIXES):
                        ids.append(os.path.relpath(os.path.join(dirpath, fname), self.root).replace(os.sep, "/"))
                        labels.append(label)
        if not ids:
            raise InputError(f"image folder {self.root}: no images ({', '.join(IMAGE_SUFFIXES)}) under "
                             f"{len(self.classes)} class folders")
        self.ids, self.labels = ids, np.asarray(labels, dtype=np.int64)
        self._check(f"image folder {self.root}")

    def load(self, index: int):
        from PIL import Image, UnidentifiedImageError
        path = self.root / self.ids[index]
        try:
            with Image.open(path) as image:
                image.load()
                return image.copy()
        except FileNotFoundError:
            raise InputError(f"{path}: file is missing (it was listed when the data set was opened); "
                             f"restore it or re-run") from None
        except UnidentifiedImageError:
            raise InputError(f"{path}: not a readable image; delete or replace it, or set "
                             f"explain.on_error: skip") from None
        except OSError as err:
            raise InputError(f"{path}: unreadable or truncated image ({err}); replace it, or set "
                             f"explain.on_error: skip") from None

    def location(self, index: int) -> str:
        return str(self.root / self.ids[index])

    def describe(self) -> dict:
        return {"type": self.kind, "path": str(self.root), "classes": self.classes}

    def digest(self, index: int) -> str:
        try:
            return _digest((self.root / self.ids[index]).read_bytes())
        except OSError:
            return UNREADABLE  # reading it for the heatmap names the problem (or skips it)

    def _digest_many(self, indices: Sequence[int]) -> Iterable[str]:
        if len(indices) < 64:
            return [self.digest(i) for i in indices]
        with ThreadPoolExecutor(8) as pool:  # file reads overlap; sha256 releases the GIL
            return list(pool.map(self.digest, indices, chunksize=64))

    def signatures(self, indices: Sequence[int]) -> List[Optional[str]]:
        out = []
        for i in indices:
            try:
                out.append(_file_signature(self.root / self.ids[i]))
            except OSError:
                out.append(None)  # hashing it names the problem
        return out


class _StoredRows:
    """Digests of sources whose samples are rows of one array: each row hashed as stored (its dtype,
    shape and bytes), read in blocks of increasing indices (``_raw``)."""

    def _raw(self, indices: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def digest(self, index: int) -> str:
        return next(iter(self._digest_many([index])))

    def _digest_many(self, indices: Sequence[int]) -> Iterable[str]:
        indices = np.asarray(indices, dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        out: List[Optional[str]] = [None] * len(indices)
        for start in range(0, len(order), 256):
            block = order[start:start + 256]
            rows = self._raw(indices[block])
            head = f"{rows.dtype.str}{rows.shape[1:]}".encode()
            for j, row in zip(block, rows):
                out[j] = _digest(head, np.ascontiguousarray(row).tobytes())
        return out



def check_layout(shape: tuple, dtype, where: str) -> None:
    """Stacked images are uint8 NHWC or float NCHW; name the fix for anything else."""
    if len(shape) != 4:
        raise InputError(f"{where}: images must be 4-d (N,H,W,C uint8 or N,C,H,W float), got shape {shape}")
    if np.dtype(dtype) == np.uint8:
        if shape[-1] not in (1, 3, 4):
            raise InputError(f"{where}: uint8 images must be NHWC with 1 or 3 channels, got shape {shape}")
    elif shape[1] not in (1, 3, 4) and shape[-1] in (1, 3, 4):
        raise InputError(f"{where}: {np.dtype(dtype).name} images of shape {shape} look channels-last (NHWC), but "
                         f"float images are read as NCHW; save them as images.transpose(0, 3, 1, 2), or as uint8 "
                         f"NHWC")


class ArraySource(_StoredRows, Source):
    """Images in an array (NHWC uint8 or NCHW float) with labels and optional ids."""

    kind = "arrays"

    def __init__(self, images, labels, ids=None, classes: Optional[Sequence[str]] = None, where: str = "arrays"):
        self.images = images
        self.where = where
        self.labels = np.asarray(labels).astype(np.int64).reshape(-1)
        n = len(self.labels)
        if len(images) != n:
            raise InputError(f"{where}: {len(images)} images but {n} labels")
        self.ids = [str(i) for i in (ids if ids is not None else range(n))]
        n_classes = int(self.labels.max()) + 1 if n else 0
        self.classes = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
        self.classes_from_labels = classes is None
        check_layout(tuple(images.shape), images.dtype, where)
        self._check(where)

    def load(self, index: int):
        image = np.asarray(self.images[index])
        if image.dtype == np.uint8:
            return image
        return image.astype(np.float32, copy=False)

    def load_many(self, indices: np.ndarray) -> np.ndarray:
        images = self._raw(indices)
        return images if images.dtype == np.uint8 else images.astype(np.float32, copy=False)

    def _raw(self, indices: np.ndarray) -> np.ndarray:
        """Rows as stored (no conversion); ``indices`` increasing."""
        return np.asarray(self.images[_as_slice(indices)])

    def location(self, index: int) -> str:
        return f"{self.where} sample {self.ids[index]!r} (row {index})"

    def describe(self) -> dict:
        return {"type": self.kind, "path": self.where, "classes": self.classes}


class NpzSource(ArraySource):
    """``.npz`` with ``images`` (uint8 NHWC or float NCHW), ``labels``, optional ``ids``/``classes``."""

    kind = "npz"

    def __init__(self, path, classes: Optional[Sequence[str]] = None):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"npz file {path} not found")
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as err:
            raise InputError(f"{path}: not a readable .npz ({err})") from None
        for key in ("images", "labels"):
            if key not in data.files:
                raise InputError(f"{path}: key {key!r} missing (has {data.files}); an .npz needs 'images' "
                                 f"(uint8 NHWC or float NCHW) and 'labels'")
        if classes is None and "classes" in data.files:
            classes = [str(c) for c in data["classes"]]
        ids = data["ids"] if "ids" in data.files else None
        super().__init__(_npz_images(path, data), data["labels"], ids, classes, where=str(path))
        self.path = path
        self._signature = _file_signature(path)

    def describe(self) -> dict:
        return {"type": self.kind, "path": str(self.path), "classes": self.classes}

    def signatures(self, indices: Sequence[int]) -> List[Optional[str]]:
        return [f"{self._signature}:{i}" for i in indices]


def _npz_images(path: Path, data) -> np.ndarray:
    """The ``images`` member, memory-mapped when it is stored uncompressed (``np.savez``), so that
    neither the client nor a worker ever holds the whole data set; a compressed member
    (``np.savez_compressed``) cannot be read at random and is loaded whole."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("images.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        if info.file_size > COMPRESSED_WARN_BYTES:
            log.warning("%s: 'images' is compressed, so all %.0f MiB of it are read into memory in the client and "
                        "in every worker; for large data sets save it with np.savez (uncompressed, memory-mapped) "
                        "or use an HDF5 file", path, info.file_size / 2**20)
        return data["images"]
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local_header = fh.read(30)  # the zip local header: its name and extra-field lengths end it
        name_length, extra_length = struct.unpack("<HH", local_header[26:30])
        fh.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(fh)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(fh)
        offset = fh.tell()
    if dtype.hasobject:
        raise InputError(f"{path}: 'images' holds Python objects; save a numeric array (uint8 NHWC or float NCHW)")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran_order else "C")


def _as_slice(indices: np.ndarray):
    """A run of consecutive indices as a slice (one contiguous read), else the indices."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) and indices[-1] - indices[0] == len(indices) - 1 and (np.diff(indices) == 1).all():
        return slice(int(indices[0]), int(indices[-1]) + 1)
    return indices


class HDF5Source(_StoredRows, Source):
    """Images and labels in HDF5 datasets (names from the config). The file is opened per process
    on first read (h5py handles cannot cross processes); labels and ids are read once up front."""

    kind = "hdf5"

    def __init__(self, path, images: str = "images", labels: str = "labels", ids: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None):
        import h5py
        self.path, self.images_key = Path(path), images
        if not self.path.is_file():
            raise InputError(f"HDF5 file {self.path} not found")
        try:
            with h5py.File(self.path, "r") as fh:
                for key in (images, labels) + ((ids,) if ids else ()):
                    if key not in fh:
                        raise InputError(f"{self.path}: dataset {key!r} not found (has {list(fh)}); set "
                                         f"data.images / data.labels / data.ids to the right names")
                self.shape, self.dtype = fh[images].shape, fh[images].dtype
                self.labels = np.asarray(fh[labels][()]).astype(np.int64).reshape(-1)
                raw_ids = fh[ids][()] if ids else range(len(self.labels))
        except OSError as err:
            raise InputError(f"{self.path}: not a readable HDF5 file ({err})") from None
        self.ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw_ids]
        check_layout(tuple(self.shape), self.dtype, f"{self.path}:{images}")
        if self.shape[0] != len(self.labels):
            raise InputError(f"{self.path}: {self.shape[0]} images but {len(self.labels)} labels")
        self.classes_from_labels = classes is None
        self.classes = list(classes) if classes is not None else [str(c) for c in range(int(self.labels.max()) + 1)]
        self._file = None
        self._pid = None
        self._signature = _file_signature(self.path)
        self._check(str(self.path))

    def _images(self):
        """The images dataset, opened once per process."""
        import h5py
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file[self.images_key]

    def load(self, index: int):
        image = self._images()[index]
        return image if image.dtype == np.uint8 else image.astype(np.float32)

    def load_many(self, indices: np.ndarray) -> Optional[np.ndarray]:
        if len(indices) > 1 and not (np.diff(indices) > 0).all():
            return None  # h5py reads increasing indices only
        images = self._raw(indices)
        return images if images.dtype == np.uint8 else images.astype(np.float32)

    def _raw(self, indices: np.ndarray) -> np.ndarray:
        return self._images()[_as_slice(indices)]

    def signatures(self, indices: Sequence[int]) -> List[Optional[str]]:
        return [f"{self._signature}:{i}" for i in indices]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def location(self, index: int) -> str:
        return f"{self.path}:{self.images_key}[{index}] (id {self.ids[index]!r})"

    def describe(self) -> dict:
        return {"type": self.kind, "path": str(self.path), "classes": self.classes}


class FactorySource(Source):
    """A torch Dataset from ``file.py:make_dataset`` / ``module:attr`` (called with ``kwargs``).

    Items are ``(image, label)`` or ``(image, label, id)``. Labels come from the dataset's
    ``targets`` or ``labels`` attribute when it has one (no image decoded); otherwise every item is
    read once up front, which costs a full pass: give the dataset a ``targets`` attribute.

    Content digests: a dataset method ``digest(index) -> str`` is used when it has one; a dataset
    with torchvision's ``samples`` list of (path, label) has its files hashed (and cached by size and
    mtime, like an image folder); otherwise each item is loaded and its image hashed, a decoding pass
    over the data set per run in the client (the log says so)."""

    kind = "factory"

    def __init__(self, factory: str, kwargs: Optional[Dict[str, Any]] = None, classes: Optional[Sequence[str]] = None):
        self.spec = factory
        maker = load_object(factory, "data factory")
        try:
            self.dataset = maker(**(kwargs or {})) if callable(maker) else maker
        except Exception as err:
            raise InputError(f"data factory {factory!r} raised {type(err).__name__}: {err}") from err
        if not hasattr(self.dataset, "__getitem__") or not hasattr(self.dataset, "__len__"):
            raise ConfigError(f"data factory {factory!r} returned {type(self.dataset).__name__}, which is not a "
                              f"map-style torch Dataset (needs __len__ and __getitem__)")
        n = len(self.dataset)
        targets = getattr(self.dataset, "targets", None)
        if targets is None:
            targets = getattr(self.dataset, "labels", None)
        ids = getattr(self.dataset, "ids", None)
        if targets is None:
            items = [self.dataset[i] for i in range(n)]
            targets = [int(item[1]) for item in items]
            if ids is None and items and len(items[0]) > 2:
                ids = [str(item[2]) for item in items]
        self.labels = np.asarray(targets).astype(np.int64).reshape(-1)
        self.ids = [str(i) for i in (ids if ids is not None else range(n))]
        names = classes if classes is not None else getattr(self.dataset, "classes", None)
        self.classes_from_labels = names is None
        self.classes = list(names) if names is not None else [str(c) for c in range(int(self.labels.max()) + 1)]
        self._check(f"data factory {factory!r}")

    def load(self, index: int):
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise InputError(f"data factory {self.spec!r}: item {index} must be (image, label[, id]), "
                             f"got {type(item).__name__}")
        if int(item[1]) != int(self.labels[index]):
            raise InputError(f"data factory {self.spec!r}: item {index} has label {int(item[1])} but the "
                             f"dataset's targets say {int(self.labels[index])}")
        image = item[0]
        return image.numpy() if isinstance(image, torch.Tensor) and image.dtype != torch.uint8 else image

    def describe(self) -> dict:
        return {"type": self.kind, "path": self.spec, "classes": self.classes}

    def _file(self, index: int) -> Optional[Path]:
        """The file of sample ``index`` in a torchvision-style dataset (``samples``), else None."""
        samples = getattr(self.dataset, "samples", None)
        if callable(getattr(self.dataset, "digest", None)) or not isinstance(samples, (list, tuple)):
            return None
        entry = samples[index]
        return Path(entry[0]) if isinstance(entry, (tuple, list)) and isinstance(entry[0], (str, os.PathLike)) else None

    @property
    def verify_on_read(self) -> bool:
        return callable(getattr(self.dataset, "digest", None)) or (len(self) > 0 and self._file(0) is not None)

    def signatures(self, indices: Sequence[int]) -> List[Optional[str]]:
        out = []
        for i in indices:
            path = self._file(i)
            try:
                out.append(None if path is None else _file_signature(path))
            except OSError:
                out.append(None)
        return out

    def _digest_many(self, indices: Sequence[int]) -> Iterable[str]:
        if len(indices) > 1000 and not self.verify_on_read:
            log.info("data factory %r: hashing %d items by loading them (give the dataset a digest(index) method, "
                     "or torchvision's samples list, to skip this)", self.spec, len(indices))
        return (self.digest(i) for i in indices)

    def digest(self, index: int) -> str:
        own = getattr(self.dataset, "digest", None)
        if callable(own):
            return _digest(str(own(index)).encode())
        path = self._file(index)
        if path is not None:
            try:
                return _digest(path.read_bytes())
            except OSError:
                return UNREADABLE
        image = self.load(index)
        if hasattr(image, "mode") and hasattr(image, "size"):  # PIL image
            image = np.asarray(image)
        array = np.ascontiguousarray(image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image))
        return _digest(f"{array.dtype.str}{array.shape}".encode(), array.tobytes())


def select(source: Source, classes: Optional[Sequence] = None, ids: Optional[Sequence[str]] = None) -> np.ndarray:
    """Indices of the samples in ``classes`` (names or indices) and/or ``ids``, in source order."""
    keep = np.ones(len(source), dtype=bool)
    if classes is not None:
        wanted = []
        for c in classes:
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
                if not 0 <= int(c) < len(source.classes):
                    raise ConfigError(f"class index {c} out of range 0..{len(source.classes) - 1}")
                wanted.append(int(c))
            elif c in source.classes:
                wanted.append(source.classes.index(c))
            else:
                raise ConfigError(f"class {c!r} not in the data set's classes {source.classes}")
        keep &= np.isin(source.labels, wanted)
    if ids is not None:
        position = {i: k for k, i in enumerate(source.ids)}
        missing = [i for i in ids if i not in position]
        if missing:
            raise ConfigError(f"{len(missing)} selected id(s) not in the data set, e.g. {missing[:3]}")
        mask = np.zeros(len(source), dtype=bool)
        mask[[position[i] for i in ids]] = True
        keep &= mask
    return np.flatnonzero(keep)
