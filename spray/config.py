"""Job files: validated before anything runs (unknown keys, wrong types and missing files are
reported with their key path and a fix), then resolved into what the stages take.

A job (YAML)::

    name: my-audit
    out: reports/my-audit            # the run folder: store/, analysis/, report/, job.resolved.yaml
    data: {type: image_folder, path: data/train}       # or npz / hdf5 / factory / bed
    preprocess: {resize: 256, center_crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
    model: {factory: models.py:make_model, kwargs: {num_classes: 10}, weights: model.pt}
    explain: {composite: epsilon_gamma_box, batch_size: 32, shard_size: 256}
    cluster: {mode: local, n_workers: 2}
    analysis: {pool: 16, n_neighbors: 10, k_max: 10}

See ``configs/template.yaml`` for every key with its meaning.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BedData(_Strict):
    """A bundled test bed (spray.datasets); unset keys take the bed's own defaults."""
    type: Literal["bed"]
    name: Literal["watermark", "background", "scenes", "scenes-clean", "scenes-small", "scenes-heldout",
                  "scenes-heldout-clean", "scenes-fresh", "scenes-fresh-clean", "scenes-fresh2", "scenes-fresh3",
                  "scenes-fresh4", "scenes-fresh5", "scenes-fresh6", "scenes-fresh7"] = "watermark"
    size: Optional[int] = Field(None, ge=32)
    n_per_class: Optional[int] = Field(None, ge=40)
    fraction: Optional[float] = Field(None, ge=0.05, le=0.8)
    seed: Optional[int] = None
    epochs: Optional[int] = Field(None, ge=1)


class ImageFolderData(_Strict):
    type: Literal["image_folder"]
    path: str
    classes: Optional[List[str]] = None


class NpzData(_Strict):
    type: Literal["npz"]
    path: str
    classes: Optional[List[str]] = None


class HDF5Data(_Strict):
    type: Literal["hdf5"]
    path: str
    images: str = "images"
    labels: str = "labels"
    ids: Optional[str] = None
    classes: Optional[List[str]] = None


class FactoryData(_Strict):
    type: Literal["factory"]
    factory: str
    kwargs: Dict[str, Any] = Field(default_factory=dict)
    classes: Optional[List[str]] = None


DataConfig = Union[BedData, ImageFolderData, NpzData, HDF5Data, FactoryData]


class PreprocessConfig(_Strict):
    resize: Optional[Union[int, List[int]]] = None
    center_crop: Optional[Union[int, List[int]]] = None
    mean: List[float] = Field(default_factory=list)
    std: List[float] = Field(default_factory=list)
    channels: Literal[1, 3] = 3
    convert: bool = False
    scale: bool = True


class ModelConfig(_Strict):
    factory: Optional[str] = None
    kwargs: Dict[str, Any] = Field(default_factory=dict)
    weights: Optional[str] = None
    pickled: Optional[str] = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.factory is None) == (self.pickled is None):
            raise ValueError("give either 'factory' (with optional 'weights') or 'pickled'")
        return self


class ExplainConfig(_Strict):
    composite: Union[str, Dict[str, Any]] = "epsilon_gamma_box"
    target: Literal["label", "prediction"] = "label"
    batch_size: int = Field(64, ge=1)
    shard_size: int = Field(256, ge=1)
    dtype: Literal["float16", "float32"] = "float16"
    channels: Literal["sum", "keep"] = "sum"
    on_error: Literal["stop", "skip"] = "stop"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    torch_threads: int = Field(1, ge=1)
    classes: Optional[List[Union[int, str]]] = None
    ids: Optional[List[str]] = None


class ClusterConfig(_Strict):
    mode: Literal["local", "address", "synchronous"] = "local"
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    address: Optional[str] = None
    dashboard: bool = True


class AnalysisConfig(_Strict):
    pool: Optional[int] = Field(16, ge=1)
    mode: Literal["abs", "positive", "signed"] = "abs"
    n_neighbors: int = Field(10, ge=2)
    knn: Literal["auto", "exact", "approximate"] = "auto"
    weights: Literal["binary", "gaussian"] = "binary"
    pca: Optional[int] = Field(None, ge=2)
    n_eigval: int = Field(32, ge=3)
    k_min: int = Field(2, ge=1)
    k_max: int = Field(10, ge=2)
    clusterer: Literal["kmeans", "agglomerative", "hdbscan", "dbscan"] = "kmeans"
    embeddings: List[Literal["tsne", "umap"]] = Field(default_factory=lambda: ["tsne"])
    embed_on: Literal["spectral", "pooled"] = "spectral"
    embed_top: Optional[int] = Field(50, ge=0)   # 2-D maps for the first N classes of the ranking; null: all
    group_by: Literal["label", "prediction"] = "label"
    classes: Optional[List[int]] = None
    min_class_size: int = Field(20, ge=3)
    threshold: float = Field(0.05, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _k(self):
        if self.k_max < self.k_min:
            raise ValueError(f"k_max ({self.k_max}) must be >= k_min ({self.k_min})")
        return self


class VerifyConfig(_Strict):
    enabled: bool = True
    n_images: int = Field(500, ge=10)


class ReportConfig(_Strict):
    examples: int = Field(8, ge=1, le=32)


class JobConfig(_Strict):
    name: str = "spray-audit"
    out: str = "reports/run"
    data: DataConfig = Field(discriminator="type")
    preprocess: Optional[PreprocessConfig] = None
    model: Optional[ModelConfig] = None
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @model_validator(mode="after")
    def _model_and_data(self):
        if self.data.type == "bed":
            if self.model is not None or self.preprocess is not None:
                raise ValueError("data.type 'bed' brings its own model and preprocessing: remove 'model' and "
                                 "'preprocess' from the job")
        elif self.model is None:
            raise ValueError(f"data.type '{self.data.type}' needs a 'model' section (factory + weights, or pickled)")
        return self

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in (
            "bed", "image_folder", "npz", "hdf5", "factory", "function-after[_one_source()]")))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (typo? see configs/template.yaml for the keys this section takes)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        got = e.get("input")
        shown = "" if e["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {path or '<job>'}: {msg}{shown}")
    return f"{source}: invalid job file:\n" + "\n".join(lines)


def parse_job(data: dict, source: str = "job") -> JobConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a job file must be a YAML mapping, got {type(data).__name__}")
    try:
        job = JobConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format(err, source)) from None
    _expand_paths(job, source)
    _check_files(job, source)
    return job


_UNSET_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")


def expand_path(value: str, key: str, source: str = "job") -> str:
    """``~`` and ``$VAR`` / ``${VAR}`` expanded; an unset variable or an unknown user is an error, so
    that no folder named ``~`` or ``$SCRATCH`` is ever created."""
    out = os.path.expandvars(os.path.expanduser(value))
    unset = _UNSET_VARIABLE.search(out)
    if unset:
        raise ConfigError(f"{source}: {key}: {value!r} uses the environment variable {unset.group(1).strip('{}')}, "
                          f"which is not set; set it, or write the path out")
    if out.startswith("~"):
        raise ConfigError(f"{source}: {key}: {value!r}: cannot expand {out.split('/')[0]!r} (no such user)")
    return out


def _expand_reference(value: str, key: str, source: str) -> str:
    location, sep, attr = value.rpartition(":")
    return f"{expand_path(location, key, source)}{sep}{attr}" if location.endswith(".py") else value


def _expand_paths(job: JobConfig, source: str) -> None:
    job.out = expand_path(job.out, "out", source)
    data = job.data
    if data.type in ("image_folder", "npz", "hdf5"):
        data.path = expand_path(data.path, "data.path", source)
    elif data.type == "factory":
        data.factory = _expand_reference(data.factory, "data.factory", source)
    if job.model is not None:
        for key in ("weights", "pickled"):
            if getattr(job.model, key):
                setattr(job.model, key, expand_path(getattr(job.model, key), f"model.{key}", source))
        if job.model.factory:
            job.model.factory = _expand_reference(job.model.factory, "model.factory", source)


def load_job(path: Union[str, Path], overrides: Optional[Dict[str, Any]] = None) -> JobConfig:
    """Read and validate a YAML job; ``overrides`` (dotted keys) are applied before validation."""
    path = Path(expand_path(str(path), "job file", "command line"))
    if not path.is_file():
        raise ConfigError(f"job file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    for dotted, value in (overrides or {}).items():
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return parse_job(data, str(path))


def _check_files(job: JobConfig, source: str) -> None:
    def need(key: str, value: Optional[str], kind: str, is_dir: bool = False) -> None:
        if value is None:
            return
        p = Path(value)
        ok = p.is_dir() if is_dir else p.is_file()
        if not ok:
            raise ConfigError(f"{source}: {key}: {kind} {value!r} not found (relative paths are taken from the "
                              f"directory spray runs in: {Path.cwd()})")
    data = job.data
    if data.type == "image_folder":
        need("data.path", data.path, "image folder", is_dir=True)
    elif data.type in ("npz", "hdf5"):
        need("data.path", data.path, f"{data.type} file")
    if job.model is not None:
        need("model.weights", job.model.weights, "weights file")
        need("model.pickled", job.model.pickled, "model file")
        if job.model.factory and job.model.factory.rpartition(":")[0].endswith(".py"):
            need("model.factory", job.model.factory.rpartition(":")[0], "model factory file")
    if data.type == "factory" and data.factory.rpartition(":")[0].endswith(".py"):
        need("data.factory", data.factory.rpartition(":")[0], "data factory file")
