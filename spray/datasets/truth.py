"""How well a detector's verdict matches a bed's ground truth: per shortcut the F1 of its flagged
groups (the best one, or the union of those in the shortcut's class) against the planted samples,
where its best group ranks among all groups (by suspicion, those a flip test confirmed first, as
spray's report lists them: :func:`spray.verify.review_order`; a peer without a flip test is ranked
by its score alone), the false flags, and the samples' AUROC within the
shortcut's class. One scorer for spray and for its peers (tests and benchmarks/bench_detect.py).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..verify import review_order


@dataclass
class Group:
    """A detector's group of samples in one class: store rows, a score for ranking, flagged or not,
    and whether a flip test with a control confirmed the flag (None: not tested)."""

    label: int
    rows: np.ndarray
    score: float
    flagged: bool
    confirmed: Optional[bool] = None


@dataclass
class ShortcutResult:
    kind: str
    label: int
    planted: int
    f1: float
    rank: int                  # 1-based rank of its best group among all groups (0: no group found it)
    ranked_first: bool         # all groups that found it rank above every other group
    auroc: float
    confirmed: Optional[bool] = None   # a group that found it passed the flip test (None: none tested)


@dataclass
class Verdict:
    shortcuts: Dict[str, ShortcutResult]
    false_flags: int           # flagged groups that are not mostly planted samples
    flagged: int
    false_confirmed: Optional[int] = None   # false flags the flip test confirmed (None: no flag tested)

    def to_dict(self) -> dict:
        return {"shortcuts": {k: asdict(v) for k, v in self.shortcuts.items()}, "false_flags": self.false_flags,
                "flagged": self.flagged, "false_confirmed": self.false_confirmed}


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN without both classes."""
    truth = np.asarray(truth, bool)
    pos, neg = int(truth.sum()), int((~truth).sum())
    if not pos or not neg:
        return float("nan")
    from scipy.stats import rankdata
    ranks = rankdata(score)
    return float((ranks[truth].sum() - pos * (pos + 1) / 2) / (pos * neg))


def judge(labels: np.ndarray, truth: np.ndarray, shortcuts: Dict[str, int], groups: Sequence[Group],
          sample_score: np.ndarray) -> Verdict:
    """``labels``/``truth``/``sample_score``: per store row (``truth``: the shortcut kind, "" for
    none); ``shortcuts``: {kind: class}."""
    planted_any = truth != ""
    ranked = sorted(groups, key=lambda g: review_order(g.score, g.confirmed))   # as spray's report ranks them
    mostly_planted = [bool(len(g.rows)) and planted_any[g.rows].mean() >= 0.5 for g in ranked]
    results = {}
    for kind, label in shortcuts.items():
        planted = (truth == kind) & (labels == label)
        mine = [i for i, g in enumerate(ranked) if g.flagged and g.label == label and mostly_planted[i]]
        best, union = 0.0, np.zeros(len(labels), bool)
        for i in mine:
            m = np.zeros(len(labels), bool)
            m[ranked[i].rows] = True
            union |= m
            best = max(best, _f1(m, planted))
        f1 = max(best, _f1(union, planted)) if mine else 0.0
        others = [i for i in range(len(ranked)) if i not in mine]
        first = bool(mine) and all(_before(ranked[i], ranked[j]) for i in mine for j in others if not mostly_planted[j])
        in_class = labels == label
        tested = [ranked[i].confirmed for i in mine if ranked[i].confirmed is not None]
        results[kind] = ShortcutResult(kind, int(label), int(planted.sum()), float(f1), (mine[0] + 1) if mine else 0,
                                       first, auroc(planted[in_class], sample_score[in_class]),
                                       any(tested) if tested else None)
    false = [g for g, mp in zip(ranked, mostly_planted) if g.flagged and not mp]
    tested_any = any(g.confirmed is not None for g in ranked if g.flagged)
    false_confirmed = sum(bool(g.confirmed) for g in false) if tested_any else None
    return Verdict(results, len(false), sum(g.flagged for g in ranked), false_confirmed)


def _before(a: Group, b: Group) -> bool:
    """Whether ``a`` ranks strictly above ``b`` (a tie is not a rank)."""
    return review_order(a.score, a.confirmed) < review_order(b.score, b.confirmed)


def _f1(found: np.ndarray, planted: np.ndarray) -> float:
    tp = int((found & planted).sum())
    return 2 * tp / (int(found.sum()) + int(planted.sum())) if tp else 0.0


def ground_truth(data: Path, store_index: np.ndarray) -> np.ndarray:
    """Per store row, the shortcut kind planted in it ("" for none), from a bed's ``data.npz``."""
    d = np.load(data)
    if "shortcut" in d.files:
        kinds = d["shortcut"].astype(str)
    else:           # a digit bed: one shortcut, named after the bed
        kinds = np.where(d["artifact"], json.loads(Path(data).with_name("bed.json").read_text())["name"], "")
    return kinds[store_index]


def spray_groups(summary: dict, ids: List[str], verification: Optional[Dict[str, dict]] = None) -> List[Group]:
    """The clusters of an ``analysis.json`` as groups (scored by their suspicion): a flagged one as
    the samples spray reports as carrying its finding (``carriers``), any other as its members;
    ``verification`` (the flip tests, keyed "label/cluster") says which flags were confirmed."""
    position = {i: r for r, i in enumerate(ids)}
    tests = verification or {}

    def confirmed(label: int, cl: dict) -> Optional[bool]:
        test = tests.get(f"{label}/{cl['cluster']}")
        return bool(test["confirmed"]) if cl["flagged"] and test is not None else None
    return [Group(c["label"], np.array([position[i] for i in (cl["carriers"] if cl["flagged"] else cl["members"])],
                                       dtype=np.int64), float(cl["score"]), bool(cl["flagged"]),
                  confirmed(c["label"], cl))
            for c in summary["classes"] for cl in c["clusters"]]


def spray_sample_scores(analysis_h5: Path, n_rows: int) -> np.ndarray:
    """Per store row, its ``sample_score`` from ``analysis.h5`` (0 for rows of unanalysed classes)."""
    import h5py
    out = np.zeros(n_rows, np.float32)
    with h5py.File(analysis_h5, "r") as fh:
        for name in fh:
            g = fh[name]
            if "sample_score" in g:
                out[g["index"][()]] = g["sample_score"][()]
    return out
