"""The flip test with a control, on a hand-made model: a region that flips no more than its
control is not confirmed; a real trigger is; backgrounds are swapped around each image's own object."""
import numpy as np
import torch
from torch import nn

from spray.verify import (FlipResult, exceeds, most_relevant_piece, object_regions, paste, verify_background,
                          verify_local)


CHECKER = torch.tensor([[(i + j) % 2 for j in range(4)] for i in range(4)], dtype=torch.float32)


class Detector(nn.Module):
    """Class 1 when the upper-left 4x4 patch is a checkerboard (a trigger) or the image holds a
    bright 5x5 blob anywhere (an object of class 1, drawn 6x6); else class 0."""

    def forward(self, x):
        trigger = (x[:, 0, :4, :4] - CHECKER).abs().mean((1, 2)) < 0.05
        blob = nn.functional.avg_pool2d(x[:, :1], 5, stride=1).amax((1, 2, 3)) > 0.9
        score = (trigger | blob).float()
        return torch.stack([1 - score, score], 1)


def test_exceeds_needs_a_clear_margin():
    assert exceeds(FlipResult(1, 500, 400, 0), FlipResult(1, 500, 50, 0))
    assert not exceeds(FlipResult(1, 500, 60, 0), FlipResult(1, 500, 50, 0))
    assert not exceeds(FlipResult(1, 500, 50, 0), FlipResult(1, 500, 300, 0))
    assert not exceeds(FlipResult(1, 0, 0, 0), FlipResult(1, 500, 0, 0))


def test_paste_with_one_mask_or_one_per_image():
    others, donors = torch.zeros(3, 1, 4, 4), torch.ones(2, 1, 4, 4)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True
    out = paste(others, donors, mask)
    assert out[:, 0, 0, 0].eq(1).all() and out[:, 0, 1:, :].eq(0).all()
    per_image = np.zeros((3, 4, 4), bool)
    per_image[1, 2, 2] = True
    out = paste(others, donors, per_image)
    assert out.sum() == 1 and out[1, 0, 2, 2] == 1


def test_most_relevant_piece_lands_on_the_mask():
    donors = torch.zeros(1, 1, 8, 8)
    donors[0, 0, 5:7, 4:6] = 1.0
    heat = donors[:, 0].numpy().copy()
    mask = np.zeros((8, 8), bool)
    mask[0:2, 0:2] = True
    shifted = most_relevant_piece(donors, heat, mask)
    assert shifted[0, 0, 0:2, 0:2].eq(1).all()


def test_object_regions_keep_each_images_own_object():
    heat = np.zeros((2, 16, 16))
    heat[0, 2:4, 2:4] = 1.0
    heat[1, 12:14, 10:12] = 1.0
    keep = object_regions(heat, cell=2)
    assert keep[0, 2:4, 2:4].all() and not keep[0, 12:14, 10:12].any()
    assert keep[1, 12:14, 10:12].all() and keep[1].sum() < 0.2 * 256


def _images(n, rng, blob=False):
    x = torch.from_numpy(rng.uniform(0, 0.5, (n, 1, 16, 16)).astype(np.float32))
    if blob:
        for i in range(n):
            r, c = rng.integers(4, 10, 2)
            x[i, 0, r:r + 6, c:c + 6] = 1.0
    return x


def test_a_trigger_is_confirmed_and_an_object_piece_is_not():
    rng = np.random.default_rng(0)
    model = Detector()
    others = _images(300, rng)
    rest = _images(200, rng, blob=True)                     # class-1 samples: an object somewhere
    rest_heat = (rest[:, 0] > 0.9).float().numpy()
    mask = np.zeros((16, 16), bool)
    mask[:4, :4] = True
    tagged = rest.clone()
    tagged[:, 0, :4, :4] = CHECKER                          # the same images with the trigger
    result = verify_local(model, others, tagged, rest, rest_heat, mask, target=1)
    assert result.confirmed and result.flip.rate > 0.95 and result.control_rate < 0.05
    # a cluster whose "hot spot" is its object: the same box cut from members holding the object there
    at_corner = _images(200, rng)
    at_corner[:, 0, 0:6, 0:6] = 1.0
    box = np.zeros((16, 16), bool)
    box[:6, :6] = True
    entry = verify_local(model, others, at_corner, rest, rest_heat, box, target=1).to_dict()
    assert entry["rate"] > 0.95 and not entry["confirmed"] and entry["control_rate"] > 0.9
    assert entry["control"] == "object piece of the same shape"
    assert set(entry) >= {"rate", "n", "control_rate", "controls", "confirmed", "method"}


def test_background_swap_against_the_class_backgrounds():
    rng = np.random.default_rng(1)

    class Bright(nn.Module):            # class 1 when most of the image is bright (a bright background)
        def forward(self, x):
            s = (x[:, 0].mean((1, 2)) > 0.6).float()
            return torch.stack([1 - s, s], 1)

    others = _images(200, rng, blob=True)
    others_heat = (others[:, 0] > 0.9).float().numpy()
    members = torch.full((50, 1, 16, 16), 0.95)
    rest = _images(100, rng)
    result = verify_background(Bright(), others, others_heat, members, rest, target=1, cell=2)
    assert result.method == "swap background" and result.confirmed and result.control_rate < 0.05
    keep = torch.from_numpy(object_regions(others_heat, 2))
    swapped = paste(others, members, ~keep)
    assert torch.equal(swapped[:, 0][keep], others[:, 0][keep])      # each image keeps its own object
