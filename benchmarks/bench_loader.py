"""Image-folder read throughput: decode + preprocess through spray.data with 0 and 2 DataLoader
workers (ratio against 0 workers, measured in the same run).

    python benchmarks/bench_loader.py [--n 4000] [--size 64]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    from spray.data import ImageFolder, Preprocess, SampleDataset, batches
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(args.n):
            folder = root / f"class{i % 10}"
            folder.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
        source = ImageFolder(root)
        pre = Preprocess(resize=32, mean=[0.5] * 3, std=[0.5] * 3)
        rates = {}
        for workers in (0, 2):
            start = time.perf_counter()
            count = sum(len(b) for b in batches(SampleDataset(source, pre), args.batch, num_workers=workers))
            rates[workers] = count / (time.perf_counter() - start)
    print(f"image folder, {args.n} PNG {args.size}x{args.size} RGB, resize 32 + normalise, batch {args.batch}")
    print(f"{'DataLoader workers':20s} {'images/s':>10s} {'ratio':>8s}")
    for w, r in rates.items():
        print(f"{w:<20d} {r:10.0f} {r / rates[0]:8.2f}")


if __name__ == "__main__":
    main()
