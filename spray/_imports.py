"""Resolve ``path/to/file.py:attr`` and ``package.module:attr`` references from job files.

A referenced file is code that runs with the user's rights: job files that name one must come from
a trusted source, like any script.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError


def load_object(spec: str, what: str = "factory") -> Any:
    """The object ``spec`` names: ``file.py:name`` (a file, relative to the cwd) or ``module:name``."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"{what} {spec!r} must look like 'path/to/file.py:name' or 'package.module:name'")
    location, _, attr = spec.rpartition(":")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise ConfigError(f"{what} file {path} not found (from {spec!r}); give a path relative to the "
                              f"directory spray runs in, or an absolute one")
        name = "spray_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            try:
                module_spec.loader.exec_module(module)
            except Exception as err:
                del sys.modules[name]
                raise ConfigError(f"{what} file {path} failed to import: {type(err).__name__}: {err}") from err
    else:
        try:
            module = importlib.import_module(location)
        except ImportError as err:
            raise ConfigError(f"{what} module {location!r} cannot be imported ({err}); is it installed "
                              f"or on PYTHONPATH?") from err
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {spec!r}: {location} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (provenance of weights and data files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
