"""SpRAy: pool heatmaps, sparse kNN graph, spectral embedding, eigengap, clusters, 2-D maps, and a
suspicion score per cluster."""
from .eigengap import Eigengap, choose_k
from .estimator import SpRAy
from .features import pool_maps
from .graph import knn_graph
from .runner import AnalysisParams, analyze_store
from .spectral import spectral_embedding
from .suspicion import THRESHOLD, Suspicion, score_clusters

__all__ = ["AnalysisParams", "Eigengap", "SpRAy", "Suspicion", "THRESHOLD", "analyze_store", "choose_k", "knn_graph",
           "pool_maps", "score_clusters", "spectral_embedding"]
