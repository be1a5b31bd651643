"""The heatmap store on its own: atomic verified shards, index, holes, locks, identity."""
import os

import numpy as np
import pytest

from spray.errors import ConfigError
from spray.store import (
    CorruptShard,
    HeatmapStore,
    ShardData,
    ShardSpec,
    StoreIncomplete,
    StoreLock,
    StoreLocked,
    StoreWriter,
    verify_shard,
    write_shard,
)


def _data(n, label, seed=0):
    rng = np.random.default_rng(seed)
    return ShardData(relevance=rng.standard_normal((n, 1, 8, 8)).astype(np.float16),
                     ids=[f"{label}/{seed}-{i}" for i in range(n)], index=np.arange(n) + 100 * seed,
                     label=np.full(n, label), prediction=np.full(n, label), target=np.full(n, label),
                     logits=rng.standard_normal((n, 3)).astype(np.float32))


def _fill(folder, identity=None):
    specs = [ShardSpec(0, 0, 5, "0/0-0", "0/0-4"), ShardSpec(1, 1, 4, "1/1-0", "1/1-3"), ShardSpec(2, 1, 3, "1/2-0", "1/2-2")]
    with StoreWriter(folder, identity or {"model_sha256": "abc"}, specs) as w:
        for spec, seed in zip(specs, range(3)):
            d = _data(spec.count, spec.label, seed)
            rec = {"shard": spec.shard, "count": len(d), "checksum": write_shard(w.path_of(spec), d), "skipped": 0}
            w.record(rec)
        w.finalize()
    return specs


def test_store_round_trip_is_class_contiguous(tmp_path):
    _fill(tmp_path / "s")
    with HeatmapStore(tmp_path / "s") as st:
        assert len(st) == 12 and st.classes == [0, 1]
        rows = st.rows_of(1)
        assert rows.tolist() == list(range(5, 12))
        expected = np.concatenate([_data(4, 1, 1).relevance, _data(3, 1, 2).relevance]).astype(np.float32)
        assert np.array_equal(st.relevance(rows), expected)
        assert np.array_equal(st.relevance(np.array([11, 5, 6])), expected[[6, 0, 1]])
        assert st.verify() == [] and st.describe()["classes"] == {0: 5, 1: 7}
    assert not list((tmp_path / "s" / "shards").glob("*.tmp"))


def test_corrupt_shard_is_detected(tmp_path):
    path = tmp_path / "x.h5"
    write_shard(path, _data(50, 0))
    verify_shard(path)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptShard):
        verify_shard(path)


def test_missing_shard_is_refused_on_read(tmp_path):
    _fill(tmp_path / "s")
    (tmp_path / "s" / "shards" / "shard-000001.h5").unlink()
    with pytest.raises(StoreIncomplete, match="holes: 1 of 3.*shard-000001"):
        HeatmapStore(tmp_path / "s")


def test_unfinished_store_is_refused(tmp_path):
    specs = [ShardSpec(0, 0, 5, "a", "b")]
    with StoreWriter(tmp_path / "s", {"m": 1}, specs):
        pass
    with pytest.raises(StoreIncomplete, match="unfinished"):
        HeatmapStore(tmp_path / "s")
    with pytest.raises(ConfigError, match="not a spray heatmap store"):
        HeatmapStore(tmp_path)


def test_other_identity_is_refused_and_store_kept(tmp_path):
    specs = _fill(tmp_path / "s", {"model_sha256": "abc", "composite": "x"})
    before = {p.name: p.read_bytes() for p in (tmp_path / "s" / "shards").iterdir()}
    with pytest.raises(ConfigError, match="differs in: composite.*new store path"):
        StoreWriter(tmp_path / "s", {"model_sha256": "abc", "composite": "y"}, specs).open()
    assert {p.name: p.read_bytes() for p in (tmp_path / "s" / "shards").iterdir()} == before
    assert not (tmp_path / "s" / ".lock").exists()


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    with StoreLock(tmp_path):
        with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
            StoreLock(tmp_path).acquire()
    (tmp_path / ".lock").write_text('{"pid": 999999999, "host": "%s", "started": "x"}' % os.uname().nodename)
    lock = StoreLock(tmp_path).acquire()
    assert lock.took_over_from["pid"] == 999999999
    lock.release()
