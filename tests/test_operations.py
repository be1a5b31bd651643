"""Operation-level rules on small hand-made models: each against a hand computation or an
independent autograd reference (float64), plus the self-check and the errors."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spray.errors import UnsupportedModelError
from spray.lrp import LRP, explain
from spray.testing import model_state

LRP0 = {"preset": "epsilon", "epsilon": 0.0, "stabilizer": 0.0}


def reference(forward, x, target):
    """x * d logit / dx through ``forward`` (which holds the rules' constants detached itself)."""
    x = x.detach().requires_grad_(True)
    out = forward(x)
    (g,) = torch.autograd.grad(out[torch.arange(len(x)), target].sum(), x)
    return (x * g).detach()


def lrp0(model, x, target, **kw):
    return explain(model, x, target, {**LRP0, **kw})


class StdConv(nn.Conv2d):
    """timm's StdConv2d: the weight is standardised in forward (a conv subclass with its own forward)."""

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                         momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class SameConv(nn.Conv2d):
    """timm's Conv2dSame: F.pad then F.conv2d."""

    def forward(self, x):
        return F.conv2d(F.pad(x, [1, 1, 1, 1]), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def relu_net(conv):
    torch.manual_seed(0)
    return nn.Sequential(conv, nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, bias=False)).double().eval()


@pytest.mark.parametrize("conv", [StdConv, SameConv])
def test_conv_subclass_is_explained_by_the_convolution_it_computes(conv):
    """LRP-0 on a bias-free ReLU net is gradient x input; a subclass explained as its base class is not."""
    model = relu_net(conv(3, 4, 3, padding=1, bias=False))
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    target = torch.tensor([0, 2])
    torch.testing.assert_close(lrp0(model, x, target), reference(model, x, target), rtol=1e-9, atol=1e-12)


def test_first_rule_lands_on_a_functional_conv_behind_a_pad():
    """flat on SameConv (F.pad + F.conv2d) equals flat on ZeroPad2d + a plain Conv2d."""
    torch.manual_seed(0)
    same = relu_net(SameConv(3, 4, 3, bias=False))
    plain = relu_net(nn.Conv2d(3, 4, 3, bias=False))
    plain[0] = nn.Sequential(nn.ZeroPad2d(1), plain[0])
    plain[0][1].weight.data.copy_(same[0].weight.data)
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    a = explain(same, x, 1, "epsilon_plus_flat")
    b = explain(plain, x, 1, "epsilon_plus_flat")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


class Residual(nn.Module):
    """A block with a functional residual sum in any layout (not torchvision's names)."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.Conv2d(4, 4, 1, bias=False)

    def forward(self, x):
        out = self.conv_b(F.relu(self.conv_a(x)))
        out += x           # in place, on a fast-path layer's output
        out = out - 0.5 * x.flip(-1)
        return F.relu(out, inplace=True)  # googlenet's in-place functional ReLU


def test_functional_residual_sums_and_in_place_ops():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), Residual(), Residual(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3, bias=False)).double().eval()
    with torch.no_grad():
        model[1].running_var.uniform_(0.5, 2)
        model[1].weight.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    target = torch.tensor([1, 0])
    before = model_state(model)
    torch.testing.assert_close(lrp0(model, x, target), reference(model, x, target), rtol=1e-9, atol=1e-12)
    assert model_state(model) == before


class SE(nn.Module):
    def __init__(self, gate):
        super().__init__()
        self.fc, self.gate = nn.Linear(6, 6, bias=False), gate

    def forward(self, x, detach=False):
        s = self.gate(self.fc(x.mean(1, keepdim=True).expand_as(x) + x))
        return x * (s.detach() if detach else s)


@pytest.mark.parametrize("gate", [torch.sigmoid, F.hardsigmoid, lambda t: F.relu6(t + 3) / 6])
def test_product_with_a_gate_treats_the_gate_as_constant(gate):
    torch.manual_seed(0)
    se, head = SE(gate).double(), nn.Linear(6, 2, bias=False).double()
    model = nn.Sequential(se, head).eval()
    x = torch.randn(3, 6, dtype=torch.double)
    target = torch.tensor([0, 1, 0])
    want = reference(lambda t: head(se(t, detach=True)), x, target)
    torch.testing.assert_close(lrp0(model, x, target), want, rtol=1e-9, atol=1e-12)


class Bilinear(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.a, self.b, self.op = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False), op

    def forward(self, x):
        return self.op(self.a(x), self.b(x))


@pytest.mark.parametrize("op", [torch.mul, lambda a, b: (a[:, :, None] @ b[:, None, :]).flatten(1)[:, :4],
                                lambda a, b: torch.einsum("ni,ni->ni", a, b)])
def test_product_of_two_activations_is_split_uniformly(op):
    torch.manual_seed(0)
    model = nn.Sequential(Bilinear(op), nn.Linear(4, 2, bias=False)).double().eval()
    x = torch.randn(3, 4, dtype=torch.double)
    target = torch.tensor([1, 0, 1])
    torch.testing.assert_close(lrp0(model, x, target), 0.5 * reference(model, x, target), rtol=1e-9, atol=1e-12)


class Attention(nn.Module):
    def __init__(self, how="manual"):
        super().__init__()
        self.qkv, self.proj, self.how = nn.Linear(8, 24, bias=False), nn.Linear(8, 8, bias=False), how

    def forward(self, x, rule=None):
        q, k, v = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, 2, 4).permute(2, 0, 3, 1, 4)
        if self.how == "sdpa" and rule is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            scores = (q * 0.5) @ k.transpose(-2, -1)
            if rule == "attnlrp":
                scores.register_hook(lambda g: g * 0.5)
            attn = scores.softmax(-1)
            if rule == "cp":
                attn = attn.detach()
            out = attn @ v
            if rule == "attnlrp":
                out.register_hook(lambda g: g * 0.5)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


@pytest.mark.parametrize("how", ["manual", "sdpa"])
@pytest.mark.parametrize("softmax", ["cp", "attnlrp"])
def test_attention_cp_lrp_by_default_and_attnlrp_as_option(how, softmax):
    torch.manual_seed(0)
    attn, head = Attention(how).double(), nn.Linear(8, 2, bias=False).double()
    model = nn.Sequential(attn, _Pool(), head).eval()
    x = torch.randn(2, 5, 8, dtype=torch.double)
    target = torch.tensor([0, 1])
    want = reference(lambda t: head(attn(t, rule=softmax).mean(1)), x, target)
    composite = LRP0 if softmax == "cp" else {**LRP0, "by_op": {"softmax": "attnlrp"}}
    torch.testing.assert_close(explain(model, x, target, composite), want, rtol=1e-9, atol=1e-12)


class _Pool(nn.Module):
    def forward(self, x):
        return x.mean(1)


def test_multihead_attention_module_is_cp_lrp():
    torch.manual_seed(0)
    mha, head = nn.MultiheadAttention(8, 2, batch_first=True).double(), nn.Linear(8, 2).double()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha, self.head = mha, head

        def forward(self, x, cp=False):
            kq = x.detach() if cp else x  # CP-LRP: no relevance through queries and keys (LXT's patch)
            return self.head(self.mha(kq, kq, x, need_weights=False)[0].mean(1))
    model = Model().eval()
    x = torch.randn(2, 5, 8, dtype=torch.double)
    target = torch.tensor([1, 0])
    torch.testing.assert_close(lrp0(model, x, target), reference(lambda t: model(t, cp=True), x, target),
                               rtol=1e-9, atol=1e-12)


class Norms(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.norm = {"layer": nn.LayerNorm(6), "group": nn.GroupNorm(2, 6), "rms": nn.RMSNorm(6)}[kind].double()
        with torch.no_grad():
            self.norm.weight.uniform_(0.5, 1.5)
            if getattr(self.norm, "bias", None) is not None:
                self.norm.bias.uniform_(-0.5, 0.5)

    def forward(self, x, identity_rule=False):
        if not identity_rule:
            return self.norm(x)
        dims = (-1,) if self.kind != "group" else (-1,)
        if self.kind == "group":
            g = x.reshape(x.shape[0], 2, -1)
            mean, var = g.mean(-1, keepdim=True), g.var(-1, unbiased=False, keepdim=True)
            y = ((g - mean) / (var + self.norm.eps).sqrt().detach()).reshape(x.shape)
            return y * self.norm.weight[:, None] + self.norm.bias[:, None]
        if self.kind == "rms":
            eps = torch.finfo(x.dtype).eps if self.norm.eps is None else self.norm.eps
            return x * (x.pow(2).mean(dims, keepdim=True) + eps).rsqrt().detach() * self.norm.weight
        mean = x.mean(-1, keepdim=True)  # LXT's layer_norm_forward
        std = ((x - mean) ** 2).mean(-1, keepdim=True).add(self.norm.eps).sqrt()
        return (x - mean) / std.detach() * self.norm.weight + self.norm.bias


@pytest.mark.parametrize("kind", ["layer", "group", "rms"])
def test_normalisations_take_the_identity_rule(kind):
    torch.manual_seed(0)
    norm, head = Norms(kind), nn.Linear(6 * (4 if kind == "group" else 1), 2, bias=False).double()
    shape = (3, 6, 4) if kind == "group" else (3, 6)
    model = nn.Sequential(norm, nn.Flatten(), head).eval()
    x = torch.randn(*shape, dtype=torch.double)
    target = torch.tensor([0, 1, 1])
    want = reference(lambda t: head(norm(t, identity_rule=True).flatten(1)), x, target)
    torch.testing.assert_close(lrp0(model, x, target), want, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("act", [F.gelu, F.silu, torch.tanh, F.hardswish, F.mish, lambda t: t.clamp(-0.5, 0.7)])
def test_elementwise_activations_anywhere_take_the_pass_rule(act):
    """R of f(x) becomes R of x: with a bias-free linear head, R_x = f(x) * w_target."""
    torch.manual_seed(0)
    head = nn.Linear(5, 2, bias=False).double()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, x):
            return self.head(act(x))
    x = torch.randn(3, 5, dtype=torch.double)
    want = act(x) * head.weight[1]
    torch.testing.assert_close(lrp0(Model().eval(), x, 1), want.detach(), rtol=1e-8, atol=1e-12)


class Divergent(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.head = nn.LayerNorm(4).double(), nn.Linear(4, 2).double()

    def forward(self, x):
        return self.head(self.norm(x))


def test_self_check_names_the_module_that_diverged(monkeypatch):
    """A rule that computed something else (here: LayerNorm broken on purpose) is caught at attach."""
    from spray.lrp.router import Router
    monkeypatch.setattr(Router, "_norm", lambda self, func, key, in_place, args, kwargs, acts: args[0] * 1.5)
    model = Divergent().eval()
    x = torch.randn(2, 4, dtype=torch.double)
    before = model_state(model)
    with pytest.raises(UnsupportedModelError, match=r"self-check failed.*'norm' \(LayerNorm\)"):
        explain(model, x)
    assert model_state(model) == before


def test_unknown_operation_names_path_type_operation_and_key_and_by_op_maps_it():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.sinc(x)
    model = nn.Sequential(nn.Linear(3, 3), Odd(), nn.Linear(3, 2)).double().eval()
    x = torch.randn(2, 3, dtype=torch.double)
    with pytest.raises(UnsupportedModelError, match=r"'1' \(Odd\) calls 'sinc'.*by_op: \{sinc: gradient"):
        explain(model, x)
    relevance = explain(model, x, composite={"preset": "epsilon", "by_op": {"sinc": "pass"}})
    assert torch.isfinite(relevance).all()


def test_lrp_object_reuses_the_router_and_records_functional_layers():
    model = relu_net(StdConv(3, 4, 3, padding=1, bias=False))
    x = torch.randn(2, 3, 8, 8, dtype=torch.double)
    with LRP(model, "epsilon_plus_flat") as lrp:
        first = lrp.explain(x, record=True)
        again = lrp.explain(x)
    torch.testing.assert_close(first.relevance, again.relevance)
    assert any(layer.path.endswith(":conv") and layer.rule.startswith("Flat") for layer in first.conservation.layers)
