"""Load the user's model: a factory plus a state_dict file, or a whole pickled module.

A factory is any importable callable, including a library's own builders, so that a model trained
with timm or torchvision needs no code of the user's::

    model: {factory: "timm:create_model", kwargs: {model_name: resnet50, num_classes: 10}, weights: my.pt}
    model: {factory: "torchvision.models:resnet50", kwargs: {num_classes: 10}, weights: my.pt}

Both build randomly initialised models by default (timm's ``pretrained=False``, torchvision's
``weights=None``), so nothing downloads; the job's weights are then loaded into them.

Model files are code. A state_dict is loaded with ``weights_only=True`` (tensors only, nothing
executes); a pickled module (``pickled:``) can run arbitrary code when loaded and must come from a
trusted source; the factory named in a job is imported and run like any script.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from .._imports import file_sha256, load_object
from ..errors import ConfigError, InputError


def load_model(factory: Optional[str] = None, kwargs: Optional[Dict[str, Any]] = None,
               weights: Optional[str] = None, pickled: Optional[str] = None, strict: bool = True) -> nn.Module:
    """An eval-mode module from ``factory(**kwargs)`` + ``weights`` (a state_dict), or ``pickled``."""
    if (factory is None) == (pickled is None):
        raise ConfigError("model: give either 'factory' (with optional 'weights') or 'pickled', not both/neither")
    if pickled is not None:
        path = Path(pickled)
        model = _load_file(path, "model", False, "cannot unpickle a model ({err}); the classes it was saved "
                                                  "with must be importable")
        if not isinstance(model, nn.Module):
            raise InputError(f"{path} holds a {type(model).__name__}, not a torch.nn.Module; a state_dict "
                             f"needs model.factory and model.weights")
        return model.eval()
    try:
        maker = load_object(factory, "model factory")
    except ConfigError:
        raise
    except Exception as err:  # a library whose import fails (e.g. compiled ops built for another torch)
        raise ConfigError(f"model factory {factory!r}: importing it failed with {type(err).__name__}: {err}") from err
    try:
        model = maker(**(kwargs or {}))
    except TypeError as err:
        raise ConfigError(f"model factory {factory!r} rejected its arguments {kwargs or {}}: {err}") from None
    except Exception as err:  # the user's code or the library refused (timm: "Unknown model (...)"): say whose and what
        raise ConfigError(f"model factory {factory!r} failed with model.kwargs {kwargs or {}}: raised "
                          f"{type(err).__name__}: {err}; fix the factory or its model.kwargs") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {factory!r} returned {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        load_weights(model, weights, strict=strict)
    return model.eval()


def _load_file(path: Path, kind: str, weights_only: bool, problem: str):
    if not path.is_file():
        raise InputError(f"{kind} file {path} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:
        raise InputError(f"{path}: " + problem.format(err=f"{type(err).__name__}: {err}")) from None


def load_weights(model: nn.Module, weights, strict: bool = True) -> None:
    """Load a state_dict file (``weights_only=True``) and say precisely what does not fit."""
    path = Path(weights)
    state = _load_file(path, "weights", True, "not a loadable state_dict ({err}). A whole pickled module goes "
                                              "in model.pickled instead")
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path} holds a {type(state).__name__}, not a state_dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and hasattr(state[k], "shape") and state[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:3]}")
        if missing and strict:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
        if unexpected and strict:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
        raise InputError(f"weights {path} do not fit the model: {'; '.join(parts)}. Check model.kwargs "
                         f"(e.g. num_classes) or the weights file")
    model.load_state_dict(state, strict=strict)


def check_model(model: nn.Module, sample: torch.Tensor, num_classes: int, classes_origin: str = "") -> None:
    """Run one preprocessed sample; the output must be (1, num_classes) finite logits.
    ``classes_origin`` says where the class count came from, for the message."""
    try:
        with torch.no_grad():
            out = model(sample[None])
    except Exception as err:
        raise InputError(f"the model fails on one sample of shape {tuple(sample.shape)}: {type(err).__name__}: "
                         f"{err}. Check preprocess (size, channels) against what the model expects") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape != (1, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InputError(f"the model's output for one sample is {shape}, expected (1, {num_classes}) logits "
                         f"for the data set's {num_classes} classes{classes_origin}")
    if not torch.isfinite(out).all():
        raise InputError("the model's output for one sample is not finite (NaN/inf); check the weights")


def model_fingerprint(model: nn.Module, files: Sequence[Optional[str]] = ()) -> str:
    """sha256 over the state_dict's tensors (and names), so a changed weight changes the store's key."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for f in files:
        if f:
            digest.update(file_sha256(f).encode())
    return digest.hexdigest()
