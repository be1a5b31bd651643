"""The LRP engine: rules attached to a model as custom autograd functions, one backward pass.

What flows backward is a modified gradient ``g`` with relevance ``R_a = a * g`` at every tensor
``a``. In that form plain autograd already does the right thing for max pooling (winner takes all),
flattening, ReLU and LeakyReLU (pass-through), and linear functional ops (LRP-0), so only layers with
a rule need code. Two paths attach them:

* the fast path: plain conv/dense/average-pool/batch-norm/sum modules (whose forward is the base
  class's own) are replaced, for the lifetime of an :class:`LRP` object, by an autograd function
  that runs the layer *and the activation that alone consumes its output*, saves what the rule
  needs (usually just that output, the same tensor the gradient pass would save), and in backward
  hands the rule ``R = f(z) * g``; batch norms are folded into the layer before them;
* everything else is ruled per operation: during the forward a TorchFunctionMode
  (:mod:`spray.lrp.router`) routes each torch operation on activations by the rule table
  (:mod:`spray.lrp.operations`).

Every attach ends with a self-check: the attached model's logits must equal the plain forward's
(relative 1e-5), or a named error says which module diverged.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

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
from .graph import Graph, probe, require_tensor_output
from .ops import AffineOp, ConvOp, DenseOp, LinearOp, PoolOp
from .router import Kept, Router, keep
from .rules import Epsilon, Pass, Relevance, Rule

MAXPOOL_TYPES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                 nn.AdaptiveMaxPool3d)
TRANSPARENT_TYPES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
FLATTEN_TYPES = (nn.Flatten, nn.Unflatten)
GATE_ACTIVATIONS = (nn.Sigmoid, nn.Tanh)
#: modules whose own (base-class) forward the fast path knows: replaced, fused or left to autograd
FAST_TYPES = (LINEAR_TYPES + AVGPOOL_TYPES + BATCHNORM_TYPES + ACTIVATION_TYPES + MAXPOOL_TYPES
              + TRANSPARENT_TYPES + FLATTEN_TYPES + (Sum,))
#: relative tolerance of the attach-time self-check: max abs logit difference between the attached
#: model and the model's own forward (with gradients on, as LRP runs it), over the max abs logit.
#: The attached forward computes every value with the model's own kernels (batch norms are folded
#: for the rules only, attention runs the fused kernel the model calls), so the difference is 0,
#: bitwise, on every model of the coverage benchmark; in half precision a few rounding units are
#: allowed. The divergences the check exists for (a layer computed as something else) are 1e-2 to 1.
SELF_CHECK_RTOL = 1e-5


def _self_check_tolerance(dtype: torch.dtype) -> float:
    return max(SELF_CHECK_RTOL, 4 * torch.finfo(dtype).eps)


def is_fast(module: nn.Module) -> bool:
    """A leaf module of a fast-path type whose forward is its base class's own (not a subclass that
    computes something else, such as a weight-standardised or "same"-padded conv)."""
    if "forward" in module.__dict__ or module._modules:
        return False
    for base in FAST_TYPES:
        if isinstance(module, base):
            if type(module).forward is not base.forward:
                return False
            if isinstance(module, CONV_TYPES) and type(module)._conv_forward is not base._conv_forward:
                return False
            if isinstance(module, BATCHNORM_TYPES) and module.running_var is None:
                return False
            return True
    return False


def _passes_input(module: nn.Module) -> bool:
    return isinstance(module, TRANSPARENT_TYPES + FLATTEN_TYPES)


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
        z = op.exact(x)
        out = z.relu_() if node.activation_is_relu else node.activate(z)  # z is ours: ReLU in place
        ctx.node, ctx.input_shape = node, x.shape
        z_kept = None if (node.activation is None or node.activation_is_relu) else z
        ctx.x = keep(x) if node.save_input else None
        ratio = node.rule.output_ratio(node.op, out, z_kept) if z_kept is not None and node.records is None else None
        if ratio is not None:
            ctx.ratio, ctx.out = Kept(ratio), None  # one tensor kept, not out and z
            return out
        ctx.save_for_backward(z_kept)
        ctx.out = keep(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        node = ctx.node
        if ctx.out is None:
            ratio = ctx.ratio.take(f"'{node.path}'")
            return node.rule.backward_from_ratio(node.op, ratio, grad, ctx.input_shape), None
        (z,) = ctx.saved_tensors
        x = ctx.x.take(f"'{node.path}'") if ctx.x is not None else None
        relevance = Relevance(ctx.out.take(f"'{node.path}'"), grad, z)
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
        ctx.out = keep(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        node = ctx.node
        z, *inputs = ctx.saved_tensors
        relevance = Relevance(ctx.out.take(f"'{node.path}'"), grad, z)
        del z
        out_total = _per_sample(relevance.tensor(keep=True)) if node.records is not None else None
        s = relevance.over(relevance.z, node.rule.epsilon, node.activation_is_relu)
        grads = [_reduce_to(s, shape) for shape in ctx.shapes]
        if node.records is not None:
            node.record(out_total, sum(_reduce_to(t * g, t.shape).flatten(1).sum(1, keepdim=True)
                                       for t, g in zip(inputs, grads)))
        return (None, *grads)


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
    same forwards, same train/eval flags and ``requires_grad`` flags, no hooks left. Parameters need
    no gradient and get none.

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
        self._first_op_allowed = False
        self._train_flags: Dict[nn.Module, bool] = {}
        self._grad_flags: List[tuple] = []
        self._hooks: list = []
        self._router: Optional[Router] = None
        self._records: Optional[list] = None
        self._fingerprints: Optional[list] = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "LRP":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Detach the composite and restore the model exactly as it was."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        if self._canon is not None:
            self._canon.restore()
            self._canon = None
        for module, flag in self._train_flags.items():
            module.training = flag
        for p, flag in self._grad_flags:
            p.requires_grad_(flag)
        self._train_flags, self._grad_flags = {}, []
        self._nodes = []
        self._router = None

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
        self._set_records(records)
        logits, x_leaf, terminal = self._forward(x)
        with torch.enable_grad():
            target_t = _resolve_target(target, logits)
            seed = torch.zeros_like(logits).scatter_(1, target_t[:, None], 1.0)
            (grad,) = torch.autograd.grad(logits, x_leaf, seed)
        relevance = grad if terminal else x_leaf.detach() * grad
        bad = ~torch.isfinite(relevance.detach()).flatten(1).all(1)
        if bool(bad.any()):
            rows = torch.nonzero(bad).flatten().tolist()
            raise FloatingPointError(
                f"spray.lrp: relevance is not finite (NaN/Inf) for batch rows {rows[:20]} with composite "
                f"{self.composite.name!r}; a rule divided by a zero denominator (epsilon=0 or stabilizer=0), or "
                f"the model overflows in {x.dtype}: use epsilon > 0 or float32/float64")
        report = None
        if record:
            explained = logits.detach().gather(1, target_t[:, None])[:, 0]
            report = ConservationReport(records, _per_sample(relevance), explained.double().cpu().numpy())
            self._set_records(None)
        return Explanation(relevance.detach(), logits.detach(), target_t, report)

    __call__ = explain

    def _set_records(self, records: Optional[list]) -> None:
        self._records = records
        for node in self._nodes:
            node.records = records
            node.save_input = node.rule.needs_input or records is not None

    def _forward(self, x: Tensor):
        """The attached model's forward with the router active: (logits, input leaf, terminal)."""
        x_leaf = x.detach().requires_grad_(True)
        x_leaf._spray_input = True
        router = self._router
        router.terminal_applied = False
        try:
            with torch.enable_grad(), router:
                logits = self.model(x_leaf)
        finally:
            router.stack.clear()
        return logits, x_leaf, self._terminal_input or router.terminal_applied

    # -- attaching -------------------------------------------------------------------------------
    def _register(self, x: Tensor) -> None:
        model = self.model
        self._train_flags = {m: m.training for m in model.modules()}
        if model.training:
            warnings.warn("spray.lrp: the model was in train mode; explaining it in eval mode "
                          "(its mode is restored afterwards)", stacklevel=3)
        model.eval()
        self._grad_flags = [(p, p.requires_grad) for p in model.parameters()]
        for p, _ in self._grad_flags:
            p.requires_grad_(False)
        reference = _fingerprinted_forward(model, x[:1])
        canon = self._canon = Canonization(model)
        for module in model.modules():
            if getattr(module, "inplace", False) is True:
                canon.set_attr(module, "inplace", False)
        canon.canonize_residuals()
        graph = probe(model, x, Router(self.composite, _plain_layer, probe=True), is_fast, _passes_input)
        self._attach(graph, canon)
        self._router = Router(self.composite, self._op_layer)
        self._install_stack_hooks()
        graph.release()
        self._self_check(x[:1], reference)

    def _install_stack_hooks(self) -> None:
        """Module path stack for the router (by_name rules and error messages) and the self-check."""
        router = self._router
        for path, module in self.model.named_modules():
            entry = (path or "<model>", module)

            def pre(m, inputs, entry=entry):
                router.stack.append(entry)

            def post(m, inputs, output, entry=entry):
                router.stack.pop()
                if self._fingerprints is not None:
                    with torch._C.DisableTorchFunction():
                        self._fingerprints.append((entry[0], _fingerprint(output)))
            self._hooks.append(module.register_forward_pre_hook(pre))
            self._hooks.append(module.register_forward_hook(post))

    def _op_layer(self, x: Tensor, op: LinearOp, path: str, module, family: str, first: bool):
        """A functional conv/linear met by the router: run it as a layer with the composite's rule."""
        first = first and self._first_op_allowed
        rule = self.composite.rule_for_op(path, module, family, first)
        if rule is None:
            raise UnsupportedModelError(
                f"the composite {self.composite.name!r} gives no rule to the functional {family} in '{path}' "
                f"({type(module).__name__}); add one with by_op: {{{family}: epsilon}} or by_name: {{'{path}': epsilon}}")
        if rule.terminal and not first:
            raise UnsupportedModelError(_terminal_message(rule, f"the functional {family} in '{path}'"))
        node = _Node(f"{path}:{family}", module, rule, op, records=self._records,
                     save_input=rule.needs_input or self._records is not None)
        return _LayerFunction.apply(x, node), rule.terminal

    def _self_check(self, x1: Tensor, reference) -> None:
        """The attached model's logits must equal the plain forward's, or name the module that diverged."""
        ref_logits, ref_prints = reference
        tolerance = _self_check_tolerance(ref_logits.dtype)
        self._fingerprints = []
        try:
            logits = self._forward(x1)[0]
        finally:
            prints, self._fingerprints = self._fingerprints, None
        if not logits.requires_grad:
            raise UnsupportedModelError(
                "the model's output carries no relevance under the composite's rules: every path from the input "
                "ends in an operation treated as a constant (e.g. a final softmax, whose weights CP-LRP holds "
                "constant). Explain the logits (drop the softmax), or use by_op: {softmax: attnlrp}")
        logits = logits.detach()
        scale = ref_logits.abs().max().item()
        error = (logits - ref_logits).abs().max().item()
        #: measured relative difference of the attach-time self-check (0.0: bitwise equal)
        self.self_check_error_ = _relative_error(logits, ref_logits)
        if self.self_check_error_ <= tolerance:
            return
        # a fused activation's or a folded batch norm's output is its layer's
        skip = {n.path for n in self._nodes if n.activation is not None or (n.op is not None and n.op.batch_norm)}
        diverged = "an operation outside any module"
        ref_by_order = [(p, v) for p, v in ref_prints if p not in skip]
        got_by_order = [(p, v) for p, v in prints if p not in skip]
        for (path, want), (path2, got) in zip(ref_by_order, got_by_order):
            if path != path2:
                diverged = f"'{path}' (the attached model's modules ran in another order from here on)"
                break
            if not _close(want, got):
                module = dict(self.model.named_modules()).get(path if path != "<model>" else "")
                diverged = f"'{path}' ({type(module).__name__})"
                break
        raise UnsupportedModelError(
            f"self-check failed: the attached model's logits differ from the model's own (max abs difference "
            f"{error:.3g} for logits up to {scale:.3g}); the first module whose output differs is {diverged}. spray "
            f"refuses to explain a model it would compute differently; please report the model")

    def _attach(self, graph: Graph, canon: Canonization) -> None:
        """Fold (for the rules), fuse and install the fast path."""
        calls = graph.calls
        producer = {c.output: c for c in calls if c.output is not None}
        calls_of: Dict[nn.Module, list] = {}
        for c in calls:
            calls_of.setdefault(c.module, []).append(c)

        # batch norms fed by a conv/linear that nothing else reads are folded into it (for the rules; the
        # layer's forward runs the batch norm's own kernel after its own, and the batch norm passes it on)
        fold_into: Dict[nn.Module, nn.Module] = {}
        for c in calls:
            if isinstance(c.module, BATCHNORM_TYPES) and len(calls_of[c.module]) == 1 and len(c.inputs) == 1:
                p = producer.get(c.inputs[0])
                if (p is not None and isinstance(p.module, LINEAR_TYPES) and len(calls_of[p.module]) == 1
                        and (isinstance(p.module, CONV_TYPES) or p.output_ndim == 2)  # channels on dim 1
                        and [u.call for u in graph.users(c.inputs[0])] == [c] and c.inputs[0] not in graph.mutated):
                    fold_into[p.module] = c.module
        folded = set(fold_into.values())
        transparent = lambda m: isinstance(m, TRANSPARENT_TYPES) or m in folded  # noqa: E731
        for m in folded:
            canon.set_identity(m)

        def resolve(tensor_id, through=transparent):
            """Follow a tensor through identity-like modules (``through``), which pass it on unchanged."""
            seen = {tensor_id}
            while True:
                users = graph.users(tensor_id)
                if len(users) == 1 and users[0].call is not None and through(users[0].call.module) \
                        and users[0].call.output is not None and users[0].call.output not in seen:
                    tensor_id = users[0].call.output
                    seen.add(tensor_id)
                else:
                    return tensor_id, users

        def nonnegative(tensor_id) -> bool:
            """The tensor is a ReLU output, possibly pooled, flattened or passed through identities."""
            for _ in range(50):  # a loop, not a recursive closure: that would be a reference cycle holding the graph
                p = producer.get(tensor_id)
                if p is None or tensor_id in graph.mutated:
                    return False
                if isinstance(p.module, nn.ReLU) or (fused.get(p.module) is not None
                                                      and isinstance(fused[p.module], nn.ReLU)):
                    return True
                if not (isinstance(p.module, MAXPOOL_TYPES + AVGPOOL_TYPES + FLATTEN_TYPES + TRANSPARENT_TYPES)
                        and fused.get(p.module) is None and len(p.inputs) == 1):
                    return False
                tensor_id = p.inputs[0]
            return False

        is_node = lambda m: isinstance(m, LINEAR_TYPES + AVGPOOL_TYPES + (Sum,)) or (  # noqa: E731
            isinstance(m, BATCHNORM_TYPES) and m not in folded)
        # the conv/linear layers that read the model input get the first rule; several parallel readers
        # (a multi-branch stem) only if every reader is one: their input relevances then simply add up
        all_linear = bool(graph.input_readers) and all(graph.input_reader_is_layer)
        first_layers = {m for m in graph.input_modules if isinstance(m, LINEAR_TYPES)} if all_linear else set()
        terminal_first = any(r.terminal for _, r in self.composite.first_map)
        if len(graph.input_readers) > 1 and terminal_first and not all_linear:
            raise UnsupportedModelError(
                f"the model input is read by {len(graph.input_readers)} layers/operations "
                f"({'; '.join(graph.input_readers[:6])}), not all of them conv/linear; the composite "
                f"{self.composite.name!r} puts an input-layer rule (flat, w-square, zB) on the layers that read the "
                f"input. Use a composite without a first rule (e.g. epsilon_plus, or first: epsilon)")
        self._first_op_allowed = all_linear

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
            rule = self.composite.rule_for(c.path, c.module, c.module in first_layers)
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
            rule = self.composite.rule_for(c.path, m, m in first_layers)
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
                if m not in first_layers:
                    raise UnsupportedModelError(_terminal_message(rule, f"'{c.path}'"))
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
            if m in fold_into:
                op.fold(fold_into[m])
            if op is not None:
                op.output_nonnegative = isinstance(act, nn.ReLU)
                op.input_nonnegative = all(nonnegative(i) for i in c.inputs)
            nodes[m] = _Node(c.path, m, rule, op, act, act.forward if act is not None else None,
                             isinstance(act, nn.ReLU))
        # install
        for m in [c.module for c in calls if isinstance(c.module, TRANSPARENT_TYPES)]:
            if "forward" not in m.__dict__:
                canon.set_identity(m)
        for act in fused_acts:
            canon.override_forward(act, _fused_activation_forward(act.forward))
        for m, node in nodes.items():
            canon.override_forward(m, _sum_forward(node) if isinstance(m, Sum) else _layer_forward(node))
        self._nodes = list(nodes.values())


def _relative_error(a: Tensor, b: Tensor) -> float:
    error = (a - b).abs().max().item() / max(b.abs().max().item(), 1e-30)
    return error if math.isfinite(error) else float("inf")


def _terminal_message(rule: Rule, where: str) -> str:
    return (f"rule {rule!r} on {where} is an input-layer rule (flat, w-square and zB give relevance that does not "
            f"factor through the layer's input); spray applies it only to the one layer that reads the model input. "
            f"Map it to that layer, or use epsilon/z+/gamma here")


def _plain_layer(x: Tensor, op: LinearOp, path: str, module, family: str, first: bool):
    """The probe's stand-in for :meth:`LRP._op_layer`: the layer's own computation."""
    return op.exact(x), False


def _fingerprint(output) -> float:
    tensors = [t for t in tree_flatten(output)[0] if isinstance(t, Tensor) and t.is_floating_point()]
    return float(sum(t.detach().double().sum().item() for t in tensors)) if tensors else 0.0


def _close(a: float, b: float, rtol: float = 1e-4) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12) or (math.isnan(a) and math.isnan(b))


def _fingerprinted_forward(model: nn.Module, x1: Tensor):
    """The plain model's logits on one sample and a fingerprint (output sum) of every module call.

    Gradients are on and the input requires one, as in the attached forward and in a gradient pass:
    some modules take another code path without autograd (``nn.MultiheadAttention``'s fused
    inference kernel), which computes the same function with other rounding."""
    prints: list = []
    handles = [m.register_forward_hook(lambda m, i, o, p=(path or "<model>"): prints.append((p, _fingerprint(o))))
               for path, m in model.named_modules()]
    try:
        with torch.enable_grad():
            logits = model(x1.detach().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    require_tensor_output(logits)
    return logits.detach(), prints


def _layer_forward(node: _Node):
    def forward(self, x):
        with torch._C.DisableTorchFunction():  # the router stays out of the fast path
            out = _LayerFunction.apply(x, node)
        _mark_activated(out, node)
        return out
    return forward


def _sum_forward(node: _Node):
    def forward(self, *inputs):
        with torch._C.DisableTorchFunction():
            out = _SumFunction.apply(node, *inputs)
        _mark_activated(out, node)
        return out
    return forward


def _mark_activated(out: Tensor, node: _Node) -> None:
    if node.activation is not None:
        out._spray_activated_by = node.activation
        if isinstance(node.activation, GATE_ACTIVATIONS):
            out._spray_gate = 2


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
