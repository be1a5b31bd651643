"""Cross-check attributions through the same API."""
import torch
from torch import nn

from spray.lrp import explain


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).double().eval()


def test_integrated_gradients_is_complete():
    model = net()
    x = torch.randn(3, 3, 8, 8, dtype=torch.double)
    delta = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    errors = []
    for steps in (8, 512):
        ig = explain(model, x, 1, method="integrated_gradients", steps=steps, batch_size=200)
        errors.append((ig.flatten(1).sum(1) - delta).abs().max().item())
    assert errors[1] < errors[0]  # the Riemann error shrinks with steps (ReLU kinks limit it)
    torch.testing.assert_close(ig.flatten(1).sum(1), delta, rtol=1e-2, atol=1e-3)


def test_gradient_methods_shapes_and_determinism():
    model = net()
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    for method in ("gradient", "gradient_x_input", "smoothgrad"):
        a = explain(model, x, method=method)
        assert a.shape == x.shape
        torch.testing.assert_close(a, explain(model, x, method=method))
    torch.testing.assert_close(explain(model, x, method="gradient_x_input"), x * explain(model, x, method="gradient"))
