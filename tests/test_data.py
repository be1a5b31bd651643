"""Data inputs: every loader, ids, selection, preprocessing and every bad input named in the issue."""
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from spray.data import FactorySource, HDF5Source, ImageFolder, NpzSource, Preprocess, SampleDataset, batches, select
from spray.data.open import open_source
from spray.errors import ConfigError, InputError


def _png(path, size=(12, 10), mode="RGB", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    for cls, n in (("cat", 3), ("dog", 2)):
        for i in range(n):
            _png(root / cls / f"{i}.png", value=40 * i)
    _png(root / "dog" / "sub" / "deep.jpg")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_ids_labels_and_class_order(folder):
    src = ImageFolder(folder)
    assert src.classes == ["cat", "dog"]
    assert src.ids == ["cat/0.png", "cat/1.png", "cat/2.png", "dog/0.png", "dog/1.png", "dog/sub/deep.jpg"]
    assert src.labels.tolist() == [0, 0, 0, 1, 1, 1]
    reversed_src = ImageFolder(folder, classes=["dog", "cat"])
    assert reversed_src.labels[reversed_src.ids.index("cat/0.png")] == 1
    with pytest.raises(InputError, match="class folder"):
        ImageFolder(folder, classes=["cat", "bird"])


def test_image_folder_batches_are_preprocessed_and_keep_ids(folder):
    pre = Preprocess(resize=[8, 8], mean=[0.5], std=[0.25])
    ds = SampleDataset(ImageFolder(folder), pre)
    (batch,) = list(batches(ds, batch_size=16))
    assert batch.x.shape == (6, 3, 8, 8) and batch.ids[0] == "cat/0.png"
    assert batch.x.min() >= -2.0 - 1e-6 and batch.x.max() <= 2.0 + 1e-6
    assert pre.input_range() == ([-2.0, -2.0, -2.0], [2.0, 2.0, 2.0])


def test_preprocess_resize_shorter_side_then_centre_crop():
    pre = Preprocess(resize=8, center_crop=6)
    x = pre(np.zeros((10, 20, 3), np.uint8))
    assert x.shape == (3, 6, 6)
    with pytest.raises(InputError, match="smaller than center_crop"):
        Preprocess(center_crop=30)(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ConfigError, match="mean and preprocess.std"):
        Preprocess(mean=[0.5])


def test_truncated_image_is_named_and_can_be_skipped(folder):
    bad = folder / "cat" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])
    src = ImageFolder(folder)
    with pytest.raises(InputError, match=r"cat/1\.png.*(truncated|readable)"):
        list(batches(SampleDataset(src, Preprocess()), 4))
    got = list(batches(SampleDataset(src, Preprocess(), on_error="skip"), 4))
    skipped = [s for b in got for s in b.skipped]
    assert [s.id for s in skipped] == ["cat/1.png"] and "on_error" in skipped[0].reason
    assert sum(len(b) for b in got) == 5


def test_missing_file_and_wrong_channel_count(folder):
    src = ImageFolder(folder)
    (folder / "cat" / "0.png").unlink()
    with pytest.raises(InputError, match="missing"):
        SampleDataset(src, Preprocess())[0]
    _png(folder / "cat" / "0.png", mode="L")
    with pytest.raises(InputError, match="1 channel.*takes 3.*convert"):
        SampleDataset(src, Preprocess())[0]
    assert SampleDataset(src, Preprocess(convert=True))[0][0].shape[0] == 3


def test_npz_images_are_memory_mapped_not_loaded(tmp_path):
    """np.savez stores members raw: the source maps them, so no process holds the whole data set."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8)
    float_nchw = np.asfortranarray(rng.random((6, 3, 4, 4), dtype=np.float32))
    np.savez(tmp_path / "raw.npz", images=images, labels=np.arange(40) % 4)
    np.savez(tmp_path / "fortran.npz", images=float_nchw, labels=np.arange(6) % 2)
    np.savez_compressed(tmp_path / "packed.npz", images=images, labels=np.arange(40) % 4)
    raw, fortran, packed = (NpzSource(tmp_path / f) for f in ("raw.npz", "fortran.npz", "packed.npz"))
    assert isinstance(raw.images, np.memmap) and isinstance(fortran.images, np.memmap)
    assert not isinstance(packed.images, np.memmap)  # compressed: read whole, the only way
    for i in (0, 17, 39):
        np.testing.assert_array_equal(raw.load(i), images[i])
        np.testing.assert_array_equal(packed.load(i), images[i])
    np.testing.assert_array_equal(fortran.load(5), float_nchw[5])


def test_npz_uint8_and_float_layouts_and_label_errors(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (5, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=[0, 1, 2, 1, 0], ids=["a", "b", "c", "d", "e"])
    src = NpzSource(tmp_path / "a.npz")
    assert src.ids[2] == "c" and src.classes == ["0", "1", "2"]
    x = Preprocess()(src.load(1))
    assert torch.allclose(x, torch.from_numpy(images[1]).permute(2, 0, 1).float() / 255)
    np.savez(tmp_path / "f.npz", images=np.zeros((2, 3, 4, 4), np.float32), labels=[0, 1])
    assert Preprocess()(NpzSource(tmp_path / "f.npz").load(0)).shape == (3, 4, 4)
    np.savez(tmp_path / "bad.npz", images=images, labels=[0, 1, 2, 1, 7])
    with pytest.raises(InputError, match="sample '4' has label 7"):
        NpzSource(tmp_path / "bad.npz", classes=["a", "b", "c"])
    np.savez(tmp_path / "nokey.npz", pictures=images)
    with pytest.raises(InputError, match="'images' missing"):
        NpzSource(tmp_path / "nokey.npz")
    with pytest.raises(InputError, match="not found"):
        NpzSource(tmp_path / "absent.npz")
    np.savez(tmp_path / "dup.npz", images=images, labels=[0] * 5, ids=["a", "a", "b", "c", "d"])
    with pytest.raises(InputError, match="'a' occurs more than once"):
        NpzSource(tmp_path / "dup.npz")


def test_hdf5_source_reads_lazily_with_named_datasets(tmp_path):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as fh:
        fh["x"] = np.arange(4 * 5 * 5 * 3, dtype=np.uint8).reshape(4, 5, 5, 3)
        fh["y"] = np.array([1, 0, 1, 0])
        fh["names"] = np.array([b"p", b"q", b"r", b"s"])
    src = HDF5Source(path, images="x", labels="y", ids="names")
    assert src.ids == ["p", "q", "r", "s"] and src._file is None
    assert (src.load(2) == np.arange(4 * 75, dtype=np.uint8).reshape(4, 5, 5, 3)[2]).all()
    with pytest.raises(InputError, match="'images' not found.*data.images"):
        HDF5Source(path)
    src2 = open_source({"type": "hdf5", "path": str(path), "images": "x", "labels": "y"})
    assert len(list(batches(SampleDataset(src2, Preprocess()), 2, num_workers=2))) == 2


def test_factory_from_file_and_module(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "class D(torch.utils.data.Dataset):\n"
        "    classes = ['a', 'b']\n"
        "    targets = [0, 1, 1]\n"
        "    def __len__(self): return 3\n"
        "    def __getitem__(self, i): return torch.full((3, 4, 4), i / 3), self.targets[i], f'id{i}'\n"
        "def make_dataset(n=3): return D()\n")
    src = FactorySource("mydata.py:make_dataset", {"n": 3})
    assert src.labels.tolist() == [0, 1, 1] and src.classes == ["a", "b"]
    assert Preprocess()(src.load(2)).shape == (3, 4, 4)
    with pytest.raises(ConfigError, match="has no attribute 'nothing'"):
        FactorySource("mydata.py:nothing")
    with pytest.raises(ConfigError, match="not found"):
        FactorySource("other.py:make_dataset")
    with pytest.raises(ConfigError, match="cannot be imported"):
        FactorySource("no_such_module_xyz:make")


def test_select_by_class_and_ids(folder):
    src = ImageFolder(folder)
    assert select(src, classes=["dog"]).tolist() == [3, 4, 5]
    assert select(src, classes=[0], ids=["cat/2.png", "dog/0.png"]).tolist() == [2]
    with pytest.raises(ConfigError, match="not in the data set"):
        select(src, ids=["cat/9.png"])
    with pytest.raises(ConfigError, match="'bird' not in"):
        select(src, classes=["bird"])


def _item_by_item(ds, size):
    """The reference: the same data set read one sample at a time."""
    from spray.data.loader import collate
    return [collate([ds[j] for j in range(s, min(s + size, len(ds)))]) for s in range(0, len(ds), size)]


@pytest.mark.parametrize("layout", ["npz-uint8", "npz-grey-convert", "hdf5-float", "hdf5-shuffled"])
def test_batched_reads_equal_item_by_item_reads(tmp_path, layout, monkeypatch):
    rng = np.random.default_rng(0)
    if layout.startswith("npz"):
        channels = 1 if "grey" in layout else 3
        path = tmp_path / "d.npz"
        np.savez(path, images=rng.integers(0, 256, (10, 12, 14, channels), dtype=np.uint8), labels=np.arange(10) % 3)
        src = NpzSource(path)
    else:
        path = tmp_path / "d.h5"
        with h5py.File(path, "w") as fh:
            fh["images"] = rng.random((10, 3, 12, 14), dtype=np.float32)
            fh["labels"] = np.arange(10) % 3
        src = HDF5Source(path)
    pre = Preprocess(resize=9, center_crop=[8, 6], mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.25], convert=True)
    indices = [7, 2, 3, 9, 0] if layout.endswith("shuffled") else [1, 2, 3, 4, 6, 8, 9]
    ds = SampleDataset(src, pre, indices)
    slow = _item_by_item(ds, 3)
    if not layout.endswith("shuffled"):  # h5py reads increasing indices only: that one goes item by item
        monkeypatch.setattr(SampleDataset, "__getitem__", lambda self, j: pytest.fail("read item by item"))
    fast = list(batches(ds, 3))
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        assert torch.equal(a.x, b.x) and torch.equal(a.labels, b.labels)
        assert a.ids == b.ids and a.indices.tolist() == b.indices.tolist() and a.x.is_contiguous()


def test_batched_read_with_a_bad_sample_reports_it_as_item_by_item(tmp_path):
    images = np.random.default_rng(0).random((6, 3, 8, 8)).astype(np.float32)
    images[4, 1, 2, 3] = np.nan
    path = tmp_path / "d.npz"
    np.savez(path, images=images, labels=np.zeros(6, np.int64), ids=[f"s{i}" for i in range(6)])
    src = NpzSource(path)
    with pytest.raises(InputError, match=r"'s4'.*NaN"):
        list(batches(SampleDataset(src, Preprocess()), 4))
    got = list(batches(SampleDataset(src, Preprocess(), on_error="skip"), 4))
    assert [s.id for b in got for s in b.skipped] == ["s4"]
    assert [i for b in got for i in b.ids] == ["s0", "s1", "s2", "s3", "s5"]


def test_unscaled_uint8_pixels_and_their_bounds():
    image = np.full((4, 4, 3), 200, np.uint8)
    pre = Preprocess(scale=False, mean=[100.0], std=[50.0])
    assert torch.allclose(pre(image), torch.full((3, 4, 4), 2.0))
    assert torch.equal(pre.batch(image[None]), pre(image)[None])
    assert pre.input_range() == ([-2.0] * 3, [pytest.approx(3.1)] * 3)
    assert torch.allclose(pre.from_unit(torch.full((1, 3, 2, 2), 200 / 255)), torch.full((1, 3, 2, 2), 2.0))


def _hashed(src, cache=None):
    return src.digests(range(len(src)), cache)


def test_content_digests_change_with_the_content_and_are_cached_by_size_and_mtime(folder, tmp_path, monkeypatch):
    import hashlib
    src = ImageFolder(folder)
    digests, signatures = _hashed(src)
    assert digests[0] == hashlib.sha256((folder / "cat/0.png").read_bytes()).hexdigest()[:32]
    cache = {i: (s, d) for i, s, d in zip(src.ids, signatures, digests)}
    reads = []
    monkeypatch.setattr(ImageFolder, "digest", lambda self, i: reads.append(i) or "x" * 32)
    assert _hashed(src, cache)[0] == digests and reads == []  # nothing read again
    _png(folder / "cat" / "1.png", value=200)                 # new content: its signature changed
    assert _hashed(src, cache)[0][1] == "x" * 32 and reads == [1]
    monkeypatch.undo()
    images = np.random.default_rng(0).integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", images=images, labels=[0, 0, 1, 1, 2, 2])
    first = _hashed(NpzSource(tmp_path / "a.npz"))[0]
    images[4, 0, 0, 0] ^= 1
    np.savez(tmp_path / "a.npz", images=images, labels=[0, 0, 1, 1, 2, 2])
    second = _hashed(NpzSource(tmp_path / "a.npz"))[0]
    assert [a == b for a, b in zip(first, second)] == [True] * 4 + [False, True] and len(set(first)) == 6
    with h5py.File(tmp_path / "a.h5", "w") as fh:
        fh["images"], fh["labels"] = images, [0, 0, 1, 1, 2, 2]
    assert _hashed(HDF5Source(tmp_path / "a.h5"))[0] == second  # the same rows, the same digests


def test_factory_digests_use_the_datasets_files_or_its_items(folder, tmp_path):
    src = ImageFolder(folder)
    (tmp_path / "files.py").write_text(
        "class Files:\n"
        f"    samples = [({str(folder)!r} + '/' + i, l) for i, l in {list(zip(src.ids, src.labels.tolist()))!r}]\n"
        "    targets = [l for _, l in samples]\n"
        "    def __len__(self): return len(self.samples)\n"
        "    def __getitem__(self, i): raise AssertionError('hashing must not decode')\n"
        "class Items:\n"
        "    targets = [0, 1]\n"
        "    def __len__(self): return 2\n"
        "    def __getitem__(self, i):\n"
        "        import numpy as np\n"
        "        return np.full((3, 4, 4), float(i), np.float32), i\n")
    files = FactorySource(f"{tmp_path}/files.py:Files")
    assert files.verify_on_read and _hashed(files)[0] == _hashed(src)[0]
    assert _hashed(files)[1][0] is not None  # cached by size and mtime like the folder
    items = FactorySource(f"{tmp_path}/files.py:Items")
    digests, signatures = _hashed(items)
    assert not items.verify_on_read and signatures == [None, None] and digests[0] != digests[1]


def test_float_channels_last_and_inferred_class_counts_are_explained(tmp_path):
    np.savez(tmp_path / "f.npz", images=np.zeros((4, 8, 8, 3)), labels=[0, 1, 0, 1])
    with pytest.raises(InputError, match=r"look channels-last \(NHWC\).*transpose\(0, 3, 1, 2\)"):
        NpzSource(tmp_path / "f.npz")
    np.savez(tmp_path / "g.npz", images=np.zeros((4, 8, 8, 3), np.uint8), labels=[0, 1, 0, 12])
    assert NpzSource(tmp_path / "g.npz").classes_from_labels
    np.savez(tmp_path / "h.npz", images=np.zeros((4, 8, 8, 3), np.uint8), labels=[0, 1, 0, 1], classes=["a", "b"])
    assert not NpzSource(tmp_path / "h.npz").classes_from_labels


def test_pixels_for_the_suspicion_score_are_read_in_one_pass_in_the_callers_order(tmp_path, monkeypatch):
    """The analysis reads every member's pixels of a class: from a chunked, compressed HDF5 file
    that is one read, not one chunk decode per sample, and the rows come back in the order asked."""
    from spray.analysis.features import read_pixels
    rng = np.random.default_rng(1)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as fh:
        fh.create_dataset("images", data=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), chunks=(8, 16, 16, 3),
                          compression="lzf")
        fh["labels"] = np.arange(40) % 4
    provenance = {"data_spec": {"type": "hdf5", "path": str(path)}, "preprocess": {"resize": [12, 12]}}
    order = [33, 2, 17, 5, 38, 0]
    fast = read_pixels(provenance, order, (6, 6), (2, 2))
    monkeypatch.setattr(HDF5Source, "load_many", lambda self, indices: None)   # one sample at a time
    slow = read_pixels(provenance, order, (6, 6), (2, 2))
    assert fast.shape == (6, 12, 12, 3) and np.array_equal(fast, slow)
    monkeypatch.undo()
    monkeypatch.setattr(HDF5Source, "load", lambda self, i: pytest.fail("read one sample at a time"))
    assert np.array_equal(read_pixels(provenance, order, (6, 6), (2, 2)), slow)
