"""The SpRAy estimator (scikit-learn conventions: parameters in ``__init__``, ``fit``, results in
attributes ending in ``_``)."""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError
from .clustering import METHODS, cluster, relabel_by_size
from .eigengap import choose_k
from .features import pool_maps, reduce_dimension
from .graph import knn_graph
from .spectral import spectral_embedding

EMBEDDINGS = ("tsne", "umap")


class SpRAy:
    """Spectral Relevance Analysis of one class's heatmaps.

    Fitted attributes: ``pooled_`` (maps after pooling/normalisation), ``degenerate_`` (maps with
    ~zero relevance), ``graph_`` (sparse symmetric kNN adjacency), ``n_graph_components_``,
    ``eigenvalues_`` (normalised Laplacian, ascending), ``embedding_`` (spectral, N x n_eigval),
    ``eigengap_``/``k_`` (chosen number of clusters), ``clusterings_`` ({k: labels} for the whole
    k range), ``labels_`` (the chosen clustering, clusters numbered by size), ``embeddings2d_``
    ({"tsne"/"umap": N x 2}), ``timings_`` (seconds per stage).
    """

    def __init__(self, pool: Optional[int] = 16, mode: str = "abs", n_neighbors: int = 10, knn: str = "auto",
                 weights: str = "binary", pca: Optional[int] = None, n_eigval: int = 32,
                 k_range: Tuple[int, int] = (2, 10), clusterer: str = "kmeans",
                 embeddings: Sequence[str] = ("tsne",), embed_on: str = "spectral", random_state: int = 0):
        self.pool, self.mode, self.n_neighbors, self.knn, self.weights = pool, mode, n_neighbors, knn, weights
        self.pca, self.n_eigval, self.k_range, self.clusterer = pca, n_eigval, k_range, clusterer
        self.embeddings, self.embed_on, self.random_state = embeddings, embed_on, random_state

    def _check(self, n: int) -> None:
        if self.clusterer not in METHODS:
            raise ConfigError(f"clusterer {self.clusterer!r} unknown; choose one of {METHODS}")
        bad = [e for e in self.embeddings if e not in EMBEDDINGS]
        if bad:
            raise ConfigError(f"2-D embeddings {bad} unknown; choose from {EMBEDDINGS}")
        if self.embed_on not in ("spectral", "pooled"):
            raise ConfigError(f"embed_on must be 'spectral' or 'pooled', got {self.embed_on!r}")
        if n < 3:
            raise ConfigError(f"SpRAy needs at least 3 heatmaps, got {n}")

    def fit(self, heatmaps: np.ndarray) -> "SpRAy":
        self._check(len(heatmaps))
        t: Dict[str, float] = {}
        clock = time.perf_counter()
        pooled = pool_maps(heatmaps, self.pool, self.mode)
        self.pooled_, self.pool_factor_, self.degenerate_ = pooled.maps, pooled.factor, pooled.degenerate
        features = reduce_dimension(pooled.features(), self.pca, self.random_state)
        t["pool"] = time.perf_counter() - clock
        clock = time.perf_counter()
        graph = knn_graph(features, self.n_neighbors, self.knn, self.weights, self.random_state)
        self.graph_, self.n_graph_components_, self.knn_method_ = graph.adjacency, graph.n_components, graph.method
        t["graph"] = time.perf_counter() - clock
        clock = time.perf_counter()
        spectrum = spectral_embedding(graph.adjacency, self.n_eigval, self.random_state)
        self.eigenvalues_, self.embedding_, self.solver_ = spectrum.eigenvalues, spectrum.embedding, spectrum.solver
        t["spectral"] = time.perf_counter() - clock
        clock = time.perf_counter()
        k_min, k_max = self.k_range
        k_max = min(k_max, len(self.eigenvalues_) - 1, len(heatmaps) - 1)
        self.eigengap_ = choose_k(self.eigenvalues_, min(k_min, k_max), k_max)
        self.k_ = self.eigengap_.k
        self.clusterings_ = {k: relabel_by_size(cluster(self.embedding_, k, self.clusterer, self.random_state))
                             for k in range(min(k_min, k_max), k_max + 1)}
        self.labels_ = self.clusterings_[self.k_]
        t["cluster"] = time.perf_counter() - clock
        clock = time.perf_counter()
        source = self.embedding_ if self.embed_on == "spectral" else features
        self.embeddings2d_ = {name: embed_2d(source, name, self.random_state) for name in self.embeddings}
        t["embed2d"] = time.perf_counter() - clock
        self.timings_ = t
        return self

    def fit_predict(self, heatmaps: np.ndarray) -> np.ndarray:
        return self.fit(heatmaps).labels_


def embed_2d(x: np.ndarray, method: str, random_state: int = 0) -> np.ndarray:
    """A 2-D map of ``x`` by t-SNE or UMAP. Below 5 samples neither is defined (t-SNE's perplexity
    must stay under N, UMAP needs neighbours), so the points are projected onto their first two
    principal axes instead: still a faithful picture of 3-4 points."""
    n = len(x)
    if n < 5:
        centred = np.asarray(x, np.float64) - np.mean(x, axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        out = np.zeros((n, 2))
        out[:, :min(2, len(vt))] = centred @ vt[:2].T
        return out.astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE
        return TSNE(2, perplexity=min(30.0, (n - 1) / 3), init="pca", random_state=random_state).fit_transform(x).astype(np.float32)
    import umap
    return umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=random_state).fit_transform(x).astype(np.float32)
