"""Every listed layer type: relevance is finite and conserved where LRP-0 conserves."""
import pytest
import torch
from torch import nn

from spray.lrp import LRP, explain


@pytest.mark.parametrize("activation", [nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.GELU,
                                        nn.Softplus])
def test_pass_rule_conserves_through_every_activation(activation):
    """With bias-free layers and LRP-0, the pass rule keeps the total: input total == explained logit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, bias=False), activation(), nn.Flatten(),
                          nn.Linear(4 * 6, 8, bias=False), activation(), nn.Dropout(), nn.Identity(),
                          nn.Linear(8, 3, bias=False)).double().eval()
    x = torch.randn(5, 2, 8, dtype=torch.double)
    with LRP(model, "epsilon", epsilon=0.0, stabilizer=0.0) as lrp:
        result = lrp.explain(x)
    explained = result.logits.gather(1, result.target[:, None])[:, 0]
    assert torch.isfinite(result.relevance).all()
    torch.testing.assert_close(result.relevance.flatten(1).sum(1), explained, rtol=1e-6, atol=1e-9)


def test_batchnorm1d_is_folded_exactly():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    conv = nn.Conv1d(2, 4, 3, bias=False)
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(12, 3)).double().eval()
    folded_conv = nn.Conv1d(2, 4, 3).double()
    with torch.no_grad():
        scale = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        folded_conv.weight.copy_(conv.weight.double() * scale[:, None, None])
        folded_conv.bias.copy_(bn.bias.double() - bn.running_mean.double() * scale)
    folded = nn.Sequential(folded_conv, nn.ReLU(), nn.AvgPool1d(2), nn.Flatten(), model[5]).eval()
    x = torch.randn(3, 2, 8, dtype=torch.double)
    for preset in ("epsilon", "epsilon_plus_flat", "epsilon_alpha2_beta1"):
        torch.testing.assert_close(explain(model, x, composite=preset), explain(folded, x, composite=preset))


def test_unfoldable_batchnorm_is_an_affine_layer():
    """A batch norm after a ReLU cannot be folded; it is explained as an affine layer (epsilon)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.BatchNorm1d(6), nn.Linear(6, 2)).double().eval()
    with torch.no_grad():
        model[2].running_mean.uniform_(-0.1, 0.1)
    x = torch.randn(3, 4, dtype=torch.double)
    relevance = explain(model, x, composite="epsilon")
    assert relevance.shape == x.shape and torch.isfinite(relevance).all()
