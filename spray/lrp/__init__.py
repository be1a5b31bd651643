"""Layer-wise Relevance Propagation: rules, composites, canonizers and a one-pass engine."""
from .attribution import gradient, gradient_x_input, integrated_gradients, smoothgrad
from .canonizers import Sum, register_residual
from .composites import PRESETS, Composite, get_composite
from .engine import LRP, ConservationReport, Explanation, explain
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, WSquare, ZBox, ZPlus, make_rule, stabilize

__all__ = [
    "LRP", "explain", "Explanation", "ConservationReport", "Composite", "get_composite", "PRESETS",
    "Sum", "register_residual", "Rule", "Epsilon", "Norm", "ZPlus", "AlphaBeta", "Gamma", "Flat", "WSquare",
    "ZBox", "Pass", "make_rule", "stabilize", "gradient", "gradient_x_input", "integrated_gradients",
    "smoothgrad",
]
