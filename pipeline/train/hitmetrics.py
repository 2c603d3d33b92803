"""Per-hit metrics of a hit filter (numpy + scipy): ROC AUC, working points, muon survival, per group.

Conventions (one score per hit, higher = more muon-like; a hit is *kept* when ``score >= threshold``):

* efficiency = kept muon hits / muon hits; purity = kept muon hits / kept hits;
* background rejection = removed background hits / background hits (the users' "99.2 %");
* muon survival = muons (a truth muon of an event with at least one hit) keeping >= 3 hits;
* working point "efficiency e": the highest threshold keeping at least a fraction e of the muon hits;
  "purity p": the lowest threshold (most efficient) whose purity is at least p.

The AUC is the Mann–Whitney statistic from average ranks (ties count one half), O(n log n).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Muon-hit efficiencies of the working points (the users' 0.99 and 0.995) and the chosen purity.
EFFICIENCY_POINTS = (0.99, 0.995)
PURITY_POINT = 0.9
#: A muon survives the filter when it keeps at least this many hits (the users' tracker needs 3).
MIN_MUON_HITS = 3


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random muon hit > that of a random background hit), ties
    counting one half; NaN without both classes. ``scores`` [N] float, ``labels`` [N] bool."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # average ranks, 1-based
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """At every distinct score, as a threshold (descending): kept muon hits ``tp`` and background ``fp``."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s = np.asarray(scores, dtype=np.float64)[order]
    y = np.asarray(labels, dtype=bool)[order]
    last = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)  # the last hit of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    return {"threshold": s[last], "tp": tp, "fp": fp}


def threshold_at_efficiency(scores: np.ndarray, labels: np.ndarray, efficiency: float) -> float:
    """The highest threshold that keeps at least ``efficiency`` of the muon hits (NaN without any)."""
    pos = np.sort(np.asarray(scores, dtype=np.float64)[np.asarray(labels, dtype=bool)])[::-1]
    if not len(pos):
        return math.nan
    k = min(max(math.ceil(efficiency * len(pos) - 1e-9), 1), len(pos))
    return float(pos[k - 1])


def threshold_at_purity(scores: np.ndarray, labels: np.ndarray, purity: float) -> float:
    """The lowest threshold whose kept hits have a purity of at least ``purity`` (NaN if none has)."""
    roc = roc_points(scores, labels)
    ok = roc["tp"] >= purity * (roc["tp"] + roc["fp"])
    ok &= roc["tp"] > 0
    return float(roc["threshold"][np.flatnonzero(ok)[-1]]) if ok.any() else math.nan


def muon_survival(kept: np.ndarray, labels: np.ndarray, muon_id: np.ndarray) -> tuple[float, int]:
    """(fraction of muons keeping >= MIN_MUON_HITS hits, number of muons). ``muon_id`` [N] int64: one id
    per (event, truth muon), any value for background hits; ``kept`` and ``labels`` [N] bool."""
    labels = np.asarray(labels, dtype=bool)
    ids = np.asarray(muon_id)[labels]
    if not len(ids):
        return math.nan, 0
    uniq, inverse = np.unique(ids, return_inverse=True)
    counts = np.bincount(inverse, weights=np.asarray(kept, dtype=bool)[labels].astype(np.float64), minlength=len(uniq))
    return float((counts >= MIN_MUON_HITS).mean()), int(len(uniq))


def at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float,
                 muon_id: np.ndarray | None = None, events: int = 0) -> dict[str, Any]:
    """Efficiency, purity, background rejection (and muon survival, hits kept per event) at ``threshold``."""
    labels = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not math.isfinite(threshold):  # a working point that does not exist (a purity never reached)
        return {"threshold": math.nan, "muon_hits": n_pos, "background_hits": n_neg, "efficiency": math.nan,
                "purity": math.nan, "background_rejection": math.nan,
                **({"muons_keeping_3_hits": math.nan, "muons": 0} if muon_id is not None else {}),
                **({"kept_hits_per_event": math.nan} if events else {})}
    kept = np.asarray(scores, dtype=np.float64) >= threshold
    tp, fp = int((kept & labels).sum()), int((kept & ~labels).sum())
    out: dict[str, Any] = {
        "threshold": float(threshold), "muon_hits": n_pos, "background_hits": n_neg,
        "efficiency": tp / n_pos if n_pos else math.nan,
        "purity": tp / (tp + fp) if tp + fp else math.nan,
        "background_rejection": 1.0 - fp / n_neg if n_neg else math.nan}
    if muon_id is not None:
        out["muons_keeping_3_hits"], out["muons"] = muon_survival(kept, labels, muon_id)
    if events:
        out["kept_hits_per_event"] = (tp + fp) / events
    return out


def working_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Thresholds of the working points: ``efficiency_0.99``, ``efficiency_0.995``, ``purity_0.9``."""
    points = {f"efficiency_{e}": threshold_at_efficiency(scores, labels, e) for e in EFFICIENCY_POINTS}
    points[f"purity_{PURITY_POINT}"] = threshold_at_purity(scores, labels, PURITY_POINT)
    return points


def hit_filter_metrics(scores: np.ndarray, labels: np.ndarray, muon_id: np.ndarray, events: int,
                       groups: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The ``metrics.json`` body of a hit-filter evaluation.

    ``groups``: ``{"technology": {"MDT": mask, ...}, "region": {"barrel": mask, ...}}``, boolean masks
    [N] over the hits. Thresholds are fixed on all hits; each group is reported at those same thresholds
    (how one cut splits by technology and region), with its own AUC.
    """
    points = working_points(scores, labels)
    out: dict[str, Any] = {"auc": roc_auc(scores, labels), "hits": int(len(labels)), "events": events,
                           "muon_hits_per_event": float(np.sum(labels)) / events if events else math.nan,
                           "hits_per_event": len(labels) / events if events else math.nan,
                           "working_points": {name: at_threshold(scores, labels, t, muon_id, events)
                                              for name, t in points.items()}}
    for kind, masks in groups.items():
        out[kind] = {}
        for name, mask in masks.items():
            if not mask.any():
                continue
            s, y = scores[mask], labels[mask]
            out[kind][name] = {"auc": roc_auc(s, y), "hits": int(mask.sum()),
                               "working_points": {p: at_threshold(s, y, t) for p, t in points.items()}}
    return out


def hit_table(metrics: dict[str, Any]) -> str:
    """The working-point table of a hit-filter evaluation, as Markdown (what ``evaluate`` prints)."""

    def missing(x: Any) -> bool:
        return x is None or (isinstance(x, float) and not math.isfinite(x))

    def pct(x: Any) -> str:
        return "–" if missing(x) else f"{100 * x:.2f} %"

    lines = [f"{metrics.get('label', 'model')}: ROC AUC {metrics['auc']:.4f}, {metrics['events']} events, "
             f"{metrics['hits_per_event']:.0f} hits and {metrics['muon_hits_per_event']:.1f} muon hits per event",
             "", "| working point | threshold | efficiency | purity | background rejection | muons keeping ≥ 3 hits "
             "| hits kept / event |", "|---|---|---|---|---|---|---|"]
    for name, wp in metrics["working_points"].items():
        kept, t = wp.get("kept_hits_per_event"), wp.get("threshold")
        lines.append(f"| {name} | {'– (not reached)' if missing(t) else f'{t:.6g}'} | {pct(wp['efficiency'])} | "
                     f"{pct(wp['purity'])} | {pct(wp['background_rejection'])} | "
                     f"{pct(wp.get('muons_keeping_3_hits'))} | {'–' if missing(kept) else f'{kept:.1f}'} |")
    for kind in ("technology", "region"):
        point = next(iter(metrics["working_points"]))
        cells = [f"{name} {pct(g['working_points'][point]['efficiency'])} / {pct(g['working_points'][point]['purity'])}"
                 for name, g in metrics.get(kind, {}).items()]
        if cells:
            lines.append(f"\nper {kind} at {point} (efficiency / purity): " + "; ".join(cells))
    return "\n".join(lines)
