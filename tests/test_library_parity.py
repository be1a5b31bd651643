"""Parity on real model code, float64: torchvision resnet18/50 and vgg16_bn against zennit 0.5.1 with its
torchvision canonizers and composites (relative error < 1e-10), torchvision vit_b_16 against LXT 2.1's
efficient mode with the same rule choices (< 1e-6).

zennit's reference runs on an exactly pre-folded copy: zennit's own batch-norm merge leaves
x / sqrt(1 + eps) behind, a 1e-3 to 1e-2 relative difference that is zennit's, not spray's.
"""
import copy

import pytest
import torch
from torch import nn

from spray.lrp import explain
from spray.testing import informative_random_init, torchvision_available, zennit_composite

from .conftest import randomize_batch_norm

pytestmark = pytest.mark.skipif(not torchvision_available(), reason="torchvision is a test extra")
BOX = {"low": -3.0, "high": 3.0}


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """A copy with every BatchNorm2d that directly follows a conv (registration order) folded exactly."""
    model = copy.deepcopy(model)
    for parent in model.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                with torch.no_grad():
                    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
                    bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
                    conv.weight.mul_(scale[:, None, None, None])
                    conv.bias = nn.Parameter(bias * scale + bn.bias - bn.running_mean * scale)
                parent._modules[b] = nn.Identity()
    return model


def zennit_reference(model, x, target, preset, canonizer):
    from zennit.attribution import Gradient
    composite = zennit_composite(preset, canonizer, **(BOX if preset == "epsilon_gamma_box" else {}))
    with Gradient(model, composite) as attributor:
        _, relevance = attributor(x, lambda out: torch.zeros_like(out).scatter(1, target[:, None], 1.0) * out)
    return relevance


_SLOW = pytest.mark.slow  # float64 ResNet-50 and VGG-16 take a minute each here: `pytest -m slow`
CASES = [("resnet18", p) for p in ("epsilon", "epsilon_plus_flat", "epsilon_gamma_box")] + [
    pytest.param("resnet18", p, marks=_SLOW) for p in ("epsilon_plus", "epsilon_alpha2_beta1",
                                                       "epsilon_alpha2_beta1_flat")] + [
    pytest.param(name, preset, marks=_SLOW) for name in ("resnet50", "vgg16_bn")
    for preset in ("epsilon_plus_flat", "epsilon_gamma_box")]


@pytest.fixture(scope="module")
def torchvision_models():
    from spray.models.library import build
    built = {}

    def get(name):
        if name not in built:
            torch.manual_seed(0)
            built[name] = randomize_batch_norm(build("torchvision", name, num_classes=10)).double().eval()
        return built[name]
    return get


@pytest.mark.parametrize("name, preset", CASES)
def test_torchvision_cnn_matches_zennit_on_a_pre_folded_model(zennit, torchvision_models, name, preset):
    from zennit.torchvision import ResNetCanonizer, VGGCanonizer
    model = torchvision_models(name)
    torch.manual_seed(1)
    x = torch.randn(2 if name == "resnet18" else 1, 3, 64, 64, dtype=torch.double)
    target = model(x).argmax(1)
    ours = explain(model, x, target, preset, **(BOX if preset == "epsilon_gamma_box" else {}))
    canonizer = VGGCanonizer() if name.startswith("vgg") else ResNetCanonizer()
    reference = zennit_reference(fold_batch_norms(model), x, target, preset, canonizer)
    error = ((ours - reference).abs().max() / reference.abs().max()).item()
    assert error < 1e-10, f"{name}/{preset}: relative error {error:.2e}"


def test_vit_b_16_matches_lxt_efficient_cp_lrp(monkeypatch):
    """LXT: GELU identity rule, LayerNorm with std constant, MultiheadAttention CP-LRP, linear layers
    by the gradient. spray with the same choices: epsilon=0 (LRP-0) everywhere, softmax constant.

    LXT's identity rule divides by ``x + 1e-10`` (unsigned), spray's pass rule after a linear layer
    by ``x`` itself; the same rule without that stabiliser on LXT's side agrees to 4e-15 here (with
    it: 1.6e-6, from elements with |x| ~ 1e-4), so the reference sets it to 0."""
    from spray.testing import import_lxt_vit_patches, import_torchvision
    vit_torch, _ = import_lxt_vit_patches()
    import lxt.efficient.rules as lxt_rules

    def identity_rule_without_stabiliser(ctx, fn, input, epsilon=0.0):
        output = fn(input)
        ctx.save_for_backward(output / input)
        return output
    monkeypatch.setattr(lxt_rules.identity_rule_implicit_fn, "forward", staticmethod(identity_rule_without_stabiliser))
    torch.manual_seed(0)  # torchvision's vit_b_16 at 64 px (16 patches) keeps float64 fast
    model = import_torchvision().models.vit_b_16(weights=None, image_size=64, num_classes=10).double().eval()
    x = torch.randn(2, 3, 64, 64, dtype=torch.double)
    informative_random_init(model, x)
    target = model(x).argmax(1)
    ours = explain(model, x, target, {"preset": "epsilon", "epsilon": 0.0, "stabilizer": 0.0})

    patched = copy.deepcopy(model)
    saved = {cls: dict(cls.__dict__) for cls in vit_torch.cp_LRP}
    try:
        for cls, patch in vit_torch.cp_LRP.items():
            assert patch(cls)
        xx = x.clone().requires_grad_(True)
        out = patched(xx)
        out.gather(1, target[:, None]).sum().backward()
        reference = (xx * xx.grad).detach()
    finally:
        for cls, attrs in saved.items():
            for name in set(cls.__dict__) - set(attrs):
                delattr(cls, name)
            for name in ("forward",):
                setattr(cls, name, attrs[name])
    error = ((ours - reference).abs().max() / reference.abs().max()).item()
    assert error < 1e-6, f"vit_b_16 vs LXT: relative error {error:.2e}"
