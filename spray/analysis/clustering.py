"""Cluster the spectral embedding: k-means on the first k eigenvectors (the default), agglomerative
(Ward), or density-based HDBSCAN/DBSCAN (k comes from the data; noise is label -1)."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError

METHODS = ("kmeans", "agglomerative", "hdbscan", "dbscan")


def cluster(embedding: np.ndarray, k: int, method: str = "kmeans", random_state: int = 0) -> np.ndarray:
    x = embedding[:, :max(k, 2)]
    if method == "kmeans":
        from sklearn.cluster import KMeans
        return KMeans(k, n_init=10, random_state=random_state).fit_predict(x)
    if method == "agglomerative":
        from sklearn.cluster import AgglomerativeClustering
        if len(x) > 30000:
            raise ConfigError("agglomerative clustering needs O(N^2) memory; not supported above 30000 samples "
                              "per class: use kmeans")
        return AgglomerativeClustering(k).fit_predict(x)
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN
        return HDBSCAN(min_cluster_size=max(10, len(x) // 20), copy=True).fit_predict(x)
    if method == "dbscan":
        from sklearn.cluster import DBSCAN
        from sklearn.neighbors import NearestNeighbors
        dist, _ = NearestNeighbors(n_neighbors=min(10, len(x))).fit(x).kneighbors(x)
        return DBSCAN(eps=float(np.median(dist[:, -1])) * 1.5, min_samples=5).fit_predict(x)
    raise ConfigError(f"clustering method {method!r} unknown; choose one of {METHODS}")


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster ids ordered by size (0 = largest), noise (-1) kept; makes results comparable."""
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    mapping = {int(old): new for new, old in enumerate(order)}
    return np.array([mapping.get(int(v), -1) for v in labels], dtype=np.int64)
