"""Hit-filter metrics against slow references: pairwise AUC, brute-force thresholds, per-muon loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("scipy")

from pipeline.train.hitmetrics import (  # noqa: E402
    at_threshold,
    hit_filter_metrics,
    muon_survival,
    roc_auc,
    threshold_at_efficiency,
    threshold_at_purity,
)


def pairwise_auc(s: np.ndarray, y: np.ndarray) -> float:
    """P(s_pos > s_neg) + P(s_pos == s_neg) / 2 over all pairs (O(P N))."""
    pos, neg = s[y], s[~y]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def sample(n: int = 400, seed: int = 0, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    s = rng.normal(size=n) + 1.2 * y
    if ties:
        s = np.round(s, 1)  # many equal scores across the classes
    return s, y


@pytest.mark.parametrize("seed", range(4))
def test_auc_equals_the_pairwise_count_with_ties(seed):
    s, y = sample(seed=seed, ties=seed % 2 == 0)
    assert roc_auc(s, y) == pytest.approx(pairwise_auc(s, y), abs=1e-12)


def test_auc_of_one_class_is_nan_and_perfect_separation_is_one():
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([True, True])))
    assert roc_auc(np.array([0.1, 0.2, 0.9]), np.array([False, False, True])) == 1.0


@pytest.mark.parametrize("eff", [0.5, 0.9, 0.99, 0.995, 1.0])
def test_efficiency_threshold_is_the_highest_that_keeps_the_fraction(eff):
    s, y = sample(1000, seed=5)
    t = threshold_at_efficiency(s, y, eff)
    candidates = np.unique(s)
    ok = [c for c in candidates if (s[y] >= c).mean() >= eff - 1e-12]  # brute force over every cut
    assert t == max(ok)


@pytest.mark.parametrize("purity", [0.5, 0.8, 0.95])
def test_purity_threshold_is_the_lowest_that_reaches_the_purity(purity):
    s, y = sample(800, seed=6)
    t = threshold_at_purity(s, y, purity)
    ok = [c for c in np.unique(s) if (y[s >= c]).mean() >= purity]
    assert t == min(ok)
    assert math.isnan(threshold_at_purity(s, np.zeros_like(y), 0.5))


def test_muon_survival_counts_kept_hits_per_muon():
    rng = np.random.default_rng(2)
    muon = rng.integers(0, 30, size=500)
    y = rng.random(500) < 0.6
    kept = rng.random(500) < 0.7
    frac, n = muon_survival(kept, y, np.where(y, muon, -1))
    survived = [np.sum(kept & y & (muon == m)) >= 3 for m in np.unique(muon[y])]
    assert n == len(survived) and frac == pytest.approx(np.mean(survived))


def test_working_point_counts_by_hand():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([True, False, True, True, False, False])
    wp = at_threshold(s, y, 0.6, muon_id=np.array([1, -1, 1, 1, -1, -1]), events=2)
    assert wp["efficiency"] == 1.0 and wp["purity"] == 0.75 and wp["background_rejection"] == pytest.approx(2 / 3)
    assert wp["muons_keeping_3_hits"] == 1.0 and wp["kept_hits_per_event"] == 2.0


def test_groups_use_the_global_thresholds():
    s, y = sample(600, seed=9)
    group = np.arange(600) % 2 == 0
    m = hit_filter_metrics(s, y, np.where(y, np.arange(600) // 10, -1), 10, {"technology": {"A": group}})
    t = m["working_points"]["efficiency_0.99"]["threshold"]
    assert m["technology"]["A"]["working_points"]["efficiency_0.99"]["efficiency"] == pytest.approx((s[y & group] >= t).mean())
    assert m["technology"]["A"]["auc"] == pytest.approx(pairwise_auc(s[group], y[group]))


def test_an_unreached_purity_is_reported_as_missing_in_json_and_in_the_table():
    import json

    from pipeline.train.hitmetrics import hit_table
    from pipeline.train.runfiles import finite

    s, y = sample(300, seed=1)
    y[:] = np.arange(300) % 10 == 0  # 10 % muon hits, random scores: purity 0.9 is never reached
    s = np.random.default_rng(0).random(300)
    m = hit_filter_metrics(s, y, np.where(y, np.arange(300), -1), 3, {})
    wp = m["working_points"]["purity_0.9"]
    assert math.isnan(wp["threshold"]) and math.isnan(wp["efficiency"]) and math.isnan(wp["muons_keeping_3_hits"])
    for metrics in (m, json.loads(json.dumps(finite(m)))):  # in memory (NaN) and read back from metrics.json (null)
        line = next(ln for ln in hit_table(metrics).splitlines() if ln.startswith("| purity_0.9"))
        assert "– (not reached)" in line and "nan" not in line
