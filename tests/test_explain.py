"""The explain stage on a LocalCluster with 2 processes: stored heatmaps equal spray.lrp.explain,
and the store survives a killed job, a killed worker, a corrupt shard and a second run."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from spray.data import NpzSource, Preprocess, SampleDataset, batches
from spray.datasets import prepare_bed
from spray.errors import ConfigError
from spray.explain import ClusterSpec, run_explain
from spray.explain.task import resolve_composite
from spray.lrp import explain
from spray.models import load_model
from spray.store import CorruptShard, HeatmapStore, StoreIncomplete, StoreLock, StoreLocked

from .conftest import bed_spec
from .runs import flip_heatmap_byte

CLASSES = [0, 1]


def _arrays(folder):
    with HeatmapStore(folder) as st:
        return {"relevance": st.relevance(slice(None)), "ids": list(st.ids), "logits": st.logits,
                "label": st.labels.copy(), "prediction": st.predictions.copy()}


def _same(a, b):
    assert a["ids"] == b["ids"]
    for key in ("relevance", "logits", "label", "prediction"):
        assert np.array_equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def bed(bed_cache):
    return prepare_bed("watermark", cache=bed_cache)


@pytest.fixture(scope="module")
def reference(bed, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ref") / "store"
    run_explain(bed_spec(bed), folder, classes=CLASSES, shard_size=32, cluster=ClusterSpec(mode="synchronous"),
                progress=False)
    return folder


def test_cluster_store_equals_lrp_explain_and_survives_a_killed_worker(bed, tmp_path):
    from distributed import Client, LocalCluster
    spec = bed_spec(bed, dtype="float32")
    killed = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)

        def kill_one(rec):
            if not killed and len([*pids]) == 2:
                victim = next(pid for pid in pids.values() if pid != rec["pid"])
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        result = run_explain(spec, tmp_path / "s", classes=CLASSES, shard_size=32, client=client, progress=False,
                             on_shard=kill_one)
    assert killed and result.computed == result.shards
    source = NpzSource(bed.data)
    model = load_model(**spec.model)
    pre = Preprocess(**spec.preprocess)
    with HeatmapStore(tmp_path / "s") as st:
        assert len(st) == int(np.isin(source.labels, CLASSES).sum()) and st.verify() == []
        rows = np.arange(0, len(st), 37)
        (batch,) = batches(SampleDataset(source, pre, st.index[rows]), len(rows))
        expected = explain(model, batch.x, batch.labels, resolve_composite("epsilon_gamma_box", pre))
        assert batch.ids == [st.ids[r] for r in rows]
        np.testing.assert_allclose(st.relevance(rows), expected.sum(1, keepdim=True).numpy(), rtol=1e-4, atol=1e-6)
        assert (st.labels[rows] == batch.labels.numpy()).all()


def _job(bed, folder):
    job = {"name": "kill", "out": str(folder), "data": {"type": "npz", "path": str(bed.data)},
           "model": {"factory": bed.info["model"]["factory"], "kwargs": bed.info["model"]["kwargs"],
                     "weights": str(bed.weights)},
           "preprocess": bed.info["preprocess"],
           "explain": {"composite": "epsilon_gamma_box", "batch_size": 64, "shard_size": 32, "classes": CLASSES},
           "cluster": {"mode": "local", "n_workers": 2, "dashboard": False}}
    path = folder.parent / f"{folder.name}.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def _spray(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "spray.cli", *args], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_kill_9_of_the_whole_job_then_rerun_gives_the_same_store(bed, reference, tmp_path):
    run = tmp_path / "run"
    job = _job(bed, run)
    proc = _spray("explain", str(job))  # a pipe, not a terminal: no bars, INFO lines
    done = run / "store" / "done.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if done.exists() and len(done.read_text().splitlines()) >= 4:
            break
        if proc.poll() is not None:
            pytest.fail(f"explain ended before it could be killed: {proc.stdout.read().decode()[-2000:]}")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(done.read_text().splitlines())
    with pytest.raises(StoreIncomplete):
        HeatmapStore(run / "store")
    rerun = _spray("explain", str(job))
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, out.decode()[-3000:]
    assert "reused" in out.decode()
    _same(_arrays(run / "store"), _arrays(reference))
    assert finished < 20


def test_corrupt_shard_is_recomputed_and_concurrent_run_refused(bed, reference, tmp_path):
    import shutil
    folder = tmp_path / "store"
    shutil.copytree(reference, folder)
    shard = sorted((folder / "shards").glob("*.h5"))[3]
    flip_heatmap_byte(shard)
    with pytest.raises(CorruptShard, match=shard.name):
        HeatmapStore(folder)
    spec = bed_spec(bed)
    with StoreLock(folder):
        with pytest.raises(StoreLocked, match="being written by pid"):
            run_explain(spec, folder, classes=CLASSES, shard_size=32, cluster=ClusterSpec(mode="synchronous"),
                        progress=False)
    result = run_explain(spec, folder, classes=CLASSES, shard_size=32, cluster=ClusterSpec(mode="synchronous"),
                         progress=False)
    assert result.recomputed == [f"shards/{shard.name}"] and result.computed == 1
    _same(_arrays(folder), _arrays(reference))
    with pytest.raises(ConfigError, match="differs in: composite"):
        run_explain(bed_spec(bed, composite="epsilon_plus_flat"), folder, classes=CLASSES, shard_size=32,
                    cluster=ClusterSpec(mode="synchronous"), progress=False)
    _same(_arrays(folder), _arrays(reference))


def test_bad_sample_stops_with_its_name_or_is_skipped_and_listed(bed, tmp_path):
    from PIL import Image

    from spray.errors import InputError
    data = np.load(bed.data)
    root = tmp_path / "images"
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
        for i, row in enumerate(np.flatnonzero(data["labels"] == label)[:4]):
            Image.fromarray(data["images"][row]).save(root / str(label) / f"{i}.png")
    bad = root / "3" / "1.png"
    bad.write_bytes(bad.read_bytes()[:50])
    spec = bed_spec(bed)
    spec = type(spec)(**{**spec.__dict__, "data": {"type": "image_folder", "path": str(root)}})
    with pytest.raises(InputError, match=r"3/1\.png"):
        run_explain(spec, tmp_path / "stop", shard_size=4, cluster=ClusterSpec(mode="synchronous"), progress=False)
    assert len((tmp_path / "stop" / "done.jsonl").read_text().splitlines()) == 3  # classes 0-2 kept
    skip = type(spec)(**{**spec.__dict__, "on_error": "skip"})
    result = run_explain(skip, tmp_path / "skip", shard_size=4, cluster=ClusterSpec(mode="synchronous"), progress=False)
    assert result.skipped == 1 and result.samples == 39
    listed = (tmp_path / "skip" / "skipped.csv").read_text()
    assert "3/1.png" in listed and "truncated" in listed or "readable" in listed
    with HeatmapStore(tmp_path / "skip") as st:
        assert len(st) == 39 and "3/1.png" not in st.ids
