"""Helpers for fault tests and benchmarks/faults.py: a tiny project, `spray` as a child process,
and one comparison of two run folders (every .h5 dataset and attribute, every JSON file)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List

import h5py
import hdf5plugin  # noqa: F401  (the shards' blosc filter, for reading them)
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
# values that differ between two runs of the same job by nature: clocks, pids, how much was reused
VOLATILE = {"seconds", "timings", "finished", "checked", "created", "started", "pid", "lrp_seconds", "versions",
            "hashed", "device", "costs", "reuse",
            "job_hash"}  # job_hash: the job names its own out folder
# the store's physical layout: which shard file holds a row (differs between an incremental and a fresh run)
LAYOUT = ("shard", "shard_row", "shard_files/")
WRITTEN_AT = ("@layout", "shard_files/mtime_ns")  # when a shard file was written: differs after any recompute


def tiny_project(folder: Path, n_per_class: int = 30, n_classes: int = 3, size: int = 16, seed: int = 0,
                 mode: str = "synchronous", **explain) -> dict:
    """An npz data set, a seeded random model and a job over them (analysis without 2-D maps)."""
    import torch

    from spray.models.zoo import small_resnet
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_per_class * n_classes
    images = (rng.random((n, size, size, 3)) * 255).astype(np.uint8)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    np.savez(folder / "data.npz", images=images, labels=labels, ids=np.array([f"s{i:05d}" for i in range(n)]))
    torch.manual_seed(seed)
    torch.save(small_resnet(num_classes=n_classes, width=0.125).state_dict(), folder / "model.pt")
    return {"name": "tiny", "out": str(folder / "run"),
            "data": {"type": "npz", "path": str(folder / "data.npz")},
            "model": {"factory": "spray.models.zoo:small_resnet", "kwargs": {"num_classes": n_classes, "width": 0.125},
                      "weights": str(folder / "model.pt")},
            "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
            "explain": {"composite": "epsilon_plus_flat", "batch_size": 16, "shard_size": 8, **explain},
            "cluster": {"mode": mode, "n_workers": 2, "dashboard": False},
            "analysis": {"embeddings": [], "min_class_size": 10, "k_max": 4},
            "verify": {"n_images": 10}}


def write_job(path: Path, job: dict, **changes) -> Path:
    job = json.loads(json.dumps(job))
    for dotted, value in changes.items():
        node = job
        keys = dotted.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(job))
    return path


@contextmanager
def ctrl_c_handled():
    """SIGINT raises KeyboardInterrupt in this process and reaches the children started meanwhile, as
    in a terminal. A test runner started as a background job (``cmd &`` in a shell without job
    control) ignores SIGINT, and an ignored signal stays ignored in every child it starts."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def spray(*args, cwd=None, env=None) -> subprocess.Popen:
    """`spray ARGS` as a child in its own process group (so a signal reaches its workers too), with
    Ctrl-C at its default as if typed in a terminal."""
    with ctrl_c_handled():
        return subprocess.Popen([sys.executable, "-m", "spray.cli", *map(str, args)], cwd=cwd,
                                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def wait_for(proc: subprocess.Popen, pattern: str, timeout: float = 300) -> List[str]:
    """Read ``proc``'s output until a line matches ``pattern``; the lines read so far."""
    lines = []
    deadline = time.time() + timeout
    regex = re.compile(pattern)
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise AssertionError(f"ended (rc {proc.returncode}) before {pattern!r}:\n" + "".join(lines[-40:]))
            continue
        lines.append(line)
        if regex.search(line):
            return lines
    raise AssertionError(f"no {pattern!r} in {timeout} s:\n" + "".join(lines[-40:]))


def kill_group(proc: subprocess.Popen, sig=signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def errors_of(output: str) -> List[str]:
    """The lines a failed command printed as its error (there must be exactly one)."""
    return [line for line in output.splitlines() if line.startswith("spray: ")]


def has_traceback(output: str) -> bool:
    return "Traceback (most recent call last)" in output


def dask_logs(output: str) -> List[str]:
    """Lines dask's own loggers printed (a task's "Compute Failed" dump, a heartbeat error...)."""
    return [line for line in output.splitlines() if re.search(r" - (distributed|tornado)\.?\S* - [A-Z]+ - ", line)]


# -- comparing two run folders -----------------------------------------------------------------------
def _normalise(value, folders: tuple):
    if isinstance(value, dict):
        return {k: _normalise(v, folders) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_normalise(v, folders) for v in value]
    if isinstance(value, str):
        for folder in folders:  # a copied run still names the folder it was made in
            value = value.replace(folder, "<RUN>")
    return value


def _attr(value, folders: tuple):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        try:
            return _normalise(json.loads(value), folders)
        except ValueError:
            return _normalise(value, folders)
    return np.asarray(value).tolist()


def _h5_items(path: Path) -> Dict[str, object]:
    items = {}
    with h5py.File(path, "r") as fh:
        def visit(name, obj):
            items[name] = obj[()] if isinstance(obj, h5py.Dataset) else None
            for key, value in obj.attrs.items():
                items[f"{name}@{key}"] = ("attr", value)
        for key, value in fh.attrs.items():
            items[f"@{key}"] = ("attr", value)
        fh.visititems(visit)
    return items


def _same_array(a, b, rtol: float, atol: float) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f" and (rtol or atol):
        return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True))
    if a.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def compare_runs(a: Path, b: Path, *, shards: bool = True, rtol: float = 0.0, atol: float = 0.0,
                 skip: tuple = ()) -> List[str]:
    """Differences between run folders ``a`` and ``b`` (empty: equal): every dataset and attribute
    of every .h5 file (the store through its index; its shard files too when ``shards``) and every
    JSON file, with clocks, pids and folder names taken out. ``rtol``/``atol`` loosen float
    comparisons (heatmaps of a sample explained in another batch differ in the last bits)."""
    a, b = Path(a), Path(b)
    folders = (str(a), str(b))
    problems: List[str] = []

    def files(root: Path):
        out = set()
        for p in root.rglob("*"):
            rel = str(p.relative_to(root))
            # store/digests.h5 and analysis/parts/ are caches (of sample digests, of per-class results
            # merged into analysis.h5): a resumed or incremental run may hold more of them
            if (p.suffix not in (".h5", ".json") or rel.endswith(".tmp") or rel == "store/digests.h5"
                    or rel.startswith("analysis/parts/")
                    or (not shards and rel.startswith("store/shards/")) or any(rel.startswith(s) for s in skip)):
                continue
            out.add(rel)
        return out

    fa, fb = files(a), files(b)
    for name in sorted(fa ^ fb):
        problems.append(f"{name}: only in {a if name in fa else b}")
    for name in sorted(fa & fb):
        if name.endswith(".json"):
            ja, jb = (json.loads((root / name).read_text()) for root in (a, b))
            if name == "stages.json":  # what each stage computed from; the rest is how much was reused
                ja = {k: v.get("inputs") for k, v in ja.items() if k in ("explain", "analyze")}
                jb = {k: v.get("inputs") for k, v in jb.items() if k in ("explain", "analyze")}
            if _normalise(ja, folders) != _normalise(jb, folders):
                problems.append(f"{name}: JSON differs")
            continue
        ia, ib = _h5_items(a / name), _h5_items(b / name)
        if name == "store/heatmaps.h5":
            physical = WRITTEN_AT + (() if shards else LAYOUT)
            ia, ib = ({k: v for k, v in items.items() if not any(k == p or k.startswith(p) for p in physical)}
                      for items in (ia, ib))
        for key in sorted(set(ia) ^ set(ib)):
            problems.append(f"{name}:{key}: only in one run")
        for key in sorted(set(ia) & set(ib)):
            va, vb = ia[key], ib[key]
            if isinstance(va, tuple) and va and va[0] == "attr":
                if _attr(va[1], folders) != _attr(vb[1], folders):
                    problems.append(f"{name}:{key}: attribute differs")
            elif isinstance(va, (bytes, str)) and isinstance(vb, (bytes, str)):  # a JSON document as a dataset
                if _attr(va, folders) != _attr(vb, folders):
                    problems.append(f"{name}:{key}: dataset differs")
            elif va is not None and not _same_array(va, vb, rtol, atol):
                problems.append(f"{name}:{key}: dataset differs")
    return problems


def equal_runs(a: Path, b: Path, **kw) -> None:
    problems = compare_runs(a, b, **kw)
    assert not problems, "\n".join(problems[:30])


def spray_main(*args) -> tuple:
    """`spray ARGS` in this process: (exit code, stderr text); logging goes to stderr too."""
    import contextlib
    import io
    import logging

    from spray.cli import main
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    logging.getLogger("spray").addHandler(handler)
    try:
        with contextlib.redirect_stderr(buffer):
            code = main([str(x) for x in args])
    finally:
        logging.getLogger("spray").removeHandler(handler)
    return code, buffer.getvalue()


def clean_run(job: dict, folder: Path, *args) -> Path:
    """The uninterrupted run a faulted one is compared with."""
    path = write_job(folder.parent / f"{folder.name}.yaml", job, out=str(folder))
    code, err = spray_main("run", path, "--quiet", *args)
    assert code == 0, err[-3000:]
    return folder


def only(items: List[str]) -> str:
    assert len(items) == 1, items
    return items[0]



def flip_heatmap_byte(path: Path, keep_mtime: bool = False) -> None:
    """Flip one byte inside a shard's stored heatmaps (its first chunk), as bit rot would;
    ``keep_mtime`` restores the file's times, so only reading it can tell."""
    with h5py.File(path, "r") as fh:
        info = fh["relevance"].id.get_chunk_info(0)
        offset = info.byte_offset + info.size // 2
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
