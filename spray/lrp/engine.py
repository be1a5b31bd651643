"""The LRP engine: rules attached to a model as custom autograd functions, one backward pass.

What flows backward is a modified gradient ``g`` with relevance ``R_a = a * g`` at every tensor
``a``. In that form plain autograd already does the right thing for max pooling (winner takes all),
flattening, ReLU and LeakyReLU (pass-through), and linear functional ops (LRP-0), so only layers with
a rule need code: each conv/dense/average-pool/sum layer is replaced, for the lifetime of an
:class:`LRP` object, by an autograd function that runs the layer *and the activation that alone
consumes its output*, saves what the rule needs (usually just that output, the same tensor the
gradient pass would save), and in backward hands the rule ``R = f(z) * g``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError, UnsupportedModelError
from .canonizers import Canonization, Sum
from .composites import (
    ACTIVATION_TYPES,
    AVGPOOL_TYPES,
    BATCHNORM_TYPES,
    CONV_TYPES,
    DENSE_TYPES,
    LINEAR_TYPES,
    Composite,
    get_composite,
)
from .graph import Graph, probe
from .ops import AffineOp, ConvOp, DenseOp, LinearOp, PoolOp
from .rules import Epsilon, Pass, Relevance, Rule

MAXPOOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                 nn.AdaptiveMaxPool3d)
TRANSPARENT_TYPES = (nn.Identity, nn.Sequential, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
FLATTEN_TYPES = (nn.Flatten, nn.Unflatten)
GRADIENT_EXACT_ACTIVATIONS = (nn.ReLU, nn.LeakyReLU)
SUPPORTED = (LINEAR_TYPES + AVGPOOL_TYPES + BATCHNORM_TYPES + ACTIVATION_TYPES + MAXPOOL_TYPES
             + TRANSPARENT_TYPES + FLATTEN_TYPES + (Sum,))


@dataclass
class LayerConservation:
    """Relevance entering a layer from above and leaving it below, per sample."""

    path: str
    rule: str
    relevance_out: np.ndarray
    relevance_in: np.ndarray


@dataclass
class ConservationReport:
    """Per-layer relevance in/out (top to bottom), input total and the explained logit, per sample."""

    layers: List[LayerConservation]
    input_total: np.ndarray
    explained_logit: np.ndarray

    def to_text(self) -> str:
        lines = [f"{'layer':40s} {'rule':28s} {'R out':>12s} {'R in':>12s} {'in/out':>8s}"]
        for layer in self.layers:
            out, inn = layer.relevance_out.mean(), layer.relevance_in.mean()
            ratio = inn / out if out else float("nan")
            lines.append(f"{layer.path:40.40s} {layer.rule:28.28s} {out:12.5g} {inn:12.5g} {ratio:8.4f}")
        lines.append(f"input total {self.input_total.mean():.6g} vs explained logit {self.explained_logit.mean():.6g}"
                     " (batch means)")
        return "\n".join(lines)


@dataclass
class Explanation:
    relevance: Tensor
    logits: Tensor
    target: Tensor
    conservation: Optional[ConservationReport] = None


@dataclass(eq=False)
class _Node:
    path: str
    module: nn.Module
    rule: Rule
    op: Optional[LinearOp] = None
    activation: Optional[nn.Module] = None
    activation_fn: Optional[Callable[[Tensor], Tensor]] = None
    activation_is_relu: bool = False
    save_input: bool = True
    records: Optional[list] = None

    def activate(self, z: Tensor) -> Tensor:
        return z if self.activation_fn is None else self.activation_fn(z)

    def record(self, relevance_out: np.ndarray, relevance_in: Tensor) -> None:
        """``relevance_out`` is summed before the rule runs: rules overwrite their temporaries."""
        self.records.append(LayerConservation(self.path, self.rule.describe(), relevance_out,
                                              _per_sample(relevance_in)))


def _per_sample(t: Tensor) -> np.ndarray:
    return t.detach().flatten(1).sum(1).double().cpu().numpy()


class _LayerFunction(torch.autograd.Function):
    """A linear layer (plus its fused activation) whose backward applies the layer's rule."""

    @staticmethod
    def forward(ctx, x, node: _Node):
        op = node.op
        z = op.forward(x, op.weight, op.bias)
        out = z.relu_() if node.activation_is_relu else node.activate(z)  # z is ours: ReLU in place
        ctx.node, ctx.input_shape = node, x.shape
        z_kept = None if (node.activation is None or node.activation_is_relu) else z
        ctx.save_for_backward(x if node.save_input else None, z_kept)
        _stash_output(ctx, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        node = ctx.node
        x, z = ctx.saved_tensors
        relevance = Relevance(_take_output(ctx), grad, z)
        del z
        out_total = _per_sample(relevance.tensor(keep=True)) if node.records is not None else None
        g_in = node.rule.backward(node.op, x, ctx.input_shape, relevance)
        if node.records is not None:
            node.record(out_total, g_in if node.rule.terminal else x * g_in)
        return g_in, None


class _SumFunction(torch.autograd.Function):
    """An explicit sum (plus its fused activation): proportional split with a stabiliser."""

    @staticmethod
    def forward(ctx, node: _Node, *inputs):
        y = inputs[0]
        for t in inputs[1:]:
            y = y + t
        out = node.activate(y)
        ctx.node = node
        ctx.shapes = [t.shape for t in inputs]
        z_kept = None if (node.activation is None or node.activation_is_relu) else y
        ctx.save_for_backward(z_kept, *(inputs if node.records is not None else ()))
        _stash_output(ctx, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        node = ctx.node
        z, *inputs = ctx.saved_tensors
        relevance = Relevance(_take_output(ctx), grad, z)
        del z
        out_total = _per_sample(relevance.tensor(keep=True)) if node.records is not None else None
        s = relevance.over(relevance.z, node.rule.epsilon, node.activation_is_relu)
        grads = [_reduce_to(s, shape) for shape in ctx.shapes]
        if node.records is not None:
            node.record(out_total, sum(_reduce_to(t * g, t.shape).flatten(1).sum(1, keepdim=True)
                                       for t, g in zip(inputs, grads)))
        return (None, *grads)


def _stash_output(ctx, out: Tensor) -> None:
    """Keep the layer's output for backward as a detached alias rather than a saved tensor.

    A saved tensor lives until the whole backward call returns; the alias is released by
    :func:`_take_output`, so the output's memory is free again before the rule's transposed product
    allocates the input's gradient (the largest moment of the backward pass). The alias shares the
    output's version counter, which stands in for autograd's in-place check.
    """
    ctx.out, ctx.out_version = out.detach(), out._version


def _take_output(ctx) -> Tensor:
    out, ctx.out = ctx.out, None
    if out is None:
        raise RuntimeError(f"spray.lrp: backward ran twice through '{ctx.node.path}' (retain_graph); an attached "
                           f"LRP composite supports one backward pass per forward: run the forward again, or "
                           f"close the LRP object (lrp.close()) before differentiating the model yourself")
    if out._version != ctx.out_version:
        raise RuntimeError(f"spray.lrp: the output of '{ctx.node.path}' was modified in place after the forward "
                           f"pass (an in-place activation or '+='), so its relevance would be wrong; make that "
                           f"operation out-of-place")
    return out


def _reduce_to(t: Tensor, shape) -> Tensor:
    if t.shape == shape:
        return t
    while t.ndim > len(shape):
        t = t.sum(0)
    dims = [i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1]
    return t.sum(dims, keepdim=True) if dims else t


class LRP:
    """Layer-wise Relevance Propagation for a model, reusable across batches.

    The composite is attached on the first call and stays attached until :meth:`close` (or the end
    of a ``with`` block), which restores the model exactly: same parameter objects, same values,
    same forwards, same train/eval flags. Parameters need no gradient and get none.

    >>> with LRP(model, "epsilon_plus_flat") as lrp:
    ...     for x, _ in loader:
    ...         result = lrp.explain(x)          # relevance of x's shape, logits, target
    """

    def __init__(self, model: nn.Module, composite: Union[str, dict, Composite] = "epsilon_plus_flat",
                 **composite_kwargs):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.composite = get_composite(composite, **composite_kwargs)
        self._canon: Optional[Canonization] = None
        self._nodes: List[_Node] = []
        self._terminal_input = False
        self._train_flags: Dict[nn.Module, bool] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "LRP":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Detach the composite and restore the model exactly as it was."""
        if self._canon is not None:
            self._canon.restore()
            self._canon = None
        for module, flag in self._train_flags.items():
            module.training = flag
        self._train_flags = {}
        self._nodes = []

    @property
    def registered(self) -> bool:
        return self._canon is not None

    # -- explaining ------------------------------------------------------------------------------
    def explain(self, x: Tensor, target=None, *, record: bool = False) -> Explanation:
        """Relevance of ``x`` for ``target`` (None: the predicted class; int; or one per sample).

        Relevance has ``x``'s shape and sums (up to biases and stabilisers) to the explained logit.
        ``record=True`` adds a per-layer conservation report (costs saving every layer input).
        """
        _check_input(x)
        if not self.registered:
            try:
                self._register(x)
            except BaseException:
                self.close()
                raise
        records: Optional[list] = [] if record else None
        for node in self._nodes:
            node.records = records
            node.save_input = node.rule.needs_input or record
        x_leaf = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x_leaf)
            target_t = _resolve_target(target, logits)
            seed = torch.zeros_like(logits).scatter_(1, target_t[:, None], 1.0)
            (grad,) = torch.autograd.grad(logits, x_leaf, seed)
        relevance = grad if self._terminal_input else x_leaf.detach() * grad
        report = None
        if record:
            explained = logits.detach().gather(1, target_t[:, None])[:, 0]
            report = ConservationReport(records, _per_sample(relevance), explained.double().cpu().numpy())
            for node in self._nodes:
                node.records = None
        return Explanation(relevance.detach(), logits.detach(), target_t, report)

    __call__ = explain

    # -- attaching -------------------------------------------------------------------------------
    def _register(self, x: Tensor) -> None:
        model = self.model
        canon = self._canon = Canonization(model)
        self._train_flags = {m: m.training for m in model.modules()}
        if model.training:
            warnings.warn("spray.lrp: the model was in train mode; explaining it in eval mode "
                          "(its mode is restored afterwards)", stacklevel=3)
        model.eval()
        for module in model.modules():
            if getattr(module, "inplace", False) is True:
                canon.set_attr(module, "inplace", False)
        canon.canonize_residuals()
        graph = probe(model, x)
        self._attach(graph, canon)

    def _attach(self, graph: Graph, canon: Canonization) -> None:
        calls = graph.calls
        producer = {c.output: c for c in calls if c.output is not None}
        calls_of: Dict[nn.Module, list] = {}
        for c in calls:
            calls_of.setdefault(c.module, []).append(c)

        unsupported = [f"'{c.path}' ({type(c.module).__name__})" for c in calls
                       if not isinstance(c.module, SUPPORTED)]
        if unsupported:
            raise UnsupportedModelError(
                "no LRP rule for these layers: " + ", ".join(dict.fromkeys(unsupported)) +
                ". Supported: conv/linear, batch norm, avg/max pooling, flatten, dropout, identity, "
                "ReLU/LeakyReLU/ELU/Tanh/Sigmoid/SiLU/GELU/Softplus and spray.lrp.Sum. Replace the layer, or "
                "express it with supported modules; a composite's by_name/by_type maps rules only onto these.")

        # batch norms fed by a conv/linear that nothing else reads are folded into it
        folded = set()
        for c in calls:
            if isinstance(c.module, BATCHNORM_TYPES) and len(calls_of[c.module]) == 1 and len(c.inputs) == 1:
                p = producer.get(c.inputs[0])
                if (p is not None and isinstance(p.module, LINEAR_TYPES) and len(calls_of[p.module]) == 1
                        and [u.call for u in graph.users(c.inputs[0])] == [c]):
                    canon.fold_batch_norm(p.module, c.module)
                    folded.add(c.module)
        transparent = lambda m: isinstance(m, TRANSPARENT_TYPES) or m in folded  # noqa: E731

        def resolve(tensor_id, through=transparent):
            """Follow a tensor through identity-like modules (``through``), which pass it on unchanged."""
            while True:
                users = graph.users(tensor_id)
                if len(users) == 1 and users[0].call is not None and through(users[0].call.module) \
                        and users[0].call.output is not None:
                    tensor_id = users[0].call.output
                else:
                    return tensor_id, users

        def nonnegative(tensor_id, depth=0) -> bool:
            """The tensor is a ReLU output, possibly pooled, flattened or passed through identities."""
            p = producer.get(tensor_id)
            if p is None or depth > 50:
                return False
            if isinstance(p.module, nn.ReLU) or (fused.get(p.module) is not None
                                                  and isinstance(fused[p.module], nn.ReLU)):
                return True
            if isinstance(p.module, MAXPOOL_TYPES + AVGPOOL_TYPES + FLATTEN_TYPES + TRANSPARENT_TYPES) \
                    and fused.get(p.module) is None and len(p.inputs) == 1:
                return nonnegative(p.inputs[0], depth + 1)
            return False

        is_node = lambda m: isinstance(m, LINEAR_TYPES + AVGPOOL_TYPES + (Sum,)) or (  # noqa: E731
            isinstance(m, BATCHNORM_TYPES) and m not in folded)
        first_linear = next((c.module for c in calls if isinstance(c.module, LINEAR_TYPES)), None)

        # which activation alone consumes each producer's output (the same one on every call)
        fused: Dict[nn.Module, Optional[nn.Module]] = {}
        for c in calls:
            if not is_node(c.module) or c.output is None:
                continue
            _, users = resolve(c.output)
            act = users[0].call.module if (len(users) == 1 and users[0].call is not None
                                           and isinstance(users[0].call.module, ACTIVATION_TYPES)) else None
            if c.module in fused and fused[c.module] is not act:
                act = None
            fused[c.module] = act
        fused_acts = {a for a in fused.values() if a is not None}

        problems = []
        for c in calls:
            if isinstance(c.module, ACTIVATION_TYPES) and not isinstance(c.module, GRADIENT_EXACT_ACTIVATIONS):
                src = producer.get(c.inputs[0]) if c.inputs else None
                src_ok = src is not None and fused.get(src.module) is c.module
                if not src_ok:
                    problems.append(
                        f"activation '{c.path}' ({type(c.module).__name__}) does not directly and solely follow a "
                        f"conv/linear/sum/avg-pool layer, so its relevance cannot be passed through exactly "
                        f"(only ReLU and LeakyReLU can stand anywhere)")
            rule = self.composite.rule_for(c.path, c.module, c.module is first_linear)
            if isinstance(c.module, ACTIVATION_TYPES) and rule is not None and not isinstance(rule, Pass):
                problems.append(f"activation '{c.path}' is mapped to {rule!r}; activations take the pass rule")
        if problems:
            raise UnsupportedModelError("cannot explain this model faithfully:\n  - " + "\n  - ".join(problems))

        # build nodes
        nodes: Dict[nn.Module, _Node] = {}
        for c in calls:
            m = c.module
            if not is_node(m) or m in nodes:
                continue
            rule = self.composite.rule_for(c.path, m, m is first_linear)
            if rule is None and isinstance(m, BATCHNORM_TYPES):
                rule = Epsilon(1e-6)
            if rule is None:
                raise UnsupportedModelError(
                    f"the composite {self.composite.name!r} gives no rule to '{c.path}' ({type(m).__name__}); "
                    f"add one with by_name: {{'{c.path}': epsilon}} or by_type: {{{type(m).__name__}: epsilon}}")
            if isinstance(m, Sum) and not isinstance(rule, Epsilon):
                raise UnsupportedModelError(
                    f"'{c.path}' is a sum; it takes the norm or epsilon rule, not {rule!r}")
            if rule.terminal:
                tid, users = resolve(graph.input_id,
                                     lambda m: transparent(m) or isinstance(m, FLATTEN_TYPES))
                if c.inputs != [tid] or len(users) != 1:
                    raise UnsupportedModelError(
                        f"rule {rule!r} on '{c.path}' is an input-layer rule (flat, w-square and zB give relevance "
                        f"that does not factor through the layer's input); spray applies it only to the layer that "
                        f"alone reads the model input. Map it to that layer, or use epsilon/z+/gamma here")
                self._terminal_input = True
            if isinstance(m, CONV_TYPES):
                op = ConvOp(m)
            elif isinstance(m, DENSE_TYPES):
                op = DenseOp(m)
            elif isinstance(m, AVGPOOL_TYPES):
                op = PoolOp(m, m.forward)
            elif isinstance(m, BATCHNORM_TYPES):
                op = AffineOp(m)
            else:
                op = None
            act = fused.get(m)
            if op is not None:
                op.output_nonnegative = isinstance(act, nn.ReLU)
                op.input_nonnegative = all(nonnegative(i) for i in c.inputs)
            nodes[m] = _Node(c.path, m, rule, op, act, act.forward if act is not None else None,
                             isinstance(act, nn.ReLU))
        # install
        for m in list(folded) + [c.module for c in calls if isinstance(c.module, TRANSPARENT_TYPES)]:
            if "forward" not in m.__dict__:
                canon.set_identity(m)
        for act in fused_acts:
            canon.override_forward(act, _fused_activation_forward(act.forward))
        for m, node in nodes.items():
            canon.override_forward(m, _sum_forward(node) if isinstance(m, Sum) else _layer_forward(node))
        self._nodes = list(nodes.values())


def _layer_forward(node: _Node):
    def forward(self, x):
        out = _LayerFunction.apply(x, node)
        if node.activation is not None:
            out._spray_activated_by = node.activation
        return out
    return forward


def _sum_forward(node: _Node):
    def forward(self, *inputs):
        out = _SumFunction.apply(node, *inputs)
        if node.activation is not None:
            out._spray_activated_by = node.activation
        return out
    return forward


def _fused_activation_forward(original: Callable[[Tensor], Tensor]):
    def forward(self, x):
        if getattr(x, "_spray_activated_by", None) is self:
            return x
        return original(x)
    return forward


def _check_input(x) -> None:
    if not isinstance(x, Tensor):
        raise InputError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(f"input must be a floating-point tensor, got dtype {x.dtype}; convert images with "
                         f"x.float() / 255 and the model's normalisation")
    if x.ndim < 2 or x.shape[0] == 0:
        raise InputError(f"input must be a non-empty batch (N, ...), got shape {tuple(x.shape)}")
    finite = torch.isfinite(x.detach()).flatten(1).all(1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise InputError(f"input contains NaN or Inf in batch rows {bad[:20]}{' ...' if len(bad) > 20 else ''}; "
                         f"fix or drop those samples")


def _resolve_target(target, logits: Tensor) -> Tensor:
    n, classes = logits.shape
    if target is None:
        return logits.detach().argmax(1)
    t = torch.as_tensor(target, device=logits.device)
    if t.is_floating_point():
        raise InputError(f"target must be integer class indices, got dtype {t.dtype}")
    t = t.long()
    if t.ndim == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise InputError(f"target must be None, an int, or one class index per sample (shape ({n},)); "
                         f"got shape {tuple(t.shape)}")
    bad = ((t < 0) | (t >= classes)).nonzero().flatten().tolist()
    if bad:
        raise InputError(f"target out of range for {classes} classes at batch rows {bad[:20]} "
                         f"(values {t[bad[:20]].tolist()}); classes are 0..{classes - 1}")
    return t


def explain(model: nn.Module, x: Tensor, target=None, composite: Union[str, dict, Composite] = "epsilon_plus_flat",
            *, method: str = "lrp", **kwargs) -> Tensor:
    """Relevance of ``x`` (same shape) for ``target``: None = predicted class, an int, or one per sample.

    ``method="lrp"`` (default) uses ``composite`` (a preset name, a mapping or a Composite; ``kwargs``
    go to the preset). The cross-checks ``"gradient"``, ``"gradient_x_input"``,
    ``"integrated_gradients"`` (``steps``, ``baseline``, ``batch_size``) and ``"smoothgrad"``
    (``samples``, ``noise``) take their options as ``kwargs``. The model is restored exactly
    afterwards; for many batches use :class:`LRP`, which attaches once.
    """
    if method != "lrp":
        from .attribution import METHODS
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose 'lrp' or one of {', '.join(METHODS)}")
        return METHODS[method](model, x, target, **kwargs)
    with LRP(model, composite, **kwargs) as lrp:
        return lrp.explain(x, target).relevance
