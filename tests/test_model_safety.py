"""The model comes back exactly as it was: after use, after an error, across many batches."""
import warnings

import pytest
import torch
from torch import nn

from spray.errors import InputError, UnsupportedModelError
from spray.lrp import LRP, explain


def snapshot(model):
    return {
        "params": {n: (p, p.detach().clone()) for n, p in model.named_parameters()},
        "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
        "modules": dict(model.named_modules()),
        "dicts": {n: dict(vars(m)) for n, m in model.named_modules()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def assert_restored(model, before, x, out_before):
    after = snapshot(model)
    assert after["modules"].keys() == before["modules"].keys()
    for name, (param, value) in before["params"].items():
        current = dict(model.named_parameters())[name]
        assert current is param, f"parameter {name} was replaced"
        assert torch.equal(current.detach(), value), f"parameter {name} changed"
    for name, value in before["buffers"].items():
        assert torch.equal(dict(model.named_buffers())[name], value)
    for name, d in before["dicts"].items():
        assert set(vars(after["modules"][name])) == set(d), f"attributes of {name!r} changed"
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert torch.equal(model(x), out_before)


@pytest.mark.parametrize("arch", ["vgg_bn", "resnet"])
def test_model_restored_bit_exactly(arch, request):
    model = request.getfixturevalue(arch)
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)
    out = model(x)
    before = snapshot(model)
    for preset in ("epsilon_plus_flat", "epsilon_gamma_box"):
        explain(model, x, composite=preset, **({"low": -3, "high": 3} if preset == "epsilon_gamma_box" else {}))
        assert_restored(model, before, x, out)


class CumProd(nn.Module):
    def forward(self, x):
        return x.cumprod(1)


@pytest.mark.parametrize("head, message", [
    (CumProd, r"'1' \(CumProd\) calls 'cumprod'.*by_op: \{cumprod: gradient \| pass"),  # no rule for it
    (lambda: nn.Softmax(dim=1), "output carries no relevance.*softmax"),  # CP-LRP: softmax weights constant
])
def test_model_restored_after_an_error_mid_registration(resnet, head, message):
    model = nn.Sequential(resnet, head())  # fails after canonizing and folding
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)
    model.eval()
    out = model(x)
    before = snapshot(model)
    with pytest.raises(UnsupportedModelError, match=message):
        explain(model, x)
    assert_restored(model, before, x, out)


def test_model_restored_after_an_error_in_explain(vgg_bn):
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)
    out = vgg_bn(x)
    before = snapshot(vgg_bn)
    with pytest.raises(InputError, match="out of range"):
        explain(vgg_bn, x, target=99)
    assert_restored(vgg_bn, before, x, out)


def test_reusable_object_gives_same_result_as_function_and_no_state_leaks(resnet):
    x = torch.randn(4, 3, 32, 32, dtype=torch.double)
    with LRP(resnet, "epsilon_plus_flat") as lrp:
        first = lrp.explain(x[:2])
        second = lrp.explain(x[2:])
        again = lrp.explain(x[:2])
    assert torch.equal(first.relevance, again.relevance)
    torch.testing.assert_close(torch.cat([first.relevance, second.relevance]), explain(resnet, x))
    torch.testing.assert_close(first.logits, resnet(x[:2]))


def test_train_mode_is_switched_to_eval_with_a_warning_and_restored(vgg_bn):
    vgg_bn.train()
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)
    with pytest.warns(UserWarning, match="train mode"):
        relevance = explain(vgg_bn, x)
    assert vgg_bn.training and all(m.training for m in vgg_bn.modules())
    vgg_bn.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(relevance, explain(vgg_bn, x))


def test_parameters_get_no_gradient(vgg_bn):
    for p in vgg_bn.parameters():
        p.requires_grad_(True)
    explain(vgg_bn, torch.randn(2, 3, 32, 32, dtype=torch.double))
    assert all(p.grad is None for p in vgg_bn.parameters())


def test_bias_free_conv_is_folded_and_restored_to_bias_none(resnet):
    x = torch.randn(1, 3, 32, 32, dtype=torch.double)
    explain(resnet, x)
    assert resnet.conv1.bias is None and "bias" in resnet.conv1._parameters


def test_fused_gelu_under_epsilon_keeps_one_tensor_and_gives_the_same_relevance():
    """Linear+GELU under the epsilon rule keeps a/stab(z) from the forward instead of a and z: the
    relevance equals, bit for bit, the path that keeps both (taken when recording conservation), and
    a second backward through the kept ratio is a named error, as through any kept output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 16), nn.SiLU(), nn.Linear(16, 5)).double()
    x = torch.randn(6, 12, dtype=torch.float64)
    with LRP(model, "epsilon") as lrp:
        fast = lrp.explain(x).relevance
        recorded = lrp.explain(x, record=True).relevance
        assert torch.equal(fast, recorded)
        logits, leaf, _ = lrp._forward(x)
        seed = torch.ones_like(logits)
        torch.autograd.grad(logits, leaf, seed, retain_graph=True)
        with pytest.raises(RuntimeError, match="backward ran twice"):
            torch.autograd.grad(logits, leaf, seed)


def test_attaching_leaves_no_reference_cycle_that_holds_a_forward():
    """The probe's graph keeps every activation of a dry run (their ids must stay unique while it is
    read); nothing of it may outlive the attach in a reference cycle, which only the collector frees
    (it was 120 MiB of VGG-16 activations carried into the first batch's peak)."""
    import gc
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 13 * 13, 10)).eval()
    x = torch.randn(4, 3, 32, 32)
    gc.collect()
    gc.disable()
    try:
        with LRP(model) as lrp:
            lrp.explain(x)
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            held = [o for o in gc.garbage if isinstance(o, torch.Tensor)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert held == [], [tuple(t.shape) for t in held]
