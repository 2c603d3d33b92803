"""The σ calibration: σ scaling and split-conformal intervals per cell (``pipeline.train.calibration``),
and the run's ``calibration.json`` that ``train`` writes, ``calibrate`` remakes and ``evaluate`` applies.

References: hand-computed order statistics, the analytic quantiles of Gaussian and Laplace pulls,
a per-muon loop for the cell lookup, and the conformal guarantee measured over repeated draws.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from pipeline.train.calibration import (
    LEVELS,
    apply_cells,
    cells_from_dicts,
    cells_to_dicts,
    conformal_quantile,
    fit_cells,
)
from pipeline.train.metrics import ONE_SIGMA, PT_BINS, REGIONS, Z95, gaussian_core


def test_conformal_quantile_is_the_hand_computed_order_statistic():
    rng = np.random.default_rng(0)
    tenths = rng.permutation(np.arange(1, 11) / 10)
    assert conformal_quantile(tenths, 0.68) == 0.8  # ⌈11 × 0.68⌉ = 8th smallest
    assert conformal_quantile(tenths, 0.95) == math.inf  # ⌈11 × 0.95⌉ = 11 > 10: no finite bound
    assert conformal_quantile(np.arange(1, 101) / 100, 0.95) == 0.96  # ⌈101 × 0.95⌉ = 96th
    assert conformal_quantile(np.arange(1, 101) / 100, ONE_SIGMA) == 0.69  # ⌈101 × 0.6827⌉ = 69th


@pytest.mark.parametrize("p", [ONE_SIGMA, 0.95])
def test_conformal_bound_covers_new_draws_as_the_theory_says(p):
    """Split conformal: for exchangeable scores the coverage of a new one is ⌈(n+1)p⌉/(n+1) on average
    over calibration sets (≥ p); measured over 400 calibration sets of 199 heavy-tailed scores."""
    rng = np.random.default_rng(1)
    n, trials = 199, 400
    cover = [np.mean(rng.laplace(size=4000) ** 2 < conformal_quantile(rng.laplace(size=n) ** 2, p))
             for _ in range(trials)]
    expected = math.ceil((n + 1) * p) / (n + 1)
    assert expected >= p
    assert np.mean(cover) == pytest.approx(expected, abs=0.006)


def _width(eta: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """A known pull width that changes with pT and |η|: rising with log pT in the barrel, a bump in the
    transition region, flat in the end-caps."""
    return np.where(eta < 1.4, 0.8 + 0.15 * np.log(pt / 3), np.where(eta < 1.6, 1.2 + 2 * (eta - 1.4), 1.0))


def _sample(rng: np.random.Generator, n: int, laplace: bool = False):
    """Muons with |η| uniform on 0–2.7, pT log-uniform 3–500 GeV and Gaussian (or Laplace) pulls of the
    known width :func:`_width`."""
    eta = rng.uniform(0, 2.7, n)
    pt = np.exp(rng.uniform(np.log(3), np.log(500), n))
    k = _width(eta, pt)
    shape = rng.laplace(size=n) if laplace else rng.standard_normal(n)
    return shape * k, eta, pt, k


def test_cells_tile_each_region_and_hold_at_least_the_minimum():
    rng = np.random.default_rng(7)
    pull, eta, pt, _ = _sample(rng, 30000)
    cells = fit_cells(pull, eta, pt, min_cell=1000)
    index = np.full(pull.size, -1)
    for i, c in enumerate(cells):
        inside = (eta >= c.eta_lo) & (eta < c.eta_hi) & (pt >= c.pt_lo) & (pt < c.pt_hi)
        assert not (inside & (index >= 0)).any(), "cells overlap"
        index[inside] = i
        assert 1000 <= c.n == inside.sum() < 2000  # median cuts: a cell of 2 000 or more is cut again
        assert (c.eta_lo, c.eta_hi) != (REGIONS[c.region][0], REGIONS[c.region][1]) or c.pt_hi > c.pt_lo
    assert (index >= 0).all(), "a muon in no cell"
    for name, (lo, hi) in REGIONS.items():  # each region from pT 0 to +∞
        mine = [c for c in cells if c.region == name]
        assert min(c.pt_lo for c in mine) == 0.0 and max(c.pt_hi for c in mine) == math.inf
        assert min(c.eta_lo for c in mine) == lo and max(c.eta_hi for c in mine) == hi


def test_known_widths_are_recovered_in_every_bin_of_the_tables():
    """Pulls whose width changes with pT and |η|: fitted on one sample, applied to another, the
    calibrated pulls have core width 1 and the intervals their nominal coverage in every pT bin and
    |η| region of the evaluation tables (Gaussian pulls: z68 ≈ 1, z95 ≈ 1.96 in a typical cell)."""
    rng = np.random.default_rng(2)
    pull, eta, pt, _ = _sample(rng, 200000)
    cells = fit_cells(pull, eta, pt, min_cell=1000)
    z = np.array([[c.z68, c.z95] for c in cells])
    assert np.median(z, axis=0) == pytest.approx([1.0, Z95], abs=0.03)  # Gaussian pulls within a cell
    pull, eta, pt, _ = _sample(rng, 200000)
    got = apply_cells(cells, np.ones_like(pull), eta, pt)  # raw σ = 1: the pull is the residual itself
    sets = {f"{lo:g}-{hi:g} GeV": (pt >= lo) & (pt < hi) for lo, hi in zip(PT_BINS[:-1], PT_BINS[1:])
            if lo < 500}
    sets |= {name: (eta >= lo) & (eta < hi) for name, (lo, hi) in REGIONS.items()}
    for name, sel in sets.items():
        assert gaussian_core(pull[sel] / got["sigma_qpt"][sel])[1] == pytest.approx(1.0, abs=0.04), name
        assert np.mean(np.abs(pull[sel]) < got["halfwidth68_qpt"][sel]) == pytest.approx(ONE_SIGMA, abs=0.02), name
        assert np.mean(np.abs(pull[sel]) < got["halfwidth95_qpt"][sel]) == pytest.approx(0.95, abs=0.01), name


def test_laplace_pulls_get_the_wider_intervals_their_tails_need():
    """Laplace pulls (b = 1): |pull| is exponential, so the 68.27 % / 95 % quantiles are −ln(1 − p);
    in units of the calibrated σ (the Gaussian-core width) they exceed 1 and 1.96."""
    rng = np.random.default_rng(3)
    pull = rng.laplace(size=40000)
    eta, pt = np.full(pull.size, 0.5), np.full(pull.size, 30.0)
    (cell,) = [c for c in fit_cells(pull, eta, pt, min_cell=500) if c.region == "barrel"]
    core = gaussian_core(rng.laplace(size=400000))[1]
    assert cell.scale == pytest.approx(core, rel=0.03)
    for key, p in LEVELS.items():
        assert getattr(cell, key) == pytest.approx(-math.log(1 - p) / core, rel=0.04), key
    assert cell.z68 > 1.05 and cell.z95 > 2.3


def test_a_region_with_too_few_muons_is_fitted_on_every_muon():
    rng = np.random.default_rng(5)
    pull, eta, pt, _ = _sample(rng, 5000)
    eta[(eta >= 1.4) & (eta < 1.6)] = 0.3  # empty the transition region but for three muons
    eta[:3] = 1.5
    cells = fit_cells(pull, eta, pt, min_cell=500)
    (transition,) = [c for c in cells if c.region == "transition"]
    assert transition.n == pull.size and (transition.pt_lo, transition.pt_hi) == (0.0, math.inf)
    assert transition.scale == pytest.approx(gaussian_core(pull)[1], rel=1e-12)


def test_apply_matches_a_per_muon_lookup_and_round_trips_through_json():
    rng = np.random.default_rng(6)
    pull, eta, pt, _ = _sample(rng, 8000)
    cells = cells_from_dicts(json.loads(json.dumps(cells_to_dicts(fit_cells(pull, eta, pt, min_cell=300)))))
    assert cells == fit_cells(pull, eta, pt, min_cell=300) and len(cells) > 10
    sigma = rng.uniform(0.5, 2.0, 200)
    e, p = eta[:200].copy(), pt[:200].copy()
    e[0], p[1] = np.nan, np.inf
    got = apply_cells(cells, sigma, e, p)
    for i in range(200):
        match = [c for c in cells if c.eta_lo <= e[i] < c.eta_hi and c.pt_lo <= p[i] < c.pt_hi]
        if not match:
            assert np.isnan(got["sigma_qpt"][i]) and i in (0, 1)
            continue
        (c,) = match
        assert got["sigma_qpt"][i] == pytest.approx(c.scale * sigma[i], rel=1e-12)
        assert got["halfwidth68_qpt"][i] == pytest.approx(c.z68 * c.scale * sigma[i], rel=1e-12)
        assert got["halfwidth95_qpt"][i] == pytest.approx(c.z95 * c.scale * sigma[i], rel=1e-12)


def test_fit_refuses_pulls_that_are_all_missing():
    with pytest.raises(ValueError, match="no muon"):
        fit_cells(np.full(5, np.nan), np.zeros(5), np.ones(5))


# ------------------------------------------------------------------ the run's calibration.json

TINY = """
fields: [truthMuon_eta, truthMuon_phi, truthMuon_qpt]
signed_curvature: true
uncertainty: laplace
dim: 16
heads: 2
encoder_layers: 1
data: {batch_size: 32, num_workers: 0, shuffle_buffer: 256}
trainer: {max_epochs: 1, max_steps: 6, lr: 3.0e-3, warmup_steps: 2, patience: 3}
"""



def _run(*args, ok: bool = True):
    from click.testing import CliRunner

    from pipeline.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args])
    assert (res.exit_code == 0) == ok, res.output
    return res


@pytest.fixture
def trained(dataset, tmp_path):
    pytest.importorskip("lightning")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run = tmp_path / "run"
    _run("train", "--config", cfg, "--data", dataset, "--output", run)
    return run, dataset


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_writes_the_calibration_and_a_resume_remakes_it_identically(trained):
    run, data = trained
    doc = json.loads((run / "calibration.json").read_text())
    assert doc["split"] == "val" and doc["checkpoint"] == "best.ckpt"
    assert doc["checkpoint_sha256"] == _sha256(run / "checkpoints" / "best.ckpt")
    assert doc["n_muons"] > 0 and {c["region"] for c in doc["cells"]} == set(REGIONS)
    (run / "calibration.json").unlink()  # as if the run had stopped between training and calibrating
    _run("train", "--data", data, "--output", run, "--resume")
    assert json.loads((run / "calibration.json").read_text()) == doc
    assert not [p for p in run.iterdir() if p.name.startswith(".") and "calibration" in p.name]


def test_evaluate_applies_the_calibration_cell_by_cell(trained):
    """Calibrated on the muons then evaluated on the same ones: each cell's pulls have core width 1
    (σ scaling is exact in-sample), the stored widths are k × the head's own, σ(pT) = σ(q/pT)·pT²."""
    import pyarrow.parquet as pq

    run, data = trained
    res = _run("calibrate", run, "--data", data, "--split", "all", "--min-cell", "20")
    assert "calibrate: replaced" in res.output  # train wrote one
    assert "trained on" in res.output and "too narrow" in res.output  # all: the training muons are in it
    doc = json.loads((run / "calibration.json").read_text())
    cells = cells_from_dicts(doc["cells"])
    out = _run("evaluate", run, "--data", data, "--split", "all", "--no-plots").output
    assert "σ calibration: applied" in out and "in-sample" in out
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert metrics["calibration"]["status"] == "applied" and metrics["calibration"]["in_sample"] is True
    c = {k: np.asarray(v, np.float64) for k, v in pq.read_table(run / "eval" / "predictions.parquet").to_pydict().items()}
    pred_qpt = np.where(c["pred_q"] < 0, -1.0, 1.0) / c["pred_pt"]
    true_qpt = c["true_q"] / c["true_pt"]
    seen = 0
    for cell in cells:
        sel = ((np.abs(c["pred_eta"]) >= cell.eta_lo) & (np.abs(c["pred_eta"]) < cell.eta_hi)
               & (c["pred_pt"] >= cell.pt_lo) & (c["pred_pt"] < cell.pt_hi))
        if cell.n != doc["n_muons"]:  # a cell of its own muons (not the all-muon fallback)
            assert sel.sum() == cell.n
            seen += 1
            pull = (pred_qpt[sel] - true_qpt[sel]) / c["pred_sigma_qpt"][sel]
            assert gaussian_core(pull)[1] == pytest.approx(1.0, abs=2e-3)
        np.testing.assert_allclose(c["pred_sigma_qpt"][sel], cell.scale * c["pred_sigma_qpt_raw"][sel], rtol=2e-6)
        np.testing.assert_allclose(c["pred_halfwidth95_qpt"][sel], cell.z95 * c["pred_sigma_qpt"][sel], rtol=2e-6)
    assert seen >= 2
    np.testing.assert_allclose(c["pred_sigma_pt"], c["pred_sigma_qpt"] * c["pred_pt"] ** 2, rtol=1e-5)
    for level in ("68", "95"):  # pT intervals: the q/pT interval's ends inverted, open above where it holds 0
        inv, h = 1.0 / c["pred_pt"], c[f"pred_halfwidth{level}_qpt"]
        np.testing.assert_allclose(c[f"pred_pt_lo{level}"], 1.0 / (inv + h), rtol=1e-5)
        closed = h < inv * (1 - 1e-5)
        np.testing.assert_allclose(c[f"pred_pt_hi{level}"][closed], 1.0 / (inv - h)[closed], rtol=1e-3)
        assert np.all(np.isinf(c[f"pred_pt_hi{level}"][h > inv * (1 + 1e-5)]))
        assert np.all(c[f"pred_pt_lo{level}"] <= c["pred_pt"]) and np.all(c[f"pred_pt_hi{level}"] >= c["pred_pt"])
    pull = metrics["methods"]["model"]["overall"]
    assert pull["pull"]["cover95"] >= 0.95 - 3 / pull["pull"]["n"] and "pull_raw" in pull


DAMAGES = {
    "other checkpoint": lambda d: d.update(checkpoint_sha256="0" * 64),
    "no cells key": lambda d: d.pop("cells"),
    "empty cells": lambda d: d.update(cells=[]),
    "NaN scale": lambda d: d["cells"][0].update(scale=float("nan")),
    "negative scale": lambda d: d["cells"][0].update(scale=-2.0),
    "z95 below z68": lambda d: d["cells"][0].update(z95=0.5 * d["cells"][0]["z68"]),
    "infinite z95": lambda d: d["cells"][0].update(z95="inf"),
    "a region without cells": lambda d: d.update(cells=[c for c in d["cells"] if c["region"] != "endcap"]),
    "cells that leave a gap": lambda d: [c.update(pt_lo=1e5) for c in d["cells"] if c["region"] == "barrel"],
}


@pytest.mark.parametrize("damage", ["not json", *DAMAGES])
def test_a_stale_or_broken_calibration_is_refused_in_one_line(trained, damage):
    run, data = trained
    path = run / "calibration.json"
    doc = json.loads(path.read_text())
    if damage == "not json":
        path.write_text("{")
    else:
        DAMAGES[damage](doc)
        path.write_text(json.dumps(doc))
    res = _run("evaluate", run, "--data", data, "--no-plots", ok=False)
    errors = [line for line in res.output.splitlines() if line.startswith("Error")]  # beside progress lines
    assert len(errors) == 1 and str(path) in errors[0] and "muon-pipeline calibrate" in errors[0], res.output
    assert "Traceback" not in res.output
    assert not (run / "eval").exists()


def test_calibrate_refuses_a_run_without_widths(dataset, tmp_path):
    pytest.importorskip("lightning")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("uncertainty: laplace\n", ""))
    run = tmp_path / "run"
    _run("train", "--config", cfg, "--data", dataset, "--output", run)
    assert not (run / "calibration.json").exists()
    res = _run("calibrate", run, "--data", dataset, ok=False)
    assert "no uncertainty head" in res.output and len(res.output.strip().splitlines()) == 1
    assert not (run / "calibration.json").exists()
    (run / "calibration.json").write_text("{")  # a stray file: a run without widths has nothing to apply
    _run("evaluate", run, "--data", dataset, "--no-plots")


def test_too_few_muons_are_refused_and_a_killed_writers_temporary_is_removed(tmp_path):
    from pipeline.errors import DatasetError
    from pipeline.train.calibrate import MIN_MUONS, write_calibration

    rng = np.random.default_rng(8)
    n = MIN_MUONS - 1
    pt = rng.uniform(5, 100, n)
    cols = {"true_pt": pt, "pred_pt": pt * (1 + 0.02 * rng.standard_normal(n)), "true_q": np.ones(n),
            "pred_q": np.ones(n), "pred_eta": rng.uniform(-2.5, 2.5, n), "pred_sigma_qpt": 0.02 / pt}
    ckpt = tmp_path / "best.ckpt"
    ckpt.write_bytes(b"weights")
    with pytest.raises(DatasetError, match="fewer than"):
        write_calibration(tmp_path, cols, ckpt, {"data": "d", "split": "val"})
    more = {k: np.concatenate([v, v]) for k, v in cols.items()}
    stale = tmp_path / ".tmp-calibration.json.12345.deadbeef"
    stale.write_text("{")
    doc = write_calibration(tmp_path, more, ckpt, {"data": "d", "split": "val"})
    assert not stale.exists() and json.loads((tmp_path / "calibration.json").read_text())["n_muons"] == doc["n_muons"]
    assert all(math.isfinite(float(c["z95"])) for c in doc["cells"])
