"""The report's numbers in plain language: what an eigengap, a separation, a suspicion score, a
hot-spot box, a flip test and a composite mean, written for an auditor who has not read the paper."""
from __future__ import annotations

from typing import Optional, Sequence

PRESETS = {
    "epsilon": "LRP-epsilon on every convolution and dense layer",
    "epsilon_plus": "z+ on convolutions, epsilon on dense layers",
    "epsilon_plus_flat": "flat on the first layer, z+ on the other convolutions, epsilon on dense layers",
    "epsilon_gamma_box": "zB (the input's valid pixel range) on the first convolution, gamma on the other "
                         "convolutions, epsilon on dense layers",
    "epsilon_alpha2_beta1": "alpha2-beta1 on convolutions, epsilon on dense layers",
    "epsilon_alpha2_beta1_flat": "flat on the first layer, alpha2-beta1 on the other convolutions, epsilon on "
                                 "dense layers",
}
WEAK_FLIP = 0.05


def _rule(rule) -> str:
    if isinstance(rule, str):
        return rule
    if isinstance(rule, dict):
        params = ", ".join(f"{k}={v}" for k, v in rule.items() if k != "rule")
        return f"{rule.get('rule', '?')}" + (f" ({params})" if params else "")
    return str(rule)


def composite(spec) -> str:
    """An LRP composite (preset name or job mapping) as a sentence."""
    if spec is None:
        return "unknown LRP composite"
    if isinstance(spec, str):
        spec = {"preset": spec}
    preset = spec.get("preset")
    parts = [f"{preset}: {PRESETS.get(preset, 'a preset')}" if preset else "a custom composite"]
    params = {k: v for k, v in spec.items() if k in ("epsilon", "gamma", "stabilizer")}
    if params:
        parts.append("with " + ", ".join(f"{k} = {v}" for k, v in params.items()))
    if spec.get("first") is not None:
        parts.append(f"first layer: {_rule(spec['first'])}")
    for key, label in (("by_type", "by layer type"), ("by_name", "by layer name")):
        if spec.get(key):
            parts.append(f"{label}: " + ", ".join(f"{k} -> {_rule(v)}" for k, v in spec[key].items()))
    return "; ".join(parts)


def eigengap(k: int, gap: float, runner_up: int, runner_up_gap: float, eigenvalues: Sequence[float]) -> str:
    lam = list(eigenvalues)
    near = f"eigenvalue {k} is {lam[k - 1]:.3f} and eigenvalue {k + 1} is {lam[k]:.3f}" if len(lam) > k else ""
    clean = ("a clean split" if gap >= 0.8 else "a clear split" if gap >= 0.5 else
             "a moderate split" if gap >= 0.25 else "a weak split: the groups blend into each other")
    return (f"The heatmaps form k = {k} groups: the graph of similar heatmaps has {k} eigenvalues near zero before "
            f"the sorted spectrum jumps ({near}). The relative gap {gap:.2f} is that jump as a share of the next "
            f"eigenvalue (0 = no jump, 1 = groups with no links between them): {clean}. Next best: k = {runner_up} "
            f"(gap {runner_up_gap:.2f}).")


def separation(value: float, n_neighbors: int) -> str:
    return (f"{value:.0%} of the links from its members to their {n_neighbors} most similar heatmaps stay inside the "
            f"cluster (separation {value:.2f}; 1 = an island in the graph, lower = it blends into the class)")


def score(cluster: dict, threshold: float) -> str:
    """The suspicion score's parts (spray.analysis.suspicion): separation x consistency x magnitude."""
    local = cluster.get("kind") == "local"
    magnitude = cluster["hot"] if local else cluster["off"]
    what = ("how much more of the members' relevance lies in the region where their pixels are the same than "
            "the class typically puts there" if local else
            "how much more of the members' relevance lies on colours of their own than the class typically puts there")
    text = (f"suspicion {cluster['score']:.2f} = separation {cluster['separation']:.2f} x consistency "
            f"{cluster.get('consistency', float('nan')):.2f} (1 = the members' input there is identical, 0 = no closer "
            f"to their common picture than the class's typical sample) x {'local' if local else 'colour'} excess {magnitude:.2f} ({what}); "
            f"flagged from {threshold:.2f}")
    if cluster.get("decided_by"):
        text += f"; decided by {cluster['decided_by']}"
    return text


def box(b: Sequence[int], shape: Sequence[int], where: str) -> str:
    """A hot-spot box (top, left, bottom, right; exclusive; heatmap pixels) in words with units."""
    top, left, bottom, right = (int(v) for v in b)
    h, w = int(shape[0]), int(shape[1])
    return (f"rows {top}-{bottom - 1} and columns {left}-{right - 1} of the {h}x{w}-pixel input (a "
            f"{bottom - top}x{right - left}-pixel patch, {where})")


def flip(entry: Optional[dict], label_name: str, flagged: bool, verified: bool) -> str:
    """The artifact-insertion (flip) test with its control (spray.verify), in words; "" when not flagged."""
    if not flagged:
        return ""
    if not verified:
        return "Not verified: the flip test was not run (verify.enabled is false)."
    if not entry:
        return "Not verified: there were no other-class images to test on."
    action = (f"giving {entry['n']} images of other classes this cluster's background (each keeps its own object)"
              if entry.get("method") == "swap background" else
              f"pasting this cluster's region onto {entry['n']} images of other classes")
    text = f"Flip test: {action} turns {entry['rate']:.0%} of them into class {label_name}"
    if entry.get("control_rate") is not None:
        text += f"; its control ({entry.get('control', 'control')}) turns {entry['control_rate']:.0%}"
    if "confirmed" in entry:
        text += (": confirmed, the model uses what this cluster has in common" if entry["confirmed"] else
                 ": not confirmed, it flips no more than its control")
    elif entry["rate"] < WEAK_FLIP:
        text += ": a weaker finding, the model may not rely on this region alone"
    return text + "."


def accuracy(value: float, bed: Optional[dict] = None) -> str:
    text = (f"{value:.1%} accuracy on the audited images (the images in the store, usually the training set; "
            f"not a held-out test accuracy)")
    if bed:
        text += f"; the bed's model reaches {bed['clean_accuracy']:.1%} on its held-out clean test images"
    return text
