"""Fault injection: every fault ends in exit 0 with a result equal to an uninterrupted run, or in
exit 1/2 with exactly one message that names the input and the fix, and nothing computed is lost.

The fast cases run here on a tiny synthetic project (synchronous mode where the cluster is not
the point); the slow ones (the demo bed, every stage) are marked and run by benchmarks/faults.py.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from .runs import (
    clean_run,
    compare_runs,
    ctrl_c_handled,
    dask_logs,
    equal_runs,
    errors_of,
    finish,
    flip_heatmap_byte,
    has_traceback,
    kill_group,
    only,
    spray,
    spray_main,
    tiny_project,
    wait_for,
    write_job,
)

STAGES = ("explain", "analyze", "verify", "report")
# an incremental run explains its new samples in other batches than a fresh run: the heatmaps agree
# to float16 rounding of float32 results that differ in the last bits
INCREMENTAL = {"rtol": 2e-3, "atol": 1e-6}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tiny project and its uninterrupted run: (job, folder of the clean run)."""
    folder = tmp_path_factory.mktemp("project")
    job = tiny_project(folder)
    return job, clean_run(job, folder / "clean")


def _job(project, tmp_path, **changes):
    job, _ = project
    return write_job(tmp_path / "job.yaml", job, out=str(tmp_path / "run"), **changes)


def _failed(code, output, *fragments, exit_code=1):
    """Exactly one error line, no traceback, no echo of it from dask's workers, the given fragments in it."""
    assert code == exit_code, output[-3000:]
    assert not has_traceback(output), output[-3000:]
    assert not dask_logs(output), output[-3000:]
    line = only(errors_of(output))
    for fragment in fragments:
        assert fragment in line, line
    return line


# -- concurrency and kills -----------------------------------------------------------------------
def test_a_second_run_is_refused_in_every_stage_and_the_first_is_unharmed(project, tmp_path):
    job = _job(project, tmp_path)
    first = spray("run", job)
    for stage in STAGES:
        wait_for(first, rf"pipeline: {stage}: started")
        kill_group(first, signal.SIGSTOP)  # hold the first run inside the stage
        try:
            code, err = spray_main("run", job)
            _failed(code, err, "run folder", "is being written by pid", "wait for that run to finish")
        finally:
            kill_group(first, signal.SIGCONT)
    out = finish(first)
    assert first.returncode == 0, out[-3000:]
    equal_runs(tmp_path / "run", project[1])


@pytest.mark.parametrize("stage, moment", [
    pytest.param("startup", r"pipeline: explain: started", marks=pytest.mark.slow),
    ("explain", r"shard \w+ \(class 1"),
    ("analyze", r"class 0: n="),
    pytest.param("verify", r"pipeline: verify: started", marks=pytest.mark.slow),
    pytest.param("report", r"pipeline: report: started", marks=pytest.mark.slow),
])
def test_kill_9_in_a_stage_then_the_same_command_resumes_to_the_same_run(project, tmp_path, stage, moment):
    job = _job(project, tmp_path)
    proc = spray("run", job)
    wait_for(proc, moment)
    kill_group(proc)
    proc.wait()
    code, err = spray_main("run", job)
    assert code == 0, err[-3000:]
    if stage != "startup":
        assert "took over the lock of a dead run" in err
    equal_runs(tmp_path / "run", project[1])


def test_ctrl_c_on_a_local_cluster_is_one_line_and_the_run_resumes(project, tmp_path):
    job = _job(project, tmp_path, cluster__mode="local")
    proc = spray("run", job)
    wait_for(proc, r"shard \w+ \(class 0")
    kill_group(proc, signal.SIGINT)  # what Ctrl-C sends: the client and its worker processes
    out = finish(proc, 120)
    _failed(proc.returncode, out, "interrupted", "re-run the same command to resume")
    assert "KeyboardInterrupt" not in out
    code, err = spray_main("run", job)
    assert code == 0, err[-3000:]
    equal_runs(tmp_path / "run", project[1])


def test_ctrl_c_that_lands_in_a_finaliser_still_stops_the_command():
    """Python cannot raise from a ``__del__``: a Ctrl-C arriving while the client frees a dask future
    would be swallowed and the run would go on to its end. It must stop the run."""
    from spray.interrupts import CtrlC

    class Freed:
        def __del__(self):
            raise KeyboardInterrupt  # what Python's SIGINT handler does when the signal lands here

    with ctrl_c_handled(), pytest.raises(KeyboardInterrupt), CtrlC():
        Freed()
        for _ in range(1000):  # the run going on
            time.sleep(0.001)


def test_the_traceback_of_distributeds_interrupted_sync_is_dropped_and_nothing_else():
    """Ctrl-C landing before distributed's sync() waits makes tornado log its cancel callback's
    NameError (seen once in the test above under load); only that record is dropped."""
    import logging

    from spray.interrupts import interrupted_sync

    def record(message, error):
        try:
            raise error
        except Exception:
            return logging.LogRecord("tornado.application", logging.ERROR, __file__, 1, message, (), sys.exc_info())
    cancel = "Exception in callback functools.partial(<function sync.<locals>.cancel at 0x7f3b594a09a0>)"
    assert not interrupted_sync(record(cancel, NameError("cannot access free variable 'future'")))
    assert interrupted_sync(record(cancel, OSError("disk full")))
    assert interrupted_sync(record("Exception in callback <function other>", NameError("x")))


# -- the data or the store changed behind the run's back ---------------------------------------------
def _grow_and_change(data: Path, out: Path, added: int, changed=(3, 40)) -> None:
    d = np.load(data)
    images, labels, ids = d["images"].copy(), d["labels"], d["ids"]
    for row in changed:
        images[row] = 255 - images[row]
    rng = np.random.default_rng(7)
    new = (rng.random((added,) + images.shape[1:]) * 255).astype(np.uint8)
    new_labels = np.arange(added) % (labels.max() + 1)
    new_ids = np.array([f"{ids[k * 7]}+" for k in range(added)])  # sort between the old ids
    np.savez(out, images=np.concatenate([images, new]), labels=np.concatenate([labels, new_labels]),
             ids=np.concatenate([ids, new_ids]))


def test_data_changed_after_a_kill_recomputes_only_what_changed_and_equals_a_fresh_run(project, tmp_path):
    job, _ = project
    path = _job(project, tmp_path)
    proc = spray("run", path)
    wait_for(proc, r"shard \w+ \(class 1")
    kill_group(proc)
    proc.wait()
    _grow_and_change(Path(job["data"]["path"]), tmp_path / "grown.npz", added=5)
    grown = write_job(tmp_path / "grown.yaml", job, out=str(tmp_path / "run"), data__path=str(tmp_path / "grown.npz"))
    code, err = spray_main("run", grown)
    assert code == 0, err[-3000:]
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert stages["explain"]["samples"] == 95 and stages["explain"]["computed_samples"] < 95
    fresh = clean_run({**job, "data": {**job["data"], "path": str(tmp_path / "grown.npz")}}, tmp_path / "fresh")
    equal_runs(tmp_path / "run", fresh, shards=False, **INCREMENTAL)


def test_growth_explains_only_the_new_samples_and_equals_a_fresh_run(project, tmp_path):
    job, clean = project
    shutil.copytree(clean, tmp_path / "run")
    _grow_and_change(Path(job["data"]["path"]), tmp_path / "grown.npz", added=6)
    grown = write_job(tmp_path / "grown.yaml", job, out=str(tmp_path / "run"), data__path=str(tmp_path / "grown.npz"))
    code, err = spray_main("run", grown)
    assert code == 0, err[-3000:]
    assert "since the last index: 6 new, 2 changed, 0 removed" in err
    explain = json.loads((tmp_path / "run" / "stages.json").read_text())["explain"]
    assert (explain["computed_samples"], explain["reused_samples"]) == (8, 88)
    assert explain["changes"] == {"new": 6, "changed": 2, "removed": 0} and not explain["reused"]
    fresh = clean_run({**job, "data": {**job["data"], "path": str(tmp_path / "grown.npz")}}, tmp_path / "fresh")
    equal_runs(tmp_path / "run", fresh, shards=False, **INCREMENTAL)
    code, err = spray_main("run", grown)  # and a third run reuses everything
    stages = json.loads((tmp_path / "run" / "stages.json").read_text())
    assert code == 0 and all(stages[s]["reused"] for s in STAGES), err[-2000:]


@pytest.mark.parametrize("damage", ["deleted", "corrupted"])
def test_a_damaged_shard_after_a_finished_run_is_noticed_and_recomputed(project, tmp_path, damage):
    shutil.copytree(project[1], tmp_path / "run")
    job = _job(project, tmp_path)
    shard = sorted((tmp_path / "run" / "store" / "shards").glob("*.h5"))[4]
    if damage == "deleted":
        shard.unlink()
    else:
        flip_heatmap_byte(shard)
    for command in ("analyze", "report"):
        code, err = spray_main(command, job)
        _failed(code, err, shard.name, "spray run JOB")
    code, err = spray_main("run", job)
    assert code == 0, err[-3000:]
    assert "analyze: inputs unchanged and outputs intact, reusing it" in err  # the same heatmaps came back
    equal_runs(tmp_path / "run", project[1])


def test_a_byte_flipped_unnoticed_is_named_when_analyze_reads_it(project, tmp_path):
    job = _job(project, tmp_path)
    code, err = spray_main("explain", job)
    assert code == 0, err
    shard = sorted((tmp_path / "run" / "store" / "shards").glob("*.h5"))[1]
    flip_heatmap_byte(shard, keep_mtime=True)  # bit rot: size and mtime as recorded
    code, err = spray_main("analyze", job)
    _failed(code, err, shard.name, "Delete", "re-run the explain stage")
    shard.unlink()
    code, err = spray_main("run", job)
    assert code == 0, err[-3000:]
    equal_runs(tmp_path / "run", project[1])


def test_a_deleted_analysis_file_is_noticed_by_report_and_recomputed_by_run(project, tmp_path):
    shutil.copytree(project[1], tmp_path / "run")
    job = _job(project, tmp_path)
    (tmp_path / "run" / "analysis" / "analysis.h5").unlink()
    code, err = spray_main("report", job)
    _failed(code, err, "analysis/analysis.h5 is missing", "spray analyze JOB")
    code, err = spray_main("run", job)
    assert code == 0 and "analyze: computing (its output analysis/analysis.h5 is missing)" in err, err[-3000:]
    equal_runs(tmp_path / "run", project[1])


# -- read-only folders and full disks ----------------------------------------------------------------
def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@contextmanager
def read_only(folder: Path):
    """``folder`` read-only: a read-only bind mount as root (root ignores permission bits), else
    the permission bits."""
    if os.geteuid() == 0:
        if _mount("--bind", str(folder), str(folder)).returncode != 0:
            pytest.skip("cannot bind-mount here (needs CAP_SYS_ADMIN)")
        try:
            if _mount("-o", "remount,bind,ro", str(folder)).returncode != 0:
                pytest.skip("cannot remount read-only here")
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=False)
    else:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


def test_a_read_only_run_folder_passes_when_up_to_date_and_names_the_stage_otherwise(project, tmp_path):
    shutil.copytree(project[1], tmp_path / "run")
    job = _job(project, tmp_path)
    with read_only(tmp_path / "run"):
        code, err = spray_main("run", job)
        assert code == 0 and "is read-only; every stage is up to date, nothing was written" in err, err[-3000:]
        assert not has_traceback(err)
        code, err = spray_main("run", job, "--quiet", "--set", "report.examples=4")
        _failed(code, err, "read-only", "The analyze stage must run", "set `out:` to a writable folder")
    equal_runs(tmp_path / "run", project[1])


@contextmanager
def small_disk(folder: Path, size: str):
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    if _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield lambda new_size: _mount("-o", f"remount,size={new_size}", str(folder))
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_is_one_line_and_a_rerun_with_space_finishes_the_same_run(project, tmp_path):
    job, clean = project
    disk = tmp_path / "disk"
    path = write_job(tmp_path / "job.yaml", job, out=str(disk / "run"), cluster__mode="local")
    with small_disk(disk, "160k") as resize:
        failed = spray("run", path)
        out = finish(failed)
        _failed(failed.returncode, out, "no space left on the device", "re-running the same command resumes")
        assert resize("700k").returncode == 0
        code, err = spray_main("run", path)  # fails later, in analyze or report
        _failed(code, err, "no space left on the device")
        assert resize("8m").returncode == 0
        code, err = spray_main("run", path)
        assert code == 0, err[-3000:]
        equal_runs(disk / "run", clean)


# -- task errors and messages that do not mislead -----------------------------------------------------
def _image_folder(project, root: Path) -> Path:
    from PIL import Image
    job, _ = project
    d = np.load(job["data"]["path"])
    for row in range(0, len(d["labels"]), 3):
        folder = root / f"c{d['labels'][row]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(d["images"][row]).save(folder / f"{row:03d}.png")
    return root


def test_a_task_error_on_a_local_cluster_is_its_own_message_once(project, tmp_path):
    root = _image_folder(project, tmp_path / "images")
    bad = root / "c1" / "042.png"
    bad.write_bytes(bad.read_bytes()[:40])
    job = _job(project, tmp_path, data={"type": "image_folder", "path": str(root)}, cluster__mode="local")
    proc = spray("explain", job)
    out = finish(proc)
    _failed(proc.returncode, out, "c1/042.png", "explain.on_error: skip")
    # the fix the message suggests works on the same folder (on_error is no part of the store identity)
    code, err = spray_main("run", job, "--quiet", "--set", "explain.on_error=skip", "--set", "cluster.mode=synchronous")
    assert code == 0, err[-3000:]
    assert "c1/042.png" in (tmp_path / "run" / "store" / "skipped.csv").read_text()


def test_a_model_factory_that_raises_is_named(project, tmp_path):
    (tmp_path / "broken.py").write_text("def make(num_classes=3):\n    raise RuntimeError('no such checkpoint')\n")
    job = _job(project, tmp_path, model={"factory": f"{tmp_path}/broken.py:make", "kwargs": {"num_classes": 3}})
    code, err = spray_main("run", job)
    _failed(code, err, "broken.py:make", "raised RuntimeError: no such checkpoint", exit_code=2)


def test_float_channels_last_arrays_get_the_transpose(project, tmp_path):
    d = np.load(project[0]["data"]["path"])
    np.savez(tmp_path / "f.npz", images=d["images"].astype(np.float64) / 255, labels=d["labels"])
    job = _job(project, tmp_path, data={"type": "npz", "path": str(tmp_path / "f.npz")})
    code, err = spray_main("run", job)
    _failed(code, err, "look channels-last (NHWC)", "images.transpose(0, 3, 1, 2)")


def test_a_label_beyond_the_models_outputs_says_where_the_class_count_came_from(project, tmp_path):
    d = np.load(project[0]["data"]["path"])
    labels = d["labels"].copy()
    labels[-1] = 12
    np.savez(tmp_path / "l.npz", images=d["images"], labels=labels)
    job = _job(project, tmp_path, data={"type": "npz", "path": str(tmp_path / "l.npz")})
    code, err = spray_main("run", job)
    _failed(code, err, "expected (1, 13) logits", "counted from the largest label, 12", "give data.classes")


def test_home_and_variables_are_expanded_in_every_path(project, tmp_path, monkeypatch):
    job, clean = project
    data = Path(job["data"]["path"])
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SPRAY_TEST_DATA", str(data.parent))
    monkeypatch.chdir(tmp_path)
    path = write_job(tmp_path / "job.yaml", job, out="~/audits/x", data__path="$SPRAY_TEST_DATA/data.npz",
                     model__weights="${SPRAY_TEST_DATA}/model.pt")
    code, err = spray_main("run", path)
    assert code == 0, err[-3000:]
    assert not (tmp_path / "~").exists() and (tmp_path / "home" / "audits" / "x" / "report" / "index.html").exists()
    equal_runs(tmp_path / "home" / "audits" / "x", clean)
    monkeypatch.delenv("SPRAY_TEST_DATA")
    code, err = spray_main("run", path)
    _failed(code, err, "data.path", "SPRAY_TEST_DATA, which is not set", exit_code=2)


def test_compare_runs_sees_a_changed_dataset(project, tmp_path):
    shutil.copytree(project[1], tmp_path / "run")
    import h5py
    with h5py.File(tmp_path / "run" / "analysis" / "analysis.h5", "a") as fh:
        name = next(iter(fh))
        fh[f"{name}/eigenvalues"][0] += 1
    assert compare_runs(tmp_path / "run", project[1]) == [f"analysis/analysis.h5:{name}/eigenvalues: dataset differs"]


# -- an existing scheduler, workers started elsewhere ---------------------------------------------
def _dask(*args, cwd):
    return subprocess.Popen([str(Path(sys.executable).with_name("dask")), *args], cwd=cwd,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "DASK_LOGGING__DISTRIBUTED": "error"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A `dask scheduler` and two `dask worker` processes, all started in another directory."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    file = elsewhere / "scheduler.json"
    procs = [_dask("scheduler", "--port", "0", "--no-dashboard", "--scheduler-file", str(file), cwd=elsewhere)]
    try:
        procs += [_dask("worker", "--scheduler-file", str(file), "--nthreads", "1", "--no-dashboard",
                        "--name", f"w{k}", cwd=elsewhere) for k in range(2)]
        from distributed import Client
        deadline = 120
        import time
        started = time.time()
        while not file.exists() and time.time() - started < deadline:
            time.sleep(0.2)
        with Client(scheduler_file=str(file), timeout="60s") as client:
            client.wait_for_workers(2, timeout=deadline)
            address = client.scheduler.address
            assert all(Path(d) == elsewhere for d in client.run(os.getcwd).values())
        yield address
    finally:
        for proc in reversed(procs):
            kill_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                kill_group(proc)


def test_address_mode_runs_the_demo_job_with_relative_paths_on_workers_started_elsewhere(bed_cache, scheduler,
                                                                                         tmp_path):
    from pipelines.demo import demo_job
    from spray.datasets import prepare_bed
    bed = prepare_bed("watermark", cache=bed_cache, n_per_class=160)  # the small demo's bed, trained once
    client_dir = tmp_path / "client"
    shutil.copytree(bed.folder, client_dir / "cache" / bed.folder.name)
    job = demo_job("run", small=True).model_dump(mode="json")
    job["cluster"] = {"mode": "address", "address": scheduler}
    path = write_job(client_dir / "demo.yaml", job)
    proc = spray("run", path.name, "--quiet", cwd=client_dir, env={"SPRAY_CACHE": "cache"})  # relative, as by default
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    summary = json.loads((client_dir / "run" / "report" / "summary.json").read_text())
    assert summary["flagged"] and summary["flagged"][0]["class"] == 0
    pids = {json.loads(line)["pid"] for line in (client_dir / "run" / "store" / "done.jsonl").read_text().splitlines()}
    assert len(pids) == 2  # both remote workers explained


def test_a_task_error_on_a_remote_cluster_is_its_own_message_once(project, scheduler, tmp_path):
    root = _image_folder(project, tmp_path / "images")
    bad = root / "c2" / "087.png"
    bad.write_bytes(b"")
    job = _job(project, tmp_path, data={"type": "image_folder", "path": str(root)},
               cluster={"mode": "address", "address": scheduler})
    proc = spray("explain", job)
    out = finish(proc)
    _failed(proc.returncode, out, "c2/087.png", "not a readable image", "explain.on_error: skip")


# -- the demo at scale: kill -9 at seven moments, a killed worker (benchmarks/faults.py runs these) ----
@pytest.fixture(scope="module")
def clean_demo(bed_cache, tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo") / "clean"
    code, err = spray_main("demo", "--small", "--out", folder)
    assert code == 0, err[-3000:]
    return folder


DEMO_MOMENTS = [("startup", r"pipeline: explain: started"), ("early explain", r"shard \w+ \(class 0"),
                ("mid explain", r"shard \w+ \(class 4"), ("late explain", r"shard \w+ \(class 9"),
                ("analyze", r"class 3: n="), ("verify", r"pipeline: verify: started"),
                ("report", r"pipeline: report: started")]


@pytest.mark.slow
@pytest.mark.parametrize("stage, moment", DEMO_MOMENTS, ids=[m[0] for m in DEMO_MOMENTS])
def test_demo_kill_9_then_rerun_equals_the_clean_demo(clean_demo, tmp_path, stage, moment):
    out = tmp_path / "run"
    proc = spray("demo", "--small", "--out", out, env={"SPRAY_CACHE": os.environ["SPRAY_CACHE"]})
    wait_for(proc, moment, timeout=600)
    kill_group(proc)
    proc.wait()
    code, err = spray_main("demo", "--small", "--out", out)
    assert code == 0, err[-3000:]
    equal_runs(out, clean_demo)


@pytest.mark.slow
def test_demo_with_a_worker_killed_mid_explain_equals_the_clean_demo(clean_demo, tmp_path):
    out = tmp_path / "run"
    proc = spray("demo", "--small", "--out", out, env={"SPRAY_CACHE": os.environ["SPRAY_CACHE"]})
    lines = wait_for(proc, r"shard \w+ \(class 2\b.* on pid (\d+)", timeout=600)
    worker = int(re.search(r"on pid (\d+)", lines[-1]).group(1))
    os.kill(worker, signal.SIGKILL)
    out_text = finish(proc)
    assert proc.returncode == 0, out_text[-3000:]
    equal_runs(out, clean_demo)
