"""Detection quality on the test beds: spray's suspicion score against IBM ART's activation
clustering and spectral signatures and against plain eigengap SpRAy, same beds, same scorer
(spray.datasets.truth): per shortcut the F1 of the flagged groups against the planted samples (best
group or the union of those in its class), the rank of its best group, false flags (flagged groups
that are not mostly planted samples), the samples' AUROC within the shortcut's class, and seconds.
spray's flags also go through its flip test with a control, as ``spray run`` verifies them
(``spray.pipelines.audit.verify_flagged``): ``flip`` says whether a group that found the shortcut was
confirmed, ``false+`` how many false flags were (the peers have no such test: "-").

    python benchmarks/bench_detect.py                      # development beds (digits and scenes)
    python benchmarks/bench_detect.py --set held-out       # the held-out beds, reported apart
    python benchmarks/bench_detect.py --set validation     # beds added after the design was fixed
    python benchmarks/bench_detect.py --beds scenes --methods spray art-ac
    python benchmarks/bench_detect.py --set validation --train-seed 1   # another training run of each model

Peers, as their users would run them:
- ART activation clustering (``ActivationDefence.detect_poison(nb_clusters=2, nb_dims=10,
  reduce="FastICA", cluster_analysis="smaller")``) and spectral signatures
  (``SpectralSignatureDefense`` with its defaults) on the penultimate features: ART reads the
  activations of the model's LAST top-level module, so it gets a wrapper whose only module returns
  them. Its k-means and FastICA are unseeded: numpy's global seed is fixed before each call. Both
  flag one group per class by design; TPR/FPR come from the flags they return (their own
  ``evaluate_defence`` re-clusters). Per-sample score: activation clustering's flag, spectral
  signatures' outlier score.
- Plain eigengap SpRAy (Lapuschkin et al. 2019, as ViRelAy's guide reads it): the same clustering
  as spray; every cluster but the largest of a class is a candidate, ranked by how small it is.

A bed whose model is not good (clean accuracy < 0.9) is listed and not scored; a shortcut the model
does not use (it flips < 50% of other classes' images) is listed and not scored, while the bed's
other shortcuts are (its samples count as planted: flagging them is not a false flag). Heatmap stores are cached in ``--out``; the seconds are the detection step alone
(spray: analysis incl. its pixel reads, not the flip test; ART: activations + detection), indicative on a busy machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spray.pipelines.audit import verify_flagged  # noqa: E402
from spray.analysis import AnalysisParams, analyze_store  # noqa: E402
from spray.datasets import SCENE_BEDS, prepare_bed  # noqa: E402
from spray.datasets.train import MIN_ACCURACY, MIN_FLIP_RATE  # noqa: E402
from spray.datasets.truth import Group, ground_truth, judge, spray_groups, spray_sample_scores  # noqa: E402
from spray.errors import ConfigError  # noqa: E402
from spray.explain import ClusterSpec, ExplainSpec, run_explain  # noqa: E402
from spray.models.loading import load_model  # noqa: E402
from spray.store import HeatmapStore  # noqa: E402

BEDS = {"development": ["watermark", "background", "scenes", "scenes-clean"],
        "held-out": ["scenes-heldout", "scenes-heldout-clean"],
        "validation": ["scenes-fresh", "scenes-fresh2", "scenes-fresh3", "scenes-fresh4", "scenes-fresh5",
                       "scenes-fresh6", "scenes-fresh7", "scenes-fresh-clean"]}
METHODS = ("spray", "spray-eigengap", "art-ac", "art-ss")
SEED = 0


class Penultimate(nn.Module):
    """A torchvision-layout ResNet up to its pooled features (what ART should read)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
        return torch.flatten(m.avgpool(x), 1)


def explain_spec(bed) -> ExplainSpec:
    return ExplainSpec(data={"type": "npz", "path": str(bed.data)},
                       model={**bed.info["model"], "weights": str(bed.weights)}, preprocess=bed.info["preprocess"],
                       composite="epsilon_gamma_box", batch_size=64)


def explained(bed, out: Path) -> Path:
    """The bed's heatmap store in ``out`` (the bed's folder), explained where missing. A cached store
    made for another model (the bed retrained) or by another store format is explained again, never
    reused."""
    store = out / "store"
    spec = explain_spec(bed)
    started = time.perf_counter()
    for attempt in (0, 1):
        try:
            result = run_explain(spec, store, shard_size=512, cluster=ClusterSpec(mode="synchronous"), progress=False)
            break
        except ConfigError as err:
            if attempt or not store.exists():
                raise
            print(f"  {err}: explaining again", flush=True)
            shutil.rmtree(store)
    if result.computed_samples:
        print(f"  explained {bed.info['name']} in {time.perf_counter() - started:.0f} s", flush=True)
    return store


def run_spray(bed, store: Path, out: Path):
    started = time.perf_counter()
    summary = analyze_store(store, out / "analysis", AnalysisParams(embeddings=()), progress=False)
    seconds = time.perf_counter() - started
    verification = verify_flagged(store, out / "analysis", explain_spec(bed))   # as `spray run` does
    with HeatmapStore(store) as st:
        groups = spray_groups(summary, st.ids, verification)
        scores = spray_sample_scores(out / "analysis" / "analysis.h5", len(st))
    return groups, scores, seconds


def run_eigengap(bed, store: Path, out: Path):
    started = time.perf_counter()
    groups = []
    with HeatmapStore(store) as st:
        scores = np.zeros(len(st), np.float32)
        for label in st.classes:
            rows = st.rows_of(label)
            labels = AnalysisParams(embeddings=()).estimator().fit(st.relevance(rows)).labels_
            sizes = np.bincount(labels[labels >= 0])
            largest = int(np.argmax(sizes))
            for c, size in enumerate(sizes):
                share = size / len(rows)
                groups.append(Group(int(label), rows[labels == c], 1.0 - share, c != largest))
                scores[rows[labels == c]] = 0.0 if c == largest else 1.0 - share
    return groups, scores, time.perf_counter() - started


def _art_inputs(bed, store: Path):
    from spray.data.preprocess import Preprocess
    data = np.load(bed.data)
    with HeatmapStore(store) as st:
        index, labels = st.index, st.labels
    pre = Preprocess(**bed.info["preprocess"])
    x = pre.batch(data["images"][index]).numpy()
    y = np.eye(int(labels.max()) + 1, dtype=np.float32)[labels]
    model = load_model(**bed.info["model"], weights=str(bed.weights))
    clf_model = nn.Sequential(OrderedDict(features=Penultimate(model))).eval()
    return x, y, labels, clf_model


def _classifier(clf_model, x, y):
    from art.estimators.classification import PyTorchClassifier
    return PyTorchClassifier(clf_model, loss=nn.CrossEntropyLoss(), input_shape=x.shape[1:], nb_classes=y.shape[1],
                             clip_values=(float(x.min()), float(x.max())), device_type="cpu")


def run_art_ac(bed, store: Path, out: Path):
    from art.defences.detector.poison import ActivationDefence
    x, y, labels, clf_model = _art_inputs(bed, store)
    started = time.perf_counter()
    np.random.seed(SEED)
    defence = ActivationDefence(_classifier(clf_model, x, y), x, y)
    _, is_clean = defence.detect_poison(nb_clusters=2, nb_dims=10, reduce="FastICA", cluster_analysis="smaller")
    seconds = time.perf_counter() - started
    flagged = np.asarray(is_clean) == 0
    groups = []
    for label in np.unique(labels):
        in_class = labels == label
        rows = np.flatnonzero(in_class & flagged)
        if len(rows):
            groups.append(Group(int(label), rows, 1.0 - len(rows) / in_class.sum(), True))
    return groups, flagged.astype(np.float32), seconds


def run_art_ss(bed, store: Path, out: Path):
    from art.defences.detector.poison import SpectralSignatureDefense
    x, y, labels, clf_model = _art_inputs(bed, store)
    started = time.perf_counter()
    np.random.seed(SEED)
    clf = _classifier(clf_model, x, y)
    _, is_clean = SpectralSignatureDefense(clf, x, y).detect_poison()
    features = clf.get_activations(x, layer=len(clf.layer_names) - 1, batch_size=128).reshape(len(x), -1)
    scores = np.zeros(len(x), np.float32)
    for label in np.unique(labels):
        in_class = labels == label
        scores[in_class] = SpectralSignatureDefense.spectral_signature_scores(features[in_class]).ravel()
    seconds = time.perf_counter() - started
    flagged = np.asarray(is_clean) == 0
    groups = []
    for label in np.unique(labels):
        in_class = labels == label
        rows = np.flatnonzero(in_class & flagged)
        if len(rows):
            groups.append(Group(int(label), rows, float(scores[rows].mean()), True))
    return groups, scores, seconds


RUNNERS = {"spray": run_spray, "spray-eigengap": run_eigengap, "art-ac": run_art_ac, "art-ss": run_art_ss}


def bench_bed(name: str, methods, out: Path, train_seed: int = 0) -> dict:
    bed = prepare_bed(name, check=False, progress=True, train_seed=train_seed)
    folder = out / (name if not train_seed else f"{name}@train{train_seed}")
    row = {"bed": name, "set": bed.info.get("set", "development"), "train_seed": train_seed,
           "clean_accuracy": bed.info["clean_accuracy"],
           "shortcuts": {k: {"class": v["class"], "flip": v["flip"]["rate"], "base_rate": v["base_rate"]}
                         for k, v in bed.info["shortcuts"].items()}, "failed": bed.failed, "methods": {}}
    if bed.info["clean_accuracy"] < MIN_ACCURACY:
        return row
    # a shortcut the model does not use (flip rate below the bed check's) is not scored; its samples
    # still count as planted, so flagging them is no false flag
    used = {k: c for k, c in bed.shortcuts.items() if bed.info["shortcuts"][k]["flip"]["rate"] >= MIN_FLIP_RATE}
    row["not_scored"] = sorted(set(bed.shortcuts) - set(used))
    if bed.shortcuts and not used:
        return row
    store = explained(bed, folder)
    with HeatmapStore(store) as st:
        truth, labels = ground_truth(bed.data, st.index), st.labels
    for method in methods:
        groups, scores, seconds = RUNNERS[method](bed, store, folder / method)
        verdict = judge(labels, truth, used, groups, scores)
        row["methods"][method] = {**verdict.to_dict(), "seconds": round(seconds, 2)}
    return row


def _fmt(row: dict) -> list:
    lines = []
    flips = ", ".join(f"{k} {v['flip']:.0%} (base {v['base_rate']:.0%})" for k, v in row["shortcuts"].items())
    lines.append(f"{row['bed']} [{row['set']}]: clean accuracy {row['clean_accuracy']:.1%}; flips: {flips or 'none'}")
    if row["failed"]:
        scored = bool(row["methods"])
        lines.append(("  NOT SCORED (the model does not use them): " + ", ".join(row.get("not_scored", [])) if scored
                      else "  FAILED BED, not scored") + ": " + "; ".join(row["failed"]))
        if not scored:
            return lines
    lines.append(f"  {'method':<15} {'shortcut':<11} {'F1':>5} {'rank':>4} {'first':>5} {'AUROC':>6} {'flip':>5} "
                 f"{'false':>5} {'false+':>6} {'flagged':>7} {'s':>7}")
    for method, r in row["methods"].items():
        items = list(r["shortcuts"].items()) or [("-", None)]
        for i, (kind, s) in enumerate(items):
            head = f"  {method if i == 0 else '':<15} {kind:<11} "
            body = (f"{s['f1']:5.2f} {s['rank']:4d} {str(s['ranked_first']):>5} {s['auroc']:6.3f} "
                    f"{_yes_no(s.get('confirmed')):>5}" if s else f"{'-':>5} {'-':>4} {'-':>5} {'-':>6} {'-':>5}")
            confirmed = r.get("false_confirmed")
            tail = (f" {r['false_flags']:5d} {'-' if confirmed is None else confirmed:>6} {r['flagged']:7d} "
                    f"{r['seconds']:7.1f}" if i == 0 else "")
            lines.append(head + body + tail)
    return lines


def _yes_no(value) -> str:
    return "-" if value is None else "yes" if value else "no"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=sorted(BEDS), default="development")
    p.add_argument("--beds", nargs="+", help=f"beds to run instead of a set (scene beds: {sorted(SCENE_BEDS)})")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_detect")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-seed", type=int, default=0,
                   help="train each bed's model with this seed (0: the cached default): another training "
                        "run of the same beds, to see how much the figures move with the model")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    rows = []
    for name in args.beds or BEDS[args.set]:
        print(f"bed {name}", flush=True)
        row = bench_bed(name, args.methods, args.out, args.train_seed)
        rows.append(row)
        print("\n".join(_fmt(row)), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    seed = f"@train{args.train_seed}" if args.train_seed else ""
    path = args.out / f"results-{'-'.join(args.beds) if args.beds else args.set}{seed}.json"
    path.write_text(json.dumps(rows, indent=1))
    print(f"\nresults in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
