"""Explain-stage benchmark: end to end (read, LRP, write, verify) against the LRP engine alone on
the same batches, 1 vs 2 dask workers, store bytes per sample, and peak memory of the client and of
a worker at two data-set sizes (it must not grow with the data set).

    python benchmarks/bench_explain.py                       # 20k samples for rates, 10k vs 50k for memory
    python benchmarks/bench_explain.py --device cuda --workers 1

Data: a synthetic .npz of 3x32x32 uint8 images, 10 classes; model: spray's small residual CNN
(width 0.25, random weights); composite epsilon_gamma_box; float16 store. Each stage run is a
fresh subprocess, so its client peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPOSITE = "epsilon_gamma_box"


def make_data(folder: Path, n: int) -> Path:
    import numpy as np
    path = folder / f"data-{n}.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        np.savez(path, images=rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8), labels=np.arange(n) % 10)
    return path


def make_model(folder: Path) -> Path:
    import torch

    from spray.models import small_resnet
    path = folder / "model.pt"
    torch.manual_seed(0)
    torch.save(small_resnet(10).state_dict(), path)
    return path


def spec(data: Path, weights: Path, device: str, batch: int):
    from spray.explain import ExplainSpec
    return ExplainSpec(data={"type": "npz", "path": str(data)},
                       model={"factory": "spray.models.zoo:small_resnet", "kwargs": {"num_classes": 10},
                              "weights": str(weights)},
                       preprocess={"mean": [0.5] * 3, "std": [0.5] * 3}, composite=COMPOSITE, batch_size=batch,
                       device=device)


def engine_alone(data: Path, weights: Path, n: int, device: str, batch: int, barrier=None) -> float:
    """Samples/s of spray.lrp on preloaded batches (1 torch thread, as a worker has); with a
    ``barrier``, timing starts when every process sharing it has loaded."""
    import torch

    from spray.data import NpzSource, Preprocess, SampleDataset, batches
    from spray.explain.task import resolve_composite
    from spray.lrp import LRP
    from spray.models import load_model
    torch.set_num_threads(1)
    pre = Preprocess(mean=[0.5] * 3, std=[0.5] * 3)
    loaded = list(batches(SampleDataset(NpzSource(data), pre, range(n)), batch))
    model = load_model("spray.models.zoo:small_resnet", {"num_classes": 10}, weights).to(device)
    with LRP(model, resolve_composite(COMPOSITE, pre)) as lrp:
        lrp.explain(loaded[0].x.to(device), loaded[0].labels.to(device))
        if device == "cuda":
            torch.cuda.synchronize()
        if barrier is not None:
            barrier.wait()
        start = time.perf_counter()
        for b in loaded:
            r = lrp.explain(b.x.to(device), b.labels.to(device)).relevance
            r.sum(1).cpu()
        if device == "cuda":
            torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def _engine_child(data: str, weights: str, n: int, device: str, batch: int, barrier, queue) -> None:
    barrier.wait()
    queue.put(engine_alone(Path(data), Path(weights), n, device, batch, barrier))


def engine_processes(data: Path, weights: Path, n: int, device: str, batch: int, k: int) -> float:
    """Samples/s of ``k`` independent engine processes at once, ``n // k`` samples each: what this
    machine's cores give ``k`` workers with no dask, no reading and no writing (the scaling ceiling)."""
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    procs = [ctx.Process(target=_engine_child, args=(str(data), str(weights), n // k, device, batch, barrier, queue))
             for _ in range(k)]
    for proc in procs:
        proc.start()
    rates = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    return sum(rates)


def _memory() -> dict:
    """This process's peak RSS and its anonymous resident memory, MiB (Linux). Memory-mapped input
    pages count in RSS as file-backed, reclaimable page cache; anonymous memory is what the process
    itself holds."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon"):
                out[key] = int(value.split()[0]) / 1024
    return out


def stage(args) -> None:
    """Child process: one explain-stage run; prints a JSON record."""
    from distributed import Client, LocalCluster

    from spray.explain import run_explain
    from spray.store import HeatmapStore
    s = spec(Path(args.data), Path(args.weights), args.device, args.batch)
    finished = []  # (time, samples) per shard, for the rate after every worker's first shard

    def on_shard(rec):
        finished.append((time.perf_counter(), rec["count"], rec["seconds"], rec["lrp_seconds"]))
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            Client(lc) as client:
        client.run(lambda: None)  # workers up
        start = time.perf_counter()
        result = run_explain(s, Path(args.store), shard_size=args.shard_size, client=client, progress=False,
                             on_shard=on_shard)
        seconds = time.perf_counter() - start
        workers = list(client.run(_memory).values())
    warm = finished[args.workers - 1:]  # from the moment every worker has its model loaded and warm
    steady = sum(r[1] for r in warm[1:]) / (warm[-1][0] - warm[0][0]) if len(warm) > 1 else float("nan")
    lrp_share = sum(r[3] for r in finished) / sum(r[2] for r in finished)
    with HeatmapStore(args.store) as st:
        info = st.describe()
    print(json.dumps({"samples": result.samples, "seconds": seconds, "rate": result.samples / seconds,
                      "steady_rate": steady, "lrp_share": lrp_share,
                      "bytes_per_sample": info["bytes_per_sample"],
                      "worker_peak_mib": max(w["VmHWM"] for w in workers),
                      "worker_anon_mib": max(w["RssAnon"] for w in workers),
                      # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child started by
                      # this benchmark would report its parent's peak (which grows with the data it made)
                      "client_peak_mib": _memory()["VmHWM"]}))


def run_stage(data, weights, store, workers, device, batch, shard_size) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", "--data", str(data), "--weights", str(weights),
                          "--store", str(store), "--workers", str(workers), "--device", device,
                          "--batch", str(batch), "--shard-size", str(shard_size)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate-samples", type=int, default=20000,
                   help="samples for the rate runs; small runs mostly time the start-up (cluster, model load)")
    p.add_argument("--sizes", type=int, nargs=2, default=[10000, 50000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=512)
    p.add_argument("--child", action="store_true")
    p.add_argument("--data")
    p.add_argument("--weights")
    p.add_argument("--store")
    args = p.parse_args()
    if args.child:
        return stage(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = make_model(tmp)
        small = make_data(tmp, args.rate_samples)
        engine = engine_alone(small, weights, args.rate_samples, args.device, args.batch)
        ceiling = engine_processes(small, weights, args.rate_samples, args.device, args.batch, args.workers)
        one = run_stage(small, weights, tmp / "s1", 1, args.device, args.batch, args.shard_size)
        many = run_stage(small, weights, tmp / "s2", args.workers, args.device, args.batch, args.shard_size)
        sized = [run_stage(make_data(tmp, n), weights, tmp / f"m{n}", args.workers, args.device, args.batch,
                           args.shard_size) for n in args.sizes]
    print(f"explain stage, small ResNet 3x32x32, {COMPOSITE}, float16 store, device {args.device}, "
          f"batch {args.batch}, shard {args.shard_size}")
    print(f"{args.rate_samples} samples; stage runs include starting the cluster, loading the model in each worker,"
          f" the index and the final check")
    print("'steady': from the moment every worker has finished its first shard (model loaded) to the last shard")
    print(f"{'run':38s} {'samples/s':>10s} {'ratio':>8s} {'steady/s':>9s} {'ratio':>8s} {'seconds':>8s}")
    print(f"{'LRP engine alone (1 thread)':38s} {engine:10.1f} {1.0:8.2f} {'':>9s} {'':>8s} "
          f"{args.rate_samples / engine:8.1f}  baseline")
    print(f"{f'{args.workers} engine processes at once':38s} {ceiling:10.1f} {ceiling / engine:8.2f} {'':>9s} "
          f"{'':>8s} {'':>8s}  vs engine alone: the cores' ceiling")
    print(f"{'stage, 1 worker (read+LRP+write)':38s} {one['rate']:10.1f} {one['rate'] / engine:8.2f} "
          f"{one['steady_rate']:9.1f} {one['steady_rate'] / engine:8.2f} {one['seconds']:8.1f}  vs engine (target >= 0.9)")
    print(f"{f'stage, {args.workers} workers':38s} {many['rate']:10.1f} {many['rate'] / one['rate']:8.2f} "
          f"{many['steady_rate']:9.1f} {many['steady_rate'] / one['steady_rate']:8.2f} {many['seconds']:8.1f}  "
          f"vs 1 worker (target >= 1.8; ceiling above)")
    print(f"share of the workers' task time spent in the LRP engine (the rest reads, preprocesses, writes and "
          f"verifies), timed inside the same tasks: 1 worker {one['lrp_share']:.1%}, {args.workers} workers "
          f"{many['lrp_share']:.1%}")
    print(f"store: {one['bytes_per_sample']:.0f} bytes/sample (relevance 1x32x32 float16 = 2048 raw)")
    print("memory, MiB: client peak RSS; worker peak RSS (includes memory-mapped input pages) and anonymous")
    print(f"{'':38s} {'client':>10s} {'worker':>10s} {'w. anon':>10s} {'samples/s':>10s}")
    for n, r in zip(args.sizes, sized):
        print(f"{f'{n} samples, {args.workers} workers':38s} {r['client_peak_mib']:10.0f} {r['worker_peak_mib']:10.0f} "
              f"{r['worker_anon_mib']:10.0f} {r['rate']:10.1f}")
    big, small_run = sized[1], sized[0]
    print(f"ratio {args.sizes[1]}/{args.sizes[0]}: client peak {big['client_peak_mib'] / small_run['client_peak_mib']:.2f}, "
          f"worker peak {big['worker_peak_mib'] / small_run['worker_peak_mib']:.2f}, "
          f"worker anonymous {big['worker_anon_mib'] / small_run['worker_anon_mib']:.2f}")


if __name__ == "__main__":
    main()
