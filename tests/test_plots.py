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
    width = float(figures[4].axes[0].get_ylabel().split("/ ")[1])  # in 10⁻³, the tables' unit for η
    assert width < 1000 * metrics["methods"]["classical_fit"]["overall"]["eta"]["sigma68"] / 2


def _figures(monkeypatch) -> list:
    from matplotlib.figure import Figure

    figures = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), real(self, *a, **k))[1])
    return figures


def _metrics(cols):
    return {"label": "inv", "split": "test", "n_muons": len(cols["true_pt"]), "data": "/x/data",
            "regions": {k: list(v) for k, v in REGIONS.items()},
            "methods": {"model": evaluate_method(cols, "pred"), "classical_fit": evaluate_method(cols, "fit")}}


def test_plot_layout_rules(tmp_path, monkeypatch):
    """No line joins two bins (across a bin left out); no legend over the data; the pT axis ends near
    the sample's highest pT (300 GeV), not at its last bin's edge (500 GeV); one y label per row in the
    region plot; residuals in 10⁻³ and mrad with no offset label over the x label."""
    cols = _columns()
    keep = cols["true_pt"] <= 300.0
    cols = {k: v[keep] for k, v in cols.items()}
    metrics = _metrics(cols)
    figures = _figures(monkeypatch)
    plots.plot_all(cols, metrics, tmp_path)
    plots.plot_overlay([("a", metrics), ("b", metrics)], tmp_path / "o.png")
    for fig in figures:
        fig.canvas.draw()
        for ax in fig.axes:
            for c in ax.containers:  # error-bar points: never joined by a line
                assert c.lines[0] is None or c.lines[0].get_linestyle() in ("None", "none", ""), ax.get_ylabel()
            legend = ax.get_legend()
            if legend is not None and ax.containers:
                box, frame = legend.get_window_extent(), ax.get_window_extent()
                assert not box.overlaps(frame) or ax.get_yscale() == "log" and not ax.containers, ax.get_ylabel()
    for fig in (figures[0], figures[1], figures[2], figures[3], figures[5]):
        assert fig.axes[0].get_xlim()[1] < 300 * 1.2, fig._suptitle.get_text()
    region = figures[1]
    columns = len(REGIONS)
    rows = [region.axes[i * columns:(i + 1) * columns] for i in range(3)]
    for row in rows:
        assert row[0].get_ylabel() and not any(ax.get_ylabel() for ax in row[1:])
        assert len({ax.get_ylim() for ax in row}) == 1  # shared
    eta_ax, phi_ax = figures[4].axes[:2]
    assert "10^{-3}" in eta_ax.get_xlabel() and "mrad" in phi_ax.get_xlabel()
    for ax in (eta_ax, phi_ax):
        assert ax.xaxis.get_offset_text().get_text() == ""


def test_tables_give_every_value_with_its_error_and_count(tmp_path):
    """evaluate's and compare's tables (and compare.md): ``value ± error (N)`` in every cell, ``– (N)``
    under the plots' minimum count, one dash, fixed decimals, φ in mrad."""
    import re

    from pipeline.train.compare import table
    from pipeline.train.metrics import MIN_MUONS

    cols = _columns()
    md = table([("inv", _metrics(cols)), ("other", _metrics(cols))])
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| metric")]
    assert len(rows) > 15
    value = re.compile(r"^(\d+\.\d+ ± \d+\.\d+ \(\d+\)|– \(\d+\))$")
    decimals: dict[str, set[int]] = {}
    for ln in rows:
        name, *cells = [c.strip() for c in ln.strip("|").split("|")]
        assert not re.search(r"\d-\d", name), name  # ranges with the en dash
        for c in cells:
            assert value.match(c), (name, c)
            n = int(c.rsplit("(", 1)[1].rstrip(")"))
            assert (n < MIN_MUONS) == c.startswith("–"), (name, c)
            if not c.startswith("–"):
                decimals.setdefault(name.split(",")[0], set()).add(len(c.split(" ")[0].split(".")[1]))
    assert all(len(d) == 1 for d in decimals.values()), decimals  # one number of decimals per quantity
    assert any("500–1000 GeV" in ln and "– (1)" in ln for ln in rows)  # the lone muon's bin
    assert any(ln.startswith("| σ(φ) 68 % [mrad]") for ln in rows)
    assert any(ln.startswith("| σ(η) 68 % [10⁻³]") for ln in rows)


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
