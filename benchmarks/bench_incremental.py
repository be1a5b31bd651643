"""A training set that grew by 5%: the re-run explains only the new samples.

The demo's data set (the watermark bed, as `make demo` runs it) is audited once without a random
5% of its samples, then re-run on the whole set: only the new samples are explained, every other
heatmap is reused, and the result equals a fresh run on the whole set. Printed: samples and shards
explained, explain-stage and whole-run seconds of the incremental run against a fresh run on the
same data measured in the same process (their ratio), and whether the two runs agree. Both runs
use the demo's job (2 local workers; the incremental run's few samples are explained in the
client process, which is faster than starting workers) and its whole analysis. The new samples are
drawn at random, so every class grew and every class is analysed again (a class whose samples are
unchanged is reused, keyed by ``HeatmapStore.class_digest``): the run seconds' ratio is bounded by
the analysis, the explain seconds' ratio is the store's.

    python benchmarks/bench_incremental.py [--growth 0.05] [--small] [--workers 2]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _job(data: Path, out: Path, bed, workers: int) -> dict:
    from pipelines.demo import DEMO_JOB
    return {**{k: v for k, v in DEMO_JOB.items() if k != "data"}, "out": str(out),
            "data": {"type": "npz", "path": str(data)},
            "model": {"factory": bed.info["model"]["factory"], "kwargs": bed.info["model"]["kwargs"],
                      "weights": str(bed.weights)},
            "preprocess": bed.info["preprocess"], "cluster": {"mode": "local", "n_workers": workers}}


def _run(job: dict, folder: Path) -> dict:
    from tests.runs import spray_main, write_job
    path = write_job(folder.parent / f"{folder.name}.yaml", job, out=str(folder))
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code, err = spray_main("run", path, "--quiet")
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(err[-3000:])
    explain = json.loads((folder / "stages.json").read_text())["explain"]
    return {"seconds": seconds, "explain_seconds": explain["seconds"], "samples": explain["computed_samples"],
            "shards": explain["computed_shards"], "reused": explain["reused_samples"], "total": explain["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--growth", type=float, default=0.05, help="share of samples added (default 0.05)")
    parser.add_argument("--small", action="store_true", help="the CI-sized demo bed (160 per class)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (the demo's 2)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from spray.datasets import prepare_bed
    from tests.runs import compare_runs

    bed = prepare_bed("watermark", **({"n_per_class": 160} if args.small else {}))
    work = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    try:
        data = np.load(bed.data)
        n = len(data["labels"])
        keep = np.sort(np.random.default_rng(0).permutation(n)[:round(n / (1 + args.growth))])
        np.savez(work / "before.npz", **{k: data[k][keep] if len(data[k]) == n else data[k] for k in data.files})
        shutil.copy(bed.data, work / "after.npz")
        _run(_job(work / "before.npz", work / "incremental", bed, args.workers), work / "incremental")
        incremental = _run(_job(work / "after.npz", work / "incremental", bed, args.workers), work / "incremental")
        fresh = _run(_job(work / "after.npz", work / "fresh", bed, args.workers), work / "fresh")
        exact = compare_runs(work / "incremental", work / "fresh", shards=False)
        close = compare_runs(work / "incremental", work / "fresh", shards=False, rtol=2e-3, atol=1e-6)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    added = n - len(keep)
    print(f"demo data set: {len(keep)} samples, grown by {added} ({added / len(keep):.1%}) to {n}; "
          f"{args.workers} local workers")
    print(f"{'run on the grown set':<24}{'explained':>10}{'shards':>8}{'reused':>8}{'explain s':>11}{'run s':>8}")
    for name, r in (("fresh", fresh), ("incremental", incremental)):
        print(f"{name:<24}{r['samples']:>10}{r['shards']:>8}{r['reused']:>8}{r['explain_seconds']:>11.1f}"
              f"{r['seconds']:>8.1f}")
    print(f"incremental / fresh: explained {incremental['samples'] / fresh['samples']:.3f}, shards "
          f"{incremental['shards'] / fresh['shards']:.3f}, explain seconds "
          f"{incremental['explain_seconds'] / fresh['explain_seconds']:.2f}, run seconds "
          f"{incremental['seconds'] / fresh['seconds']:.2f}")
    print("incremental run equals the fresh run: " + ("bit for bit" if not exact else
          "to float16 rounding" if not close else "NO:\n  " + "\n  ".join(close[:20])))


if __name__ == "__main__":
    main()
