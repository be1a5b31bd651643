"""Report figures (matplotlib, Agg): eigenvalue spectrum with the eigengap, the 2-D map coloured by
cluster, prototypes with hot-spot boxes, and example grids with heatmap overlays."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ..render import heatmap_rgb, overlay  # noqa: E402

FLAG = "#d62728"


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


def spectrum(eigenvalues: Sequence[float], k: int, runner_up: int, path: Path, show: int = 20) -> str:
    lam = np.asarray(eigenvalues)[:show]
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    ax.plot(np.arange(1, len(lam) + 1), lam, "o-", ms=4, color="#1f77b4")
    for kk, colour, label in ((k, FLAG, f"chosen k={k}"), (runner_up, "#999999", f"runner-up k={runner_up}")):
        if kk < len(lam):
            ax.axvspan(kk + 0.05, kk + 0.95, color=colour, alpha=0.18 if kk == k else 0.1, label=label)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("index (ascending)")
    ax.set_ylabel("Laplacian eigenvalue")
    ax.set_title("spectrum; shaded: the gap after the k-th eigenvalue", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def scatter(xy: np.ndarray, labels: np.ndarray, flagged: Sequence[int], path: Path, title: str) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    cmap = plt.get_cmap("tab10")
    for c in sorted(set(int(v) for v in labels)):
        m = labels == c
        edge = FLAG if c in flagged else "none"
        ax.scatter(xy[m, 0], xy[m, 1], s=9, color=cmap(c % 10), edgecolors=edge, linewidths=0.6,
                   label=f"cluster {c}{' (flagged)' if c in flagged else ''} n={int(m.sum())}")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, markerscale=1.5, loc="best")
    return _save(fig, path)


def prototypes(maps: np.ndarray, titles: List[str], boxes: List[Optional[Sequence[int]]], flagged: List[bool],
               path: Path) -> str:
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.3), squeeze=False)
    for ax, m, title, box, flag in zip(axes[0], maps, titles, boxes, flagged):
        ax.imshow(heatmap_rgb(m))
        if box is not None:
            top, left, bottom, right = box
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False,
                                   edgecolor=FLAG if flag else "#333333", linewidth=1.8, linestyle="-" if flag else "--"))
        ax.set_title(title, fontsize=8, color=FLAG if flag else "black")
        ax.axis("off")
    return _save(fig, path)


def examples(images: List[np.ndarray], heatmaps: List[np.ndarray], captions: List[str], path: Path) -> str:
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.25 * n, 2.7), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(images[i])
        axes[0, i].set_title(captions[i], fontsize=6)
        axes[1, i].imshow(overlay(images[i], heatmaps[i]))
        for ax in axes[:, i]:
            ax.axis("off")
    return _save(fig, path)
