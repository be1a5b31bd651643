"""Helpers for comparing spray with zennit and LXT on real model code in tests and benchmarks (not
used by the pipeline).

* torchvision's PyPI wheel here is a CUDA build whose compiled ops do not load with CPU torch; the
  Python models import fine once ``torchvision._meta_registrations`` (which registers fake kernels
  for those compiled ops) is a stand-in module: :func:`import_torchvision`. timm imports torchvision
  too, so :func:`import_timm` goes through it.
* zennit 0.5.1 imports ``torchvision.models.resnet`` at import time, only for isinstance checks on
  ``BasicBlock``/``Bottleneck``. :func:`install_torchvision_stub` gives zennit the real torchvision
  when it is installed (and lets its ResNet canonizer also accept spray's plain-torch blocks, which
  mirror torchvision's), and otherwise a minimal stand-in module exposing spray's blocks.
* LXT 2.1's ``lxt.efficient`` package imports ``transformers`` in its ``__init__``; its torchvision
  ViT patches (``lxt.efficient.models.vit_torch``) do not need it: :func:`import_lxt_vit_patches`.
"""
from __future__ import annotations

import sys
import types
from typing import Dict, Optional


def import_torchvision():
    """``import torchvision`` with the compiled-ops registration replaced by a stand-in (see above)."""
    if "torchvision" in sys.modules and getattr(sys.modules["torchvision"], "_spray_stand_in", False):
        raise RuntimeError("the torchvision stand-in for zennit is installed; remove it first")
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision
    return torchvision


def import_timm():
    """``import timm`` (it imports torchvision: see :func:`import_torchvision`)."""
    import_torchvision()
    import timm
    return timm


def torchvision_available() -> bool:
    import importlib.util
    if "torchvision" in sys.modules:
        return not getattr(sys.modules["torchvision"], "_spray_stand_in", False)
    return importlib.util.find_spec("torchvision") is not None


def install_torchvision_stub() -> Dict[str, Optional[types.ModuleType]]:
    """Prepare torchvision for zennit: the real one when installed, else the stand-in; returns what was
    replaced (for :func:`remove_torchvision_stub`)."""
    from .models import zoo
    if torchvision_available():
        import_torchvision()
        _accept_spray_blocks_in_zennit()
        return {}
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.BasicBlock, resnet.Bottleneck = zoo.BasicBlock, zoo.Bottleneck
    tv.models, models.resnet = models, resnet
    tv._spray_stand_in = True
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


def _accept_spray_blocks_in_zennit() -> None:
    """zennit's ResNet canonizers check isinstance against torchvision's blocks; spray's zoo blocks
    compute the same forward with the same attribute names, so they are accepted too."""
    import zennit.torchvision as ztv
    from torchvision.models import resnet

    from .models import zoo
    ztv.ResNetBottleneck = (resnet.Bottleneck, zoo.Bottleneck)
    ztv.ResNetBasicBlock = (resnet.BasicBlock, zoo.BasicBlock)


def import_lxt_vit_patches():
    """``lxt.efficient.models.vit_torch`` and ``lxt.efficient.patches`` without running ``lxt.efficient``'s
    package ``__init__`` (which imports transformers for its LLM patches)."""
    import importlib
    import importlib.util
    import_torchvision()
    spec = importlib.util.find_spec("lxt")
    if spec is None:
        raise ImportError("lxt is not installed (pip install --no-deps lxt==2.1)")
    root = spec.submodule_search_locations[0]
    for name, sub in (("lxt.efficient", "efficient"), ("lxt.efficient.models", "efficient/models")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [f"{root}/{sub}"]
            sys.modules[name] = package
    return importlib.import_module("lxt.efficient.models.vit_torch"), importlib.import_module("lxt.efficient.patches")


def zennit_composite(preset: str, canonizer, **kwargs):
    """zennit's composite of ``preset``; 'epsilon' (not a zennit preset) is built from its base map."""
    from zennit.composites import COMPOSITES, LayerMapComposite, layer_map_base
    from zennit.rules import Epsilon
    from zennit.types import Linear
    if preset == "epsilon":
        return LayerMapComposite(layer_map_base() + [(Linear, Epsilon())], canonizers=[canonizer])
    return COMPOSITES[preset](canonizers=[canonizer], **kwargs)


def model_state(model) -> tuple:
    """Everything :class:`spray.lrp.LRP` must give back bit for bit: parameter objects and bytes, buffers,
    attribute names, hooks, train and requires_grad flags."""
    import hashlib
    digest = hashlib.sha256()
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        digest.update(name.encode())
        digest.update(t.detach().cpu().contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
    return (digest.hexdigest(),
            tuple(id(p) for p in model.parameters()),
            tuple((n, m.training, tuple(sorted(vars(m))), len(m._forward_hooks), len(m._forward_pre_hooks))
                  for n, m in model.named_modules()),
            tuple(p.requires_grad for p in model.parameters()))


def lrp_check(model, x, composite="epsilon_plus_flat", **kwargs) -> dict:
    """Explain ``x`` with ``composite`` as a user would and check what the coverage table reports:
    finite relevance of the input's shape, the model bitwise unchanged after ``close()``, seconds per
    batch against a forward + input-gradient pass (after a warm-up), the conservation ratio
    (input relevance total / explained logit, batch mean) and the self-check's measured relative
    logit difference (0: bitwise equal)."""
    import time

    import torch

    from .lrp import LRP
    before = model_state(model)
    row = {"ok": False, "error": "", "lrp_s": float("nan"), "grad_s": float("nan"), "ratio": float("nan"),
           "conservation": float("nan"), "self_check": float("nan")}

    def gradient():
        xx = x.detach().clone().requires_grad_(True)
        out = model(xx)
        torch.autograd.grad(out, xx, torch.zeros_like(out).scatter_(1, out.argmax(1, keepdim=True), 1.0))
    try:
        gradient()
        t0 = time.perf_counter()
        gradient()
        row["grad_s"] = time.perf_counter() - t0
        with LRP(model, composite, **kwargs) as lrp:
            lrp.explain(x)  # attach (probe, self-check) and warm up
            row["self_check"] = lrp.self_check_error_
            t0 = time.perf_counter()
            result = lrp.explain(x)
            row["lrp_s"] = time.perf_counter() - t0
        relevance = result.relevance
        explained = result.logits.gather(1, result.target[:, None])[:, 0]
        row["conservation"] = float((relevance.flatten(1).sum(1) / explained).mean())
        row["ratio"] = row["grad_s"] / row["lrp_s"]
        problems = []
        if relevance.shape != x.shape:
            problems.append(f"relevance shape {tuple(relevance.shape)} != input {tuple(x.shape)}")
        if not torch.isfinite(relevance).all():
            problems.append("relevance not finite")
        if model_state(model) != before:
            problems.append("model changed")
        row["ok"], row["error"] = not problems, "; ".join(problems)
    except Exception as err:  # the table reports every failure, it does not stop at one
        row["error"] = f"{type(err).__name__}: {err}".replace("\n", " ")[:400]
        if model_state(model) != before:
            row["error"] += " (and the model changed)"
    return row


def informative_random_init(model, x, seed: int = 0):
    """Make a randomly initialised classifier compute something LRP can show, in place, and return it.

    Libraries initialise some weights to zero (torchvision's ViT head: all logits 0) and keep batch
    norm statistics at mean 0, variance 1, under which random-init activations shrink to ~1e-9
    over depth, where every stabiliser absorbs all relevance. So: weights that are all zero get
    N(0, 0.02); batch-norm statistics are estimated from ``x`` (two forwards without gradients,
    only the batch norms in train mode, cumulative averages); the model is left in eval mode.
    """
    import torch
    from torch import nn
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats]
        if norms:
            saved = [(m, m.momentum) for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None
            model.eval()
            for m in norms:
                m.train()
            for _ in range(2):
                model(x)
            for m, momentum in saved:
                m.momentum = momentum
    return model.eval()
