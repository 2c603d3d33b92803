"""Plots of a hit-filter evaluation: ROC, purity vs efficiency, and the working point per technology.

matplotlib (and the mplhep style) through :func:`pipeline.train.plots._plt`, the one module that imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .hitmetrics import roc_points

#: Points of a curve drawn (evenly in rank): enough for a smooth line from millions of hits.
CURVE_POINTS = 600


def curve(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Efficiency, background efficiency (FPR) and purity at up to CURVE_POINTS thresholds."""
    roc = roc_points(scores, labels)
    pos, neg = max(int(np.sum(labels)), 1), max(int(np.sum(~np.asarray(labels, bool))), 1)
    take = np.unique(np.linspace(0, len(roc["tp"]) - 1, min(CURVE_POINTS, len(roc["tp"]))).astype(int))
    tp, fp = roc["tp"][take].astype(float), roc["fp"][take].astype(float)
    return {"efficiency": tp / pos, "fpr": fp / neg, "purity": tp / np.maximum(tp + fp, 1)}


def plot_hit_filter(columns: dict[str, np.ndarray], metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``hit_filter_roc.png``, ``hit_filter_purity.png``, ``hit_filter_technology.png``; return them."""
    from .plots import OUTSIDE, _plt

    plt = _plt()
    s, y = columns["score"], columns["label"].astype(bool)
    c = curve(s, y)
    label = f"{metrics.get('label', 'model')} (AUC {metrics['auc']:.4f})"
    written = []

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    with np.errstate(divide="ignore"):
        ax.plot(c["efficiency"], 1.0 / c["fpr"], label=label)
    for name, wp in metrics["working_points"].items():
        if wp.get("efficiency") is not None and wp.get("background_rejection", 1.0) < 1.0:
            ax.plot([wp["efficiency"]], [1.0 / (1.0 - wp["background_rejection"])], "o", label=name)
    ax.set(xlabel="muon-hit efficiency", ylabel="1 / background efficiency", yscale="log", xlim=(0.8, 1.0))
    ax.legend(**OUTSIDE)
    written.append(_save(fig, out_dir / "hit_filter_roc.png", plt))

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(c["efficiency"], c["purity"], label=label)
    ax.set(xlabel="muon-hit efficiency", ylabel="hit purity", ylim=(0, 1.02), xlim=(0.5, 1.0))
    ax.legend(**OUTSIDE)
    written.append(_save(fig, out_dir / "hit_filter_purity.png", plt))

    techs = metrics.get("technology", {})
    names = list(techs)
    point = next(iter(metrics["working_points"]))  # efficiency_0.99
    eff = [techs[n]["working_points"][point]["efficiency"] or 0.0 for n in names]
    pur = [techs[n]["working_points"][point]["purity"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, eff, 0.4, label="efficiency")
    ax.bar(x + 0.2, pur, 0.4, label="purity")
    ax.set_xticks(x, names)
    ax.set(ylabel=f"at working point {point}", ylim=(0, 1.05))
    ax.legend(**OUTSIDE)
    written.append(_save(fig, out_dir / "hit_filter_technology.png", plt))
    return written


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
