"""Sparse k-nearest-neighbour graphs: O(N k) memory, never an N x N matrix.

Exact neighbours (scikit-learn) for small N, approximate ones (pynndescent, which umap-learn
brings) for large N. The graph is symmetrised (an edge if either end lists the other), with binary
or Gaussian weights (bandwidth: the median k-th neighbour distance)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from ..errors import ConfigError

EXACT_MAX = 20000


@dataclass
class KnnGraph:
    adjacency: sp.csr_matrix
    n_components: int
    component: np.ndarray
    method: str


def knn_indices(x: np.ndarray, n_neighbors: int, method: str = "auto", random_state: int = 0):
    """(indices, distances) of each row's ``n_neighbors`` nearest other rows."""
    n = len(x)
    k = min(n_neighbors, n - 1)
    if k < 1:
        raise ConfigError(f"a kNN graph needs at least 2 samples, got {n}")
    if method == "auto":
        method = "exact" if n <= EXACT_MAX else "approximate"
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors
        dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    elif method == "approximate":
        from pynndescent import NNDescent
        index = NNDescent(x, n_neighbors=max(k + 1, 30), random_state=random_state, n_jobs=-1,
                          low_memory=True, verbose=False)
        idx, dist = index.neighbor_graph
        idx, dist = idx[:, :k + 1], dist[:, :k + 1]
    else:
        raise ConfigError(f"analysis.knn must be 'auto', 'exact' or 'approximate', got {method!r}")
    # drop each point itself (it may not come first when duplicates exist)
    own = idx == np.arange(n)[:, None]
    keep = np.where(own.any(1)[:, None], ~own, np.arange(k + 1)[None] < k)
    return idx[keep].reshape(n, k), dist[keep].reshape(n, k), method


def knn_graph(x: np.ndarray, n_neighbors: int = 10, method: str = "auto", weights: str = "binary",
              random_state: int = 0) -> KnnGraph:
    if weights not in ("binary", "gaussian"):
        raise ConfigError(f"analysis.weights must be 'binary' or 'gaussian', got {weights!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    idx, dist, used = knn_indices(x, n_neighbors, method, random_state)
    n, k = idx.shape
    if weights == "binary":
        values = np.ones(n * k, dtype=np.float64)
    else:
        sigma = float(np.median(dist[:, -1])) or 1.0
        values = np.exp(-(dist.reshape(-1).astype(np.float64) / sigma) ** 2)
    a = sp.csr_matrix((values, (np.repeat(np.arange(n), k), idx.reshape(-1))), shape=(n, n))
    a = a.maximum(a.T).tocsr()
    a.setdiag(0)
    a.eliminate_zeros()
    count, labels = connected_components(a, directed=False)
    return KnnGraph(a, int(count), labels, used)
