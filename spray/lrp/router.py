"""Operation-level LRP: a TorchFunctionMode that routes every torch operation on activations by the
rule table (:mod:`spray.lrp.operations`) into spray's gradient form (``R_a = a * g``).

It is active during an attached model's forward, outside the fast-path layers (which suspend it),
so that rules attach to what a forward computes, not to module class names: a residual ``+=`` in
any block, ``F.conv2d`` inside a conv subclass with a forward of its own, attention written with
``@`` and ``softmax``, a LayerNorm2d, timm's activation classes. Activations are the tensors that
require a gradient (parameters are switched off while attached); an operation on constants runs
untouched.
"""
from __future__ import annotations

import inspect
import math
import types
import weakref
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode, resolve_name
from torch.utils._pytree import tree_flatten, tree_map

from ..errors import UnsupportedModelError
from .operations import STRONG_GATES, WEAK_GATES, kind_of, normalize_name
from .ops import DenseOp, FunctionalConvOp
from .rules import stabilize

KIND_ALIASES = {"gradient": "gradient", "pass": "activation", "constant": "statistic", "cp": "statistic",
                "attnlrp": "gradient", "uniform": "matmul", "structural": "structural", "gate": "product"}
_CONV = {"conv1d": F.conv1d, "conv2d": F.conv2d, "conv3d": F.conv3d}


def _stab_eps(t: Tensor) -> float:
    return 1e-10 if t.dtype in (torch.float32, torch.float64) else 1e-4


class _IdentityRule(torch.autograd.Function):
    """Pass rule for an element-wise ``y = f(x)``: ``g_x = g * f(x) / stab(x)``, so ``R_x = R_y``."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(y / stabilize(x, _stab_eps(x)))
        return y

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient (hence the relevance) is multiplied by ``factor`` (uniform rule)."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x  # as LXT does: the (fresh) product tensor itself, so later in-place ops stay legal

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


class _Norm:
    """The forward of one normalisation call and how its scale and groups are laid out."""

    def __init__(self, weight: Optional[Tensor], weight_view: Callable[[Tensor], Tensor], fn):
        self.weight, self.weight_view, self.fn = weight, weight_view, fn

    def __call__(self, x):
        return self.fn(x)


class _NormFunction(torch.autograd.Function):
    """LayerNorm/GroupNorm/RMSNorm with the scale (1/std or 1/rms) a constant (LXT's identity rule).

    ``y = (x - mean) * rstd * w + b``; with ``rstd`` constant, ``g_x = h - mean(h)`` over each
    normalised group for ``h = g * w * rstd`` (no centring for RMSNorm): the forward itself is the
    library's own kernel, so the attached model computes the very same values.
    """

    @staticmethod
    def forward(ctx, x, norm: _Norm, center: bool):
        out, rstd, group_shape = norm(x)
        ctx.save_for_backward(rstd)
        ctx.norm, ctx.center, ctx.group_shape, ctx.shape = norm, center, group_shape, x.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        (rstd,) = ctx.saved_tensors
        norm = ctx.norm
        h = grad * norm.weight_view(grad) if norm.weight is not None else grad
        h = h.reshape(ctx.group_shape) * rstd
        if ctx.center:
            h = h - h.mean(-1, keepdim=True)
        return h.reshape(ctx.shape), None, None


class _AttentionFunction(torch.autograd.Function):
    """``F.scaled_dot_product_attention`` run by the very kernel the model calls (so the logits stay
    bitwise the model's); its backward is the gradient of the attention written as matmuls and a
    softmax under the composite's rules (:func:`attend`), recomputed from the saved q, k, v."""

    @staticmethod
    def forward(ctx, q, k, v, options: dict, attnlrp: bool):
        ctx.options, ctx.attnlrp = options, attnlrp
        ctx.kept = [keep(t) for t in (q, k, v)]
        return F.scaled_dot_product_attention(q, k, v, **options)

    @staticmethod
    def backward(ctx, grad):
        q, k, v = (kept.take("scaled_dot_product_attention") for kept in ctx.kept)
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(need) for t, need in zip((q, k, v), ctx.needs_input_grad)]
            out = attend(*leaves, mask=ctx.options.get("attn_mask"), causal=bool(ctx.options.get("is_causal")),
                         scale=ctx.options.get("scale"), attnlrp=ctx.attnlrp)
            wanted = [t for t in leaves if t.requires_grad]
            found = torch.autograd.grad(out, wanted, grad, allow_unused=True)
        grads = dict(zip(map(id, wanted), found))
        return (*(grads.get(id(t)) for t in leaves), None, None)


def attend(q, k, v, mask=None, causal=False, scale=None, attnlrp=False):
    """softmax(q k^T * scale + mask) v under spray's rules: AttnLRP's uniform split of each product of
    two activations; the softmax weights constant (CP-LRP, the default: q and k get no relevance) or,
    with ``attnlrp``, AttnLRP's softmax rule (its gradient)."""
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    with torch.set_grad_enabled(torch.is_grad_enabled() and attnlrp):
        scores = _uniform(torch.matmul(q * scale, k.transpose(-2, -1)), q, k)
        L, S = scores.shape[-2:]
        if causal:
            keep_ = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
            scores = scores.masked_fill(~keep_, float("-inf"))
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = torch.softmax(scores, -1)
    return _uniform(torch.matmul(weights, v), weights, v)


_UNDISPATCHED: Dict[object, Callable] = {}


def _undispatched(fn: Callable) -> Callable:
    """A copy of a ``torch.nn.functional`` function without its own torch-function check, so that,
    with the router active, the operations it is made of are routed instead of the function itself
    (the function's code and defaults are torch's, unchanged)."""
    copy = _UNDISPATCHED.get(fn)
    if copy is None:
        namespace = {**fn.__globals__, "has_torch_function": lambda *a: False}
        copy = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
        copy.__kwdefaults__ = fn.__kwdefaults__
        _UNDISPATCHED[fn] = copy
    return copy


def protect(t: Tensor) -> None:
    """Before an in-place operation on ``t``: give every rule that keeps an alias of ``t`` for its
    backward a copy of its own, so the in-place change cannot alter what the rule reads."""
    for target in (t, getattr(t, "_base", None)):
        for kept in getattr(target, "_spray_keepers", ()) if target is not None else ():
            kept.rekeep()


class Router(TorchFunctionMode):
    """Routes torch operations on activations by the rule table; see the module docstring.

    ``probe=True`` (the attach-time dry run) records unsupported operations instead of raising,
    the readers of the model input, and which tensors were changed in place.
    """

    def __init__(self, composite, make_layer: Callable, probe: bool = False):
        super().__init__()
        self.composite = composite
        self.make_layer = make_layer
        self.probe = probe
        self.stack: List[Tuple[str, nn.Module]] = []
        self.suspended = 0
        self.terminal_applied = False
        self.problems: Dict[str, str] = {}
        self.input_readers: List[Tuple[str, str]] = []
        self.mutated: set = set()
        self.on_use: Optional[Callable] = None
        self._keys: Dict[object, Tuple[str, bool]] = {}
        self._ops: Dict[tuple, tuple] = {}

    # -- where ---------------------------------------------------------------------------------
    def where(self) -> Tuple[str, nn.Module]:
        return self.stack[-1] if self.stack else ("<model>", None)

    def _key(self, func) -> Tuple[str, bool]:
        hit = self._keys.get(func)
        if hit is None:
            raw = getattr(func, "__name__", "") or ""
            if raw == "__get__":  # a property (x.shape, x.T): its own name
                raw = resolve_name(func) or str(func)
                raw = raw.split(".")[-2] if raw.endswith(".__get__") else raw
            hit = normalize_name(raw)
            self._keys[func] = hit
        return hit

    # -- dispatch ------------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.suspended:
            return func(*args, **kwargs)
        flat = tree_flatten((args, kwargs))[0]
        acts = [t for t in flat if isinstance(t, Tensor) and t.requires_grad]
        if not acts:
            return func(*args, **kwargs)
        key, in_place = self._key(func)
        override = self.composite.op_kinds.get(key)
        kind = KIND_ALIASES[override] if override else kind_of(key)
        if in_place or kwargs.get("inplace") is True or key in ("copy_", "setitem"):
            protect(args[0])
        try:
            out = getattr(self, "_" + kind.replace("-", "_"), self._unknown)(func, key, in_place, args, kwargs, acts)
        except UnsupportedModelError as err:
            if not self.probe:
                raise
            self.problems.setdefault(str(err), str(err))
            out = func(*args, **kwargs)
        if self.probe:
            self._record(key, kind, acts, in_place, args, out)
        return out

    def _record(self, key, kind, acts, in_place, args, out):
        if self.on_use is not None:
            self.on_use(acts, key, out)
        carries = any(isinstance(t, Tensor) and t.requires_grad for t in tree_flatten(out)[0])
        if kind != "structural" and carries and any(getattr(t, "_spray_input", False) for t in acts):
            path, module = self.where()
            self.input_readers.append((f"'{path}' ({type(module).__name__ if module is not None else 'model'}): {key}",
                                       key))
        if in_place or key in ("copy_", "setitem"):
            self.mutated.add(id(args[0]))

    def _problem(self, key: str, what: str, fix: str) -> UnsupportedModelError:
        path, module = self.where()
        mtype = type(module).__name__ if module is not None else "model"
        return UnsupportedModelError(f"'{path}' ({mtype}) calls '{key}' {what}; {fix}")

    # -- kinds ---------------------------------------------------------------------------------
    def _unknown(self, func, key, in_place, args, kwargs, acts):
        out = func(*args, **kwargs)
        if any(isinstance(t, Tensor) and t.requires_grad for t in tree_flatten(out)[0]):
            raise self._problem(key, "on activations and spray has no LRP rule for it",
                                f"if you know what it computes, map a kind to it in the composite: "
                                f"by_op: {{{key}: gradient | pass | constant | uniform}} (gradient: linear in its "
                                f"input; pass: element-wise; constant: its result carries no relevance)")
        return out

    def _structural(self, func, key, in_place, args, kwargs, acts):
        out = func(*args, **kwargs)
        _tag(out, acts, input_tag=True)
        return out

    def _gradient(self, func, key, in_place, args, kwargs, acts):
        if key == "batch_norm" and _arg(func, args, kwargs, "training", 5, False):
            raise self._problem(key, "with batch statistics on activations (training=True)",
                                "explain the model in eval mode (running statistics)")
        out = func(*args, **kwargs)
        if key in ("mul", "div", "add", "sub", "neg", "dropout"):
            _tag(out, acts)
        return out

    def _sum(self, func, key, in_place, args, kwargs, acts):
        out = func(*args, **kwargs)  # proportional rule == the gradient in gradient form
        if len(acts) == 1:
            _tag(out, acts)
        return out

    def _product(self, func, key, in_place, args, kwargs, acts):
        if key == "glu":
            x = args[0]
            dim = _arg(func, args, kwargs, "dim", 1, -1)
            a, b = x.chunk(2, dim)
            return a * torch.sigmoid(b).detach()
        a = args[0] if len(args) > 0 else kwargs.get("input")
        b = args[1] if len(args) > 1 else kwargs.get("other")
        act_a = isinstance(a, Tensor) and a.requires_grad
        act_b = isinstance(b, Tensor) and b.requires_grad
        if key in ("div", "divide", "true_divide"):
            if not act_a:
                raise self._problem(key, "with an activation as divisor of a constant (a reciprocal)",
                                    f"map a kind to it: by_op: {{{key}: constant}}")
            if act_b:  # the divisor is a normalisation scale: constant
                return func(a, b.detach(), *args[2:], **_without(kwargs, "input", "other"))
            out = func(*args, **kwargs)
            _tag(out, acts)
            return out
        if not (act_a and act_b):
            out = func(*args, **kwargs)
            _tag(out, acts)
            return out
        gate = _pick_gate(a, b)
        if gate is not None:
            a2, b2 = (a, b.detach()) if gate == 1 else (a.detach(), b)
            return func(a2, b2, *args[2:], **_without(kwargs, "input", "other"))
        out = _ScaleGradient.apply(a * b if in_place else func(*args, **kwargs), 0.5)  # uniform split
        if in_place:
            a.copy_(out)
            return a
        return out

    def _matmul(self, func, key, in_place, args, kwargs, acts):
        if key in ("addmm", "baddbmm", "addbmm"):  # input + mat1 @ mat2
            added = args[0] if args else kwargs.get("input")
            factors = [t for t in flat_tensors((args[1:], _without(kwargs, "input"))) if t.requires_grad]
            if len(factors) == 2 and not (isinstance(added, Tensor) and added.requires_grad):
                # a constant plus a product of two activations (attention scores with a mask): uniform split
                return _ScaleGradient.apply(func(*args, **kwargs), 0.5)
            if len(factors) == 2:
                raise self._problem(key, "adding an activation to a product of two activations",
                                    f"map a kind to it: by_op: {{{key}: uniform}}")
            return func(*args, **kwargs)  # linear in its one activation
        if key in ("addcmul", "bilinear"):  # linear in one activation
            if len(acts) == 1 and not (key != "bilinear" and args and args[0] is acts[0]):
                return func(*args, **kwargs)
            if key == "bilinear" or len(acts) > 1:
                raise self._problem(key, "on two activations", f"map a kind to it: by_op: {{{key}: uniform}}")
            return func(*args, **kwargs)
        operands = [t for t in flat_tensors((args, kwargs)) if t.requires_grad]
        if len(operands) < 2:
            return func(*args, **kwargs)
        strong = [t for t in operands if _gate_strength(t) >= 2]
        if len(strong) == 1 and len(operands) == 2:
            return func(*tree_map(lambda t: t.detach() if t is strong[0] else t, args),
                        **tree_map(lambda t: t.detach() if t is strong[0] else t, kwargs))
        return _ScaleGradient.apply(func(*args, **kwargs), 1.0 / len(operands))

    def _softmax(self, func, key, in_place, args, kwargs, acts):
        return self._statistic(func, key, in_place, args, kwargs, acts)  # CP-LRP: weights are constants

    def _statistic(self, func, key, in_place, args, kwargs, acts):
        detach = lambda t: t.detach() if isinstance(t, Tensor) else t  # noqa: E731
        return func(*tree_map(detach, args), **tree_map(detach, kwargs))

    def _activation(self, func, key, in_place, args, kwargs, acts):
        x = args[0] if args else kwargs.get("input")
        rest = [t for t in flat_tensors((args[1:], _without(kwargs, "input"))) if t.requires_grad]
        if rest or not (isinstance(x, Tensor) and x.requires_grad):
            raise self._problem(key, "with activations as its parameters", f"map a kind to it: by_op: {{{key}: pass}}")
        if "inplace" in kwargs:
            kwargs = {**kwargs, "inplace": False}
        elif in_place:
            func = getattr(torch, key, None) or getattr(F, key)
        elif _has_inplace_positional(func, args):
            args, kwargs = _outplace(func, args, kwargs)
        others, kw = args[1:], _without(kwargs, "input")
        out = _IdentityRule.apply(x, lambda t: func(t, *others, **kw))
        if in_place:
            x.copy_(out)
            out = x
        strength = 2 if key in STRONG_GATES else 1 if key in WEAK_GATES else 0
        if strength:
            out._spray_gate = strength
        return out

    def _norm(self, func, key, in_place, args, kwargs, acts):
        names = {"layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
                 "group_norm": ("input", "num_groups", "weight", "bias", "eps"),
                 "rms_norm": ("input", "normalized_shape", "weight", "eps"),
                 "normalize": ("input", "p", "dim", "eps")}[key]
        bound = dict(zip(names, args))
        bound.update(kwargs)
        x = bound["input"]
        params = [bound.get(n) for n in ("weight", "bias")]
        if not x.requires_grad or any(isinstance(p, Tensor) and p.requires_grad for p in params):
            raise self._problem(key, "with activations as its scale or shift", "map a kind to it: by_op: "
                                f"{{{key}: gradient}}")
        if key == "normalize":
            p, dim, eps = bound.get("p", 2.0), bound.get("dim", 1), bound.get("eps", 1e-12)
            denom = x.detach().norm(p, dim, keepdim=True).clamp_min(eps).expand_as(x)
            return x / denom
        weight, bias = bound.get("weight"), bound.get("bias")
        if key == "group_norm":
            groups, eps = bound["num_groups"], bound.get("eps", 1e-5)
            n, c = x.shape[:2]
            hw = x[0, 0].numel()

            def compute(t):
                out, _, rstd = torch.native_group_norm(t.contiguous(), weight, bias, n, c, hw, groups, eps)
                return out, rstd[:, :, None], (n, groups, -1)
            view = lambda g: weight.reshape((1, c) + (1,) * (g.ndim - 2))  # noqa: E731
            return _NormFunction.apply(x, _Norm(weight, view, compute), True)
        shape = tuple(bound["normalized_shape"])
        k = len(shape)
        lead = x.shape[:x.ndim - k]
        view = lambda g: weight  # noqa: E731  (broadcasts over the trailing dims)
        if key == "layer_norm":
            eps = bound.get("eps", 1e-5)

            def compute(t):
                out, _, rstd = torch.native_layer_norm(t, shape, weight, bias, eps)
                return out, rstd.reshape(lead + (1,)), lead + (-1,)
            return _NormFunction.apply(x, _Norm(weight, view, compute), True)
        eps = bound.get("eps")
        eps = torch.finfo(x.dtype).eps if eps is None else eps

        def compute(t):
            out = func(t, shape, weight, eps)
            rstd = t.pow(2).mean(tuple(range(t.ndim - k, t.ndim))).add(eps).rsqrt()
            return out, rstd.reshape(lead + (1,)), lead + (-1,)
        return _NormFunction.apply(x, _Norm(weight, view, compute), False)

    def _layer(self, func, key, in_place, args, kwargs, acts):
        names = ("input", "weight", "bias") + (("stride", "padding", "dilation", "groups") if key != "linear" else ())
        bound = dict(zip(names, args))
        bound.update(kwargs)
        x, weight, bias = bound["input"], bound["weight"], bound.get("bias")
        if not (isinstance(x, Tensor) and x.requires_grad) or weight.requires_grad or \
                (bias is not None and bias.requires_grad):
            raise self._problem(key, "with weights computed from activations (a dynamic layer)",
                                f"map a kind to it: by_op: {{{key}: uniform}}")
        path, module = self.where()
        first = bool(getattr(x, "_spray_input", False))
        if key == "linear":
            cache_key = (id(weight), id(bias), key)
            make = lambda: DenseOp(None, weight, bias)  # noqa: E731
        else:
            stride, padding = bound.get("stride", 1), bound.get("padding", 0)
            dilation, groups = bound.get("dilation", 1), bound.get("groups", 1)
            cache_key = (id(weight), id(bias), key, _hashable(stride), _hashable(padding), _hashable(dilation), groups)
            make = lambda: FunctionalConvOp(_CONV[key], weight, bias, stride, padding, dilation, groups)  # noqa: E731
        if not isinstance(weight, nn.Parameter):  # computed in forward (weight standardisation): new each call
            op = make()
        else:  # a parameter: its op (and the rule's modified weights) are reused across batches
            hit = self._ops.get(cache_key)
            if hit is None or hit[0]() is not weight:
                op = make()
                self._ops[cache_key] = (weakref.ref(weight), op)
            else:
                op = hit[1]
        out, terminal = self.make_layer(x, op, path, module, "conv" if key != "linear" else "linear", first)
        if terminal:
            self.terminal_applied = True
        return out

    def _attention(self, func, key, in_place, args, kwargs, acts):
        if key == "multi_head_attention_forward":
            # torch's own code, its operations routed one by one: bitwise what the model computes
            with self:
                return _undispatched(func)(*args, **kwargs)
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        b = dict(zip(names, args))
        b.update(kwargs)
        q, k, v = b.pop("query"), b.pop("key"), b.pop("value")
        if b.get("enable_gqa"):
            raise self._problem(key, "with enable_gqa=True", "not supported")
        if b.get("dropout_p"):
            raise self._problem(key, f"with dropout_p={b['dropout_p']} in eval mode (a random output)",
                                "pass dropout_p=0 when the model is not training")
        mask = b.get("attn_mask")
        if isinstance(mask, Tensor) and mask.requires_grad:
            raise self._problem(key, "with a mask computed from activations", "not supported")
        attnlrp = KIND_ALIASES.get(self.composite.op_kinds.get("softmax", "cp")) == "gradient"
        return _AttentionFunction.apply(q, k, v, b, attnlrp)

def _uniform(out: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """The uniform split of a product of two activations (a constant operand gets nothing)."""
    if a.requires_grad and b.requires_grad and out.requires_grad:
        return _ScaleGradient.apply(out, 0.5)
    return out


def flat_tensors(tree) -> list:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, Tensor)]


def _tag(out, acts, input_tag: bool = False) -> None:
    gate = max((getattr(t, "_spray_gate", 0) for t in acts), default=0)
    is_input = input_tag and any(getattr(t, "_spray_input", False) for t in acts)
    if not (gate or is_input):
        return
    for t in flat_tensors(out):
        if gate:
            t._spray_gate = gate
        if is_input:
            t._spray_input = True


def _gate_strength(t: Tensor) -> int:
    return getattr(t, "_spray_gate", 0)


def _pick_gate(a: Tensor, b: Tensor) -> Optional[int]:
    """0: ``a`` gates ``b``; 1: ``b`` gates ``a``; None: no gate (uniform split)."""
    ga, gb = _gate_strength(a), _gate_strength(b)
    if ga != gb:
        return 0 if ga > gb else 1
    if a.numel() != b.numel():
        return 0 if a.numel() < b.numel() else 1
    return None


def _without(kwargs: dict, *names) -> dict:
    return {k: v for k, v in kwargs.items() if k not in names}


def _arg(func, args, kwargs, name, index, default):
    if name in kwargs:
        return kwargs[name]
    return args[index] if len(args) > index else default


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


_SIGNATURES: Dict[object, Optional[inspect.Signature]] = {}


def _signature(func):
    if func not in _SIGNATURES:
        try:
            _SIGNATURES[func] = inspect.signature(func)
        except (TypeError, ValueError):
            _SIGNATURES[func] = None
    return _SIGNATURES[func]


def _has_inplace_positional(func, args) -> bool:
    sig = _signature(func)
    return sig is not None and "inplace" in sig.parameters and len(args) > list(sig.parameters).index("inplace")


def _outplace(func, args, kwargs):
    sig = _signature(func)
    bound = sig.bind(*args, **kwargs)
    bound.arguments["inplace"] = False
    return bound.args, bound.kwargs


class Kept:
    """A tensor a rule reads in backward, kept as a detached alias (its memory can be let go as soon
    as the rule has read it) and guarded against in-place changes: :func:`protect` replaces the
    alias by a copy before a routed in-place operation, and :meth:`take` names any other change."""

    __slots__ = ("tensor", "version")

    def __init__(self, t: Tensor):
        self.tensor, self.version = t.detach(), t._version

    def take(self, what: str) -> Tensor:
        t, self.tensor = self.tensor, None
        if t is None:
            raise RuntimeError(f"spray.lrp: backward ran twice through {what} (retain_graph); an attached LRP "
                               f"composite supports one backward pass per forward: run the forward again, or close "
                               f"the LRP object (lrp.close()) before differentiating the model yourself")
        if t._version != self.version:
            raise RuntimeError(f"spray.lrp: a tensor that {what} reads in backward was modified in place after "
                               f"the forward pass (through a view spray cannot see), so its relevance would be "
                               f"wrong; make that operation out-of-place")
        return t

    def rekeep(self) -> None:
        if self.tensor is not None:
            self.tensor = self.tensor.clone()
            self.version = self.tensor._version


def keep(t: Tensor) -> Kept:
    kept = Kept(t)
    keepers = getattr(t, "_spray_keepers", None)
    if keepers is None:
        keepers = t._spray_keepers = []
    keepers.append(kept)
    return kept
