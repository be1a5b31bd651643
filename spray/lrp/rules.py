"""LRP rules with zennit's mathematics and defaults.

Notation: a layer maps input ``x`` to ``z = W x + b``; ``R`` is the relevance of ``z``; ``x+ =
max(x, 0)``, ``x- = min(x, 0)``, likewise ``W+``, ``W-``, ``b+``, ``b-``; ``stab(d) = d + eps * sign(d)``
with ``sign(+0) = +1`` (zennit's stabiliser; see ``_signed`` for ``-0.0``). Every sum below runs over the layer's outputs ``k``.

How a rule is applied (``backward``): spray's engine propagates a *modified gradient* ``g`` with
``R_a = a * g`` at every tensor ``a``. A rule receives the relevance ``R`` of its output (a
:class:`Relevance`, which forms ``a * g`` only when needed) and returns
``g_in`` such that its input relevance is ``x * g_in``. All input-multiplied rules (epsilon, z+,
alpha-beta, gamma) can do that exactly: their input relevance is ``x+ * G+ + x- * G-``, so
``g_in = where(x > 0, G+, G-)``. The rules meant for the input layer (flat, w-square, zB) give
relevance that does not factor through ``x``; they are *terminal*: they return the relevance itself
and must be the input layer. Terms that vanish because ``x >= 0`` (after a ReLU) are not computed,
which is exact and where most of the speed over zennit comes from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import Tensor

from .ops import LinearOp

Bound = Union[float, Tensor]


def _signed(d: Tensor, epsilon: float) -> Tensor:
    """``epsilon * sign(d)`` with ``sign(+0) = +1``, in one pass (IEEE copysign; 5x cheaper than
    zennit's ``(d == 0) + sign(d)`` on CPU). A negative zero takes ``-epsilon`` where zennit gives
    ``+epsilon``; a denominator of exactly ``-0.0`` is ``z = -0.0`` for the epsilon rule, whose
    relevance ``z * g`` is zero either way."""
    return torch.copysign(torch.tensor(epsilon, dtype=d.dtype, device=d.device), d)


def stabilize(d: Tensor, epsilon: float) -> Tensor:
    """``d + epsilon * sign(d)`` with ``sign(0) = +1``: a denominator that is never zero for epsilon > 0."""
    return _signed(d, epsilon).add_(d)


def divide(r: Tensor, d: Tensor, epsilon: float, nonnegative: bool = False, *, own_r: bool = False,
           own_d: bool = False) -> Tensor:
    """``r / stab(d)``; with ``epsilon == 0`` (LRP-0), a zero denominator passes no relevance (0/0 := 0).

    ``nonnegative``: ``d >= 0`` is known (a ReLU output), so ``stab(d) = d + epsilon``.
    ``own_r``/``own_d``: the caller's temporaries, overwritten to keep peak memory at the gradient's.
    """
    if not epsilon:
        return torch.where(d == 0, torch.zeros_like(r), r / d)
    d = _stabilized(d, epsilon, nonnegative, own_d)
    return r.div_(d) if own_r else r / d


def _stabilized(d: Tensor, epsilon: float, nonnegative: bool, own_d: bool) -> Tensor:
    """``stab(d)``, in ``d`` itself when ``own_d``; ``nonnegative``: ``d >= 0`` is known."""
    if nonnegative:
        return d.add_(epsilon) if own_d else d + epsilon
    return d.add_(_signed(d, epsilon)) if own_d else stabilize(d, epsilon)


class Relevance:
    """The relevance ``R = a * g`` of a layer's output ``a``, formed only when a rule needs it whole.

    It also holds the pre-activation ``z`` (``a`` itself when the layer has no activation or a ReLU).
    Memory: the engine hands over its only reference to ``a``; the last read (every read without
    ``keep=True``) lets go of ``a`` and ``z``, so their memory is back before the rule's transposed
    product allocates the input's gradient. Most rules divide ``R`` once by a denominator of their
    own: :meth:`over` writes ``a / stab(d) * g`` into that denominator's buffer, so no separate
    full-size ``R`` is allocated either.
    """

    def __init__(self, out: Tensor, grad: Tensor, z: Optional[Tensor] = None):
        self._out, self.grad, self._z = out, grad, z

    @property
    def out(self) -> Tensor:
        self._check()
        return self._out

    @property
    def z(self) -> Tensor:
        """The pre-activation (the rule's ``z``)."""
        self._check()
        return self._out if self._z is None else self._z

    @property
    def dtype(self) -> torch.dtype:
        return self.grad.dtype

    @property
    def device(self) -> torch.device:
        return self.grad.device

    def tensor(self, keep: bool = False) -> Tensor:
        """``R`` as a new tensor the caller owns."""
        r = self.out * self.grad
        self._release(keep)
        return r

    def over(self, d: Tensor, epsilon: float, nonnegative: bool = False, own_d: bool = False,
             keep: bool = False) -> Tensor:
        """``R / stab(d)`` exactly as :func:`divide`; computed in ``d`` itself when ``own_d``."""
        out = self.out
        if not epsilon:
            zero = d == 0
            s = torch.div(out, d, out=d) if own_d else out / d
            s = s.mul_(self.grad).masked_fill_(zero, 0)
        else:
            d = _stabilized(d, epsilon, nonnegative, own_d)
            s = torch.div(out, d, out=d).mul_(self.grad)
        self._release(keep)
        return s

    def _release(self, keep: bool) -> None:
        if not keep:
            self._out = self._z = None

    def _check(self) -> None:
        if self._out is None:
            raise RuntimeError("spray.lrp: this relevance was already read for the last time; "
                               "a rule passes keep=True to every read but its last")


def _pos(t: Tensor) -> Tensor:
    return t.clamp(min=0)


def _neg(t: Tensor) -> Tensor:
    return t.clamp(max=0)


def _has_negative(op: LinearOp, x: Tensor) -> bool:
    """Whether the input has negative entries; known to be False after a ReLU (``op.input_nonnegative``)."""
    return False if op.input_nonnegative else bool((x < 0).any())


class Rule:
    """Base class: how relevance of a layer's output is redistributed onto its input."""

    #: whether ``backward`` reads the layer's input (the engine saves it only then)
    needs_input: bool = True
    #: whether ``backward`` returns the input relevance itself rather than ``g_in``
    terminal: bool = False

    def backward(self, op: LinearOp, x: Optional[Tensor], input_shape: torch.Size,
                 relevance: Relevance) -> Tensor:
        """Return ``g_in`` (or the input relevance for a terminal rule) from the output's relevance.

        Hold no reference to ``relevance.out`` or ``relevance.z`` across the transposed products
        (``op.vjp``): they are full-size and free once the relevance has been read.
        """
        raise NotImplementedError

    def output_ratio(self, op: LinearOp, out: Tensor, z: Tensor) -> Optional[Tensor]:
        """A rule whose backward reads ``a`` and ``z`` only as ``a / stab(z)`` returns that ratio here (the
        engine then keeps it, one tensor, in place of both, and calls :meth:`backward_from_ratio`);
        None: the rule needs them whole."""
        return None

    def backward_from_ratio(self, op: LinearOp, ratio: Tensor, grad: Tensor, input_shape: torch.Size) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        return repr(self)


@dataclass(frozen=True)
class Epsilon(Rule):
    """LRP-epsilon: ``R_j = x_j * sum_k w_kj * R_k / stab(z_k)``; ``epsilon=0`` is LRP-0.

    Bias included in ``z`` (it absorbs relevance). Default ``epsilon=1e-6`` as in zennit.
    In gradient form this is one transposed product: ``g_in = W^T (R / stab(z))``.
    """

    epsilon: float = 1e-6
    needs_input = False

    def backward(self, op, x, input_shape, relevance):
        return op.vjp(relevance.over(relevance.z, self.epsilon, op.output_nonnegative), op.weight, input_shape)

    def output_ratio(self, op, out: Tensor, z: Tensor) -> Tensor:
        """``a / stab(z)``, formed in the forward where a layer's output ``a`` is a fused activation of
        ``z`` (GELU, SiLU): the backward is then ``W^T (ratio * g)``, the same values as
        :meth:`backward` computes, but the engine keeps one tensor until backward instead of ``a`` and ``z``
        (the gradient pass keeps one too)."""
        d = _stabilized(z, self.epsilon, op.output_nonnegative, own_d=False) if self.epsilon else z
        if not self.epsilon:
            return torch.div(out, d).masked_fill_(d == 0, 0)
        return torch.div(out, d, out=d)

    def backward_from_ratio(self, op, ratio: Tensor, grad: Tensor, input_shape: torch.Size) -> Tensor:
        return op.vjp(ratio.mul_(grad), op.weight, input_shape)


@dataclass(frozen=True)
class Norm(Epsilon):
    """Proportional split for parameter-free sums and average pools: epsilon with a tiny stabiliser.

    ``R_j = x_j * sum_k w_kj * R_k / stab(z_k)`` with ``w`` the pooling weights (zennit's ``Norm``).
    """


@dataclass(frozen=True)
class ZPlus(Rule):
    """LRP-z+ (alpha=1, beta=0, negative inputs allowed, as zennit):

    ``R_j = (x+_j * sum_k w+_kj R_k / s_k) + (x-_j * sum_k w-_kj R_k / s_k)``,
    ``s_k = stab(sum_j w+_kj x+_j + b+_k + sum_j w-_kj x-_j)``.
    """

    stabilizer: float = 1e-6

    def backward(self, op, x, input_shape, relevance):
        wp, bp = op.params("pos", _pos, _pos)
        has_neg = _has_negative(op, x)
        denom = op.forward(x if not has_neg else _pos(x), wp, bp)
        if has_neg:
            wn, _ = op.params("neg", _neg, _neg)
            denom = denom.add_(op.forward(_neg(x), wn, None))
        # every term is >= 0 (W+ x+, b+, W- x-): stab(d) = d + stabilizer, in place
        s = relevance.over(denom, self.stabilizer, nonnegative=True, own_d=True)  # in denom's buffer
        g_pos = op.vjp(s, wp, input_shape)
        if not has_neg:
            return g_pos
        return torch.where(x > 0, g_pos, op.vjp(s, wn, input_shape))


@dataclass(frozen=True)
class AlphaBeta(Rule):
    """LRP-alpha-beta (``alpha - beta = 1``, both >= 0):

    ``R_j = alpha * [x+_j sum_k w+_kj R_k/p_k + x-_j sum_k w-_kj R_k/p_k]
          - beta  * [x+_j sum_k w-_kj R_k/n_k + x-_j sum_k w+_kj R_k/n_k]``,
    ``p_k = stab(W+ x+ + b+ + W- x-)``, ``n_k = stab(W- x+ + b- + W+ x-)``.
    Presets: ``alpha1_beta0`` (= z+ up to the stabiliser) and ``alpha2_beta1``.
    """

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0 or abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(
                f"alpha-beta rule needs alpha >= 0, beta >= 0 and alpha - beta = 1; got alpha={self.alpha}, "
                f"beta={self.beta} (e.g. alpha=2, beta=1)"
            )

    def backward(self, op, x, input_shape, relevance):
        wp, bp = op.params("pos", _pos, _pos)
        wn, bn = op.params("neg", _neg, _neg)
        has_neg = _has_negative(op, x)
        xp = _pos(x) if has_neg else x
        p = op.forward(xp, wp, bp)
        n = op.forward(xp, wn, bn)
        if has_neg:
            xn = _neg(x)
            p = p.add_(op.forward(xn, wn, None))
            n = n.add_(op.forward(xn, wp, None))
        sp = relevance.over(p, self.stabilizer, nonnegative=True, own_d=True, keep=True)  # p >= 0 term by term
        sn = relevance.over(n, self.stabilizer, own_d=True)
        g_pos = self.alpha * op.vjp(sp, wp, input_shape)
        if self.beta:
            g_pos = g_pos - self.beta * op.vjp(sn, wn, input_shape)
        if not has_neg:
            return g_pos
        g_neg = self.alpha * op.vjp(sp, wn, input_shape)
        if self.beta:
            g_neg = g_neg - self.beta * op.vjp(sn, wp, input_shape)
        return torch.where(x > 0, g_pos, g_neg)


@dataclass(frozen=True)
class Gamma(Rule):
    """Generalised LRP-gamma (zennit 0.5): positive and negative outputs handled separately.

    With ``W^u = W + gamma W+`` (bias ``b + gamma b+``) and ``W^d = W + gamma W-`` (bias ``b + gamma b-``):
    ``P_k = stab(W^u x+ + b^u + W^d x-)`` for ``z_k > 0``; ``N_k = stab(W^d x+ + b^d + W^u x-)`` for ``z_k < 0``;
    ``R_j = x+_j [W^u^T (1[z>0] R / P) + W^d^T (1[z<0] R / N)]_j
          + x-_j [W^d^T (1[z>0] R / P) + W^u^T (1[z<0] R / N)]_j``.
    Default ``gamma=0.25`` (Montavon et al. 2019 recommend about 0.25 on lower convolutions).
    """

    gamma: float = 0.25
    stabilizer: float = 1e-6

    def backward(self, op, x, input_shape, relevance):
        g = self.gamma
        wu, bu = op.params(f"gamma-up-{g}", lambda w: w + g * _pos(w), lambda b: b + g * _pos(b))
        has_neg = _has_negative(op, x)
        if not has_neg and op.output_nonnegative:  # x >= 0 and a fused ReLU: only P, only W^u
            sp = relevance.over(op.forward(x, wu, bu), self.stabilizer, own_d=True)
            return op.vjp(sp, wu, input_shape)
        # W^d is built (and cached) only for layers that need it: it doubles the weight copies
        wd, bd = op.params(f"gamma-down-{g}", lambda w: w + g * _neg(w), lambda b: b + g * _neg(b))
        if not has_neg:
            return self._both_signs_nonnegative_input(op, x, input_shape, relevance, wu, wd)
        xp, xn = _pos(x), _neg(x)
        if op.output_nonnegative:  # after a fused ReLU relevance sits on z > 0 only
            r_pos, r_neg, use_neg_out = relevance.tensor(), None, False
        else:
            z = relevance.z
            r_neg = relevance.tensor()
            r_pos = (z > 0).to(r_neg) * r_neg
            r_neg.mul_((z < 0).to(r_neg))  # R itself becomes its negative-output part
            del z
            use_neg_out = bool(r_neg.any())
        p = op.forward(xp, wu, bu).add_(op.forward(xn, wd, None))
        sp = divide(r_pos, p, self.stabilizer, own_r=True, own_d=True)
        del p
        g_pos = op.vjp(sp, wu, input_shape)
        g_neg = op.vjp(sp, wd, input_shape)
        if use_neg_out:
            n = op.forward(xp, wd, bd).add_(op.forward(xn, wu, None))
            sn = divide(r_neg, n, self.stabilizer, own_r=True, own_d=True)
            g_pos = g_pos + op.vjp(sn, wd, input_shape)
            g_neg = g_neg + op.vjp(sn, wu, input_shape)
        return torch.where(x > 0, g_pos, g_neg)

    def _both_signs_nonnegative_input(self, op, x, input_shape, relevance, wu, wd):
        """``x >= 0`` and outputs of both signs (e.g. a conv feeding a residual sum): one extra forward.

        With ``c = W+ x + b+`` and ``b = b+ + b-``: ``P = W^u x + b^u = z + gamma c`` and
        ``N = W^d x + b^d = z + gamma (W- x + b-) = (1 + gamma) z - gamma c``, so ``P`` and ``N`` need
        one forward between them instead of one each. Relevance at ``z = 0`` passes nowhere, as above.
        """
        g = self.gamma
        c = op.forward(x, *op.params("pos", _pos, _pos))
        z = relevance.z
        positive, zero = z > 0, z == 0
        denom = torch.where(positive, c, z - c).mul_(g).add_(z)
        del c, z
        s = relevance.over(denom, self.stabilizer, own_d=True).masked_fill_(zero, 0)
        del denom, zero
        s_neg = s.masked_fill(positive, 0)
        g_in = op.vjp(s_neg, wd, input_shape)
        del s_neg
        return g_in.add_(op.vjp(s.masked_fill_(~positive, 0), wu, input_shape))


@dataclass(frozen=True)
class Flat(Rule):
    """LRP-flat (terminal): every input of a receptive field gets an equal share.

    ``R_j = sum_k R_k / stab(sum_j' 1)`` over the inputs ``j'`` connected to ``k`` (weights set to 1,
    bias to 0, so zero padding makes border fields smaller, as in zennit).
    """

    stabilizer: float = 1e-6
    needs_input = False
    terminal = True

    def backward(self, op, x, input_shape, relevance):
        ones_w, _ = op.params("ones", torch.ones_like, None)
        denom = _shape_constant(op, ("flat-denom", tuple(input_shape[1:])), input_shape, ones_w, None, relevance)
        return op.vjp(divide(relevance.tensor(), denom, self.stabilizer, own_r=True), ones_w, input_shape)


@dataclass(frozen=True)
class WSquare(Rule):
    """LRP-w-square (terminal): ``R_j = sum_k w_kj^2 R_k / stab(sum_j' w_kj'^2 + b_k^2)``.

    The squared bias stays in the denominator, as in zennit (parameters are squared, not zeroed).
    """

    stabilizer: float = 1e-6
    needs_input = False
    terminal = True

    def backward(self, op, x, input_shape, relevance):
        w2, b2 = op.params("square", torch.square, torch.square)
        denom = _shape_constant(op, ("wsquare-denom", tuple(input_shape[1:])), input_shape, w2, b2, relevance)
        return op.vjp(divide(relevance.tensor(), denom, self.stabilizer, own_r=True), w2, input_shape)


@dataclass(frozen=True, eq=False)
class ZBox(Rule):
    """LRP-zB (terminal) for inputs bounded by ``low <= x <= high``:

    ``R_j = sum_k (x_j w_kj - l_j w+_kj - h_j w-_kj) R_k / stab(z_k - (W+ l + b+)_k - (W- h + b-)_k)``.
    ``low``/``high``: scalars, per-channel sequences, or tensors broadcastable to the input. spray's
    data stage derives them from the preprocessing (e.g. ``(0 - mean) / std`` and ``(1 - mean) / std``).
    """

    low: Bound = 0.0
    high: Bound = 1.0
    stabilizer: float = 1e-6
    terminal = True

    def bounds(self, like: Tensor) -> tuple:
        return _bound(self.low, like), _bound(self.high, like)

    def backward(self, op, x, input_shape, relevance):
        low, high = self.bounds(x)
        wp, bp = op.params("pos", _pos, _pos)
        wn, bn = op.params("neg", _neg, _neg)
        # the bound terms do not depend on x: computed for one sample and cached per shape
        key = ("zbox-bounds", id(self), tuple(input_shape[1:]))
        bound_terms = _shape_constant(op, key, input_shape, None, None, relevance,
                                      lambda: op.forward(low[:1], wp, bp) + op.forward(high[:1], wn, bn))
        denom = op.forward(x, op.weight, op.bias).sub_(bound_terms)
        s = relevance.over(denom, self.stabilizer, own_d=True)
        return x * op.vjp(s, op.weight, input_shape) - (
            low * op.vjp(s, wp, input_shape) + high * op.vjp(s, wn, input_shape)
        )


@dataclass(frozen=True)
class Pass(Rule):
    """Pass-through for element-wise activations: the relevance of ``f(z)`` becomes that of ``z``.

    spray fuses the activation with the linear layer (or sum) that produces ``z``, so that layer's
    rule receives ``R = f(z) * g`` directly and never divides by ``z``. For ReLU this equals LRP's
    usual treatment. For ELU, Tanh, SiLU, GELU, LeakyReLU, Sigmoid and Softplus it is zennit's
    choice too; note that ``f(z)`` and ``z`` may differ in sign (Sigmoid, Softplus, and ELU/SiLU/GELU
    for some ``z < 0``), so a negative pre-activation can carry positive relevance: the lower
    layer's denominator then flips its sign. Prefer ReLU-family networks where that matters.
    """

    needs_input = False


def _bound(value: Bound, like: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if t.ndim == 1 and like.ndim > 2 and t.numel() == like.shape[1]:
        t = t.reshape((1, -1) + (1,) * (like.ndim - 2))
    return t.expand_as(like)


def _shape_constant(op: LinearOp, key: tuple, input_shape, weight, bias, like: Tensor, compute=None) -> Tensor:
    """Terms that depend on the input's shape only (flat, w-square, zB bounds): one sample, cached.

    Default ``compute``: the layer applied to a ones input with ``weight``/``bias``.
    """
    source = op.weight
    full_key = key + (like.dtype, like.device, None if source is None else (id(source), source._version))
    hit = op._cache.get(full_key)
    if hit is None:
        with torch.no_grad():
            if compute is None:
                ones = torch.ones((1,) + tuple(input_shape[1:]), dtype=like.dtype, device=like.device)
                hit = op.forward(ones, weight, bias)
            else:
                hit = compute()
        op._cache[full_key] = hit
    return hit


RULES = {
    "epsilon": Epsilon,
    "norm": Norm,
    "zplus": ZPlus,
    "alpha_beta": AlphaBeta,
    "alpha1_beta0": lambda **kw: AlphaBeta(alpha=1.0, beta=0.0, **kw),
    "alpha2_beta1": lambda **kw: AlphaBeta(alpha=2.0, beta=1.0, **kw),
    "gamma": Gamma,
    "flat": Flat,
    "wsquare": WSquare,
    "zb": ZBox,
    "pass": Pass,
}


def make_rule(spec) -> Rule:
    """A rule from a name (``"gamma"``) or a mapping (``{"rule": "gamma", "gamma": 0.5}``) as in YAML."""
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, dict) and "rule" in spec:
        params = dict(spec)
        name = params.pop("rule")
    else:
        raise ValueError(f"a rule is a name or a mapping with a 'rule' key; got {spec!r}")
    key = str(name).lower().replace("-", "_").replace("+", "plus")
    if key not in RULES:
        raise ValueError(f"unknown LRP rule {name!r}; known: {', '.join(sorted(RULES))}")
    try:
        return RULES[key](**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for rule {name!r}: {err}") from None
