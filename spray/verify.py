"""Artifact-insertion tests: paste a suspected artifact onto other classes' images and count how
many predictions flip to the suspect class (Lapuschkin et al. 2019 pasted the horse source tag onto
a car, which became a horse). Works on preprocessed tensors; the caller builds the pasted images."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class FlipResult:
    """``flipped`` of ``n`` images not predicted as ``target`` before insertion are after it."""

    target: int
    n: int
    flipped: int
    already: int        # images predicted as the target before insertion (left out of the rate)

    @property
    def rate(self) -> float:
        return self.flipped / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "rate": self.rate}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes of preprocessed inputs, in batches, model in eval mode."""
    model.eval()
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]) \
        if len(x) else torch.empty(0, dtype=torch.long)


def insertion_flip_rate(model: nn.Module, clean: torch.Tensor, inserted: torch.Tensor, target: int,
                        batch_size: int = 256) -> FlipResult:
    """Flip rate to ``target`` of ``inserted`` (the artifact pasted in) against ``clean`` (same images)."""
    if clean.shape != inserted.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and inserted {tuple(inserted.shape)} differ in shape")
    before = predict(model, clean, batch_size) == target
    after = predict(model, inserted, batch_size) == target
    return FlipResult(int(target), int((~before).sum()), int((after & ~before).sum()), int(before.sum()))


def paste(others: torch.Tensor, donors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``others`` with the ``mask`` region (H, W bool) replaced by the same region of ``donors``
    (cycled when there are fewer donors than images)."""
    if len(donors) == 0:
        raise ValueError("no donor images to paste from")
    reps = donors[torch.arange(len(others)) % len(donors)]
    m = mask.to(others.dtype)[None, None]
    return others * (1 - m) + reps * m


def region_flip_rate(model: nn.Module, others: torch.Tensor, donors: torch.Tensor, mask, target: int,
                     batch_size: int = 256) -> FlipResult:
    """Cut ``mask`` out of the donor images (a suspect cluster's), paste it onto ``others`` (other
    classes' images, preprocessed) and count the flips to ``target``."""
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape != others.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match the images' {tuple(others.shape[-2:])}")
    return insertion_flip_rate(model, others, paste(others, donors, mask), target, batch_size)
