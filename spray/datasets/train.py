"""Train, evaluate and cache the small CNN of a test bed (seeded, CPU, a few minutes at most).

The cache folder holds the audited data (``data.npz``), the weights (``model.pt``), and
``bed.json`` with the bed's parameters, the model's clean accuracy and, per shortcut, the flip rate
(the shortcut put onto other classes' clean test images: the share that turns to its class) next
to its base rate (the share of the same images predicted as that class without it). A bed whose
model is not good (clean accuracy below ``MIN_ACCURACY``) or does not use a shortcut (flip rate
below ``MIN_FLIP_RATE``) is a failed bed: it says so in ``bed.json`` and :func:`prepare_bed` raises
rather than hand an auditor a test it cannot fail.

Rare shortcut samples are shown ``oversample`` times per epoch (sampling with replacement): a
shortcut on a few percent of a class is otherwise memorised sample by sample rather than learned
as a rule. The data set itself is unchanged.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.preprocess import Preprocess
from ..errors import ConfigError, SprayError
from ..models.zoo import BasicBlock, ResNet
from ..verify import insertion_flip_rate, predict
from .beds import BEDS, Bed, bed_key, build_bed
from .scenes import SCENE_BEDS, SCENE_DEFAULTS, SCENE_VERSION, SceneBed, build_scene_bed

MIN_FLIP_RATE = 0.5
MIN_ACCURACY = 0.9
PREPROCESS = Preprocess(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], channels=3)
DIGIT_MODEL = {"factory": "spray.models.zoo:small_resnet", "kwargs": {"num_classes": 10, "width": 0.25}}
SCENE_MODEL = {"factory": "spray.datasets.train:scene_net", "kwargs": {"num_classes": 10, "width": 0.25}}
SCENE_TRAINING = {"epochs": 16, "lr": 5e-3, "oversample": 3.0, "batch_size": 64}
#: a bed's model is trained with exactly this many torch threads, whatever the machine or OMP_NUM_THREADS
#: says: the reductions' order, hence the trained weights, depend on the thread count, and the CI bed
#: scenes-small measured 92.0% clean accuracy on 2 threads against 89.4% on 1 (its check needs 90%)
TRAIN_THREADS = 2

AnyBed = Union[Bed, SceneBed]


def scene_net(num_classes: int = 10, width: float = 0.25) -> ResNet:
    """The scene beds' CNN: a three-stage residual net (torchvision's ResNet layout) whose stem is a
    7x7 stride-2 convolution without max pooling, so 64 px inputs keep 32x32 feature maps, and whose
    head takes the global maximum of each feature map: an object is detected wherever it lies, and
    the background's features do not dilute it (an average needs far more training to ignore them)."""
    model = ResNet(BasicBlock, [1, 1, 1], num_classes, width=width, stem="imagenet")
    model.maxpool = nn.Identity()
    model.avgpool = nn.AdaptiveMaxPool2d((1, 1))
    return model


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> the model's normalised NCHW float input."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return PREPROCESS.from_unit(x)


def _build_model(spec: dict) -> nn.Module:
    from ..models.loading import load_model
    return load_model(factory=spec["factory"], kwargs=spec["kwargs"])


def train_model(bed: AnyBed, model: nn.Module, epochs: int = 8, seed: int = 0, batch_size: int = 64,
                lr: float = 3e-3, oversample: float = 1.0, progress: bool = False) -> nn.Module:
    """``model`` trained on the bed's train split (Adam, one-cycle schedule, seeded order); with
    ``oversample`` > 1 the shortcut samples are drawn that many times as often as the others."""
    torch.manual_seed(seed)
    train = bed.subset("train")
    x, y = to_input(bed.images[train]), torch.from_numpy(bed.labels[train])
    gen = torch.Generator().manual_seed(seed)
    weight = torch.from_numpy(np.where(bed.artifact[train], oversample, 1.0))
    per_epoch = int(round(float(weight.sum())))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4) if oversample != 1.0 else \
        torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((per_epoch + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.multinomial(weight, per_epoch, replacement=True, generator=gen) if oversample != 1.0 \
            else torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for i in range(0, per_epoch, batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        if progress:
            print(f"  train {bed.name}: epoch {epoch + 1}/{epochs}, loss {total / count:.3f}, "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return model.eval()


def _shortcuts(bed: AnyBed) -> Dict[str, int]:
    return bed.shortcuts() if isinstance(bed, SceneBed) else {bed.name: bed.artifact_class}


def evaluate(model: nn.Module, bed: AnyBed) -> dict:
    """Clean accuracy (test images without a shortcut) and, per shortcut, the flip rate (shortcut put
    on the clean test images of every other class) next to its base rate (share of those images the
    model already assigns to the shortcut's class)."""
    test = bed.subset("test")
    clean = test[~bed.artifact[test]]
    predicted = predict(model, to_input(bed.images[clean])).numpy()
    accuracy = float(np.mean(predicted == bed.labels[clean]))
    shortcuts = {}
    for kind, target in _shortcuts(bed).items():
        others = clean[bed.labels[clean] != target]
        inserted = bed.insert_artifact(others, kind)
        flip = insertion_flip_rate(model, to_input(bed.images[others]), to_input(inserted), target)
        shortcuts[kind] = {"class": int(target), "flip": flip.to_dict(), "base_rate": flip.already / len(others)}
    return {"clean_accuracy": accuracy, "shortcuts": shortcuts}


def judge(metrics: dict) -> list:
    """Why a bed cannot test an auditor (empty: it can)."""
    failed = []
    if metrics["clean_accuracy"] < MIN_ACCURACY:
        failed.append(f"clean accuracy {metrics['clean_accuracy']:.1%} < {MIN_ACCURACY:.0%}: the model is not good")
    for kind, s in metrics["shortcuts"].items():
        if s["flip"]["rate"] < MIN_FLIP_RATE:
            failed.append(f"{kind} (class {s['class']}) flips only {s['flip']['rate']:.1%} of other classes' images "
                          f"(base rate {s['base_rate']:.1%}; needs >= {MIN_FLIP_RATE:.0%}): the model does not use "
                          f"the shortcut")
    return failed


@dataclass
class PreparedBed:
    """A built, trained and checked bed in its cache folder."""

    folder: Path
    data: Path
    weights: Path
    info: dict

    @property
    def shortcuts(self) -> Dict[str, int]:
        """{kind: class} of the planted shortcuts."""
        return {k: int(v["class"]) for k, v in self.info["shortcuts"].items()}

    @property
    def artifact_class(self) -> int:
        """The class of a single-shortcut (digit) bed."""
        (c,) = set(self.shortcuts.values())
        return c

    @property
    def harmless_classes(self) -> Dict[str, int]:
        return dict(self.info["harmless"])

    @property
    def harmless_class(self) -> int:
        (c,) = self.harmless_classes.values()
        return c

    @property
    def control_class(self) -> int:
        return int(self.info["params"]["control_class"])

    @property
    def failed(self) -> list:
        return list(self.info.get("failed", []))


def default_cache() -> Path:
    return Path(os.environ.get("SPRAY_CACHE", "reports/cache"))


def _plan(name: str, epochs: Optional[int], params: dict) -> dict:
    """What a bed is built and trained with (the cache key is a hash of it)."""
    if name in BEDS:
        return {"key": {"bed": name, **params, "epochs": epochs or 8, "train_seed": params.pop("train_seed", 0)},
                "model": DIGIT_MODEL, "training": {"epochs": epochs or 8, "lr": 3e-3, "oversample": 1.0,
                                                   "batch_size": 64}}
    if name in SCENE_BEDS:
        training = {**SCENE_TRAINING, **({"epochs": epochs} if epochs else {})}
        n_classes = {**SCENE_DEFAULTS, **SCENE_BEDS[name].get("params", {}), **params}["n_classes"]
        model = {"factory": SCENE_MODEL["factory"], "kwargs": {**SCENE_MODEL["kwargs"], "num_classes": n_classes}}
        train_seed = params.pop("train_seed", 0)
        definition = {"recipe": asdict(SCENE_BEDS[name]["recipe"]), "seed": SCENE_BEDS[name]["seed"],
                      "params": SCENE_BEDS[name].get("params", {})}   # an edited bed is a new bed
        return {"key": {"bed": name, **params, "model": model, "training": training, "train_seed": train_seed,
                        "version": SCENE_VERSION, "definition": definition},
                "model": model, "training": training}
    raise ConfigError(f"unknown test bed {name!r}; choose one of {sorted(BEDS) + sorted(SCENE_BEDS)}")


def prepare_bed(name: str, cache: Optional[Path] = None, epochs: Optional[int] = None, train_seed: int = 0,
                check: bool = True, progress: bool = False, **params) -> PreparedBed:
    """Build bed ``name`` (a digit bed or a scene bed), train its model and measure it, or reuse the
    cached result. ``params`` go to the bed's builder; ``check`` raises for a failed bed."""
    plan = _plan(name, epochs, {**params, "train_seed": train_seed})
    folder = Path(cache or default_cache()) / f"bed-{name}-{bed_key(plan['key'])}"
    info_path = folder / "bed.json"
    info = None
    if info_path.is_file() and (folder / "model.pt").is_file() and (folder / "data.npz").is_file():
        info = json.loads(info_path.read_text())
        if "shortcuts" not in info:  # measured by an earlier spray (one flip rate, no base rate): made again
            info = None
    if info is not None:
        info["failed"] = judge(info)
    else:
        info = _make(name, folder, plan, train_seed, progress, params)
    if check and info["failed"]:
        raise SprayError(f"failed bed {name!r}: " + "; ".join(info["failed"]) + ". It cannot test an auditor; "
                         f"raise the shortcut's fraction or the epochs (bed.json in {folder})")
    return PreparedBed(folder, folder / "data.npz", folder / "model.pt", info)


def _make(name: str, folder: Path, plan: dict, train_seed: int, progress: bool, params: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        started = time.perf_counter()
        bed = build_bed(name, **params) if name in BEDS else build_scene_bed(name, **params)
        built = time.perf_counter()
        if progress:
            print(f"  built bed {name}: {len(bed.labels)} images in {built - started:.0f} s; training its model",
                  file=sys.stderr, flush=True)
        t = plan["training"]
        torch.manual_seed(train_seed)
        model = train_model(bed, _build_model(plan["model"]), epochs=t["epochs"], seed=train_seed,
                            batch_size=t["batch_size"], lr=t["lr"], oversample=t["oversample"], progress=progress)
        trained = time.perf_counter()
        metrics = evaluate(model, bed)
    finally:
        torch.set_num_threads(threads)
    bed.to_npz(folder / "data.npz.tmp.npz")
    os.replace(folder / "data.npz.tmp.npz", folder / "data.npz")
    torch.save(model.state_dict(), folder / "model.pt.tmp")
    os.replace(folder / "model.pt.tmp", folder / "model.pt")
    harmless = bed.recipe.harmless() if isinstance(bed, SceneBed) else {"bold": bed.harmless_class}
    info = {"name": name, "params": bed.params, "training": plan["training"], "train_seed": train_seed,
            "model": plan["model"], "preprocess": PREPROCESS.describe(), **metrics, "harmless": harmless,
            "set": SCENE_BEDS[name]["set"] if name in SCENE_BEDS else "development",
            "seconds": {"build": round(built - started, 2), "train": round(trained - built, 2)}}
    info["failed"] = judge(metrics)
    tmp = folder / "bed.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, folder / "bed.json")
    if progress:
        print(f"  bed {name}: clean accuracy {info['clean_accuracy']:.1%}; " + ", ".join(
            f"{k} flips {s['flip']['rate']:.0%} (base {s['base_rate']:.0%})" for k, s in info["shortcuts"].items())
            + (f"; FAILED: {'; '.join(info['failed'])}" if info["failed"] else f"; cached in {folder}"),
            file=sys.stderr, flush=True)
    return info
