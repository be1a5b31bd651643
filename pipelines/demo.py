"""The main job on the embedded default: audit the bundled watermark bed end to end.

Builds the bed from scikit-learn's digits (offline), trains its small residual CNN (seeded, cached
under SPRAY_CACHE or reports/cache), explains every training image with LRP on a local dask cluster
into the HDF5 store, runs SpRAy per class, verifies flagged clusters by artifact insertion, and
writes the report. ``configs/demo.yaml`` is the same job as a file.
"""
from __future__ import annotations

from typing import Optional

from spray.config import parse_job

from .audit import Run, run_job

DEMO_JOB = {
    "name": "watermark bed (demo)",
    "out": "reports/demo",
    "data": {"type": "bed", "name": "watermark"},
    "explain": {"composite": "epsilon_gamma_box", "batch_size": 64, "shard_size": 256},
    "cluster": {"mode": "local", "n_workers": 2},
}


def demo_job(out: str = "reports/demo", small: bool = False, cluster: Optional[str] = None):
    job = {**DEMO_JOB, "out": out, "data": dict(DEMO_JOB["data"]), "cluster": dict(DEMO_JOB["cluster"])}
    if small:  # the CI-sized demo: fewer images per class, same pipeline
        job["data"]["n_per_class"] = 160
    if cluster:
        job["cluster"]["mode"] = cluster
    return parse_job(job, "demo job")


def run(out: str = "reports/demo", small: bool = False, cluster: Optional[str] = None, progress: bool = True) -> Run:
    return run_job(demo_job(out, small, cluster), progress=progress)
