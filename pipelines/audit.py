"""The audit pipeline: explain -> analyze -> verify -> report, wired from a validated job.

Each stage writes into the run folder (``job.out``) and records a hash of its inputs in
``stages.json``; a re-run reuses a finished stage whose inputs are unchanged and recomputes it
otherwise (the log says which). The explain stage also resumes shard by shard on its own.

    RUN/job.resolved.yaml   the job as validated, with its hash
    RUN/store/              heatmap store (spray.store)
    RUN/analysis/           analysis.h5, virelay.h5, analysis.json, verification.json
    RUN/report/             index.html, summary.json, class-*/ (HTML, PNG, CSV, JSON)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, Optional, Sequence

import h5py
import numpy as np
import torch
import yaml

from spray.analysis import AnalysisParams, analyze_store
from spray.config import JobConfig
from spray.console import activity
from spray.data.loader import SampleDataset, batches
from spray.data.open import open_source
from spray.data.preprocess import Preprocess
from spray.errors import ConfigError
from spray.explain import ClusterSpec, ExplainSpec, run_explain
from spray.models.loading import load_model
from spray.report import write_report
from spray.store import HeatmapStore
from spray.verify import verify_background, verify_local

log = logging.getLogger("spray.pipeline")
STAGES = ("explain", "analyze", "verify", "report")


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class Run:
    """A job resolved into stage inputs, bound to its run folder."""

    def __init__(self, job: JobConfig, progress: bool = True):
        self.job, self.progress = job, progress
        self.folder = Path(job.out)
        self.store = self.folder / "store"
        self.analysis = self.folder / "analysis"
        self.report = self.folder / "report"
        self.bed_info: Optional[dict] = None
        self.spec = self._explain_spec()

    def _explain_spec(self) -> ExplainSpec:
        job = self.job
        if job.data.type == "bed":
            from spray.datasets import prepare_bed
            d = job.data
            params = {k: v for k, v in (("size", d.size), ("n_per_class", d.n_per_class), ("seed", d.seed),
                                        ("fraction", d.fraction)) if v is not None}
            # on a terminal the trainer prints its epochs; elsewhere (a log file) a line every 30 s
            quiet_training = activity(f"bed {d.name!r}: building its data and training its model (first use only)",
                                      False, log) if not self.progress else nullcontext()
            with quiet_training:
                bed = prepare_bed(d.name, epochs=d.epochs, progress=self.progress, **params)
            self.bed_info = bed.info
            data = {"type": "npz", "path": str(bed.data)}
            model = {"factory": bed.info["model"]["factory"], "kwargs": bed.info["model"]["kwargs"],
                     "weights": str(bed.weights)}
            preprocess = bed.info["preprocess"]
        else:
            data = job.data.model_dump(exclude_none=True)
            model = job.model.model_dump(exclude_none=True)
            preprocess = (job.preprocess.model_dump(exclude_none=True) if job.preprocess else {})
        e = job.explain
        return ExplainSpec(data=data, model=model, preprocess=preprocess, composite=e.composite, target=e.target,
                           batch_size=e.batch_size, dtype=e.dtype, channels=e.channels, on_error=e.on_error,
                           device=e.device, torch_threads=e.torch_threads)

    # -- bookkeeping -----------------------------------------------------------------------------
    def _stages(self) -> dict:
        path = self.folder / "stages.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _mark(self, stage: str, inputs: str, **info) -> None:
        state = self._stages()
        state[stage] = {"inputs": inputs, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        tmp = self.folder / "stages.json.tmp"
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.folder / "stages.json")

    def _fresh(self, stage: str, inputs: str, outputs: Sequence[Path]) -> bool:
        done = self._stages().get(stage, {})
        if done.get("inputs") == inputs and all(p.exists() for p in outputs):
            log.info("%s: inputs unchanged, reusing %s", stage, ", ".join(str(p) for p in outputs))
            return True
        if done:
            log.info("%s: inputs changed since the last run, recomputing", stage)
        return False

    def _store_state(self) -> str:
        manifest = json.loads((self.store / "manifest.json").read_text())
        done = {}
        for line in (self.store / "done.jsonl").read_text().splitlines():
            try:
                rec = json.loads(line)
                done[int(rec["shard"])] = rec["checksum"]
            except (ValueError, KeyError):
                continue
        return _hash(manifest["key"], sorted(done.items()))

    def write_resolved(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        resolved = {"job": self.job.model_dump(mode="json"), "hash": self.job.digest(),
                    "explain_spec": {k: v for k, v in self.spec.__dict__.items()}}
        if self.bed_info:
            resolved["bed"] = self.bed_info
        (self.folder / "job.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    # -- stages ----------------------------------------------------------------------------------
    def cluster_spec(self) -> ClusterSpec:
        """Where the explain and the analysis tasks run (the job's ``cluster:``)."""
        c = self.job.cluster
        return ClusterSpec(mode=c.mode, n_workers=c.n_workers, threads_per_worker=c.threads_per_worker,
                           address=c.address, dashboard=c.dashboard)

    def explain(self):
        e = self.job.explain
        result = run_explain(self.spec, self.store, classes=e.classes, ids=e.ids, shard_size=e.shard_size,
                             cluster=self.cluster_spec(), progress=self.progress)
        log.info("explain: %d samples in %d shards (%d computed, %d reused) in %.1f s", result.samples, result.shards,
                 result.computed, result.reused, result.seconds)
        self._mark("explain", self._store_state(), samples=result.samples, seconds=round(result.seconds, 2),
                   shards_computed=result.computed, shards_reused=result.reused)
        return result

    def analysis_params(self) -> AnalysisParams:
        a = self.job.analysis
        return AnalysisParams(pool=a.pool, mode=a.mode, n_neighbors=a.n_neighbors, knn=a.knn, weights=a.weights,
                              pca=a.pca, n_eigval=a.n_eigval, k_range=(a.k_min, a.k_max), clusterer=a.clusterer,
                              embeddings=tuple(a.embeddings), embed_on=a.embed_on, random_state=a.seed,
                              group_by=a.group_by, min_class_size=a.min_class_size,
                              n_examples=self.job.report.examples, threshold=a.threshold, classes=a.classes,
                              embed_top=a.embed_top)

    def analyze(self) -> dict:
        self._need_store()
        params = self.analysis_params()
        inputs = _hash(self._store_state(), params.__dict__)
        if self._fresh("analyze", inputs, [self.analysis / "analysis.json", self.analysis / "analysis.h5"]):
            return json.loads((self.analysis / "analysis.json").read_text())
        summary = analyze_store(self.store, self.analysis, params, progress=self.progress, cluster=self.cluster_spec())
        self._mark("analyze", inputs, seconds=summary["seconds"], **summary["reuse"],
                   embedding={m: n for m, n in summary["embedding"]["classes"].items()})
        return summary

    def verify(self) -> Optional[Dict[str, dict]]:
        path = self.analysis / "verification.json"
        if not self.job.verify.enabled:
            log.info("verify: disabled in the job")
            return None
        inputs = _hash(self._stages().get("analyze", {}).get("inputs"), self.job.verify.model_dump())
        if self._fresh("verify", inputs, [path]):
            return json.loads(path.read_text())
        results = verify_flagged(self.store, self.analysis, self.spec, self.job.verify.n_images)
        tmp = path.with_name("verification.json.tmp")
        tmp.write_text(json.dumps(results, indent=1))
        os.replace(tmp, path)
        self._mark("verify", inputs)
        return results

    def write_report(self) -> Path:
        verification = None
        if self.job.verify.enabled and (self.analysis / "verification.json").exists():
            verification = json.loads((self.analysis / "verification.json").read_text())
        inputs = _hash(self._stages().get("analyze", {}).get("inputs"), verification, self.job.report.model_dump(),
                       self.bed_info)
        index = self.report / "index.html"
        if self._fresh("report", inputs, [index, self.report / "summary.json"]):
            return index
        run_info = {"name": self.job.name, "job_hash": self.job.digest()}
        if self.bed_info:
            run_info["bed"] = {"name": self.bed_info["name"], "clean_accuracy": self.bed_info["clean_accuracy"],
                               "shortcuts": {k: {"class": v["class"], "flip_rate": v["flip"]["rate"],
                                                 "base_rate": v["base_rate"]}
                                             for k, v in self.bed_info["shortcuts"].items()}}
        out = write_report(self.store, self.analysis, self.report, verification, run_info, self.job.report.examples)
        self._mark("report", inputs)
        return out

    def _need_store(self) -> None:
        if not (self.store / "heatmaps.h5").exists():
            raise ConfigError(f"no finished heatmap store in {self.store}; run `spray explain` (or `spray run`) with "
                              f"this job first")


def verify_flagged(store_path: Path, analysis: Path, spec: ExplainSpec, n_images: int = 500, seed: int = 0) -> dict:
    """Artifact-insertion test with a control for every flagged cluster (spray.verify): a local
    finding's region is pasted from its members onto other classes' images, against the same region
    and the most relevant piece of the same shape from the class's other samples; a non-local
    finding swaps backgrounds, against backgrounds of the class's other samples. Entries are keyed
    "label/cluster" and carry the flip rate, the control rate and ``confirmed``."""
    summary = json.loads((analysis / "analysis.json").read_text())
    todo = [(c["label"], cl) for c in summary["classes"] for cl in c["clusters"] if cl["flagged"]]
    results: Dict[str, dict] = {}
    if not todo:
        return results
    model = load_model(**spec.model)
    source = open_source(spec.data)
    preprocess = Preprocess(**spec.preprocess)
    rng = np.random.default_rng(seed)
    pool = summary["params"].get("pool")

    def images(indices) -> torch.Tensor:
        ds = SampleDataset(source, preprocess, indices, on_error="stop")
        return torch.cat([b.x for b in batches(ds, 256)])

    with HeatmapStore(store_path) as store, h5py.File(analysis / "analysis.h5", "r") as ah5:
        position = {i: r for r, i in enumerate(store.ids)}
        cell = store.shape[-1] // pool if pool else 1

        def heat(rows) -> np.ndarray:
            return store.relevance(rows).sum(1)

        for label, cl in todo:
            key = f"{label}/{cl['cluster']}"
            member_rows = np.array([position[i] for i in cl["members"]])
            donor_rows = np.sort(rng.permutation(member_rows)[:n_images])
            rest_rows = np.setdiff1d(store.rows_of(label), member_rows)
            rest_rows = np.sort(rng.permutation(rest_rows)[:n_images])
            other_rows = np.flatnonzero(store.labels != label)
            if len(other_rows) == 0 or len(rest_rows) == 0:
                log.warning("verify: class %s cluster %s: no %s to test against; not verified", label, cl["cluster"],
                            "other-class images" if len(other_rows) == 0 else "unflagged samples of the class")
                continue
            other_rows = np.sort(rng.permutation(other_rows)[:n_images])
            others, members, rest = (images(store.index[r]) for r in (other_rows, donor_rows, rest_rows))
            if cl["kind"] == "local":
                mask = ah5[f"{label:08d}/mask/{cl['cluster']}"][()]
                result = verify_local(model, others, members, rest, heat(rest_rows), mask, label)
            else:
                result = verify_background(model, others, heat(other_rows), members, rest, label, cell)
            results[key] = result.to_dict()
            log.info("verify: class %s cluster %s (%s): flips %.1f%% of %d other-class images, control %.1f%% (%s): %s",
                     label, cl["cluster"], result.method, 100 * result.flip.rate, result.flip.n,
                     100 * result.control_rate, result.control, "confirmed" if result.confirmed else "NOT confirmed")
    return results


def run_job(job: JobConfig, stages: Sequence[str] = STAGES, progress: bool = True) -> Run:
    run = Run(job, progress)
    run.write_resolved()
    for stage in stages:
        if stage == "explain":
            run.explain()
        elif stage == "analyze":
            run.analyze()
        elif stage == "verify":
            run.verify()
        elif stage == "report":
            run.write_report()
        else:
            raise ConfigError(f"unknown stage {stage!r}; stages are {STAGES}")
    return run
