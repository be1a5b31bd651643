"""Support for comparing spray with zennit in tests and benchmarks (not used by the pipeline).

zennit 0.5.1 imports ``torchvision.models.resnet`` at import time, only for isinstance checks on
``BasicBlock``/``Bottleneck``. torchvision has no CPU build here, so a minimal stand-in module that
exposes spray's torchvision-layout blocks is put in ``sys.modules`` before zennit is imported.
"""
from __future__ import annotations

import sys
import types
from typing import Dict, Optional


def install_torchvision_stub() -> Dict[str, Optional[types.ModuleType]]:
    """Register the stand-in modules; returns what they replaced (for :func:`remove_torchvision_stub`)."""
    from .models import zoo
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.BasicBlock, resnet.Bottleneck = zoo.BasicBlock, zoo.Bottleneck
    tv.models, models.resnet = models, resnet
    replaced = {}
    for name, module in (("torchvision", tv), ("torchvision.models", models), ("torchvision.models.resnet", resnet)):
        replaced[name] = sys.modules.get(name)
        sys.modules[name] = module
    return replaced


def remove_torchvision_stub(replaced: Dict[str, Optional[types.ModuleType]]) -> None:
    for name, old in replaced.items():
        if old is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = old


def zennit_composite(preset: str, canonizer, **kwargs):
    """zennit's composite of ``preset``; 'epsilon' (not a zennit preset) is built from its base map."""
    from zennit.composites import COMPOSITES, LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon
    from zennit.types import Linear
    if preset == "epsilon":
        return LayerMapComposite(layer_map_base() + [(Linear, Epsilon())], canonizers=[canonizer])
    return COMPOSITES[preset](canonizers=[canonizer], **kwargs)
