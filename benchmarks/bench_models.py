"""Coverage of real model code: spray.lrp on torchvision's 80 classification constructors and on
spray's committed list of 100 timm models (spray.models.library.TIMM_MODELS), random initialisation.

For every model: ok (finite relevance of the input's shape, the attach-time self-check passed, the
model bitwise unchanged after close), seconds per batch of LRP (attached, after a warm-up) and of a
forward + input-gradient pass measured right before it, their ratio, and the conservation ratio
(input relevance total / explained logit; below 1 where biases and stabilisers absorb relevance,
near 1 for bias-free LRP-0).

Random weights are made informative first (spray.testing.informative_random_init: zero-initialised
weights such as ViT's head get small random values, batch-norm statistics are estimated on the
batch), or the logits are 0 or ~1e-9 and every stabiliser absorbs all relevance.

Inputs: batch 2 at 128x128 for every model that takes any resolution (what is checked, the model's
operations, does not depend on the resolution, and 2 cores explain a 224-px batch of the big
models only in minutes), each model's own resolution where it needs one (ViT, Swin, MaxViT, ...).
Results are appended to a JSON-lines file, one line per model, so a run can be resumed or split:

    python benchmarks/bench_models.py                         # everything (long on 2 cores)
    python benchmarks/bench_models.py --library torchvision --only resnet,vit_b_16
    python benchmarks/bench_models.py --library timm --chunk 0/4    # the first quarter
    python benchmarks/bench_models.py --table                  # print the table of what is done
    python benchmarks/bench_models.py --redo-failed            # retry what failed (later lines win)
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path


def models_for(library: str):
    from spray.models.library import TIMM_MODELS, torchvision_models
    return list(torchvision_models()) if library == "torchvision" else list(TIMM_MODELS)


def run_one(library: str, name: str, args) -> dict:
    import torch

    from spray.models.library import build, family, input_size
    from spray.testing import informative_random_init, lrp_check
    torch.manual_seed(0)
    t0 = time.perf_counter()
    try:
        model = build(library, name, num_classes=args.classes)
    except Exception as err:
        return {"library": library, "model": name, "ok": False, "error": f"build: {type(err).__name__}: {err}"[:300]}
    for p in model.parameters():
        p.requires_grad_(False)
    size = input_size(library, name, model, args.size)
    x = torch.randn(args.batch, 3, size, size)
    try:
        informative_random_init(model, x)
    except Exception as err:
        return {"library": library, "model": name, "ok": False, "error": f"init: {type(err).__name__}: {err}"[:300]}
    row = lrp_check(model, x, args.composite)
    row.update(library=library, model=name, family=family(library, name, model), size=size,
               params_m=sum(p.numel() for p in model.parameters()) / 1e6, total_s=time.perf_counter() - t0)
    return row


def print_table(rows) -> None:
    print(f"{'library':11s} {'model':34s} {'family':20s} {'ok':3s} {'size':>4s} {'LRP s':>7s} {'grad s':>7s} "
          f"{'LRP/grad':>8s} {'conserv.':>8s}  error")
    for r in rows:
        lrp, grad = r.get("lrp_s", float("nan")), r.get("grad_s", float("nan"))
        print(f"{r['library']:11s} {r['model']:34.34s} {r.get('family', ''):20.20s} {'yes' if r['ok'] else 'NO':3s} "
              f"{r.get('size', 0):4d} {lrp:7.3f} {grad:7.3f} {lrp / grad if grad else float('nan'):8.2f} "
              f"{r.get('conservation', float('nan')):8.3f}  {r.get('error', '')[:150]}")
    for library in ("torchvision", "timm"):
        sub = [r for r in rows if r["library"] == library]
        if sub:
            ok = sum(r["ok"] for r in sub)
            print(f"{library}: {ok}/{len(sub)} ok ({100 * ok / len(sub):.1f}%)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--library", default="all", choices=["all", "torchvision", "timm"])
    parser.add_argument("--only", default="", help="comma-separated names or name prefixes")
    parser.add_argument("--chunk", default="0/1", help="i/n: the i-th of n equal parts of the list")
    parser.add_argument("--size", type=int, default=128, help="resolution for models that take any")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--composite", default="epsilon_plus_flat")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="reports/bench_models.jsonl")
    parser.add_argument("--redo", action="store_true", help="rerun models already in --out")
    parser.add_argument("--redo-failed", action="store_true", help="rerun the models --out has as failed")
    parser.add_argument("--table", action="store_true", help="only print the table of --out")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[(r["library"], r["model"])] = r
    if not args.table:
        libraries = ["torchvision", "timm"] if args.library == "all" else [args.library]
        todo = [(lib, name) for lib in libraries for name in models_for(lib)]
        if args.only:
            prefixes = args.only.split(",")
            todo = [t for t in todo if any(t[1] == p or t[1].startswith(p) for p in prefixes)]
        i, n = map(int, args.chunk.split("/"))
        todo = todo[i::n]
        for lib, name in todo:
            if (lib, name) in done and not args.redo and not (args.redo_failed and not done[(lib, name)]["ok"]):
                continue
            row = run_one(lib, name, args)
            done[(lib, name)] = row
            with out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{lib:11s} {name:34s} {'ok' if row['ok'] else 'FAILED'} {row.get('error', '')[:200]}", flush=True)
            gc.collect()
    print_table(sorted(done.values(), key=lambda r: (r["library"] != "torchvision", r["model"])))


if __name__ == "__main__":
    main()
