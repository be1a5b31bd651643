"""The main job on the embedded default, as far as the stages exist today.

Builds RGB 32x32 images from scikit-learn's bundled digits (offline), trains spray's small
residual CNN on them (seeded, cached in the run folder), explains held-out samples with LRP
(epsilon_plus_flat) and writes a grid of input / heatmap / overlay plus a conservation report.
It grows into the full audit (explain -> store -> analyze -> report) as those stages land.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from spray.lrp import LRP
from spray.models import small_resnet
from spray.render import heatmap_rgb, image_rgb, overlay

MEAN, STD = 0.5, 0.5


def digits_rgb(size: int = 32):
    """Digits as (N, 3, size, size) float in [0, 1] and labels, deterministic."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.repeat(1, 3, 1, 1), torch.tensor(digits.target)


def train(model, x, y, epochs: int = 6, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model((x[idx] - MEAN) / STD), y[idx]).backward()
            opt.step()
    model.eval()


def run(out_dir: Path = Path("reports/demo"), n_explain: int = 16, seed: int = 0) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    started = time.perf_counter()
    x, y = digits_rgb()
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    train_idx, test_idx = perm[:1400], perm[1400:]
    model = small_resnet(10)
    weights = out_dir / "model.pt"
    if weights.exists():
        model.load_state_dict(torch.load(weights, weights_only=True))
        model.eval()
    else:
        train(model, x[train_idx], y[train_idx], seed=seed)
        torch.save(model.state_dict(), weights)
    with torch.no_grad():
        accuracy = (model((x[test_idx] - MEAN) / STD).argmax(1) == y[test_idx]).float().mean().item()

    batch = (x[test_idx[:n_explain]] - MEAN) / STD
    low, high = (0 - MEAN) / STD, (1 - MEAN) / STD
    with LRP(model, "epsilon_gamma_box", low=low, high=high) as lrp:
        result = lrp.explain(batch, record=True)
    relevance = result.relevance.sum(1)

    fig, axes = plt.subplots(3, n_explain, figsize=(n_explain * 1.1, 3.6))
    for i in range(n_explain):
        image = x[test_idx[i]]
        axes[0, i].imshow(image_rgb(image))
        axes[0, i].set_title(f"{int(y[test_idx[i]])}->{int(result.target[i])}", fontsize=7)
        axes[1, i].imshow(heatmap_rgb(relevance[i]))
        axes[2, i].imshow(overlay(image, relevance[i]))
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle("input (label->prediction) / LRP epsilon_gamma_box / overlay", fontsize=9)
    fig.tight_layout()
    png = out_dir / "heatmaps.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    (out_dir / "conservation.txt").write_text(result.conservation.to_text() + "\n")
    summary = {"test_accuracy": accuracy, "explained": n_explain, "heatmaps": str(png),
               "seconds": round(time.perf_counter() - started, 1)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
