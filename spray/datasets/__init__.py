"""Clever-Hans test beds with per-sample ground truth, built offline, and their trained models:
digit beds (scikit-learn's digits) and scene beds (drawn objects on crops of bundled photos)."""
from .beds import BEDS, Bed, build_bed
from .scenes import SCENE_BEDS, SceneBed, SceneRecipe, build_scene_bed
from .train import PREPROCESS, PreparedBed, evaluate, prepare_bed, scene_net, train_model

__all__ = ["BEDS", "Bed", "PREPROCESS", "PreparedBed", "SCENE_BEDS", "SceneBed", "SceneRecipe", "build_bed",
           "build_scene_bed", "evaluate", "prepare_bed", "scene_net", "train_model"]
