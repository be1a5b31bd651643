"""Bundled Clever-Hans test beds (offline, from scikit-learn's digits) and their trained models."""
from .beds import BEDS, Bed, build_bed
from .train import PREPROCESS, PreparedBed, evaluate, prepare_bed, train_model

__all__ = ["BEDS", "Bed", "PREPROCESS", "PreparedBed", "build_bed", "evaluate", "prepare_bed", "train_model"]
