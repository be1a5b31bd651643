"""Bad input and unsupported models give specific errors, never a silent plain gradient."""
import pytest
import torch
from torch import nn

from spray.errors import ConfigError, InputError, UnsupportedModelError
from spray.lrp import LRP, Sum, explain, get_composite, register_residual


def small():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


def test_unsupported_operation_names_path_type_and_fix():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.sinc(x)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), Odd(), nn.Flatten(), nn.Linear(144, 3)).eval()
    with pytest.raises(UnsupportedModelError, match=r"'1' \(Odd\) calls 'sinc'.*by_op"):
        explain(model, torch.randn(2, 3, 8, 8))


def test_nan_and_inf_input_rows_are_named():
    x = torch.randn(4, 3, 8, 8)
    x[1, 0, 0, 0] = float("nan")
    x[3, 2, 1, 1] = float("inf")
    with pytest.raises(InputError, match=r"rows \[1, 3\]"):
        explain(small(), x)


@pytest.mark.parametrize("target", [3, -1, [0, 5]])
def test_target_out_of_range(target):
    with pytest.raises(InputError, match="out of range"):
        explain(small(), torch.randn(2, 3, 8, 8), target=target)


def test_target_of_wrong_shape():
    with pytest.raises(InputError, match="one class index per sample"):
        explain(small(), torch.randn(2, 3, 8, 8), target=[0, 1, 2])


def test_integer_input_is_refused():
    with pytest.raises(InputError, match="floating-point"):
        explain(small(), torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


class UnregisteredResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))

    def forward(self, x):
        return self.head(self.relu(self.conv(x) + x))


def test_functional_residual_sum_is_explained_by_the_proportional_rule():
    """Now ruled per operation (spray.lrp.operations): no registration needed. The input is read by the
    conv and by the sum, so an input-layer rule (flat) is refused, by name."""
    relevance = explain(UnregisteredResidual().eval(), torch.randn(2, 3, 8, 8), composite="epsilon_plus")
    assert relevance.shape == (2, 3, 8, 8) and torch.isfinite(relevance).all()
    with pytest.raises(UnsupportedModelError, match="input is read by 2.*'conv' \\(Conv2d\\).*add"):
        explain(UnregisteredResidual().eval(), torch.randn(2, 3, 8, 8))


def test_registered_residual_sum_is_explained():
    def forward(self, x):
        return self.head(self.relu(self.spray_sum(self.conv(x), x)))
    register_residual(UnregisteredResidual, forward)
    try:
        model = UnregisteredResidual().eval()
        x = torch.randn(2, 3, 8, 8, dtype=torch.double)
        model.double()
        with LRP(model, "epsilon", epsilon=0.0, stabilizer=0.0) as lrp:
            result = lrp.explain(x, record=True)
        names = [layer.path for layer in result.conservation.layers]
        assert "spray_sum" in names
        assert not hasattr(model, "spray_sum")  # removed again
    finally:
        from spray.lrp.canonizers import RESIDUAL_FORWARDS
        RESIDUAL_FORWARDS.pop(UnregisteredResidual)


def test_functional_nonlinearity_takes_the_pass_rule():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.tanh(x))

    assert torch.isfinite(explain(Gated().eval(), torch.randn(2, 4))).all()


def test_non_relu_activation_anywhere_takes_the_pass_rule():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(36, 2)).eval()
    assert torch.isfinite(explain(model, torch.randn(2, 3, 8, 8))).all()


def test_input_layer_rule_on_a_hidden_layer_is_refused():
    with pytest.raises(UnsupportedModelError, match="input-layer rule"):
        explain(small(), torch.randn(2, 3, 8, 8), composite={"preset": "epsilon", "by_name": {"3": "flat"}})


def test_gamma_box_without_bounds_says_how_to_get_them():
    with pytest.raises(ConfigError, match="low=.*high="):
        explain(small(), torch.randn(2, 3, 8, 8), composite="epsilon_gamma_box")


def test_bad_composites():
    with pytest.raises(ConfigError, match="unknown composite preset"):
        get_composite("epsilon_plus_flatt")
    with pytest.raises(ConfigError, match="unknown LRP rule"):
        get_composite({"preset": "epsilon", "by_type": {"Conv2d": "gama"}})
    with pytest.raises(ConfigError, match="not a class name"):
        get_composite({"preset": "epsilon", "by_type": {"Conv 2d": "gamma"}})
    with pytest.raises(ConfigError, match="by_op"):
        get_composite({"preset": "epsilon", "by_op": {"softmax": "sideways"}})
    with pytest.raises(ConfigError, match="alpha - beta = 1"):
        get_composite({"preset": "epsilon", "by_type": {"Conv2d": {"rule": "alpha_beta", "alpha": 2, "beta": 2}}})


def test_model_returning_a_tuple_is_refused():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(UnsupportedModelError, match="returns tuple"):
        explain(Two().eval(), torch.randn(2, 4))


def test_explicit_sum_module_in_a_model():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.add, self.fc = nn.Linear(4, 4), nn.Linear(4, 4), Sum(), nn.Linear(4, 2)
            self.act = nn.ELU()

        def forward(self, x):
            return self.fc(self.act(self.add(self.a(x), self.b(x))))

    model = Net().double().eval()
    x = torch.randn(3, 4, dtype=torch.double)
    assert explain(model, x, composite="epsilon").shape == x.shape


class ScaledInPlace(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.relu, self.fc2 = nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)).mul_(2))


def test_layer_output_modified_in_place_is_protected():
    """The routed in-place op gives the rule a copy of what it reads: same result as out-of-place."""
    torch.manual_seed(0)
    model = ScaledInPlace().double().eval()
    x = torch.randn(2, 4, dtype=torch.double)
    out_of_place = nn.Sequential(model.fc1, model.relu, _Times2(), model.fc2).eval()
    torch.testing.assert_close(explain(model, x, 1), explain(out_of_place, x, 1))


class _Times2(nn.Module):
    def forward(self, x):
        return x * 2


def test_second_backward_through_an_attached_composite_is_refused():
    model = small()
    x = torch.randn(2, 3, 8, 8)
    with LRP(model, "epsilon") as lrp:
        lrp.explain(x)  # attaches the composite
        out = model(x.requires_grad_(True)).sum()
        out.backward(retain_graph=True)
        with pytest.raises(RuntimeError, match="backward ran twice"):
            out.backward()
