"""Conservation: LRP-0 on a bias-free ReLU network puts exactly the explained logit on the input."""
import numpy as np
import torch
from torch import nn

from spray.lrp import LRP, explain, gradient_x_input

from .conftest import randomize_batch_norm


def bias_free_net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(32, 16, bias=False), nn.ReLU(), nn.Linear(16, 5, bias=False),
    ).double().eval()


def test_lrp0_sums_to_explained_logit():
    model = bias_free_net()
    x = torch.randn(6, 3, 16, 16, dtype=torch.double)
    with LRP(model, "epsilon", epsilon=0.0, stabilizer=0.0) as lrp:
        result = lrp.explain(x, record=True)
    totals = result.relevance.flatten(1).sum(1)
    explained = result.logits.gather(1, result.target[:, None])[:, 0]
    torch.testing.assert_close(totals, explained, rtol=1e-6, atol=1e-9)
    # per layer: relevance in == relevance out
    for layer in result.conservation.layers:
        np.testing.assert_allclose(layer.relevance_in, layer.relevance_out, rtol=1e-6, atol=1e-9)
    assert "input total" in result.conservation.to_text()


def test_lrp0_equals_gradient_times_input_on_bias_free_relu_net():
    model = bias_free_net()
    x = torch.randn(3, 3, 16, 16, dtype=torch.double)
    ours = explain(model, x, 2, "epsilon", epsilon=0.0, stabilizer=0.0)
    torch.testing.assert_close(ours, gradient_x_input(model, x, 2), rtol=1e-9, atol=1e-12)


def test_conservation_through_residual_sums(resnet):
    model = randomize_batch_norm(resnet)
    for m in model.modules():  # remove biases so that LRP-0 conserves exactly
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data.zero_()
            m.running_mean.zero_()
    model.fc.bias.data.zero_()
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)
    with LRP(model, "epsilon", epsilon=0.0, stabilizer=0.0) as lrp:
        result = lrp.explain(x)
    explained = result.logits.gather(1, result.target[:, None])[:, 0]
    torch.testing.assert_close(result.relevance.flatten(1).sum(1), explained, rtol=1e-6, atol=1e-9)


def test_conservation_report_with_stabilised_rules(vgg_bn):
    """Per-layer totals are read before rules overwrite their temporaries; bias-free layers conserve."""
    x = torch.randn(2, 3, 32, 32, dtype=torch.double)
    with LRP(vgg_bn, "epsilon_plus_flat") as lrp:
        recorded = lrp.explain(x, record=True)
        plain = lrp.explain(x)
    torch.testing.assert_close(recorded.relevance, plain.relevance)
    flat = recorded.conservation.layers[-1]
    assert flat.rule.startswith("Flat")  # the input layer, reached last
    np.testing.assert_allclose(flat.relevance_in, flat.relevance_out, rtol=1e-6)  # flat conserves exactly
    top = recorded.conservation.layers[0]
    explained = recorded.logits.gather(1, recorded.target[:, None])[:, 0].numpy()
    np.testing.assert_allclose(top.relevance_out, explained, rtol=1e-9)
