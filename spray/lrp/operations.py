"""The rule table for operations: which LRP rule every torch operation on activations gets, and why.

spray's engine propagates a modified gradient ``g`` with relevance ``R_a = a * g`` at every tensor
``a`` (see :mod:`spray.lrp.engine`). Outside the layers it replaces as a whole (plain conv, linear,
batch norm, average pooling, explicit sums: the fast path), every torch operation a forward makes
on an activation (a tensor that depends on the input) is routed by this table. One line per
operation: its *kind* (what is done with it) and the reason. A reader can audit the whole model
coverage here; :mod:`spray.lrp.router` implements the kinds.

Kinds:

``structural``
    Moves, copies or selects values without mixing them (views, cat, split, pad, indexing,
    permutes, casts). The gradient hands every value's relevance on unchanged.
``gradient``
    Linear in its one activation (sums, means, scaling by a constant, average pooling,
    interpolation, batch norm in eval mode, a product with a parameter such as LayerScale), or
    positively homogeneous so that ``f(x) = x * f'(x)`` (ReLU, max pooling, abs). The plain gradient
    then *is* LRP-0 (constants and biases absorb their share) or the pass rule, exactly.
``sum``
    Sum or difference of two or more activations: the proportional rule ``R_i = a_i / y * R_y``,
    which in gradient form is the gradient itself (``g_i = g``), exact and without a stabiliser.
``product``
    Element-wise product of activations. If one factor is a *gate* (a sigmoid, hard-sigmoid, tanh
    or erf output, as in squeeze-and-excitation, ECA, GLU, SiLU written as ``x * sigmoid(x)``; or
    the factor that is broadcast, as an SE scale of shape (N, C, 1, 1)), the gate is a constant and
    the whole relevance goes to the gated value (zennit's and LXT's CP treatment of gating). Two
    ungated factors of one shape share it evenly (AttnLRP's uniform rule). A division by an
    activation treats the divisor as a constant (a normalisation's scale).
``matmul``
    Matrix product of two activations (``q @ k^T``, ``attn @ v``, einsum): AttnLRP's uniform
    rule, each operand gets half (``1/n`` of ``n``).
``softmax``
    CP-LRP by default: the softmax weights are constants (relevance flows through the values, not
    through the scores), as LXT's efficient ViT does. ``by_op: {softmax: attnlrp}`` switches to
    AttnLRP's softmax rule ``R_x = x (R_s - s sum R_s)``, which in gradient form is the plain
    gradient through the softmax.
``attention``
    ``F.scaled_dot_product_attention`` runs the fused kernel the model calls (the logits stay
    bitwise the model's); its relevance is that of its matmuls and softmax under the rules above.
    ``nn.MultiheadAttention``'s functional forward runs as torch's own code with each of its
    operations routed (its in-projection is a linear layer, then the attention above).
    ``baddbmm``/``addmm`` of a constant (a mask) and two activations split uniformly.
``norm``
    LayerNorm, GroupNorm, RMSNorm (also as ``LayerNorm2d`` and functional calls) and
    ``F.normalize``: the normalisation's scale (1/std, 1/rms, 1/norm) is a constant, the centring
    and the affine part are linear (LXT's identity rule for normalisations).
``activation``
    Element-wise non-linearities (GELU, SiLU, Sigmoid, Tanh, Hardswish, ReLU6, ELU, Mish,
    Softplus, clamp, ...): the pass rule (LXT's identity rule), ``R_x = R_y``, i.e.
    ``g_x = g * f(x) / x`` (stabilised).
``statistic``
    Non-linear functions of activations that models use to compute scales and statistics
    (variance, std, norms, powers, square roots, exp, log): their results are constants, which
    makes a normalisation written by hand (``x * rsqrt(mean(x^2))``) follow the identity rule.
``layer``
    Functional conv and linear: the composite's rule for the calling module's type (a conv
    subclass gets its base class's rule) or for the operation (``by_op: {conv: ..., linear: ...}``),
    applied to the weight the call really received.

Operations whose outputs carry no gradient (shape reads, comparisons, argmax, ``detach``) need
no rule. Anything else raises :class:`~spray.errors.UnsupportedModelError` naming the module path,
its type, the operation and the ``by_op`` key that maps a kind to it.
"""
from __future__ import annotations

from typing import Dict, Tuple

_STRUCTURAL = """view view_as reshape reshape_as flatten unflatten permute transpose swapaxes swapdims t T mT H mH
contiguous squeeze unsqueeze getitem setitem split split_with_sizes tensor_split chunk unbind cat concat
concatenate stack hstack vstack dstack clone to float double half bfloat16 type type_as expand expand_as
broadcast_to repeat tile repeat_interleave narrow select index_select gather take_along_dim movedim moveaxis
flip fliplr flipud roll rot90 pad constant_pad_nd unfold channel_shuffle pixel_shuffle pixel_unshuffle
masked_fill where copy_ contiguous_ view_as_real detach_ as_strided diagonal tril triu fold im2col
native_channel_shuffle zero_pad2d""".split()

_GRADIENT = """relu leaky_relu rrelu threshold abs max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices max amax min amin maximum minimum avg_pool1d
avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d mean sum nansum cumsum neg
negative pos interpolate upsample upsample_nearest upsample_bilinear dropout dropout1d dropout2d dropout3d
alpha_dropout feature_alpha_dropout batch_norm topk sort""".split()

_SUM = "add sub subtract".split()
_PRODUCT = "mul multiply div divide true_divide glu".split()
_MATMUL = "matmul bmm mm einsum baddbmm addmm addbmm addcmul bilinear".split()
_NORM = "layer_norm group_norm rms_norm normalize".split()
_ACTIVATION = """gelu silu sigmoid tanh hardswish hardsigmoid hardtanh relu6 elu selu celu mish softplus
softsign tanhshrink logsigmoid clamp clip clamp_min clamp_max erf""".split()
_STATISTIC = """var std var_mean std_mean norm linalg_vector_norm vector_norm pow square sqrt rsqrt exp log
log1p reciprocal logsumexp frobenius_norm""".split()

WHY = {
    "structural": "moves or selects values without mixing them: relevance is handed on unchanged",
    "gradient": "linear in one activation (LRP-0) or positively homogeneous (pass rule): the gradient is exact",
    "sum": "sum of activations: proportional rule, exact in gradient form (stabiliser-free)",
    "product": "product with a gate (sigmoid/tanh/erf output or the broadcast factor): gate constant; "
               "two ungated factors: uniform split (AttnLRP); a divisor is a constant",
    "matmul": "product of two activations: uniform split (AttnLRP), each of n operands gets 1/n",
    "softmax": "CP-LRP: softmax weights constant (default); 'attnlrp': AttnLRP's softmax rule (its gradient)",
    "attention": "the model's fused kernel forward; relevance by its matmuls' and softmax's rules",
    "norm": "normalisation scale (1/std, 1/rms, 1/norm) constant; centring and affine part linear "
            "(LXT's identity rule)",
    "activation": "element-wise non-linearity: pass rule R_x = R_y (LXT's identity rule)",
    "statistic": "a scale or statistic of activations (var, norm, pow, sqrt, exp): treated as a constant",
    "layer": "functional conv/linear: the composite's conv/linear rule on the weight the call received",
}

#: operation name (torch function name, in-place and dunder forms folded) -> kind
TABLE: Dict[str, str] = {}
for _kind, _names in (("structural", _STRUCTURAL), ("gradient", _GRADIENT), ("sum", _SUM), ("product", _PRODUCT),
                      ("matmul", _MATMUL), ("norm", _NORM), ("activation", _ACTIVATION),
                      ("statistic", _STATISTIC)):
    for _n in _names:
        TABLE[_n] = _kind
TABLE.update({
    "softmax": "softmax", "scaled_dot_product_attention": "attention", "multi_head_attention_forward": "attention",
    "conv1d": "layer", "conv2d": "layer", "conv3d": "layer", "linear": "layer",
})

#: element-wise functions whose output gates another activation when multiplied with it (strength 2)
STRONG_GATES = {"sigmoid", "hardsigmoid", "tanh", "erf", "logsigmoid"}
#: bounded activations that gate when nothing stronger is present (hard-sigmoid written as relu6(x+3)/6)
WEAK_GATES = {"hardtanh", "relu6", "clamp", "clip", "clamp_min", "clamp_max"}

_DUNDER = {"iadd": "add", "radd": "add", "isub": "sub", "rsub": "sub", "imul": "mul", "rmul": "mul",
           "itruediv": "div", "truediv": "div", "rtruediv": "div", "idiv": "div", "div": "div",
           "matmul": "matmul", "rmatmul": "matmul", "imatmul": "matmul", "neg": "neg", "pos": "pos",
           "getitem": "getitem", "setitem": "setitem", "pow": "pow", "rpow": "pow", "ipow": "pow",
           "abs": "abs", "add": "add", "sub": "sub", "mul": "mul", "floordiv": "floordiv",
           "and": "and", "or": "or", "xor": "xor"}


def normalize_name(raw: str) -> Tuple[str, bool]:
    """``(operation key, in_place)`` for a torch function's ``__name__`` (``__iadd__`` -> add, in place)."""
    if raw.startswith("__") and raw.endswith("__"):
        inner = raw[2:-2]
        return _DUNDER.get(inner, inner), inner.startswith("i") and inner[1:] in _DUNDER
    name = raw.lstrip("_")
    if name.endswith("_") and name[:-1] in TABLE:
        return name[:-1], True
    return name, False


def kind_of(name: str) -> str:
    """The kind of an operation key, or ``"unknown"``."""
    return TABLE.get(name, "unknown")


def table_text() -> str:
    """The table as text: kind, why, operations (for the README and error messages)."""
    by_kind: Dict[str, list] = {}
    for name, kind in TABLE.items():
        by_kind.setdefault(kind, []).append(name)
    return "\n".join(f"{kind:11s} {WHY[kind]}\n            {', '.join(sorted(names))}"
                     for kind, names in by_kind.items())
