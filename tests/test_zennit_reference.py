"""spray's LRP equals zennit 0.5.1's on every preset, on a VGG with batch norm and on a ResNet with
bias-free convolutions (float64, relative error < 1e-6).

zennit's merged batch norm is not an exact identity: it keeps dividing by sqrt(1 + eps), which
moves its results by about 5e-6 per batch norm. The models here use eps=0 so that the comparison
measures the rules, not that artefact; spray folds exactly for any eps.
"""
import pytest
import torch

from spray.lrp import explain
from spray.testing import zennit_composite

from .conftest import randomize_batch_norm

PRESETS = ["epsilon", "epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1", "epsilon_alpha2_beta1_flat",
           "epsilon_gamma_box"]
BOX = {"low": -3.0, "high": 3.0}


def zennit_relevance(zennit, model, x, target, preset, canonizer):
    from zennit.attribution import Gradient
    composite = zennit_composite(preset, canonizer, **(BOX if preset == "epsilon_gamma_box" else {}))
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: torch.zeros_like(out).scatter(1, target[:, None], 1.0) * out)
    return relevance


@pytest.mark.parametrize("arch", ["vgg_bn", "resnet"])
@pytest.mark.parametrize("preset", PRESETS)
def test_matches_zennit(zennit, arch, preset, request):
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    model = randomize_batch_norm(request.getfixturevalue(arch), eps=0.0)
    canonizer = VGGCanonizer() if arch == "vgg_bn" else ResNetCanonizer()
    torch.manual_seed(3)
    x = torch.randn(4, 3, 32, 32, dtype=torch.double)
    target = model(x).argmax(1)
    ours = explain(model, x, target, preset, **(BOX if preset == "epsilon_gamma_box" else {}))
    reference = zennit_relevance(zennit, model, x, target, preset, canonizer)
    error = ((ours - reference).abs().max() / reference.abs().max()).item()
    assert error < 1e-6, f"{arch}/{preset}: relative error {error:.2e}"
    # and the model still computes what it did before
    assert torch.equal(model(x).argmax(1), target)
