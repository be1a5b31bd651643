"""The ViRelAy export: the analysis file in CoRelAy's convention (checked value by value on a
hand-made analysis), and the demo run opened by ViRelAy 0.6.1's real Flask app."""
import io
import json
import os

import h5py
import numpy as np
import pytest

from spray.analysis.eigengap import choose_k
from spray.cli import EXIT_CONFIG, EXIT_OK, main
from spray.export import write_analysis_file
from spray.export.virelay import CHOSEN, FLAGGED

#            chosen k = 2: eigenvalue 2 (0.01) is 2% of eigenvalue 3 (0.5); runner-up k = 4
EIGENVALUES = np.array([0.0, 0.01, 0.5, 0.55, 0.9, 0.95, 1.0, 1.1])


def _fake_analysis(folder, n=12):
    """spray's analysis.h5 + analysis.json for one class with known eigenvalues and clusters."""
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, len(EIGENVALUES))).astype(np.float32)
    vectors[:, 0] = 1 / np.sqrt(n)                                     # the trivial eigenvector
    gap = choose_k(EIGENVALUES, 2, 4)
    labels = {k: np.arange(n) % k for k in (2, 3, 4)}
    with h5py.File(folder / "analysis.h5", "w") as fh:
        g = fh.create_group("00000003")
        g["index"] = np.arange(10, 10 + n, dtype=np.uint32)
        g["eigenvalues"] = EIGENVALUES
        g["embedding/spectral"] = vectors
        g["embedding/tsne"] = rng.normal(size=(n, 2)).astype(np.float32)
        for k, lab in labels.items():
            g[f"cluster/kmeans-{k:02d}"] = lab
            g[f"cluster/kmeans-{k:02d}"].attrs["k"] = k
        g.attrs["k"] = gap.k
    ids = [f"s{i}" for i in range(n)]
    members = [[i for i, v in zip(ids, labels[gap.k]) if v == c] for c in range(gap.k)]
    # the flagged finding's carriers: its cluster's members but one, and one sample of the other cluster
    record = {"label": 3, "name": "three", "k": gap.k, "eigengap": {"gap": gap.gap},
              "clusters": [{"cluster": 0, "flagged": False, "members": members[0], "carriers": []},
                           {"cluster": 1, "flagged": True, "members": members[1],
                            "carriers": members[1][1:] + members[0][:1]}]}
    summary = {"params": {"clusterer": "kmeans"}, "classes": [record]}
    (folder / "analysis.json").write_text(json.dumps(summary))
    return vectors, labels, gap


def test_analysis_file_follows_corelay_and_shows_the_gap_at_the_chosen_k(tmp_path):
    vectors, labels, gap = _fake_analysis(tmp_path)
    assert gap.k == 2
    write_analysis_file(tmp_path / "analysis.h5", tmp_path / "virelay.h5")
    with h5py.File(tmp_path / "virelay.h5", "r") as fh:
        g = fh["00000003"]
        stored = g["embedding/spectral"].attrs["eigenvalue"]
        # CoRelAy stores the Laplacian eigenvalues themselves, largest first (1 - eigsh of D^-1/2 A D^-1/2)
        np.testing.assert_allclose(stored, EIGENVALUES[::-1], rtol=1e-6)
        # ViRelAy draws stored[i] at x = n-1-i: bars at x = 0, 1, 2, ... are the ascending eigenvalues,
        # and the relative gap between bars k-1 and k is the one spray chose k by
        bars = stored[::-1]
        shown = {k: (bars[k] - bars[k - 1]) / bars[k] for k in (2, 3, 4)}
        assert max(shown, key=shown.get) == gap.k
        assert shown[gap.k] == pytest.approx(gap.gap, rel=1e-5)
        # eigenvector columns in the same order: the trivial one is last, not first
        np.testing.assert_allclose(g["embedding/spectral"][()], vectors[:, ::-1])
        assert np.ptp(g["embedding/spectral"][:, -1]) == 0 and np.ptp(g["embedding/spectral"][:, 0]) > 0
        # ViRelAy labels a cluster "Cluster <value + 1>": spray's cluster c is stored as c - 1
        for k, lab in labels.items():
            d = g[f"cluster/kmeans-{k:02d}"]
            np.testing.assert_array_equal(d[()] + 1, lab)
            assert d.attrs["k"] == k and d.attrs["embedding"] == "spectral"
            assert list(d.attrs["index"]) == [7, 6, 5, 4][:max(k, 2)]     # spray's first k columns, reversed
        np.testing.assert_array_equal(g[f"cluster/{CHOSEN}"][()] + 1, labels[gap.k])
        carriers = np.isin(np.arange(len(vectors)), [2 * i + 1 for i in range(1, len(vectors) // 2)] + [0])
        np.testing.assert_array_equal(g[f"cluster/{FLAGGED}"][()] + 1, carriers)  # "Cluster 1" = the finding's samples
        assert list(g["index"][()]) == list(range(10, 22)) and g["index"].dtype == np.uint32
        assert g["embedding/tsne"].attrs["embedding"] == "spectral"


def test_virelay_h5_of_a_real_analysis_has_the_same_names_in_every_class(audited_beds):
    _, store, summary = audited_beds["watermark"]
    with h5py.File(store.parent / "analysis" / "virelay.h5", "r") as fh, \
            h5py.File(store.parent / "analysis" / "analysis.h5", "r") as spray_h5:
        names = None
        for rec in summary["classes"]:
            g = fh[f"{rec['label']:08d}"]
            here = sorted(f"{a}/{b}" for a in ("cluster", "embedding") for b in g[a])
            assert names is None or here == names
            names = here
            np.testing.assert_allclose(g["embedding/spectral"].attrs["eigenvalue"][::-1], rec["eigenvalues"],
                                       atol=1e-6)
            bars = g["embedding/spectral"].attrs["eigenvalue"][::-1]
            k = rec["k"]
            assert (bars[k] - bars[k - 1]) / bars[k] == pytest.approx(rec["eigengap"]["gap"], rel=1e-4)
            chosen = spray_h5[f"{rec['label']:08d}/cluster/kmeans-{k:02d}"][()]
            np.testing.assert_array_equal(g[f"cluster/{CHOSEN}"][()] + 1, chosen)
        assert f"cluster/{FLAGGED}" in names


def test_export_refuses_a_folder_that_is_not_an_analysed_run(tmp_path, capsys):
    assert main(["export", "virelay", str(tmp_path)]) == EXIT_CONFIG
    assert "not an analysed spray run" in capsys.readouterr().err


@pytest.fixture(scope="module")
def virelay_client(demo_run, tmp_path_factory):
    if os.environ.get("CI") != "true":
        pytest.importorskip("virelay", reason="ViRelAy is a test extra: pip install virelay==0.6.1")
    from virelay.application import run_wsgi_app
    out = tmp_path_factory.mktemp("virelay")
    assert main(["export", "virelay", str(demo_run), str(out), "--quiet"]) == EXIT_OK
    app = run_wsgi_app([str(out / "project.yaml")])
    return app.test_client(), out


def test_virelay_opens_the_demo_export(virelay_client, demo_run):
    from PIL import Image
    client, out = virelay_client
    project = client.get("/api/projects/0").get_json()
    method = project["analysisMethods"][0]
    summary = json.loads((demo_run / "analysis" / "analysis.json").read_text())
    records = {f"{r['label']:08d}": r for r in summary["classes"]}
    assert {c["name"] for c in method["categories"]} == set(records)
    assert {FLAGGED, CHOSEN, "kmeans-02"} <= set(method["clusterings"]) and "spectral" in method["embeddings"]
    for cat in method["categories"]:
        for clustering in method["clusterings"]:
            for embedding in method["embeddings"]:
                r = client.get(f"/api/projects/0/analyses/{method['name']}",
                               query_string={"category": cat["name"], "clustering": clustering, "embedding": embedding})
                assert r.status_code == 200, (cat, clustering, embedding, r.data[:300])
        rec = records[cat["name"]]
        spectral = client.get(f"/api/projects/0/analyses/{method['name']}", query_string={
            "category": cat["name"], "clustering": CHOSEN, "embedding": "spectral"}).get_json()
        bars = spectral["eigenvalues"][::-1]                       # what ViRelAy draws at x = 0, 1, 2, ...
        k = rec["k"]
        assert (bars[k] - bars[k - 1]) / bars[k] == pytest.approx(rec["eigengap"]["gap"], rel=1e-4)
        # the clusters ViRelAy lists ("Cluster <value + 1>") are spray's cluster ids, sizes included
        shown = {}
        for point in spectral["embedding"]:
            shown[point["cluster"] + 1] = shown.get(point["cluster"] + 1, 0) + 1
        assert shown == {c["cluster"]: c["size"] for c in rec["clusters"]}
    flagged = client.get(f"/api/projects/0/analyses/{method['name']}", query_string={
        "category": "00000000", "clustering": FLAGGED, "embedding": "tsne"}).get_json()
    flagged_rows = sorted(p["attributionIndex"] for p in flagged["embedding"] if p["cluster"] + 1 == 1)
    with h5py.File(demo_run / "store" / "heatmaps.h5", "r") as fh:
        ids = [i.decode() for i in fh["ids"][()]]
    members = [m for c in records["00000000"]["clusters"] if c["flagged"] for m in c["carriers"]]
    assert members and sorted(ids.index(m) for m in members) == flagged_rows
    row = flagged_rows[0]
    colour_maps = [c["name"] for c in client.get("/api/color-maps").get_json()]
    assert len(colour_maps) == 8
    for name in colour_maps:
        for superimpose in ("false", "true"):
            r = client.get(f"/api/projects/0/attributions/{row}/heatmap",
                           query_string={"colorMap": name, "superimpose": superimpose})
            assert r.status_code == 200, (name, r.data[:300])
            assert Image.open(io.BytesIO(r.data)).size == (32, 32)
    image = client.get(f"/api/projects/0/dataset/{row}/image")
    assert image.status_code == 200 and Image.open(io.BytesIO(image.data)).mode == "RGB"
    attribution = client.get(f"/api/projects/0/attributions/{row}").get_json()
    with h5py.File(demo_run / "store" / "heatmaps.h5", "r") as fh:
        np.testing.assert_allclose(attribution["prediction"], fh["logits"][row], rtol=1e-5)
        assert attribution["labels"][0]["index"] == int(fh["label"][row])
    with h5py.File(out / "attribution.h5", "r") as fh, h5py.File(demo_run / "store" / "heatmaps.h5", "r") as store:
        assert fh["attribution"].shape[1] == 3 and fh["attribution"].dtype == np.float32
        np.testing.assert_allclose(fh["attribution"][row].sum(0), store["relevance"][row].astype(np.float32).sum(0),
                                   rtol=1e-5, atol=1e-7)
