"""Canonizers: rewrite a model, reversibly, into a form that LRP rules can be attached to.

* :class:`Sum` is an explicit, rule-carrying addition. Residual blocks in torchvision's layout
  (``BasicBlock``, ``Bottleneck`` with ``downsample``) get a forward that uses it. For any other
  module whose forward adds tensors, register a forward that calls ``self.spray_sum(a, b)``::

      def my_block_forward(self, x):
          return self.spray_sum(self.branch(x), self.shortcut(x))
      spray.lrp.register_residual(MyBlock, my_block_forward)

  or call a :class:`Sum` submodule in the model itself.
* A batch norm folded into the layer that feeds it (:mod:`spray.lrp.ops`) acts as the identity:
  that layer's forward computes it.

Every change is undone by :meth:`Canonization.restore`: the original ``Parameter`` objects are put
back (bitwise-identical, the very same objects), added attributes are deleted, overridden
``forward``s removed. Parameters are never modified in place.
"""
from __future__ import annotations

import types
from typing import Callable, Dict, List, Type

from torch import Tensor, nn

_MISSING = object()


class Sum(nn.Module):
    """Adds its inputs. As a module it can carry a rule (``Norm`` in every preset)."""

    def forward(self, *tensors: Tensor) -> Tensor:
        out = tensors[0]
        for t in tensors[1:]:
            out = out + t
        return out


def _basic_block_forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu(self.spray_sum(identity, out))


def _bottleneck_forward(self, x):
    identity = x
    out = self.relu(self.bn1(self.conv1(x)))
    out = self.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    if self.downsample is not None:
        identity = self.downsample(x)
    return self.relu(self.spray_sum(identity, out))


_BASIC = ("conv1", "bn1", "conv2", "bn2", "relu", "downsample")
#: modules whose BasicBlock/Bottleneck compute exactly torchvision's forward
_TORCHVISION_LAYOUT = ("torchvision.models.resnet", "spray.models.zoo")
_BOTTLENECK = _BASIC + ("conv3", "bn3")

#: user-registered residual modules: type -> forward that calls ``self.spray_sum``
RESIDUAL_FORWARDS: Dict[Type[nn.Module], Callable] = {}


def register_residual(module_type: Type[nn.Module], forward: Callable) -> None:
    """Make ``module_type``'s additions explicit: ``forward(self, ...)`` must call ``self.spray_sum``."""
    RESIDUAL_FORWARDS[module_type] = forward


def residual_forward_for(module: nn.Module):
    """The replacement forward for a residual module, or None if ``module`` is not one."""
    for module_type, forward in RESIDUAL_FORWARDS.items():
        if isinstance(module, module_type):
            return forward
    name = type(module).__name__
    if not type(module).__module__.startswith(_TORCHVISION_LAYOUT):
        return None  # another library's block of that name may compute more (SE, drop path): ruled per operation
    if name == "Bottleneck" and all(hasattr(module, a) for a in _BOTTLENECK):
        return _bottleneck_forward
    if name == "BasicBlock" and all(hasattr(module, a) for a in _BASIC):
        return _basic_block_forward
    return None


def _identity_forward(self, x):
    return x


class Canonization:
    """A log of reversible edits on one model; :meth:`restore` undoes them in reverse order."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._undo: List[Callable[[], None]] = []

    def set_attr(self, obj, name: str, value) -> None:
        """Set ``obj.name`` (instance attribute, module or parameter) and remember how to undo it."""
        old = obj.__dict__.get(name, _MISSING)
        if isinstance(obj, nn.Module):
            if name in obj._parameters:
                old = ("param", obj._parameters[name])
            elif name in obj._modules:
                old = ("module", obj._modules[name])
        setattr(obj, name, value)

        def undo():
            if isinstance(old, tuple) and old and old[0] == "param":
                obj._parameters[name] = old[1]
            elif isinstance(old, tuple) and old and old[0] == "module":
                obj._modules[name] = old[1]
            elif old is _MISSING:
                if isinstance(obj, nn.Module) and name in obj._modules:
                    del obj._modules[name]
                else:
                    obj.__dict__.pop(name, None)
            else:
                obj.__dict__[name] = old
        self._undo.append(undo)

    def override_forward(self, module: nn.Module, forward: Callable) -> None:
        self.set_attr(module, "forward", types.MethodType(forward, module))

    def canonize_residuals(self) -> List[str]:
        """Give residual blocks an explicit :class:`Sum`; returns the paths of the blocks changed."""
        changed = []
        for path, module in list(self.model.named_modules()):
            forward = residual_forward_for(module)
            if forward is not None:
                self.set_attr(module, "spray_sum", Sum())
                self.override_forward(module, forward)
                changed.append(path)
        return changed

    def set_identity(self, module: nn.Module) -> None:
        """Make ``module`` (Dropout, Identity) return its input object itself."""
        self.override_forward(module, _identity_forward)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()
