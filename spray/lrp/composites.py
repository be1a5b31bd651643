"""Composites: which rule each layer gets.

Presets carry zennit's names and semantics (``layer_map_base`` + rules per layer type, a special
rule for the first layer where the preset has one). A composite can also be written as a mapping,
which is what a YAML job holds::

    composite:
      preset: epsilon_gamma_box      # optional starting point
      epsilon: 0.25                  # preset parameters
      low: -2.1                      # zB bounds (derived from preprocessing when omitted in a job)
      high: 2.6
      first: zb                      # rule for the first linear layer the input reaches
      by_type: {Conv2d: {rule: gamma, gamma: 0.5}, Linear: epsilon}
      by_name: {features.0: flat}    # module paths as in model.named_modules(); these win
      by_op: {conv: zplus, linear: epsilon, softmax: attnlrp}   # operation-level rules (below)

Precedence: ``by_name`` > ``first`` > ``by_type`` > ``by_op`` > the preset. ``by_type`` takes any
class name (matched along the module's class hierarchy, so ``Conv2d`` also covers a subclass).

Operations (see :mod:`spray.lrp.operations`) are ruled where a forward calls them: a functional
conv or linear takes the rule of the calling module's type (a ``Conv2d`` subclass gets the
``Conv2d`` rule) or ``by_op: {conv: ..., linear: ...}`` or the preset's conv/dense rule; the
first rule lands on the conv/linear that reads the model input, as a module or a functional call.
``by_op`` also overrides the kind of any other operation: ``softmax: attnlrp`` (AttnLRP's softmax
rule instead of CP-LRP's constant weights), or ``NAME: gradient | pass | constant | uniform`` for
an operation spray has no rule for.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from torch import nn

from ..errors import ConfigError
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, ZBox, ZPlus, make_rule

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
DENSE_TYPES = (nn.Linear,)
LINEAR_TYPES = CONV_TYPES + DENSE_TYPES
AVGPOOL_TYPES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
BATCHNORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ACTIVATION_TYPES = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.GELU, nn.Softplus)


def _matches(module: nn.Module, types) -> bool:
    """``types``: classes (isinstance) or a class name (anywhere in the module's class hierarchy)."""
    if isinstance(types, str):
        return any(k.__name__ == types for k in type(module).__mro__)
    return isinstance(module, types)


#: a stand-in module of each operation family, for matching type-keyed rules to operations
_FAMILY = {"conv": nn.Conv2d, "linear": nn.Linear}


class Composite:
    """Rules by module path, for the first linear layer, by module type and by operation."""

    def __init__(self, layer_map: Sequence[tuple] = (), first_map: Sequence[tuple] = (),
                 name_map: Optional[Mapping[str, Rule]] = None, name: str = "custom",
                 op_rules: Optional[Mapping[str, Rule]] = None, op_kinds: Optional[Mapping[str, str]] = None):
        self.layer_map = list(layer_map)
        self.first_map = list(first_map)
        self.name_map = dict(name_map or {})
        self.name = name
        self.op_rules = dict(op_rules or {})
        self.op_kinds = dict(op_kinds or {})

    def rule_for(self, path: str, module: nn.Module, is_first: bool) -> Optional[Rule]:
        """The rule for ``module`` at ``path``; ``is_first``: it is the layer that reads the model input."""
        if path in self.name_map:
            return self.name_map[path]
        if is_first:
            for types, rule in self.first_map:
                if _matches(module, types):
                    return rule
        for types, rule in self.layer_map:
            if _matches(module, types):
                return rule
        return None

    def rule_for_op(self, path: str, module: Optional[nn.Module], family: str, is_first: bool) -> Optional[Rule]:
        """The rule for a functional conv/linear (``family``) that ``module`` at ``path`` calls."""
        stand_in = _FAMILY[family]
        if path in self.name_map:
            return self.name_map[path]
        if is_first:
            for types, rule in self.first_map:
                if _matches(module, types) if isinstance(module, stand_in) else _matches_class(stand_in, types):
                    return rule
        if isinstance(module, stand_in):
            rule = self.rule_for(path, module, False)
            if rule is not None:
                return rule
        if family in self.op_rules:
            return self.op_rules[family]
        for types, rule in self.layer_map:
            if _matches_class(stand_in, types):
                return rule
        return None

    def describe(self) -> dict:
        """A JSON-able record of the rules, for provenance in stores and reports."""
        def names(types):
            types = types if isinstance(types, tuple) else (types,)
            return [t if isinstance(t, str) else t.__name__ for t in types]
        return {
            "name": self.name,
            "by_name": {k: repr(v) for k, v in self.name_map.items()},
            "first": [[names(t), repr(r)] for t, r in self.first_map],
            "by_type": [[names(t), repr(r)] for t, r in self.layer_map],
            "by_op": {**{k: repr(v) for k, v in self.op_rules.items()}, **self.op_kinds},
        }


def _matches_class(cls: type, types) -> bool:
    if isinstance(types, str):
        return any(k.__name__ == types for k in cls.__mro__)
    return issubclass(cls, types)


def _base(stabilizer: float) -> list:
    """zennit's ``layer_map_base``: activations pass, sums and average pools normalise."""
    from .canonizers import Sum
    return [
        (ACTIVATION_TYPES, Pass()),
        (Sum, Norm(stabilizer)),
        (AVGPOOL_TYPES, Norm(stabilizer)),
    ]


def epsilon(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Epsilon on every conv and dense layer (zennit has no preset of this name; same base map)."""
    return Composite(_base(stabilizer) + [(LINEAR_TYPES, Epsilon(epsilon))], name="epsilon")


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite(_base(stabilizer) + [(CONV_TYPES, ZPlus(stabilizer)), (DENSE_TYPES, Epsilon(epsilon))],
                     name="epsilon_plus")


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite(_base(stabilizer) + [(CONV_TYPES, ZPlus(stabilizer)), (DENSE_TYPES, Epsilon(epsilon))],
                     first_map=[(LINEAR_TYPES, Flat(stabilizer))], name="epsilon_plus_flat")


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite(_base(stabilizer) + [(CONV_TYPES, AlphaBeta(2.0, 1.0, stabilizer)),
                                          (DENSE_TYPES, Epsilon(epsilon))], name="epsilon_alpha2_beta1")


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    return Composite(_base(stabilizer) + [(CONV_TYPES, AlphaBeta(2.0, 1.0, stabilizer)),
                                          (DENSE_TYPES, Epsilon(epsilon))],
                     first_map=[(LINEAR_TYPES, Flat(stabilizer))], name="epsilon_alpha2_beta1_flat")


def epsilon_gamma_box(low=None, high=None, epsilon: float = 1e-6, gamma: float = 0.25,
                      stabilizer: float = 1e-6) -> Composite:
    """zB on the first conv, gamma on the other convs, epsilon on dense layers.

    ``low``/``high`` are the input's valid range after preprocessing (scalars or per channel).
    """
    if low is None or high is None:
        raise ConfigError(
            "composite 'epsilon_gamma_box' needs the input's valid range for its zB rule: pass low= and "
            "high= (for inputs normalised with mean/std: low=(0-mean)/std, high=(1-mean)/std per channel); "
            "a spray job derives them from its preprocessing"
        )
    return Composite(_base(stabilizer) + [(CONV_TYPES, Gamma(gamma, stabilizer)), (DENSE_TYPES, Epsilon(epsilon))],
                     first_map=[(CONV_TYPES, ZBox(low, high, stabilizer))], name="epsilon_gamma_box")


PRESETS = {
    "epsilon": epsilon,
    "epsilon_plus": epsilon_plus,
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
}

_TYPE_NAMES = {t.__name__: t for t in LINEAR_TYPES + AVGPOOL_TYPES + BATCHNORM_TYPES + ACTIVATION_TYPES}


def get_composite(spec="epsilon_plus_flat", **kwargs) -> Composite:
    """A composite from a preset name, a ``Composite``, or a YAML-style mapping (module docstring)."""
    if isinstance(spec, Composite):
        if kwargs:
            raise ConfigError(f"parameters {sorted(kwargs)} cannot be applied to an already built Composite")
        return spec
    if isinstance(spec, str):
        spec = {"preset": spec}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"composite must be a preset name, a Composite or a mapping; got {type(spec).__name__}")
    spec = {**spec, **kwargs}
    preset = spec.pop("preset", None)
    by_type = spec.pop("by_type", {}) or {}
    by_name = spec.pop("by_name", {}) or {}
    by_op = spec.pop("by_op", {}) or {}
    first = spec.pop("first", None)
    try:
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"unknown composite preset {preset!r}; choose one of {', '.join(PRESETS)}")
            base = PRESETS[preset](**spec)
        else:
            if spec:
                raise ConfigError(f"composite parameters {sorted(spec)} need a 'preset' to apply to")
            base = Composite(_base(1e-6), name="custom")
        layer_map = []
        for type_name, rule in by_type.items():
            if not isinstance(type_name, str) or not type_name.isidentifier():
                raise ConfigError(f"composite by_type: {type_name!r} is not a class name")
            layer_map.append((_TYPE_NAMES.get(type_name, type_name), make_rule(rule)))
        op_rules, op_kinds = _by_op(by_op)
        first_map = [(LINEAR_TYPES, make_rule(first))] if first is not None else []
        name_map = {path: make_rule(rule) for path, rule in by_name.items()}
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"composite: {err}") from None
    return Composite(layer_map + base.layer_map, first_map + base.first_map,
                     {**base.name_map, **name_map}, name=preset or "custom",
                     op_rules={**base.op_rules, **op_rules}, op_kinds={**base.op_kinds, **op_kinds})


def _by_op(by_op: Mapping) -> tuple:
    """``by_op`` of a composite mapping: LRP rules for ``conv``/``linear``, kinds for other operations."""
    from .router import KIND_ALIASES
    op_rules, op_kinds = {}, {}
    for name, value in by_op.items():
        if name in _FAMILY:
            op_rules[name] = make_rule(value)
        elif isinstance(value, str) and value in KIND_ALIASES:
            op_kinds[name] = value
        else:
            raise ConfigError(f"composite by_op: {name!r} takes one of {', '.join(KIND_ALIASES)} (conv and linear "
                              f"take LRP rules), got {value!r}")
    return op_rules, op_kinds
