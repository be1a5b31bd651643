"""Probe a model's data flow once, so that rules can be attached safely.

One forward on a single sample, with the operation router in probe mode (:mod:`spray.lrp.router`)
outside the fast-path layers, records which fast-path layer or operation consumes each activation.
From that the engine learns which linear layer feeds which activation alone (so the two can be
fused, keeping memory at the gradient pass's level), which batch norms can be folded, which layer
reads the model input (it gets the composite's first rule), which tensors are changed in place,
and which operations have no rule (all of them, with module path, type and the composite key).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from ..errors import UnsupportedModelError
from .router import Router

LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
LAYER_OPS = {"conv1d", "conv2d", "conv3d", "linear"}


@dataclass
class Call:
    """One call of a fast-path module."""

    index: int
    path: str
    module: nn.Module
    inputs: List[int]
    output: Optional[int]
    output_ndim: int = 0


@dataclass
class Use:
    """One consumer of a tensor: a fast-path module call or an operation."""

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
    #: descriptions of the layers/operations that read the model input (through structural ops)
    input_readers: List[str] = field(default_factory=list)
    #: per reader: whether it is a conv/linear (fast-path module or functional call)
    input_reader_is_layer: List[bool] = field(default_factory=list)
    #: the fast-path modules among the readers
    input_modules: List[nn.Module] = field(default_factory=list)
    #: ids of tensors changed in place by an operation
    mutated: set = field(default_factory=set)
    #: the probe's tensors, alive while the graph is read so that their ids stay unique
    kept: List[Tensor] = field(default_factory=list, repr=False, compare=False)

    def users(self, tensor_id: int) -> List[Use]:
        return self.uses.get(tensor_id, [])

    def release(self) -> None:
        """Drop the probe's tensors (they keep the ids unique while the graph is read): a forward's
        activations, which must not live into the first batch."""
        self.kept = []


def activations(tree) -> List[Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, Tensor) and t.requires_grad]


def require_tensor_output(out) -> None:
    """A model must return one logits tensor; anything else (a tuple, a dict) is refused with the fix."""
    if not isinstance(out, Tensor):
        raise UnsupportedModelError(
            f"the model returns {type(out).__name__}; spray explains models that return one logits tensor "
            f"of shape (batch, classes): wrap it in a module that selects the logits")


def probe(model: nn.Module, x: Tensor, router: Router, is_fast: Callable[[nn.Module], bool],
          passes_input: Callable[[nn.Module], bool]) -> Graph:
    """Run ``model`` on ``x[:1]`` (gradients on, parameters off) and record its data flow."""
    graph = Graph()
    keep: list = []
    paths = {module: (path or "<model>") for path, module in model.named_modules()}
    readers: List[Tuple[str, Optional[nn.Module]]] = []

    def pre(module, inputs):
        with torch._C.DisableTorchFunction():
            _pre(module, inputs)

    def post(module, inputs, output):
        with torch._C.DisableTorchFunction():
            _post(module, inputs, output)

    def _pre(module, inputs):
        router.stack.append((paths.get(module, "?"), module))
        if is_fast(module):
            router.suspended += 1
            if not passes_input(module) and any(getattr(t, "_spray_input", False) for t in activations(inputs)):
                readers.append((f"'{paths.get(module)}' ({type(module).__name__})", module))

    def _post(module, inputs, output):
        router.stack.pop()
        if not is_fast(module):
            return
        router.suspended -= 1
        ins = activations(inputs)
        outs = [t for t in tree_flatten(output)[0] if isinstance(t, Tensor)]
        if passes_input(module) and any(getattr(t, "_spray_input", False) for t in ins):
            for t in outs:
                t._spray_input = True
        if ins:
            call = Call(len(graph.calls), paths.get(module, "?"), module, [id(t) for t in ins],
                        id(outs[0]) if len(outs) == 1 else None, outs[0].ndim if len(outs) == 1 else 0)
            graph.calls.append(call)
            for t in dict.fromkeys(call.inputs):
                graph.uses.setdefault(t, []).append(Use(call=call, where=call.path))
            keep.extend(outs)
            keep.extend(ins)

    def on_use(acts, key, out):
        where = router.where()[0]
        for t in {id(a): a for a in acts}:
            graph.uses.setdefault(t, []).append(Use(op=key, where=where))
        keep.extend(acts)
        keep.extend(t for t in tree_flatten(out)[0] if isinstance(t, Tensor))

    handles = []
    for module in paths:
        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    sample = x[:1].detach().requires_grad_(True)
    sample._spray_input = True
    keep.append(sample)
    graph.input_id = id(sample)
    router.on_use = on_use
    try:
        with torch.enable_grad(), router:
            out = model(sample)
    finally:
        router.on_use = None
        router.stack.clear()
        router.suspended = 0
        for h in handles:
            h.remove()
    require_tensor_output(out)
    if out.ndim != 2:
        raise UnsupportedModelError(
            f"the model's output has shape {tuple(out.shape)}; spray needs logits of shape (batch, classes)")
    if router.problems:
        raise UnsupportedModelError("cannot explain this model faithfully:\n  - " + "\n  - ".join(router.problems))
    graph.input_readers = [r for r, _ in readers] + [r for r, _ in router.input_readers]
    graph.input_reader_is_layer = [isinstance(m, LAYER_TYPES) for _, m in readers] + [
        key in LAYER_OPS for _, key in router.input_readers]
    graph.input_modules = [m for _, m in readers]
    graph.mutated = set(router.mutated)
    graph.output_id = id(out)
    graph.output_shape = tuple(out.shape)
    keep.append(out)
    graph.kept = keep
    return graph
