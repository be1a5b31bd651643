"""What one explain task does on a worker: load the model once per process, read one shard's
samples, run LRP in batches, write and verify the shard file. Tasks carry only small specs (paths,
names, indices), never models or tensors, so nothing heavy is pickled per task."""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from ..data.loader import SampleDataset, batches
from ..data.open import open_source
from ..data.preprocess import Preprocess
from ..errors import ConfigError, InputError
from ..lrp import LRP
from ..models.loading import load_model
from ..store import ShardData, write_shard
from ..store.shard import DIGEST_DTYPE
from .plan import ShardTask

DTYPES = {"float16": np.float16, "float32": np.float32}
TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class ExplainSpec:
    """Everything a worker needs to explain samples, as plain JSON-able values."""

    data: Dict[str, Any]
    model: Dict[str, Any]
    preprocess: Dict[str, Any]
    composite: Any = "epsilon_plus_flat"
    target: str = "label"              # explain the true label, or the "prediction"
    batch_size: int = 32
    dtype: str = "float16"
    channels: str = "sum"              # "sum" over colour channels, or "keep"
    on_error: str = "stop"
    device: str = "auto"               # "auto" (CUDA when present), "cpu", "cuda"
    torch_threads: int = 1
    input_shape: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        if self.target not in ("label", "prediction"):
            raise ConfigError(f"explain.target must be 'label' or 'prediction', got {self.target!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"explain.dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        if self.channels not in ("sum", "keep"):
            raise ConfigError(f"explain.channels must be 'sum' or 'keep', got {self.channels!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"explain.device must be auto, cpu or cuda, got {self.device!r}")

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True, default=str).encode()).hexdigest()

    def with_absolute_paths(self) -> "ExplainSpec":
        """The same spec with every file it names made absolute (``~`` and ``$VAR`` expanded), as the
        client sees them: workers started in another directory (a remote scheduler's) read the same
        files. Paths inside factory ``kwargs`` are the factory's own business and stay as given."""
        data, model = dict(self.data), dict(self.model)
        if "path" in data and data.get("type") in ("image_folder", "npz", "hdf5"):
            data["path"] = _absolute(data["path"])
        if "factory" in data:
            data["factory"] = _absolute_reference(data["factory"])
        for key in ("weights", "pickled"):
            if model.get(key):
                model[key] = _absolute(model[key])
        if model.get("factory"):
            model["factory"] = _absolute_reference(model["factory"])
        return replace(self, data=data, model=model)

    def make_preprocess(self) -> Preprocess:
        return Preprocess(**self.preprocess)


def _absolute(path: str) -> str:
    return str(Path(os.path.expandvars(os.path.expanduser(str(path)))).absolute())


def _absolute_reference(reference: str) -> str:
    """``file.py:name`` with the file made absolute; ``package.module:name`` unchanged."""
    location, sep, attr = str(reference).rpartition(":")
    return f"{_absolute(location)}{sep}{attr}" if location.endswith(".py") else reference


def resolve_composite(composite: Any, preprocess: Preprocess) -> dict:
    """The composite as a mapping, with zB bounds filled in from the preprocessing when missing."""
    spec = {"preset": composite} if isinstance(composite, str) else dict(composite)
    low, high = preprocess.input_range()
    if spec.get("preset") == "epsilon_gamma_box":
        spec.setdefault("low", low)
        spec.setdefault("high", high)
    first = spec.get("first")
    if first in ("zb", "zbox", "ZBox") or (isinstance(first, dict) and str(first.get("rule", "")).lower() in ("zb", "zbox")):
        first = {"rule": "zb"} if isinstance(first, str) else dict(first)
        first.setdefault("low", low)
        first.setdefault("high", high)
        spec["first"] = first
    return spec


@dataclass
class _Runtime:
    source: Any
    preprocess: Preprocess
    lrp: LRP
    device: torch.device
    stats: dict = field(default_factory=dict)


_RUNTIME: Dict[str, _Runtime] = {}


def _device(choice: str) -> torch.device:
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError("explain.device is 'cuda' but no CUDA device is available here")
    index = 0
    try:  # one worker per GPU: worker i takes GPU i (mod count)
        from distributed import get_worker
        name = get_worker().name
        index = int(str(name).rsplit("-", 1)[-1]) if str(name).rsplit("-", 1)[-1].isdigit() else 0
    except (ImportError, ValueError):
        pass
    return torch.device("cuda", index % torch.cuda.device_count())


def tune_allocator() -> bool:
    """Let glibc keep large freed blocks for reuse in this process (Linux only).

    dask starts worker processes with MALLOC_TRIM_THRESHOLD_=65536, which also pins glibc's mmap
    threshold at 128 KiB: every tensor of an LRP pass is then mmap'ed fresh and page-faulted in, and
    the same LRP ran at half speed in a worker (measured: 86 vs 175 samples/s, small ResNet, 1
    thread). Large thresholds restore reuse; a worker keeps at most 256 MiB of freed memory."""
    import ctypes
    import ctypes.util
    import sys
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 << 20) and libc.mallopt(m_trim_threshold, 256 << 20))
    except (OSError, AttributeError):
        return False


def runtime(spec: ExplainSpec) -> _Runtime:
    """This process's model, data source and LRP engine for ``spec`` (built once, then reused)."""
    key = spec.key
    rt = _RUNTIME.get(key)
    if rt is None:
        tune_allocator()
        torch.set_num_threads(max(1, spec.torch_threads))
        preprocess = spec.make_preprocess()
        device = _device(spec.device)
        model = load_model(**spec.model).to(device)
        lrp = LRP(model, resolve_composite(spec.composite, preprocess))
        _RUNTIME.clear()
        rt = _RUNTIME[key] = _Runtime(open_source(spec.data), preprocess, lrp, device)
    return rt


def explain_shard(spec: ExplainSpec, task: ShardTask, store: str) -> dict:
    """Explain the samples of ``task`` and write its shard file; returns a small record."""
    started = time.perf_counter()
    rt = runtime(spec)
    digest_of = dict(zip(task.indices, task.digests))
    found = rt.source.digests(task.indices)[0] if rt.source.verify_on_read else task.digests
    for index, found in zip(task.indices, found):
        if found != digest_of[index]:
            raise InputError(f"{rt.source.location(index)}: its content changed after this run planned it (the "
                             f"data set is being modified while it is explained); re-run when it is stable")
    dataset = SampleDataset(rt.source, rt.preprocess, task.indices, spec.on_error, shape=spec.input_shape)
    out = {k: [] for k in ("relevance", "index", "label", "prediction", "target", "logits")}
    ids, skipped = [], []
    dtype = DTYPES[spec.dtype]
    lrp_seconds = 0.0  # the engine's share of this task: the rest is reading, preprocessing and writing
    for batch in batches(dataset, spec.batch_size, num_workers=0):
        skipped += [{"id": s.id, "index": s.index, "reason": s.reason, "label": int(rt.source.labels[s.index]),
                     "digest": digest_of[s.index]} for s in batch.skipped]
        if not len(batch):
            continue
        lrp_started = time.perf_counter()
        x = batch.x.to(rt.device, non_blocking=True)
        target = batch.labels.to(rt.device) if spec.target == "label" else None
        result = rt.lrp.explain(x, target)
        relevance = result.relevance
        if spec.channels == "sum":
            relevance = relevance.sum(1, keepdim=True)
        # converted by torch, on the device: numpy's float16 conversion is ~70x slower on the subnormal
        # values that small relevances produce; the result is the same, bit for bit
        stored = relevance.to(TORCH_DTYPES[spec.dtype]).cpu().numpy()
        lrp_seconds += time.perf_counter() - lrp_started
        if not np.isfinite(stored).all():
            bad = batch.ids[int(np.flatnonzero(~np.isfinite(stored).reshape(len(stored), -1).all(1))[0])]
            raise InputError(f"relevance of sample {bad!r} is not finite in {spec.dtype} (overflow or NaN); "
                             f"use explain.dtype: float32, or check the model's output for that sample")
        out["relevance"].append(stored)
        out["index"].append(batch.indices)
        out["label"].append(batch.labels.numpy())
        out["logits"].append(result.logits.float().cpu().numpy())
        out["prediction"].append(result.logits.argmax(1).cpu().numpy())
        out["target"].append(result.target.cpu().numpy())
        ids += batch.ids
    if ids:
        arrays = {k: np.concatenate(v) for k, v in out.items()}
    else:
        shape = (0,) + ((1,) if spec.channels == "sum" else spec.input_shape[:1]) + tuple(spec.input_shape[1:])
        arrays = {"relevance": np.empty(shape, dtype), "index": np.empty(0, np.int64),
                  "label": np.empty(0, np.int64), "prediction": np.empty(0, np.int64),
                  "target": np.empty(0, np.int64), "logits": np.empty((0, len(rt.source.classes)), np.float32)}
    for name in ("index", "label", "prediction", "target"):
        arrays[name] = arrays[name].astype(np.int64)
    arrays["digest"] = np.array([digest_of[int(i)] for i in arrays["index"]], dtype=DIGEST_DTYPE)
    data = ShardData(ids=ids, skipped=skipped, **arrays)
    path = Path(store) / task.spec.filename
    checksum = write_shard(path, data, {"name": task.spec.name, "label": task.spec.label})
    return {"file": task.spec.filename, "count": len(ids), "checksum": checksum, "skipped": len(skipped),
            "seconds": round(time.perf_counter() - started, 3), "lrp_seconds": round(lrp_seconds, 3),
            "pid": os.getpid(), "device": str(rt.device)}
