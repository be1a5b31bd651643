"""Spectral embedding with the normalised Laplacian L = I - D^-1/2 A D^-1/2.

Eigenvalues are returned ascending (0 = a connected component) with the matching eigenvectors
scaled by D^-1/2 (the random-walk embedding k-means clusters best). CoRelAy reports the
eigenvalues of D^-1/2 A D^-1/2 instead (1 - lambda, descending); :func:`to_corelay_order` converts.
Small graphs use a dense solver; large ones LOBPCG on the normalised adjacency, warm-started and
checked, with ARPACK as the fallback."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh, lobpcg

DENSE_MAX = 2500


@dataclass
class Spectrum:
    eigenvalues: np.ndarray       # ascending, Laplacian
    embedding: np.ndarray         # (N, n_components), column i belongs to eigenvalue i
    solver: str


def normalized_adjacency(a: sp.spmatrix):
    degree = np.asarray(a.sum(1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    d = sp.diags(inv_sqrt)
    return (d @ a @ d).tocsr(), inv_sqrt


def spectral_embedding(a: sp.spmatrix, n_components: int = 32, random_state: int = 0) -> Spectrum:
    n = a.shape[0]
    m, inv_sqrt = normalized_adjacency(a)
    n_components = min(n_components, n - 1)
    if n <= DENSE_MAX:
        mu, vec = np.linalg.eigh(m.toarray())
        mu, vec, solver = mu[::-1][:n_components], vec[:, ::-1][:, :n_components], "dense"
    else:
        rng = np.random.default_rng(random_state)
        start = rng.standard_normal((n, n_components))
        start[:, 0] = 1.0 / inv_sqrt  # the known top eigenvector, D^1/2 1
        try:
            mu, vec = lobpcg(m, start, largest=True, tol=1e-5, maxiter=400)
            residual = np.linalg.norm(m @ vec - vec * mu, axis=0).max()
            if not np.isfinite(residual) or residual > 1e-3:
                raise np.linalg.LinAlgError(f"lobpcg residual {residual}")
            solver = "lobpcg"
        except (np.linalg.LinAlgError, ValueError):
            mu, vec = eigsh(m, k=n_components, which="LA", tol=1e-6, v0=start[:, 0])
            solver = "arpack"
        order = np.argsort(mu)[::-1]
        mu, vec = mu[order], vec[:, order]
    eigenvalues = np.clip(1.0 - mu, 0.0, 2.0)
    embedding = vec * inv_sqrt[:, None]
    embedding /= np.maximum(np.linalg.norm(embedding, axis=0), 1e-12)
    return Spectrum(eigenvalues.astype(np.float64), embedding.astype(np.float32), solver)


def to_corelay_order(eigenvalues: np.ndarray) -> np.ndarray:
    """spray's ascending Laplacian eigenvalues as CoRelAy/ViRelAy store them (1 - lambda, descending)."""
    return (1.0 - np.asarray(eigenvalues))
