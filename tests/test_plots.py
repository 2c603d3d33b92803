"""Plots a physicist trusts (issue 12): errors, counts, minimum counts, titles, the 50 % line."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")

from pipeline.train import plots  # noqa: E402
from pipeline.train.metrics import REGIONS, bootstrap_errors, evaluate_method, gaussian_core  # noqa: E402


def test_bootstrap_errors_match_a_slow_reference():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 0.05, 400)
    x[:20] *= 8  # tails
    ratio = 1 + x
    fast = bootstrap_errors(x, ratio, resamples=200)
    r = np.random.default_rng(7)
    idx = [r.integers(0, x.size, x.size) for _ in range(400)]
    slow_core = np.std([gaussian_core(x[i])[1] for i in idx], ddof=1)
    slow_med = np.std([np.median(ratio[i]) for i in idx], ddof=1)
    assert fast["core_sigma_err"] == pytest.approx(slow_core, rel=0.2)
    assert fast["pt_scale_err"] == pytest.approx(slow_med, rel=0.2)
    # and the analytic Gaussian expectation for σ68's order of magnitude: ~0.96 σ/√n
    assert 0.5 < fast["sigma68_err"] / (0.96 * 0.05 / math.sqrt(x.size)) < 2.0
    assert math.isnan(bootstrap_errors(x[:5], ratio[:5])["core_sigma_err"])


def _columns(n: int = 3000, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pt = np.exp(rng.uniform(np.log(5), np.log(300), n))
    pt[0] = 700.0  # a lone muon in the 500–1000 GeV bin
    eta = rng.uniform(-2.7, 2.7, n)
    q = rng.choice([-1, 1], n)
    cols = {"true_pt": pt, "true_eta": eta, "true_phi": rng.uniform(-3, 3, n), "true_q": q,
            "pred_pt": pt * (1 + rng.normal(0, 0.05, n)), "pred_eta": eta + rng.normal(0, 0.01, n),
            "pred_phi": rng.uniform(-3, 3, n) * 0, "pred_q": q.astype(float),
            "fit_pt": pt * (1 + rng.normal(0, 0.02, n)), "fit_eta": eta + rng.normal(0, 0.002, n),
            "fit_phi": np.zeros(n), "fit_q": q.astype(float)}
    cols["pred_phi"] = cols["true_phi"] + rng.normal(0, 0.01, n)
    cols["fit_phi"] = cols["true_phi"] + rng.normal(0, 0.001, n)
    return cols


def test_plots_have_errors_counts_titles_and_skip_tiny_bins(tmp_path, monkeypatch):
    cols = _columns()
    metrics = {"label": "inv", "split": "test", "n_muons": 3000, "data": "/x/data",
               "regions": {k: list(v) for k, v in REGIONS.items()},
               "methods": {"model": evaluate_method(cols, "pred"), "classical_fit": evaluate_method(cols, "fit")}}
    bins = metrics["methods"]["model"]["pt_bins"]
    lone = next(i for i, b in enumerate(bins) if b["lo"] == 500.0)
    assert bins[lone]["n"] == 1 and bins[lone]["pt"]["sigma68"] == 0.0  # what used to be drawn as 0 %
    figures = []
    from matplotlib.figure import Figure

    real = Figure.savefig

    def keep(self, *a, **k):
        figures.append(self)
        return real(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", keep)
    written = plots.plot_all(cols, metrics, tmp_path)
    assert [p.name for p in written] == ["pt_resolution_vs_pt.png", "pt_resolution_by_region.png", "pt_scale_vs_pt.png",
                                         "charge_misid_vs_pt.png", "eta_phi_residuals.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    for fig in figures:  # every plot says which run, split and sample
        assert "run inv · test split · 3000 muons · dataset data" in fig._suptitle.get_text()
    res, scale, counts = figures[0].axes[:3]
    # error bars on resolution and scale; the lone-muon bin is not drawn; the count panel shows it
    containers = res.containers
    assert containers and all(c.has_yerr for c in containers)
    core_y = containers[0].lines[0].get_ydata()
    centres = containers[0].lines[0].get_xdata()
    assert np.isnan(core_y[lone]) and np.isfinite(core_y[2])
    assert core_y[2] == pytest.approx(100 * bins[2]["pt"]["core_sigma"])
    assert np.all(np.isfinite(containers[0].lines[0].get_ydata()[[1, 2, 3]]))
    assert scale.containers and scale.containers[0].has_yerr
    assert counts.get_yscale() == "log" and counts.patches  # the stairs
    assert counts.get_xlim()[1] < 1000 * 1.2 and centres[lone] > 500
    # region titles: no "< inf"
    titles = [ax.get_title() for ax in figures[1].axes]
    assert "endcap: |η| ≥ 1.6" in titles and not any("inf" in t for t in titles)
    # the 50 % line on the mis-ID plot
    misid = figures[3].axes[0]
    assert any(np.allclose(ln.get_ydata(), 50.0) for ln in misid.lines)
    # residuals: log y, labelled, the narrow (fit) peak resolved by several bins within ±σ68
    for ax in figures[4].axes:
        assert ax.get_yscale() == "log" and ax.get_ylabel().startswith("muons / ")
    width = float(figures[4].axes[0].get_ylabel().split("/ ")[1])
    assert width < metrics["methods"]["classical_fit"]["overall"]["eta"]["sigma68"] / 2


def test_compare_overlay_has_errors_and_a_scale_panel(tmp_path, monkeypatch):
    cols = _columns()
    m = {"label": "a", "split": "test", "n_muons": 3000, "data": "/x/data",
         "methods": {"model": evaluate_method(cols, "pred"), "classical_fit": evaluate_method(cols, "fit")}}
    figures = []
    from matplotlib.figure import Figure

    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), real(self, *a, **k))[1])
    plots.plot_overlay([("a", m), ("b", m)], tmp_path / "o.png")
    res, scale, counts = figures[0].axes[:3]
    assert len(res.containers) == 6 and all(c.has_yerr for c in res.containers)  # 2 runs + fit, core and 68 %
    assert len(scale.containers) == 3 and "test split" in figures[0]._suptitle.get_text()
