"""Metrics equal hand-computed values on synthetic predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("torch")
stats = pytest.importorskip("scipy.stats")

from pipeline.train.metrics import (  # noqa: E402
    clopper_pearson,
    evaluate_method,
    gaussian_core,
    resolution,
    shortest_interval_halfwidth,
    summarise,
    wrap_phi,
)


def test_gaussian_core_recovers_known_sigma():
    rng = np.random.default_rng(0)
    x = rng.normal(0.01, 0.05, 200_000)
    mu, sigma = gaussian_core(x)
    assert sigma == pytest.approx(0.05, rel=0.01) and mu == pytest.approx(0.01, abs=5e-4)
    assert shortest_interval_halfwidth(x) == pytest.approx(0.05, rel=0.01)


def test_gaussian_core_ignores_tails():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 0.03, 90_000), rng.normal(0, 0.3, 10_000)])
    _, sigma = gaussian_core(x)
    assert sigma == pytest.approx(0.03, rel=0.05)
    r = resolution(x)
    assert r["sigma68"] > 0.031  # the 68 % width feels the tails, the core fit does not
    assert r["tail_3sigma"] == pytest.approx(0.1 * 2 * stats.norm.sf(3 * 0.03 / 0.3) + 0.9 * 0.0027, abs=0.01)


def test_shortest_interval_by_hand():
    x = np.arange(100, dtype=float)  # 69 values needed: [0, 68] width 68
    assert shortest_interval_halfwidth(x) == 34.0
    x = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 20.0, 30.0])
    assert shortest_interval_halfwidth(x) == 0.0
    assert math.isnan(shortest_interval_halfwidth(np.array([])))


def test_clopper_pearson_matches_exact_binomial():
    for k, n in ((0, 10), (3, 10), (37, 1000), (10, 10)):
        lo, hi = clopper_pearson(k, n)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.682689492137086, method="exact")
        assert (lo, hi) == pytest.approx((ci.low, ci.high), abs=1e-9)
    assert clopper_pearson(0, 10)[1] == pytest.approx(1 - ((1 - 0.682689492137086) / 2) ** (1 / 10))


def test_known_charge_misid_and_scale():
    rng = np.random.default_rng(2)
    n = 1000
    true_pt = rng.uniform(5, 100, n)
    true_q = rng.choice([-1, 1], n)
    pred_q = true_q.astype(float) * 0.7
    pred_q[:37] *= -1  # exactly 37 wrong charges
    out = summarise(true_pt, 1.02 * true_pt, true_q, pred_q)
    assert out["charge_misid"]["k"] == 37 and out["charge_misid"]["n"] == n
    assert out["charge_misid"]["rate"] == pytest.approx(0.037)
    assert out["pt_scale"] == pytest.approx(1.02)
    assert out["pt"]["median"] == pytest.approx(0.02)


def test_wrap_phi():
    d = np.array([0.1, 2 * np.pi - 0.1, -np.pi, np.pi, 3 * np.pi, -0.5 - 4 * np.pi])
    np.testing.assert_allclose(wrap_phi(d), [0.1, -0.1, np.pi, np.pi, np.pi, -0.5], atol=1e-12)
    w = wrap_phi(np.random.default_rng(3).uniform(-20, 20, 10_000))
    assert (w > -np.pi).all() and (w <= np.pi).all()


def test_binned_resolution_with_known_sigma_per_bin():
    rng = np.random.default_rng(4)
    n = 60_000
    true_pt = np.exp(rng.uniform(np.log(3), np.log(500), n))
    sigma = np.where(true_pt < 50, 0.03, 0.08)  # a step in resolution at 50 GeV
    pred_pt = true_pt * (1 + rng.normal(0, sigma))
    true_q = rng.choice([-1, 1], n)
    cols = {"true_pt": true_pt, "pred_pt": pred_pt, "true_q": true_q, "pred_q": true_q.astype(float),
            "true_eta": rng.uniform(-2.5, 2.5, n), "pred_eta": np.zeros(n),
            "true_phi": np.full(n, np.pi - 0.01), "pred_phi": np.full(n, -np.pi + 0.01)}
    m = evaluate_method(cols, "pred")
    for b in m["pt_bins"]:
        if b["n"] > 1000:
            expect = 0.03 if b["hi"] <= 50 else 0.08
            assert b["pt"]["core_sigma"] == pytest.approx(expect, rel=0.06)
            assert b["charge_misid"]["k"] == 0
    assert m["overall"]["phi"]["median"] == pytest.approx(0.02)  # wrapped, not 2π − 0.02
    assert set(m["regions"]) == {"barrel", "transition", "endcap"}
    assert sum(r["overall"]["n"] for r in m["regions"].values()) == n
