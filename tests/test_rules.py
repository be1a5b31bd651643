"""Each rule against values computed by hand (numpy, float64) on tiny layers."""
import numpy as np
import pytest
import torch
from torch import nn

from spray.lrp import explain

W = np.array([[0.5, -1.0, 2.0], [-0.3, 0.8, 0.1]])
B = np.array([0.2, -0.1])
X = np.array([1.5, 2.0, -0.5])
EPS = 1e-6


def stab(d, eps=EPS):
    return d + eps * (1.0 if d >= 0 else -1.0)


def pos(a):
    return np.maximum(a, 0)


def neg(a):
    return np.minimum(a, 0)


def single_layer(w=W, b=B):
    layer = nn.Linear(w.shape[1], w.shape[0]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w))
        layer.bias.copy_(torch.tensor(b))
    return nn.Sequential(layer).eval()


def spray_relevance(model, rule, x=X, target=0):
    x = torch.tensor(x)[None]
    return explain(model, x, target, {"by_name": {"0": rule}})[0].numpy()


def test_epsilon_by_hand():
    z = W[0] @ X + B[0]
    for eps in (0.0, 0.25):
        expected = X * W[0] * z / (z + eps * np.sign(z)) if eps else X * W[0]
        got = spray_relevance(single_layer(), {"rule": "epsilon", "epsilon": eps})
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_zplus_by_hand_with_negative_input():
    z = W[0] @ X + B[0]
    d = pos(W[0]) @ pos(X) + pos(B[0]) + neg(W[0]) @ neg(X)
    expected = (pos(X) * pos(W[0]) + neg(X) * neg(W[0])) * z / stab(d)
    np.testing.assert_allclose(spray_relevance(single_layer(), "zplus"), expected, rtol=1e-12)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.0), (2.0, 1.0)])
def test_alpha_beta_by_hand(alpha, beta):
    z = W[0] @ X + B[0]
    p = pos(W[0]) @ pos(X) + neg(W[0]) @ neg(X) + pos(B[0])
    n = neg(W[0]) @ pos(X) + pos(W[0]) @ neg(X) + neg(B[0])
    expected = z * (alpha * (pos(X) * pos(W[0]) + neg(X) * neg(W[0])) / stab(p)
                    - beta * (pos(X) * neg(W[0]) + neg(X) * pos(W[0])) / stab(n))
    got = spray_relevance(single_layer(), {"rule": "alpha_beta", "alpha": alpha, "beta": beta})
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_gamma_by_hand_for_positive_and_negative_outputs(sign):
    w, b, g = W * sign, B * sign, 0.25
    z = w[0] @ X + b[0]
    up, down = w[0] + g * pos(w[0]), w[0] + g * neg(w[0])
    if z > 0:
        d = up @ pos(X) + (b[0] + g * pos(b[0])) + down @ neg(X)
        expected = (pos(X) * up + neg(X) * down) * z / stab(d)
    else:
        d = down @ pos(X) + (b[0] + g * neg(b[0])) + up @ neg(X)
        expected = (pos(X) * down + neg(X) * up) * z / stab(d)
    got = spray_relevance(single_layer(w, b), {"rule": "gamma", "gamma": g})
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_gamma_by_hand_after_a_relu_with_outputs_of_both_signs():
    """A ReLU input and an un-fused output of both signs (a conv feeding a residual sum): the branch
    that gets P and N from one extra forward."""
    g, w2 = 0.25, np.array([[1.0, 2.0]])
    model = nn.Sequential(nn.ReLU(), single_layer()[0], single_layer(w2, np.zeros(1))[0]).eval()
    x = pos(X)
    h = W @ x + B
    assert h[0] < 0 < h[1]
    out = w2[0] @ h
    r_hidden = h * w2[0] * out / stab(out)
    expected = np.zeros(3)
    for k in range(2):
        shifted = W[k] + g * (pos(W[k]) if h[k] > 0 else neg(W[k]))
        bias = B[k] + g * (pos(B[k]) if h[k] > 0 else neg(B[k]))
        expected += x * shifted * r_hidden[k] / stab(shifted @ x + bias)
    got = explain(model, torch.tensor(X)[None], 0,
                  {"by_name": {"1": {"rule": "gamma", "gamma": g}, "2": "epsilon"}})[0].numpy()
    np.testing.assert_allclose(got, np.where(X > 0, expected, 0.0), rtol=1e-12)


def test_flat_by_hand():
    z = W[0] @ X + B[0]
    np.testing.assert_allclose(spray_relevance(single_layer(), "flat"), np.full(3, z / stab(3.0)), rtol=1e-12)


def test_wsquare_by_hand():
    z = W[0] @ X + B[0]
    expected = W[0] ** 2 * z / stab((W[0] ** 2).sum() + B[0] ** 2)
    np.testing.assert_allclose(spray_relevance(single_layer(), "wsquare"), expected, rtol=1e-12)


def test_zbox_by_hand():
    low, high = -1.0, 3.0
    z = W[0] @ X + B[0]
    d = z - (pos(W[0]).sum() * low + pos(B[0])) - (neg(W[0]).sum() * high + neg(B[0]))
    expected = (X * W[0] - low * pos(W[0]) - high * neg(W[0])) * z / stab(d)
    got = spray_relevance(single_layer(), {"rule": "zb", "low": low, "high": high})
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_two_layer_epsilon_by_hand_through_fused_relu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double().eval()
    w1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    w2, b2 = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
    eps = 0.1
    h = np.maximum(w1 @ X + b1, 0)
    z = w2 @ h + b2
    r_h = h * w2[1] * z[1] / (z[1] + eps * np.sign(z[1]))
    z1 = w1 @ X + b1
    r_x = sum(X * w1[k] * r_h[k] / (z1[k] + eps * np.sign(z1[k])) for k in range(4))
    got = explain(model, torch.tensor(X)[None], 1, "epsilon", epsilon=eps)[0].numpy()
    np.testing.assert_allclose(got, r_x, rtol=1e-10)


def test_conv_rule_matches_its_dense_equivalent():
    """A conv with a rule equals the same rule on the conv written as a dense layer."""
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 2, 5, 5, dtype=torch.double)
    dense = nn.Linear(50, 75).double()
    with torch.no_grad():
        eye = torch.eye(50, dtype=torch.double).reshape(50, 2, 5, 5)
        dense.weight.copy_((conv(eye) - conv.bias[None, :, None, None]).reshape(50, 75).T)
        dense.bias.copy_(conv.bias[:, None, None].expand(3, 5, 5).reshape(-1))
    conv_model = nn.Sequential(conv, nn.Flatten()).eval()
    dense_model = nn.Sequential(nn.Flatten(), dense).eval()
    for rule in ("epsilon", "zplus", "alpha2_beta1", "gamma", {"rule": "zb", "low": -3, "high": 3}, "wsquare"):
        a = explain(conv_model, x, 7, {"by_name": {"0": rule}})
        b = explain(dense_model, x, 7, {"by_name": {"1": rule}})
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
