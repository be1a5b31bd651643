"""The heatmap store on its own: atomic verified shards, a content-addressed index, holes, locks,
identity, files changed behind its back, reuse of a sample's heatmap by its content digest."""
import json
import os

import numpy as np
import pytest

from spray.errors import ConfigError
from spray.store import (
    CorruptShard,
    HeatmapStore,
    ShardData,
    ShardSpec,
    Selection,
    StoreIncomplete,
    StoreLock,
    StoreLocked,
    StoreWriter,
    verify_shard,
    write_shard,
)

from .runs import flip_heatmap_byte


def _digest(i, version=0):
    return f"{i:030d}{version:02d}"


def _data(ids, label, digests, seed=0):
    rng = np.random.default_rng(seed)
    n = len(ids)
    return ShardData(relevance=rng.standard_normal((n, 1, 8, 8)).astype(np.float16), ids=list(ids),
                     index=np.arange(n), label=np.full(n, label), prediction=np.full(n, label),
                     target=np.full(n, label), logits=rng.standard_normal((n, 3)).astype(np.float32),
                     digest=np.array(digests, dtype="S32"))


def _selection(samples):
    """samples: (id, label, digest) in (label, id) order."""
    return Selection([s[0] for s in samples], np.array([s[1] for s in samples]), [s[2] for s in samples],
                     np.arange(len(samples)))


def _write(writer, name, samples, seed):
    label = samples[0][1]
    spec = ShardSpec(name, label, len(samples), samples[0][0], samples[-1][0])
    data = _data([s[0] for s in samples], label, [s[2] for s in samples], seed)
    writer.record({"file": spec.filename, "count": len(data), "checksum": write_shard(writer.path_of(spec), data),
                   "skipped": 0})
    return data


SAMPLES = [(f"a{i}", 0, _digest(i)) for i in range(5)] + [(f"b{i}", 1, _digest(10 + i)) for i in range(7)]


def _fill(folder, identity=None):
    with StoreWriter(folder, identity or {"model_sha256": "abc"}) as w:
        parts = [_write(w, "s0", SAMPLES[:5], 0), _write(w, "s1", SAMPLES[5:9], 1), _write(w, "s2", SAMPLES[9:], 2)]
        w.finalize(_selection(SAMPLES))
    return parts


def test_store_round_trip_is_class_contiguous(tmp_path):
    parts = _fill(tmp_path / "s")
    with HeatmapStore(tmp_path / "s") as st:
        assert len(st) == 12 and st.classes == [0, 1]
        rows = st.rows_of(1)
        assert rows.tolist() == list(range(5, 12))
        expected = np.concatenate([parts[1].relevance, parts[2].relevance]).astype(np.float32)
        assert np.array_equal(st.relevance(rows), expected)
        assert np.array_equal(st.relevance(np.array([11, 5, 6])), expected[[6, 0, 1]])
        assert st.verify() == [] and st.describe()["classes"] == {0: 5, 1: 7}
    assert not list((tmp_path / "s" / "shards").glob("*.tmp"))


def test_a_shard_is_the_same_bytes_however_long_its_dataset_objects_live(tmp_path, monkeypatch):
    """A dask worker's profiler can keep h5py's dataset objects alive past their creation; the file
    (its size is recorded in the index) must not depend on when they are freed."""
    import h5py
    data = _data([f"a{i}" for i in range(8)], 0, [_digest(i) for i in range(8)])
    write_shard(tmp_path / "freed.h5", data)
    created, held = h5py.Group.create_dataset, []
    monkeypatch.setattr(h5py.Group, "create_dataset", lambda self, *a, **kw: held.append(created(self, *a, **kw))
                        or held[-1])
    write_shard(tmp_path / "held.h5", data)
    assert held, "the stand-in profiler held nothing"
    assert (tmp_path / "held.h5").read_bytes() == (tmp_path / "freed.h5").read_bytes()


def test_a_changed_and_a_new_sample_reuse_every_other_heatmap(tmp_path):
    parts = _fill(tmp_path / "s")
    with HeatmapStore(tmp_path / "s") as st:
        digest_0, digest_1 = st.class_digest(0), st.class_digest(1)
    grown = list(SAMPLES)
    grown[6] = ("b1", 1, _digest(11, 1))          # changed pixels
    grown.insert(8, ("b2x", 1, _digest(99)))      # a new sample, between old ones in id order
    with StoreWriter(tmp_path / "s", {"model_sha256": "abc"}) as w:
        todo = w.missing(_selection(grown), retry_skipped=True)
        assert [s[0] for s, t in zip(grown, todo) if t] == ["b1", "b2x"]
        new = _write(w, "s3", [grown[6], grown[8]], 3)
        done = w.finalize(_selection(grown))
    assert done.samples == 13 and done.rewritten and done.removed == []  # s1 still holds b0, b2, b3
    with HeatmapStore(tmp_path / "s") as st:
        assert st.ids == [s[0] for s in grown]
        old = np.concatenate([p.relevance for p in parts]).astype(np.float32)
        expected = np.concatenate([old[:6], new.relevance[:1], old[7:8], new.relevance[1:], old[8:]])
        assert np.array_equal(st.relevance(slice(None)), expected.astype(np.float32))
        assert st.class_digest(0) == digest_0 and st.class_digest(1) != digest_1
    # every sample of s1 replaced: that file holds only superseded heatmaps and goes
    replaced = [(i, label, _digest(20 + k, 2)) for k, (i, label, _) in enumerate(SAMPLES[5:9])]
    with StoreWriter(tmp_path / "s", {"model_sha256": "abc"}) as w:
        _write(w, "s4", replaced, 4)
        done = w.finalize(_selection(SAMPLES[:5] + replaced + SAMPLES[9:]))
    assert done.removed == ["shards/00000001-s1.h5"]
    assert not (tmp_path / "s" / "shards" / "00000001-s1.h5").exists()


def test_an_unchanged_index_is_not_rewritten(tmp_path):
    _fill(tmp_path / "s")
    before = (tmp_path / "s" / "heatmaps.h5").stat().st_mtime_ns
    with StoreWriter(tmp_path / "s", {"model_sha256": "abc"}) as w:
        assert not w.missing(_selection(SAMPLES), retry_skipped=True).any()
        assert not w.finalize(_selection(SAMPLES)).rewritten
    assert (tmp_path / "s" / "heatmaps.h5").stat().st_mtime_ns == before


def test_moved_or_reordered_data_rewrites_the_index_with_the_new_positions(tmp_path):
    """The analysis and the flip test read pixels through the index (data spec + positions): data that
    moved or was reordered, with every sample's content unchanged, rewrites the index, recomputes nothing."""
    from spray.store import store_content
    _fill(tmp_path / "s")
    identity = {"model_sha256": "abc"}
    moved = _selection(SAMPLES)
    moved.index, moved.data = moved.index[::-1].copy(), {"type": "npz", "path": "/elsewhere/data.npz"}
    assert "moved or its samples were reordered" in store_content(tmp_path / "s", identity, moved, True)
    with StoreWriter(tmp_path / "s", identity, {"data_spec": moved.data}) as w:
        assert not w.missing(moved, retry_skipped=True).any()
        assert w.finalize(moved).rewritten
    assert store_content(tmp_path / "s", identity, moved, True) is None
    with HeatmapStore(tmp_path / "s") as st:
        assert st.index.tolist() == moved.index.tolist() and st.provenance["data_spec"] == moved.data


def test_corrupt_shard_is_detected(tmp_path):
    path = tmp_path / "x.h5"
    write_shard(path, _data([f"i{i}" for i in range(50)], 0, [_digest(i) for i in range(50)]))
    verify_shard(path)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptShard):
        verify_shard(path)


def test_a_shard_changed_behind_the_stores_back_is_verified_again(tmp_path):
    _fill(tmp_path / "s")
    shard = tmp_path / "s" / "shards" / "00000001-s1.h5"
    os.utime(shard)  # touched only: it still passes its checksum
    with HeatmapStore(tmp_path / "s") as st:
        assert len(st) == 12
    flip_heatmap_byte(shard)
    with pytest.raises(CorruptShard, match=r"00000001-s1\.h5.*Delete .* re-run the explain stage.*its 4 samples"):
        HeatmapStore(tmp_path / "s")
    with StoreWriter(tmp_path / "s", {"model_sha256": "abc"}) as w:  # the writer drops it and asks for its samples
        assert w.dropped == ["shards/00000001-s1.h5"]
        assert w.missing(_selection(SAMPLES), retry_skipped=True).sum() == 4


def test_missing_shard_is_refused_on_read(tmp_path):
    _fill(tmp_path / "s")
    (tmp_path / "s" / "shards" / "00000001-s1.h5").unlink()
    with pytest.raises(StoreIncomplete, match="holes: 1 of 3.*00000001-s1.*Re-run the same explain job"):
        HeatmapStore(tmp_path / "s")


def test_unfinished_store_is_refused(tmp_path):
    with StoreWriter(tmp_path / "s", {"m": 1}):
        pass
    with pytest.raises(StoreIncomplete, match="unfinished"):
        HeatmapStore(tmp_path / "s")
    with pytest.raises(ConfigError, match="not a spray heatmap store"):
        HeatmapStore(tmp_path)


def test_other_identity_is_refused_and_store_kept(tmp_path):
    _fill(tmp_path / "s", {"model_sha256": "abc", "composite": "x"})
    before = {p.name: p.read_bytes() for p in (tmp_path / "s" / "shards").iterdir()}
    with pytest.raises(ConfigError, match="differs in: composite.*new store path"):
        StoreWriter(tmp_path / "s", {"model_sha256": "abc", "composite": "y"}).open()
    assert {p.name: p.read_bytes() for p in (tmp_path / "s" / "shards").iterdir()} == before
    assert not (tmp_path / "s" / ".lock").exists()


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_or_recycled_one(tmp_path):
    with StoreLock(tmp_path):
        with pytest.raises(StoreLocked, match=f"pid {os.getpid()}"):
            StoreLock(tmp_path).acquire()
    (tmp_path / ".lock").write_text('{"pid": 999999999, "host": "%s", "started": "x"}' % os.uname().nodename)
    lock = StoreLock(tmp_path).acquire()
    assert lock.took_over_from["pid"] == 999999999
    lock.release()
    # a live pid that started after the lock was written is not its owner
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "started": "x",
                                                "process_started": "1"}))
    lock = StoreLock(tmp_path, what="run folder").acquire()
    assert lock.took_over_from["pid"] == os.getpid()
    lock.release()
