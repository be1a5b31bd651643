"""Artifact-insertion tests with a control: put a suspected artifact onto other classes' images and
count how many predictions flip to the suspect class (Lapuschkin et al. 2019 pasted the horse
source tag onto a car, which became a horse), and do the same with a control of the same size that
is not the artifact. Pasting a region that holds a piece of the class's object flips images too,
so a finding is confirmed only when it flips clearly more than its control.

- A local finding (a region of the image) is pasted from the cluster's members. Controls: the same
  region cut from the class's other samples, and a piece of the same shape cut where those samples
  have their most relevance (their object), pasted at the same place. The larger control counts.
- A non-local finding (a background) is tested by swapping backgrounds: each other-class image
  keeps its own object region (the cells holding 80% of its own relevance) and takes everything
  else from a member; the control takes it from the class's other samples. (At 60% the swap
  painted over the recipients' own objects and the control flipped 42% on the digit background bed;
  60% grown by a cell left a ring of the old background and halved the finding's flips.)
  A local finding that the analysis calls a background seen at one place (the model reads the
  photo's crops at other offsets by the same colours; ``seen_at_one_place``) is a background and is
  tested as one: on ``scenes`` the model's pasted 28x32 corner of the photo flipped 28% against
  its control's 30%, the photo's backgrounds swapped in 86% against 47%.

Works on preprocessed tensors and heatmaps; the caller reads images and maps.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np
import torch
from scipy import signal
from torch import nn

OBJECT_MASS = 0.8       # share of a recipient's own relevance whose cells it keeps in a background swap
Z_CONFIRM = 2.0         # the flip rate must exceed its control by this many standard errors


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


@dataclass
class Verification:
    """A finding's flip rate against its control's, and whether it is confirmed."""

    method: str                         # "paste region" | "swap background"
    flip: FlipResult
    controls: dict                      # name -> FlipResult
    control: str                        # the control that counts (the larger rate)

    @property
    def control_rate(self) -> float:
        return self.controls[self.control].rate

    @property
    def confirmed(self) -> bool:
        return exceeds(self.flip, self.controls[self.control])

    def to_dict(self) -> dict:
        return {**self.flip.to_dict(), "method": self.method, "control_rate": self.control_rate,
                "control": self.control, "controls": {k: v.to_dict() for k, v in self.controls.items()},
                "confirmed": self.confirmed}


def exceeds(flip: FlipResult, control: FlipResult, z: float = Z_CONFIRM) -> bool:
    """True when ``flip``'s rate exceeds ``control``'s by ``z`` standard errors (pooled two-proportion
    test), so that a finding which flips no more than its control is never confirmed."""
    if not flip.n or not control.n:
        return False
    pooled = (flip.flipped + control.flipped) / (flip.n + control.n)
    se = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / flip.n + 1 / control.n))
    return flip.rate - control.rate > z * se


def review_order(score: float, confirmed: Optional[bool]) -> Tuple[int, float]:
    """Sort key for findings, the most worth a reviewer's time first: those the flip test confirmed
    (the model is shown to use them), then the rest (not confirmed, or not tested), each by
    suspicion. A high suspicion says that a cluster's members share something the model looks at;
    only the flip test says that the model's decision rests on it, so a confirmed finding outranks
    an unconfirmed one whatever their scores. Without a verification every finding is untested and
    the order is the suspicion's."""
    return (0 if confirmed else 1, -score)


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


def paste(others: torch.Tensor, donors: torch.Tensor, mask) -> torch.Tensor:
    """``others`` with the ``mask`` region replaced by the same region of ``donors`` (cycled when
    there are fewer donors than images). ``mask``: (H, W) for all images or (N, H, W) per image."""
    if len(donors) == 0:
        raise ValueError("no donor images to paste from")
    mask = torch.as_tensor(mask, dtype=torch.bool)
    if mask.shape[-2:] != others.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape)} does not match the images' {tuple(others.shape[-2:])}")
    reps = donors[torch.arange(len(others)) % len(donors)]
    m = mask.to(others.dtype)
    m = m[None, None] if m.ndim == 2 else m[:, None]
    return others * (1 - m) + reps * m


def region_flip_rate(model: nn.Module, others: torch.Tensor, donors: torch.Tensor, mask, target: int,
                     batch_size: int = 256) -> FlipResult:
    """Cut ``mask`` out of the donor images (a suspect cluster's), paste it onto ``others`` (other
    classes' images, preprocessed) and count the flips to ``target``."""
    return insertion_flip_rate(model, others, paste(others, donors, mask), target, batch_size)


def most_relevant_piece(donors: torch.Tensor, heat: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """``donors`` shifted so that, for each, the window of ``mask``'s shape holding most of its
    relevance (``heat``: (N, H, W) maps) lands on ``mask``: pasting ``mask`` then pastes the
    most relevant piece of each donor (its object), of the region's exact size and shape."""
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    out = donors.clone()
    weights = mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    for i, h in enumerate(np.abs(heat)):
        # relevance under the mask's shape for every placement of its top-left corner
        sums = signal.correlate(h, weights, mode="valid")
        top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
        out[i] = torch.roll(donors[i], shifts=(int(ys.min() - top), int(xs.min() - left)), dims=(-2, -1))
    return out


def object_regions(heat: np.ndarray, cell: int, mass: float = OBJECT_MASS) -> np.ndarray:
    """(N, H, W) bool: for each map, the ``cell``-sized cells holding ``mass`` of its absolute
    relevance (largest first): where that image's own object is."""
    n, h, w = heat.shape
    c = max(1, cell)
    pooled = np.abs(heat[:, :h - h % c, :w - w % c]).reshape(n, h // c, c, w // c, c).sum((2, 4))
    flat = pooled.reshape(n, -1)
    order = np.argsort(flat, axis=1)[:, ::-1]
    cum = np.cumsum(np.take_along_axis(flat, order, 1), 1)
    count = (cum < mass * cum[:, -1:]).sum(1) + 1
    keep = np.zeros_like(flat, bool)
    for i in range(n):
        keep[i, order[i, :count[i]]] = True
    keep = keep.reshape(n, h // c, w // c)
    full = np.zeros((n, h, w), bool)
    full[:, :h - h % c, :w - w % c] = np.repeat(np.repeat(keep, c, 1), c, 2)
    return full


def verify_local(model: nn.Module, others: torch.Tensor, members: torch.Tensor, rest: torch.Tensor,
                 rest_heat: np.ndarray, mask: np.ndarray, target: int) -> Verification:
    """Paste ``mask`` from the members onto ``others``; controls: the same region from the class's
    other samples (``rest``), and their most relevant piece of the same shape."""
    flip = region_flip_rate(model, others, members, mask, target)
    controls = {"same region, other samples of the class": region_flip_rate(model, others, rest, mask, target),
                "object piece of the same shape": region_flip_rate(
                    model, others, most_relevant_piece(rest, rest_heat, mask), mask, target)}
    control = max(controls, key=lambda k: controls[k].rate)
    return Verification("paste region", flip, controls, control)


def verify_background(model: nn.Module, others: torch.Tensor, others_heat: np.ndarray, members: torch.Tensor,
                      rest: torch.Tensor, target: int, cell: int, mass: float = OBJECT_MASS) -> Verification:
    """Swap backgrounds: each of ``others`` keeps its own object region and takes the rest from a
    member; the control takes it from the class's other samples."""
    swap = ~object_regions(others_heat, cell, mass)
    flip = insertion_flip_rate(model, others, paste(others, members, swap), target)
    control = insertion_flip_rate(model, others, paste(others, rest, swap), target)
    name = "background of other samples of the class"
    return Verification("swap background", flip, {name: control}, name)


__all__ = ["FlipResult", "Verification", "exceeds", "insertion_flip_rate", "most_relevant_piece",
           "object_regions", "paste", "predict", "region_flip_rate", "verify_background", "verify_local"]
