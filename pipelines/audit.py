"""The audit pipeline: explain -> analyze -> verify -> report, wired from a validated job.

A run holds the run folder's lock (``RUN/.lock``) from before its first stage to after its last,
so a second run of the same folder is refused before it touches anything. Each stage records in
``stages.json`` a hash of its inputs and the size, mtime and sha256 of every file it wrote; a
re-run reuses a stage only when its inputs are unchanged and its outputs and the files it reads
are still there, unchanged, and recomputes it otherwise (the log and ``stages.json`` say which).
The explain stage reuses heatmaps sample by sample (see :mod:`spray.explain.run`).

    RUN/job.resolved.yaml   the job as validated, with its hash
    RUN/store/              heatmap store (spray.store)
    RUN/analysis/           analysis.h5, virelay.h5, analysis.json, verification.json
    RUN/report/             index.html, summary.json, class-*/ (HTML, PNG, CSV, JSON)

A read-only run folder is accepted when every stage asked for is up to date (nothing is written);
otherwise the error names the stage that would have to write.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Dict, List, Optional, Sequence

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
from spray.errors import ConfigError, SprayError, StorageError, storage_error
from spray.explain import ClusterSpec, ExplainSpec, prepare, run_explain
from spray.models.loading import load_model
from spray.report import write_report
from spray.store import HeatmapStore, ReadOnlyFolder, StoreLock, store_content
from spray.verify import verify_background, verify_local

log = logging.getLogger("spray.pipeline")
STAGES = ("explain", "analyze", "verify", "report")
COMMAND = {"explain": "spray explain JOB", "analyze": "spray analyze JOB", "verify": "spray analyze JOB",
           "report": "spray report JOB"}


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Run:
    """A job resolved into stage inputs, bound to its run folder (an absolute path)."""

    def __init__(self, job: JobConfig, progress: bool = True):
        self.job, self.progress = job, progress
        self.folder = Path(job.out).absolute()
        self.store = self.folder / "store"
        self.analysis = self.folder / "analysis"
        self.report = self.folder / "report"
        self.bed_info: Optional[dict] = None
        self.writable = True
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
                           device=e.device, torch_threads=e.torch_threads).with_absolute_paths()

    # -- bookkeeping -----------------------------------------------------------------------------
    def _stages(self) -> dict:
        path = self.folder / "stages.json"
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            log.warning("%s is unreadable; every stage is checked again", path)
            return {}

    def _write(self, path: Path, text: str) -> None:
        """Atomically (temp file, rename); a failure is one sentence, and the old file stays."""
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise storage_error(err, path) from None

    def _mark(self, stage: str, inputs: str, outputs: Sequence[Path] = (), **info) -> None:
        """Record a finished stage: its inputs' hash and each output's size, mtime and sha256."""
        state = self._stages()
        files = {}
        for path in outputs:
            st = path.stat()
            files[str(path.relative_to(self.folder))] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                         "sha256": _sha256(path)}
        state[stage] = {"inputs": inputs, "outputs": files, "reused": False,
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self._write(self.folder / "stages.json", json.dumps(state, indent=1))

    def _mark_reused(self, stage: str) -> None:
        if not self.writable:
            return
        state = self._stages()
        state[stage] = {**state[stage], "reused": True, "checked": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self._write(self.folder / "stages.json", json.dumps(state, indent=1))

    def _changed_outputs(self, stage: str) -> List[str]:
        """The recorded outputs of ``stage`` that are gone or hold other bytes now."""
        changed = []
        for name, rec in self._stages().get(stage, {}).get("outputs", {}).items():
            path = self.folder / name
            try:
                st = path.stat()
            except OSError:
                changed.append(f"{name} is missing")
                continue
            if (st.st_size, st.st_mtime_ns) != (rec["size"], rec["mtime_ns"]) and _sha256(path) != rec["sha256"]:
                changed.append(f"{name} changed")
        return changed

    def _status(self, stage: str, inputs: str) -> Optional[str]:
        """None when ``stage`` may be reused; else why it must run."""
        done = self._stages().get(stage)
        if not done:
            return "not run yet"
        if done.get("inputs") != inputs:
            return "its inputs changed since the last run"
        changed = self._changed_outputs(stage)
        return f"its output {changed[0]}" if changed else None

    def _fresh(self, stage: str, inputs: str) -> bool:
        why = self._status(stage, inputs)
        if why is None:
            log.info("%s: inputs unchanged and outputs intact, reusing it", stage)
            self._mark_reused(stage)
            return True
        log.info("%s: computing (%s)", stage, why)
        return False

    def _outputs_of(self, stage: str) -> str:
        """The content of what ``stage`` wrote, for the stages that read it; the files must still be
        there and unchanged (else the error says which stage to run again)."""
        done = self._stages().get(stage)
        if not done:
            raise ConfigError(f"the {stage} stage has not run in {self.folder}; run `{COMMAND[stage]}` (or `spray run "
                              f"JOB`) first")
        changed = self._changed_outputs(stage)
        if changed:
            raise SprayError(f"{self.folder}: {changed[0]} since the {stage} stage wrote it; run `{COMMAND[stage]}` "
                             f"(or `spray run JOB`) to compute it again")
        return _hash(sorted((k, v["sha256"]) for k, v in done["outputs"].items()))

    def _store_content(self) -> str:
        """The store's content digest, after checking that every shard it reads is there and intact."""
        if not (self.store / "manifest.json").exists():
            raise ConfigError(f"no heatmap store in {self.store}; run `spray explain JOB` (or `spray run JOB`) with "
                              f"this job first")
        with HeatmapStore(self.store) as store:
            return store.content

    def write_resolved(self) -> None:
        resolved = {"job": self.job.model_dump(mode="json"), "hash": self.job.digest(),
                    "explain_spec": {k: v for k, v in self.spec.__dict__.items()}}
        if self.bed_info:
            resolved["bed"] = self.bed_info
        text = yaml.safe_dump(resolved, sort_keys=False)
        path = self.folder / "job.resolved.yaml"
        if not (path.exists() and path.read_text() == text):
            self._write(path, text)

    # -- what each stage reads -------------------------------------------------------------------
    def _explain_kwargs(self) -> dict:
        e = self.job.explain
        return {"classes": e.classes, "ids": e.ids}

    def _analyze_inputs(self) -> str:
        return _hash(self._store_content(), self.analysis_params().__dict__)

    def _verify_inputs(self) -> str:
        return _hash(self._outputs_of("analyze"), self.job.verify.model_dump())

    def _report_inputs(self) -> str:
        self._store_content()  # the report shows heatmaps: the store must be intact too
        verification = self._outputs_of("verify") if self.job.verify.enabled else None
        return _hash(self._outputs_of("analyze"), verification, self.job.report.model_dump(), self.bed_info)

    def status(self, stage: str) -> Optional[str]:
        """None when ``stage`` is up to date; else why it must run. Reads only."""
        if stage == "explain":
            prep = prepare(self.spec, store=self.store, **self._explain_kwargs())
            return store_content(self.store, prep.identity, prep.selection, self.spec.on_error == "stop")
        if stage == "verify" and not self.job.verify.enabled:
            return None
        inputs = {"analyze": self._analyze_inputs, "verify": self._verify_inputs, "report": self._report_inputs}
        return self._status(stage, inputs[stage]())

    # -- stages ----------------------------------------------------------------------------------
    def cluster_spec(self) -> ClusterSpec:
        """Where the explain and the analysis tasks run (the job's ``cluster:``)."""
        c = self.job.cluster
        return ClusterSpec(mode=c.mode, n_workers=c.n_workers, threads_per_worker=c.threads_per_worker,
                           address=c.address, dashboard=c.dashboard)

    def explain(self):
        e = self.job.explain
        result = run_explain(self.spec, self.store, shard_size=e.shard_size, cluster=self.cluster_spec(),
                             progress=self.progress, **self._explain_kwargs())
        log.info("explain: %d samples in %d shards: %d explained (%d shards), %d reused, %d skipped, in %.1f s",
                 result.samples, result.shards, result.computed_samples, result.computed, result.reused_samples,
                 result.skipped, result.seconds)
        info = result.to_dict()
        info.pop("store")
        self._mark("explain", self._store_content(), **info)
        if not result.computed_samples:
            self._mark_reused("explain")
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
        inputs = self._analyze_inputs()
        if self._fresh("analyze", inputs):
            return json.loads((self.analysis / "analysis.json").read_text())
        summary = analyze_store(self.store, self.analysis, self.analysis_params(), progress=self.progress,
                                cluster=self.cluster_spec())
        outputs = [self.analysis / name for name in ("analysis.json", "analysis.h5", "virelay.h5")]
        self._mark("analyze", inputs, [p for p in outputs if p.exists()], seconds=summary["seconds"],
                   **summary["reuse"], embedding={m: n for m, n in summary["embedding"]["classes"].items()})
        return summary

    def verify(self) -> Optional[Dict[str, dict]]:
        path = self.analysis / "verification.json"
        if not self.job.verify.enabled:
            log.info("verify: disabled in the job")
            return None
        inputs = self._verify_inputs()
        if self._fresh("verify", inputs):
            return json.loads(path.read_text())
        results = verify_flagged(self.store, self.analysis, self.spec, self.job.verify.n_images)
        self._write(path, json.dumps(results, indent=1))
        self._mark("verify", inputs, [path])
        return results

    def write_report(self) -> Path:
        inputs = self._report_inputs()
        index = self.report / "index.html"
        if self._fresh("report", inputs):
            return index
        verification = None
        if self.job.verify.enabled:
            verification = json.loads((self.analysis / "verification.json").read_text())
        run_info = {"name": self.job.name, "job_hash": self.job.digest()}
        if self.bed_info:
            run_info["bed"] = {"name": self.bed_info["name"], "clean_accuracy": self.bed_info["clean_accuracy"],
                               "shortcuts": {k: {"class": v["class"], "flip_rate": v["flip"]["rate"],
                                                 "base_rate": v["base_rate"]}
                                             for k, v in self.bed_info["shortcuts"].items()}}
        out = write_report(self.store, self.analysis, self.report, verification, run_info, self.job.report.examples)
        self._mark("report", inputs, sorted(p for p in self.report.rglob("*") if p.is_file()))
        return out


def verify_flagged(store_path: Path, analysis: Path, spec: ExplainSpec, n_images: int = 500, seed: int = 0) -> dict:
    """Artifact-insertion test with a control for every flagged cluster (spray.verify): a local
    finding's region is pasted from its members onto other classes' images, against the same region
    and the most relevant piece of the same shape from the class's other samples; a non-local
    finding, or a local one that is a background seen at one place (``seen_at_one_place``: the
    finding is the photo, not the pixels at the place), swaps backgrounds, against backgrounds of
    the class's other samples. Entries are keyed
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
            finding_rows = np.array([position[i] for i in cl["carriers"]])
            donor_rows = np.sort(rng.permutation(finding_rows)[:n_images])
            rest_rows = np.setdiff1d(store.rows_of(label), finding_rows)
            rest_rows = np.sort(rng.permutation(rest_rows)[:n_images])
            other_rows = np.flatnonzero(store.labels != label)
            if len(other_rows) == 0 or len(rest_rows) == 0:
                log.warning("verify: class %s cluster %s: no %s to test against; not verified", label, cl["cluster"],
                            "other-class images" if len(other_rows) == 0 else "unflagged samples of the class")
                continue
            other_rows = np.sort(rng.permutation(other_rows)[:n_images])
            others, members, rest = (images(store.index[r]) for r in (other_rows, donor_rows, rest_rows))
            if cl["kind"] == "local" and not cl.get("seen_at_one_place"):
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
    """Run ``stages`` of ``job`` under the run folder's lock (a second run of the folder is refused
    before it touches anything); a read-only folder passes when every stage is up to date."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage {unknown[0]!r}; stages are {STAGES}")
    lock = StoreLock(Path(job.out).absolute(), what="run folder")
    try:
        lock.acquire()
    except ReadOnlyFolder as err:
        return _read_only(job, stages, progress, err)
    try:
        if lock.took_over_from:
            log.warning("took over the lock of a dead run of this folder (pid %s)", lock.took_over_from.get("pid"))
        run = Run(job, progress)
        run.write_resolved()
        steps = {"explain": run.explain, "analyze": run.analyze, "verify": run.verify, "report": run.write_report}
        for stage in stages:
            log.info("%s: started", stage)
            steps[stage]()
    finally:
        lock.release()
    return run


def _read_only(job: JobConfig, stages: Sequence[str], progress: bool, err: StorageError) -> Run:
    run = Run(job, progress)
    run.writable = False
    for stage in stages:
        why = run.status(stage)
        if why is not None:
            raise StorageError(f"{err}. The {stage} stage must run ({why}), and it writes into {run.folder}") from None
    log.warning("run folder %s is read-only; every stage is up to date, nothing was written", run.folder)
    return run
