"""LRP engine benchmark: spray vs a plain gradient pass vs zennit, in one run.

For a VGG-16-style and a ResNet-50-style net at 3x224x224 and a small ResNet at 3x32x32, prints
samples/s and peak memory of: forward; forward + input gradient; spray and zennit with the
epsilon, epsilon_plus_flat and epsilon_gamma_box composites; then the ratios spray/grad and
spray/zennit. Each measurement runs in a fresh process, so its peak memory is its own. Two peaks:
"live" is the most memory held by tensors at any moment of one pass (CPU: from torch.profiler's
allocation records; CUDA: max_memory_allocated), which depends on the method alone; "RSS" (CPU) is
the process's peak resident memory above its level after building model and batch, which adds
what the C allocator keeps (fragmentation) and varies from run to run. ``--rounds`` repeats the
whole list, interleaved, so that a slow spell of a shared machine hits every method alike; rates
are the best, memory the mean over rounds.

    python benchmarks/bench_lrp.py                      # defaults: batch 8 (224px), 64 (32px)
    python benchmarks/bench_lrp.py --device cuda --batch 32 --half
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

METHODS = ["forward", "gradient", "spray:epsilon", "spray:epsilon_plus_flat", "spray:epsilon_gamma_box",
           "zennit:epsilon", "zennit:epsilon_plus_flat", "zennit:epsilon_gamma_box"]
BOX = {"low": -2.2, "high": 2.7}


def build(arch: str):
    from spray.models import zoo
    if arch == "vgg16":
        return zoo.vgg16(1000), 224
    if arch == "resnet50":
        return zoo.resnet50(1000), 224
    return zoo.small_resnet(10, width=0.5), 32


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_live_mib(step) -> float:
    """Most bytes held by tensors at once during ``step()``, from the profiler's allocation records."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in records:
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def measure(arch: str, method: str, batch: int, reps: int, device: str, dtype: str, threads: int, queue):
    import torch
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, size = build(arch)
    model = model.to(device=device, dtype=getattr(torch, dtype)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(batch, 3, size, size, device=device, dtype=getattr(torch, dtype))
    kind, _, preset = method.partition(":")
    kwargs = BOX if preset == "epsilon_gamma_box" else {}

    if kind == "forward":
        def step():
            with torch.no_grad():
                model(x)
        cleanup = None
    elif kind == "gradient":
        def step():
            xx = x.clone().requires_grad_(True)
            out = model(xx)
            torch.autograd.grad(out, xx, torch.zeros_like(out).scatter_(1, out.argmax(1, keepdim=True), 1.0))
        cleanup = None
    elif kind == "spray":
        from spray.lrp import LRP
        lrp = LRP(model, preset, **kwargs)

        def step():
            lrp.explain(x)
        cleanup = lrp.close
    else:
        from spray.testing import install_torchvision_stub, zennit_composite
        install_torchvision_stub()
        from zennit.attribution import Gradient
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer
        canonizer = VGGCanonizer() if arch == "vgg16" else ResNetCanonizer()
        attributor = Gradient(model, zennit_composite(preset, canonizer, **kwargs))
        attributor.__enter__()

        def step():
            xx = x.clone().requires_grad_(True)
            attributor(xx, lambda out: torch.zeros_like(out).scatter(1, out.argmax(1, keepdim=True), 1.0) * out)
        cleanup = lambda: attributor.__exit__(None, None, None)  # noqa: E731

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _peak_rss_mib()
    step()  # warm-up (and spray's one-off probe)
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    if device.startswith("cuda"):
        live, rss = (torch.cuda.max_memory_allocated() - base) / 2**20, float("nan")
    else:
        rss = _peak_rss_mib() - base
        live = _peak_live_mib(step)
    if cleanup:
        cleanup()
    queue.put((batch / min(times), live, rss))


def run(arch, method, args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=measure, args=(arch, method, args.batch if arch != "small" else args.small_batch,
                                              args.reps, args.device, args.dtype, args.threads, queue))
    proc.start()
    proc.join()
    return queue.get() if proc.exitcode == 0 else (float("nan"),) * 3


def combine(rounds):
    """Best rate, mean memory over rounds."""
    rates, lives, rsss = zip(*rounds)
    return max(rates), sum(lives) / len(lives), sum(rsss) / len(rsss)


def precision_check(args):
    """Reduced precision (bf16/fp16) against float32 on the same batch: relative L2 error."""
    import torch

    from spray.lrp import explain
    model, size = build("resnet50")
    model = model.to(args.device).eval()
    x = torch.randn(4, 3, size, size, device=args.device)
    ref = explain(model, x, composite="epsilon_plus_flat")
    half = torch.float16 if args.device.startswith("cuda") else torch.bfloat16
    low = explain(model.to(half), x.to(half), composite="epsilon_plus_flat").float()
    err = ((low - ref).norm() / ref.norm()).item()
    print(f"\nreduced precision ({half}) vs float32, resnet50 epsilon_plus_flat: relative L2 error {err:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="vgg16,resnet50,small")
    parser.add_argument("--batch", type=int, default=8, help="batch size at 224x224")
    parser.add_argument("--small-batch", type=int, default=64, help="batch size at 32x32")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the method list, interleaved")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--half", action="store_true", help="also check a reduced-precision path")
    args = parser.parse_args()
    methods = args.methods.split(",")
    print(f"device={args.device} dtype={args.dtype} threads={args.threads} reps={args.reps} "
          f"batch={args.batch} (224px) / {args.small_batch} (32px)")
    nan3 = (float("nan"),) * 3
    for arch in args.archs.split(","):
        rounds = {m: [] for m in methods}
        for _ in range(args.rounds):
            for m in methods:
                rounds[m].append(run(arch, m, args))
        results = {m: combine(r) for m, r in rounds.items()}
        print(f"\n## {arch}\n{'method':28s} {'samples/s':>10s} {'live MiB':>9s} {'RSS MiB':>8s}")
        for m in methods:
            print(f"{m:28s} {results[m][0]:10.2f} {results[m][1]:9.0f} {results[m][2]:8.0f}")
        grad_rate, grad_live, grad_rss = results.get("gradient", nan3)
        print(f"{'spray composite':28s} {'/grad':>7s} {'/zennit':>8s} {'live/grad':>10s} {'RSS/grad':>9s} "
              f"{'zennit live/grad':>17s}")
        for preset in ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box"):
            rate, live, rss = results.get(f"spray:{preset}", nan3)
            zrate, zlive, _ = results.get(f"zennit:{preset}", nan3)
            print(f"{preset:28s} {rate / grad_rate:7.2f} {rate / zrate:8.2f} {live / grad_live:10.2f} "
                  f"{rss / grad_rss:9.2f} {zlive / grad_live:17.2f}")
    if args.half:
        precision_check(args)


if __name__ == "__main__":
    main()
