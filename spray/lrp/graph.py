"""Probe a model's data flow once, so that rules can be attached safely.

One no-grad forward on a single sample records which leaf module or functional operation consumes
each input-dependent tensor. From that the engine learns: which linear layer feeds which
activation alone (so the two can be fused, keeping memory at the gradient pass's level), which batch
norms can be folded, which layer is the first one the input reaches, and whether any operation
outside a leaf module would make LRP wrong (a tensor-tensor sum or product that is not an explicit
:class:`~spray.lrp.canonizers.Sum`, or a non-linear function called functionally).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ..errors import UnsupportedModelError

#: functional ops outside leaf modules that move values without mixing them
STRUCTURAL = {
    "view", "reshape", "flatten", "unflatten", "permute", "transpose", "t", "contiguous", "squeeze",
    "unsqueeze", "__getitem__", "split", "chunk", "unbind", "cat", "concat", "concatenate", "stack",
    "clone", "to", "float", "double", "half", "bfloat16", "type", "expand", "expand_as", "view_as",
    "reshape_as", "narrow", "select", "movedim", "moveaxis", "detach", "flip", "roll",
}
#: linear ops on a single input-dependent tensor: exact as LRP-0 in spray's gradient form
LINEAR_UNARY = {"sum", "mean", "__mul__", "__rmul__", "mul", "__truediv__", "div", "neg", "__neg__",
                "__add__", "__radd__", "add", "__sub__", "__rsub__", "sub", "__iadd__", "__isub__",
                "__imul__", "__itruediv__", "add_", "sub_", "mul_", "div_"}
SUMS = {"__add__", "__radd__", "add", "__sub__", "__rsub__", "sub", "__iadd__", "__isub__", "add_", "sub_"}
#: winner-take-all and ReLU: their gradient already is LRP's pass-through
GRADIENT_EXACT = {"relu", "relu_", "leaky_relu", "leaky_relu_", "max_pool1d", "max_pool2d", "max_pool3d",
                  "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
                  "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d", "amax", "max"}


@dataclass
class Call:
    """One call of a leaf module."""

    index: int
    path: str
    module: nn.Module
    inputs: List[int]
    output: Optional[int]


@dataclass
class Use:
    """One consumer of a tensor: a leaf-module call or a functional op outside leaf modules."""

    call: Optional[Call] = None
    op: Optional[str] = None
    where: str = ""


@dataclass
class Graph:
    calls: List[Call] = field(default_factory=list)
    uses: Dict[int, List[Use]] = field(default_factory=dict)
    input_id: int = 0
    output_id: Optional[int] = None
    output_shape: Tuple[int, ...] = ()

    def users(self, tensor_id: int) -> List[Use]:
        return self.uses.get(tensor_id, [])


class _Recorder(TorchFunctionMode):
    def __init__(self, graph: Graph, stack: List[str], keep: list):
        super().__init__()
        self.graph, self.stack, self.keep = graph, stack, keep
        self.dependent: set = set()
        self.leaf_depth = 0
        self.problems: List[str] = []
        self.types: Dict[str, str] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.leaf_depth:
            return out
        flat_in, _ = tree_flatten((args, kwargs))
        dep = [t for t in flat_in if isinstance(t, Tensor) and id(t) in self.dependent]
        if not dep:
            return out
        name = getattr(func, "__name__", str(func))
        where = self.stack[-1] if self.stack else "<model>"
        flat_out = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        for t in flat_out:
            self.dependent.add(id(t))
            self.keep.append(t)
        for t in {id(t) for t in dep}:
            self.graph.uses.setdefault(t, []).append(Use(op=name, where=where))
        self._check(name, len({id(t) for t in dep}), where)
        return out

    def _check(self, name: str, n_dependent: int, where: str) -> None:
        if name in STRUCTURAL or name in GRADIENT_EXACT:
            return
        if name in SUMS and n_dependent >= 2:
            self.problems.append(
                f"'{where}' adds two activations with '{name}' outside a module: make the sum explicit so it "
                f"carries a rule (call a spray.lrp.Sum submodule, or spray.lrp.register_residual({self.types.get(where, 'Block')}, "
                f"forward) with a forward that uses self.spray_sum)")
            return
        if name in LINEAR_UNARY and n_dependent == 1:
            return
        self.problems.append(
            f"'{where}' calls '{name}' on activations outside a leaf module; spray has no LRP rule for it. "
            f"Use a module (e.g. nn.ReLU, nn.Flatten, spray.lrp.Sum) so a rule can be mapped to it")


def probe(model: nn.Module, x: Tensor) -> Graph:
    """Run ``model`` on ``x[:1]`` without gradients and record its data flow."""
    graph = Graph()
    stack: List[str] = []
    keep: list = []
    recorder = _Recorder(graph, stack, keep)
    handles = []
    paths = {module: path for path, module in model.named_modules()}
    recorder.types = {(path or "<model>"): type(module).__name__ for module, path in paths.items()}

    def pre(module, inputs):
        path = paths.get(module, "?")
        stack.append(path or "<model>")
        if not any(True for _ in module.children()):
            recorder.leaf_depth += 1

    def post(module, inputs, output):
        stack.pop()
        if any(True for _ in module.children()):
            return
        recorder.leaf_depth -= 1
        in_ids = [id(t) for t in tree_flatten(inputs)[0] if isinstance(t, Tensor) and id(t) in recorder.dependent]
        outs = [t for t in tree_flatten(output)[0] if isinstance(t, Tensor)]
        out_id = id(outs[0]) if len(outs) == 1 else None
        if in_ids:
            call = Call(len(graph.calls), paths.get(module, "?"), module, in_ids, out_id)
            graph.calls.append(call)
            for t in dict.fromkeys(in_ids):
                graph.uses.setdefault(t, []).append(Use(call=call, where=call.path))
            for t in outs:
                recorder.dependent.add(id(t))
                keep.append(t)

    for module in paths:
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    sample = x[:1].detach()
    recorder.dependent.add(id(sample))
    keep.append(sample)
    graph.input_id = id(sample)
    try:
        with torch.no_grad(), recorder:
            out = model(sample)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, Tensor):
        raise UnsupportedModelError(
            f"the model returns {type(out).__name__}; spray explains models that return one logits tensor "
            f"of shape (batch, classes): wrap it in a module that selects the logits")
    if out.ndim != 2:
        raise UnsupportedModelError(
            f"the model's output has shape {tuple(out.shape)}; spray needs logits of shape (batch, classes)")
    if recorder.problems:
        raise UnsupportedModelError("cannot explain this model faithfully:\n  - " + "\n  - ".join(
            dict.fromkeys(recorder.problems)))
    graph.output_id = id(out)
    graph.output_shape = tuple(out.shape)
    keep.append(out)
    graph._keep = keep  # ids stay unique while the graph lives
    return graph
