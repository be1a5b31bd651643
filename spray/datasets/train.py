"""Train, evaluate and cache the small CNN of a test bed (seeded, CPU, well under two minutes).

The cache folder holds the audited data (``data.npz``), the weights (``model.pt``), and
``bed.json`` with the bed's parameters, the model's clean accuracy and the artifact-insertion flip
rate. A bed whose model does not use its shortcut (flip rate below ``MIN_FLIP_RATE``) is a failed
bed: :func:`prepare_bed` raises rather than hand an auditor a test it cannot fail.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..data.preprocess import Preprocess
from ..errors import SprayError
from ..models.zoo import small_resnet
from ..verify import insertion_flip_rate, predict
from .beds import Bed, bed_key, build_bed

MIN_FLIP_RATE = 0.2
PREPROCESS = Preprocess(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], channels=3)
MODEL_FACTORY = "spray.models.zoo:small_resnet"
MODEL_KWARGS = {"num_classes": 10, "width": 0.25}


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> the model's normalised NCHW float input."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    return PREPROCESS.from_unit(x)


def train_model(bed: Bed, epochs: int = 8, seed: int = 0, batch_size: int = 64) -> torch.nn.Module:
    """The bed's small residual CNN trained on its train split (Adam, seeded order)."""
    torch.manual_seed(seed)
    model = small_resnet(**MODEL_KWARGS)
    train = bed.subset("train")
    x, y = to_input(bed.images[train]), torch.from_numpy(bed.labels[train])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def evaluate(model: torch.nn.Module, bed: Bed) -> dict:
    """Clean accuracy (test images without the artifact) and the insertion flip rate (artifact put on
    the test images of every other class)."""
    test = bed.subset("test")
    clean = test[~bed.artifact[test]]
    accuracy = float((predict(model, to_input(bed.images[clean])) == torch.from_numpy(bed.labels[clean])).float().mean())
    others = test[bed.labels[test] != bed.artifact_class]
    flip = insertion_flip_rate(model, to_input(bed.images[others]), to_input(bed.insert_artifact(others)),
                               bed.artifact_class)
    return {"clean_accuracy": accuracy, "flip": flip.to_dict()}


@dataclass
class PreparedBed:
    """A built, trained and checked bed in its cache folder."""

    folder: Path
    data: Path
    weights: Path
    info: dict

    @property
    def artifact_class(self) -> int:
        return int(self.info["params"]["artifact_class"])

    @property
    def harmless_class(self) -> int:
        return int(self.info["params"]["harmless_class"])

    @property
    def control_class(self) -> int:
        return int(self.info["params"]["control_class"])


def default_cache() -> Path:
    return Path(os.environ.get("SPRAY_CACHE", "reports/cache"))


def prepare_bed(name: str, cache: Optional[Path] = None, epochs: int = 8, train_seed: int = 0,
                check: bool = True, **params) -> PreparedBed:
    """Build bed ``name``, train its model and measure it, or reuse the cached result."""
    bed = None
    probe_params = dict(params)
    key_params = {"bed": name, **probe_params, "epochs": epochs, "train_seed": train_seed}
    folder = Path(cache or default_cache()) / f"bed-{name}-{bed_key(key_params)}"
    info_path = folder / "bed.json"
    if info_path.is_file() and (folder / "model.pt").is_file() and (folder / "data.npz").is_file():
        info = json.loads(info_path.read_text())
    else:
        folder.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        bed = build_bed(name, **params)
        built = time.perf_counter()
        model = train_model(bed, epochs=epochs, seed=train_seed)
        trained = time.perf_counter()
        metrics = evaluate(model, bed)
        bed.to_npz(folder / "data.npz.tmp.npz")
        os.replace(folder / "data.npz.tmp.npz", folder / "data.npz")
        torch.save(model.state_dict(), folder / "model.pt.tmp")
        os.replace(folder / "model.pt.tmp", folder / "model.pt")
        info = {"name": name, "params": bed.params, "epochs": epochs, "train_seed": train_seed,
                "model": {"factory": MODEL_FACTORY, "kwargs": MODEL_KWARGS},
                "preprocess": PREPROCESS.describe(), **metrics,
                "seconds": {"build": round(built - started, 2), "train": round(trained - built, 2)}}
        info_path.write_text(json.dumps(info, indent=2))
    if check and info["flip"]["rate"] < MIN_FLIP_RATE:
        raise SprayError(f"failed bed {name!r}: its model flips only {info['flip']['rate']:.1%} of other classes' "
                         f"images when the artifact is inserted (needs >= {MIN_FLIP_RATE:.0%}); the model does "
                         f"not use the shortcut, so the bed cannot test an auditor. Raise the fraction or epochs")
    return PreparedBed(folder, folder / "data.npz", folder / "model.pt", info)
