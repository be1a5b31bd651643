"""SpRAy pieces against references: pooling guard, sparse graph, spectrum (dense vs iterative vs
scipy's Laplacian), eigengap, planted clusters (the ViRelAy file layout: tests/test_export.py)."""
import numpy as np
import pytest
from scipy.sparse.csgraph import laplacian
from sklearn.metrics import adjusted_rand_score

from spray.analysis import SpRAy, choose_k, knn_graph, pool_maps, spectral_embedding
from spray.analysis import spectral as spectral_module
from spray.errors import ConfigError


def planted(n=600, share=0.2, size=32, noise=0.6, seed=0):
    """Maps of one class: a centred blob, and for ``share`` of them a strong corner patch instead."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    blob = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2))
    corner = np.zeros((size, size))
    corner[size - 6:size - 1, 1:8] = 1.0
    truth = rng.random(n) < share
    maps = blob[None] * (1 + 0.3 * rng.standard_normal((n, 1, 1)))
    maps = maps + np.where(truth[:, None, None], 3 * corner[None], 0)
    maps = maps + noise * 0.1 * rng.standard_normal((n, size, size))
    return maps[:, None].astype(np.float32), truth


def test_pooling_sums_and_guards_zero_maps():
    maps = np.random.default_rng(0).random((4, 2, 8, 8)).astype(np.float32)
    maps[2] = 0.0
    pooled = pool_maps(maps, 4)
    assert pooled.maps.shape == (4, 4, 4) and pooled.factor == (2, 2)
    assert np.allclose(pooled.maps[[0, 1, 3]].sum((1, 2)), 1.0)
    assert pooled.degenerate.tolist() == [False, False, True, False]
    assert np.isfinite(pooled.maps).all() and (pooled.maps[2] == 0).all()
    manual = maps[0].sum(0).reshape(4, 2, 4, 2).sum((1, 3))
    assert np.allclose(pooled.maps[0], manual / manual.sum())
    with pytest.raises(ConfigError, match="must divide"):
        pool_maps(maps, 3)


def test_knn_graph_is_sparse_symmetric_and_reports_components():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (100, 5)), rng.normal(100, 1, (80, 5))])
    g = knn_graph(x, n_neighbors=5)
    a = g.adjacency
    assert (a != a.T).nnz == 0 and a.diagonal().sum() == 0
    assert a.nnz <= 2 * 5 * len(x)
    assert g.n_components == 2 and len(set(g.component[:100])) == 1
    approx = knn_graph(x, n_neighbors=5, method="approximate")
    assert approx.n_components == 2 and approx.method == "approximate"


@pytest.mark.parametrize("iterative", [False, True])
def test_spectrum_matches_the_normalised_laplacian(monkeypatch, iterative):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (300, 4)), rng.normal(4, 1, (300, 4))])
    a = knn_graph(x, n_neighbors=8).adjacency
    if iterative:
        monkeypatch.setattr(spectral_module, "DENSE_MAX", 10)
    s = spectral_embedding(a, 8)
    reference = np.linalg.eigvalsh(laplacian(a.toarray(), normed=True))[:8]
    np.testing.assert_allclose(s.eigenvalues, reference, atol=1e-4)
    assert np.all(np.diff(s.eigenvalues) >= -1e-9) and s.eigenvalues[0] < 1e-6
    assert s.solver == ("dense" if not iterative else s.solver) and s.embedding.shape == (600, 8)


def test_eigengap_prefers_the_relative_jump():
    gap = choose_k([0.0, 0.001, 0.5, 0.55, 0.9, 1.0], 2, 4)
    assert gap.k == 2 and gap.gap > 0.99 and gap.runner_up in (3, 4)
    with pytest.raises(ConfigError, match="empty"):
        choose_k([0.0, 0.1], 3, 5)


def test_spray_recovers_a_planted_group():
    maps, truth = planted()
    model = SpRAy(pool=8, n_neighbors=10, embeddings=("tsne",)).fit(maps)
    assert model.k_ == 2
    assert adjusted_rand_score(truth, model.labels_) > 0.95
    assert set(model.clusterings_) == set(range(2, 11)) and model.embeddings2d_["tsne"].shape == (600, 2)
    assert model.eigenvalues_[0] < 1e-8 and model.graph_.shape == (600, 600)


def test_other_clusterers_run():
    maps, truth = planted(n=300)
    for method in ("agglomerative", "hdbscan"):
        labels = SpRAy(pool=8, clusterer=method, embeddings=(), k_range=(2, 4)).fit_predict(maps)
        assert adjusted_rand_score(truth, labels) > 0.9, method
