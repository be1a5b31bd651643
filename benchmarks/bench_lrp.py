"""LRP engine benchmark: spray vs a plain gradient pass vs zennit, in one run.

For a VGG-16-style and a ResNet-50-style net at 3x224x224 and a small ResNet at 3x32x32 (spray's
plain-torch models), and for torchvision's own resnet50, convnext_tiny and vit_b_16 at 224 (random
init, made informative by spray.testing.informative_random_init), prints samples/s and peak memory
of: forward; forward + input gradient; spray and zennit with the epsilon, epsilon_plus_flat and
epsilon_gamma_box composites (zennit has no rules for ConvNeXt's LayerNorm or ViT's attention:
spray only there); then the ratios spray/grad and spray/zennit.

Speed: one process times all methods in interleaved rounds (one step of each per round, each on its
own copy of the model), so that a slow spell of a shared machine hits every method of a round
alike; samples/s is from the median step, and each ratio is the median over rounds of the paired
ratio. Memory: each method in a fresh process of its own, two peaks. "live" is the most memory
held by tensors at any moment of attaching, warming up and one pass (CPU: from torch.profiler's
allocation records; CUDA: max_memory_allocated): it depends on the method alone. "RSS" (CPU) is
the process's peak resident memory above its level after building model and batch, which adds
what the C allocator keeps (fragmentation) and varies from run to run.

    python benchmarks/bench_lrp.py                      # defaults: batch 8 (224px), 64 (32px)
    python benchmarks/bench_lrp.py --device cuda --batch 32 --half
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource

METHODS = ["forward", "gradient", "spray:epsilon", "spray:epsilon_plus_flat", "spray:epsilon_gamma_box",
           "zennit:epsilon", "zennit:epsilon_plus_flat", "zennit:epsilon_gamma_box"]
BOX = {"low": -2.2, "high": 2.7}


TORCHVISION_ARCHS = {"tv_resnet50": "resnet50", "convnext_tiny": "convnext_tiny", "vit_b_16": "vit_b_16"}
ZENNIT_ARCHS = {"vgg16", "resnet50", "small", "tv_resnet50"}


def build(arch: str):
    from spray.models import zoo
    if arch in TORCHVISION_ARCHS:
        import torch

        from spray.models.library import build as build_library
        from spray.testing import informative_random_init
        model = build_library("torchvision", TORCHVISION_ARCHS[arch])
        informative_random_init(model, torch.randn(4, 3, 224, 224))
        return model, 224
    if arch == "vgg16":
        return zoo.vgg16(1000), 224
    if arch == "resnet50":
        return zoo.resnet50(1000), 224
    return zoo.small_resnet(10, width=0.5), 32


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_live_mib(step) -> float:
    """Most bytes held by tensors at once over two calls of ``step()`` (the first attaches spray's
    composite and fills its parameter caches, which stay), from the profiler's allocation records."""
    import os

    from torch.profiler import ProfilerActivity, profile
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the profiler's own start/stop chatter
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
            step()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]")
    held = peak = 0
    for _, nbytes in records:
        held += nbytes
        peak = max(peak, held)
    return peak / 2**20


def make_step(arch: str, method: str, model, x):
    """One explanation of batch ``x`` by ``method`` (``forward``, ``gradient``, ``spray:PRESET`` or
    ``zennit:PRESET``) on ``model``, which the method may attach to; returns (step, cleanup)."""
    import torch
    kind, _, preset = method.partition(":")
    kwargs = BOX if preset == "epsilon_gamma_box" else {}
    if kind == "forward":
        def step():
            with torch.no_grad():
                model(x)
        return step, None
    if kind == "gradient":
        def step():
            xx = x.clone().requires_grad_(True)
            out = model(xx)
            torch.autograd.grad(out, xx, torch.zeros_like(out).scatter_(1, out.argmax(1, keepdim=True), 1.0))
        return step, None
    if kind == "spray":
        from spray.lrp import LRP
        lrp = LRP(model, preset, **kwargs)
        return (lambda: lrp.explain(x)), lrp.close
    from spray.testing import install_torchvision_stub, zennit_composite
    install_torchvision_stub()
    from zennit.attribution import Gradient
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    canonizer = VGGCanonizer() if arch == "vgg16" else ResNetCanonizer()  # tv_resnet50: torchvision's own
    attributor = Gradient(model, zennit_composite(preset, canonizer, **kwargs))
    attributor.__enter__()

    def step():
        xx = x.clone().requires_grad_(True)
        attributor(xx, lambda out: torch.zeros_like(out).scatter(1, out.argmax(1, keepdim=True), 1.0) * out)
    return step, lambda: attributor.__exit__(None, None, None)


def _setup(arch: str, args):
    import torch
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, size = build(arch)
    dtype = getattr(torch, args.dtype)
    model = model.to(device=args.device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(args.batch if arch != "small" else args.small_batch, 3, size, size, device=args.device,
                    dtype=dtype)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    return model, x, sync


def memory_child(arch: str, method: str, args, queue) -> None:
    """Peak memory of ``method`` in a process of its own: (live MiB, RSS MiB)."""
    import torch
    model, x, sync = _setup(arch, args)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step, cleanup = make_step(arch, method, model, x)
        step()
        step()
        sync()
        live, rss = (torch.cuda.max_memory_allocated() - base) / 2**20, float("nan")
    else:
        base = _peak_rss_mib()
        step, cleanup = make_step(arch, method, model, x)
        live = _peak_live_mib(step)  # the first call attaches and warms up
        step()
        rss = _peak_rss_mib() - base
    if cleanup:
        cleanup()
    queue.put((live, rss))


def speed_child(arch: str, methods, args, queue) -> None:
    """Seconds per batch of every method, interleaved: each round times one step of each method
    (in rotating order) on its own copy of the model, so a slow spell of a shared machine hits all
    methods of that round alike. Runs rounds until ``--reps`` and ``--min-seconds`` are met."""
    import copy
    import time
    model, x, sync = _setup(arch, args)
    steps, cleanups = {}, []
    for m in methods:
        step, cleanup = make_step(arch, m, copy.deepcopy(model), x)
        step()  # attach, warm up
        steps[m] = step
        cleanups.append(cleanup)
    sync()
    times = {m: [] for m in methods}
    r = 0
    while r < args.reps or sum(map(sum, times.values())) < args.min_seconds:
        order = methods[r % len(methods):] + methods[:r % len(methods)]
        for m in order:
            t0 = time.perf_counter()
            steps[m]()
            sync()
            times[m].append(time.perf_counter() - t0)
        r += 1
    for cleanup in cleanups:
        if cleanup:
            cleanup()
    queue.put(times)


def in_child(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=args + (queue,))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def median(values) -> float:
    values = sorted(values)
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2 if n else float("nan")


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
    parser.add_argument("--archs", default="vgg16,resnet50,small,tv_resnet50,convnext_tiny,vit_b_16")
    parser.add_argument("--batch", type=int, default=8, help="batch size at 224x224")
    parser.add_argument("--small-batch", type=int, default=64, help="batch size at 32x32")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds at least")
    parser.add_argument("--min-seconds", type=float, default=60.0,
                        help="and rounds until this much time has been timed, all methods together")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--half", action="store_true", help="also check a reduced-precision path")
    args = parser.parse_args()
    methods = args.methods.split(",")
    print(f"device={args.device} dtype={args.dtype} threads={args.threads} reps={args.reps} "
          f"batch={args.batch} (224px) / {args.small_batch} (32px)")
    nan = float("nan")
    all_methods = methods
    for arch in args.archs.split(","):
        methods = [m for m in all_methods if not m.startswith("zennit:") or arch in ZENNIT_ARCHS]
        memory = {m: in_child(memory_child, arch, m, args) for m in methods}
        times = in_child(speed_child, arch, methods, args)
        batch = args.batch if arch != "small" else args.small_batch
        print(f"\n## {arch} ({len(times[methods[0]])} interleaved rounds)")
        print(f"{'method':28s} {'samples/s':>10s} {'live MiB':>9s} {'RSS MiB':>8s}")
        for m in methods:
            print(f"{m:28s} {batch / median(times[m]):10.2f} {memory[m][0]:9.0f} {memory[m][1]:8.0f}")

        def paired(a, b):
            """Median over rounds of b's time over a's: a's speed relative to b's."""
            if a not in times or b not in times:
                return nan
            return median([tb / ta for ta, tb in zip(times[a], times[b])])

        def mem(m, i, ref="gradient"):
            return memory[m][i] / memory[ref][i] if m in memory and ref in memory else nan
        print(f"{'spray composite':28s} {'/grad':>7s} {'/zennit':>8s} {'live/grad':>10s} {'RSS/grad':>9s} "
              f"{'zennit live/grad':>17s}")
        for preset in ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box"):
            sp, zn = f"spray:{preset}", f"zennit:{preset}"
            print(f"{preset:28s} {paired(sp, 'gradient'):7.2f} {paired(sp, zn):8.2f} {mem(sp, 0):10.2f} "
                  f"{mem(sp, 1):9.2f} {mem(zn, 0):17.2f}")
    if args.half:
        precision_check(args)


if __name__ == "__main__":
    main()
