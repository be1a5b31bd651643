"""spray: dataset-scale audits of image classifiers with LRP and Spectral Relevance Analysis."""

__version__ = "0.1.0"
