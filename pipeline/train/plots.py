"""PNG plots of an evaluation (matplotlib, Agg backend: batch nodes have no display).

What a physicist expects on a slide, on every plot: a title with the run, the split and the number of
muons; statistical errors (bootstrap, :func:`pipeline.train.metrics.bootstrap_errors`) on resolution
and scale; the muon count per bin under the points; bins with fewer than ``MIN_MUONS`` muons left out
(a bin of one muon would otherwise show σ68 = 0 %); resolution and scale in one figure, since a
constant predictor has a small σ(pT)/pT exactly where its scale is far from 1. The mplhep style is
used where mplhep is installed (the ``[train]`` extra lists it).

Layout rules: points are markers with error bars, never joined by lines (a line would run across a
bin left out); legends sit outside the axes, so none covers a point; the pT axis ends at the highest
true pT of the sample, not at the last bin's edge; the panels of one row share their y axis and only
the first is labelled; residuals are drawn in the tables' units (Δη in 10⁻³, Δφ in mrad), so no axis
needs an offset label.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import MIN_MUONS, wrap_phi

STYLE = {"model": ("tab:blue", "o", "network"), "classical_fit": ("tab:red", "s", "classical fit")}
#: A small horizontal shift per method (log x), so error bars at the same bin stay apart.
SHIFT = {"model": 10 ** -0.015, "classical_fit": 10 ** 0.015}
#: Legends go to the right of the axes they describe, never over the data.
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        import mplhep

        plt.style.use(mplhep.style.ATLAS)
        plt.rcParams.update({"font.size": 11, "legend.fontsize": 8, "axes.titlesize": 11,
                             "figure.titlesize": 12, "axes.labelsize": 11})
    except ImportError:  # the plain matplotlib style
        pass
    return plt


def _centres(bins: list[dict[str, Any]]) -> np.ndarray:
    """Where each bin's point goes: the median true pT of its muons (the geometric centre where the
    evaluation did not record it), so a bin that the sample fills only in part is drawn where its muons are."""
    out = []
    for b in bins:
        med = b.get("true_pt_median")
        out.append(med if isinstance(med, (int, float)) and math.isfinite(med) else math.sqrt(b["lo"] * b["hi"]))
    return np.array(out, dtype=float)


def _get(bins: list[dict[str, Any]], *keys: str) -> np.ndarray:
    out = []
    for b in bins:
        v: Any = b
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        out.append(np.nan if v is None else v)
    return np.array(out, dtype=float)


def _enough(bins: list[dict[str, Any]]) -> np.ndarray:
    return _get(bins, "n") >= MIN_MUONS


def _masked(values: np.ndarray, keep: np.ndarray) -> np.ndarray:
    return np.where(keep, values, np.nan)


def subtitle(metrics: dict[str, Any]) -> str:
    """``run inv · test split · 266 muons · dataset data`` (the run, the split, the sample)."""
    data = Path(str(metrics.get("data", ""))).name
    return (f"run {metrics.get('label', '?')} · {metrics.get('split', '?')} split · "
            f"{metrics.get('n_muons', '?')} muons · dataset {data}")


def _region_label(lo: float, hi: float) -> str:
    return f"|η| ≥ {lo:g}" if not math.isfinite(hi) else (f"|η| < {hi:g}" if lo == 0 else f"{lo:g} ≤ |η| < {hi:g}")


def _resolution_scale_counts(axes: Any, methods: dict[str, Any], region: str | None = None,
                             series: list[tuple[str, str, str, dict[str, Any]]] | None = None,
                             legend: bool = True) -> tuple[float, tuple[float, float] | None]:
    """Three stacked panels sharing x: σ(pT)/pT (core and 68 %), pT scale, muons per bin. Returns the
    resolution panel's upper y limit and the scale panel's y range, so panels side by side can share them."""
    ax_res, ax_scale, ax_n = axes
    if series is None:
        series = []
        for name, (color, marker, label) in STYLE.items():
            if name in methods:
                src = methods[name] if region is None else methods[name]["regions"][region]
                series.append((label, color, marker, src))
    width_offsets = np.linspace(-0.03, 0.03, max(len(series), 1))
    shown_res: list[float] = []
    shown_scale: list[float] = []
    for (label, color, marker, src), off in zip(series, width_offsets, strict=True):
        bins = src["pt_bins"]
        keep = _enough(bins)
        x = _centres(bins) * 10 ** off  # a small horizontal offset keeps error bars apart
        core, core_err = 100 * _get(bins, "pt", "core_sigma"), 100 * _get(bins, "pt", "core_sigma_err")
        s68, s68_err = 100 * _get(bins, "pt", "sigma68"), 100 * _get(bins, "pt", "sigma68_err")
        ax_res.errorbar(x, _masked(core, keep), yerr=_masked(core_err, keep), marker=marker, color=color, ls="none",
                        capsize=2, label=f"{label}: Gaussian core σ")
        ax_res.errorbar(x * 1.04, _masked(s68, keep), yerr=_masked(s68_err, keep), marker=marker, color=color,
                        ls="none", mfc="none", capsize=2, label=f"{label}: 68 % half-width")
        scale, scale_err = _get(bins, "pt_scale"), _get(bins, "pt_scale_err")
        ax_scale.errorbar(x, _masked(scale, keep), yerr=_masked(scale_err, keep), marker=marker, color=color,
                          ls="none", capsize=2, label=label)
        _counts(ax_n, bins, color, "n")
        shown_res += [v for v in np.concatenate([core[keep], s68[keep]]) if np.isfinite(v)]
        shown_scale += [v for v in scale[keep] if np.isfinite(v)]
    ax_res.set_ylabel(r"$\sigma(p_T)/p_T$ [%]")
    # the axis follows the points, not an error bar of a few dozen muons that spans 100 x the value
    res_top = 1.3 * max(shown_res) if shown_res else 1.0
    ax_res.set_ylim(0, res_top)
    if legend:
        ax_res.legend(fontsize=7, **OUTSIDE)
    if not shown_res:
        ax_res.text(0.5, 0.5, f"no bin with ≥ {MIN_MUONS} muons", transform=ax_res.transAxes, ha="center",
                    va="center", color="0.4")
    ax_scale.axhline(1.0, color="k", lw=0.8)
    ax_scale.axhspan(0.98, 1.02, color="0.85", zorder=0)
    scale_range = None
    if shown_scale:
        lo, hi = min(min(shown_scale), 0.95), max(max(shown_scale), 1.05)
        pad = 0.15 * (hi - lo)
        scale_range = (max(lo - pad, 0.0), min(hi + pad, 3.0))
        ax_scale.set_ylim(*scale_range)
    ax_scale.set_ylabel("median\n$p_T^{pred}/p_T^{true}$")
    _count_axis(ax_n, legend=legend)
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
    _xlim(ax_n, [src["pt_bins"] for _, _, _, src in series])
    return res_top, scale_range


def _counts(ax_n: Any, bins: list[dict[str, Any]], color: str, *key: str) -> None:
    """Muons per bin as steps over the filled bins only (an empty bin is a gap, not a drop to 0)."""
    n = _get(bins, *key)
    edges = np.array([bins[0]["lo"], *[b["hi"] for b in bins]])
    ax_n.stairs(np.where(n > 0, n, np.nan), edges, color=color, alpha=0.8, baseline=None)


def _xlim(ax: Any, bin_lists: list[list[dict[str, Any]]]) -> None:
    """The x range of the muons: from the lowest to the highest true pT of the sample (evaluations
    that did not record them: the edges of the bins that hold muons), not the whole binning."""
    filled = [b for bins in bin_lists for b in bins if (b.get("n") or 0) > 0]
    if not filled:
        return
    lows = [b.get("true_pt_min", b["lo"]) for b in filled]
    highs = [b.get("true_pt_max", b["hi"]) for b in filled]
    lo = min(v if isinstance(v, (int, float)) and math.isfinite(v) else b["lo"] for v, b in zip(lows, filled, strict=True))
    hi = max(v if isinstance(v, (int, float)) and math.isfinite(v) else b["hi"] for v, b in zip(highs, filled, strict=True))
    ax.set_xlim(lo / 1.15, hi * 1.15)


def _count_axis(ax_n: Any, legend: bool = True) -> None:
    ax_n.set_ylabel("muons")
    ax_n.set_yscale("log")
    ax_n.set_ylim(bottom=0.8)
    ax_n.axhline(MIN_MUONS, color="0.4", lw=0.8, ls=":", label=f"{MIN_MUONS} muons: fewer are not drawn")
    if legend:
        ax_n.legend(fontsize=7, frameon=False, **OUTSIDE)
    ax_n.set_xlabel(r"true $p_T$ [GeV]")


def _three_panels(plt: Any, ncols: int = 1, width: float = 6.4) -> tuple[Any, np.ndarray]:
    fig, axes = plt.subplots(3, ncols, figsize=(width * ncols, 7.2), sharex="col", sharey="row", squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2, 1.2], "hspace": 0.08, "wspace": 0.06})
    return fig, axes


def plot_all(columns: dict[str, np.ndarray], metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write the evaluation's five PNGs into ``out_dir``; return their paths."""
    plt = _plt()
    methods = metrics["methods"]
    written = []
    sub = subtitle(metrics)

    def save(fig: Any, name: str, title: str, y: float = 1.0) -> None:
        fig.suptitle(f"{title}\n{sub}", y=y)
        path = out_dir / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    fig, axes = _three_panels(plt)
    _resolution_scale_counts(axes[:, 0], methods)
    save(fig, "pt_resolution_vs_pt.png", r"relative $p_T$ resolution and scale")

    regions = metrics["regions"]
    fig, axes = _three_panels(plt, ncols=len(regions), width=4.2)
    tops, scales = [], []
    for col, (region, (lo, hi)) in enumerate(regions.items()):
        top, scale = _resolution_scale_counts(axes[:, col], methods, region=region, legend=col == len(regions) - 1)
        tops.append(top)
        scales += [scale] if scale else []
        axes[0, col].set_title(f"{region}: {_region_label(lo, hi if hi is not None else math.inf)}")
        if col:  # one y label per row: the panels of a row share their axis
            for ax in axes[:, col]:
                ax.set_ylabel("")
                ax.tick_params(labelleft=False)
    axes[0, 0].set_ylim(0, max(tops))  # shared by the row: the range that shows every region's points
    if scales:
        axes[1, 0].set_ylim(min(lo for lo, _ in scales), max(hi for _, hi in scales))
    save(fig, "pt_resolution_by_region.png", r"$p_T$ resolution and scale by $|\eta|$ region", y=1.02)

    fig, axes = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2],
                                                                                   "hspace": 0.08})
    _scale_with_counts(axes, methods)
    save(fig, "pt_scale_vs_pt.png", r"$p_T$ scale")

    fig, axes = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.2],
                                                                                   "hspace": 0.08})
    _misid(axes, methods)
    save(fig, "charge_misid_vs_pt.png", "charge mis-identification")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    _residuals(axes, columns, methods)
    save(fig, "eta_phi_residuals.png", r"$\eta$ and $\phi$ residuals", y=1.07)
    return written


def _scale_with_counts(axes: Any, methods: dict[str, Any]) -> None:
    ax, ax_n = axes
    for name, (color, marker, label) in STYLE.items():
        if name not in methods:
            continue
        bins = methods[name]["pt_bins"]
        keep = _enough(bins)
        ax.errorbar(_centres(bins) * SHIFT[name], _masked(_get(bins, "pt_scale"), keep),
                    yerr=_masked(_get(bins, "pt_scale_err"), keep), marker=marker, color=color, ls="none", capsize=2,
                    label=label)
        _counts(ax_n, bins, color, "n")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhspan(0.98, 1.02, color="0.85", zorder=0, label="±2 %")
    ax.set_ylabel(r"median $p_T^{pred}/p_T^{true}$ (bootstrap errors)")
    ax.legend(fontsize=8, **OUTSIDE)
    _count_axis(ax_n)
    for a in axes:
        a.set_xscale("log")
        a.grid(alpha=0.3, which="both")
    _xlim(ax_n, [m["pt_bins"] for m in methods.values()])


def _misid(axes: Any, methods: dict[str, Any]) -> None:
    ax, ax_n = axes
    for name, (color, marker, label) in STYLE.items():
        if name not in methods:
            continue
        bins = methods[name]["pt_bins"]
        keep = _get(bins, "charge_misid", "n") >= 1  # Clopper–Pearson is honest at any count
        rate = _get(bins, "charge_misid", "rate")
        lo, hi = _get(bins, "charge_misid", "lo"), _get(bins, "charge_misid", "hi")
        ax.errorbar(_centres(bins) * SHIFT[name], _masked(100 * rate, keep),
                    yerr=[_masked(100 * (rate - lo), keep), _masked(100 * (hi - rate), keep)],
                    marker=marker, color=color, ls="none", capsize=2, label=label)
        _counts(ax_n, bins, color, "charge_misid", "n")
    ax.axhline(50.0, color="k", ls=":", lw=1.0, label="50 %: no charge information")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(0, 100)
    ax.set_ylabel("charge mis-ID [%]\n(Clopper–Pearson 68 %)")
    ax.legend(fontsize=8, **OUTSIDE)
    ax_n.set_ylabel("muons")
    ax_n.set_yscale("log")
    ax_n.set_ylim(bottom=0.8)
    ax_n.set_xlabel(r"true $p_T$ [GeV]")
    for a in axes:
        a.set_xscale("log")
        a.grid(alpha=0.3, which="both")
    _xlim(ax_n, [m["pt_bins"] for m in methods.values()])


def _residuals(axes: Any, columns: dict[str, np.ndarray], methods: dict[str, Any]) -> None:
    """Δη (in 10⁻³) and Δφ (in mrad) with a log y axis, a range of ±6 × the widest σ68 and bins of a third
    of the narrowest, so a narrow peak (the classical fit's) is resolved beside a wide one; under/overflow
    in the edge bins. The units are the tables' (:data:`pipeline.train.compare.QUANTITIES`)."""
    residuals = {"model": ("pred", "network"), "classical_fit": ("fit", "classical fit")}
    for ax, (var, xlabel, unit) in zip(axes, (("eta", r"$\Delta\eta$ = pred − true [$10^{-3}$]", r"$10^{-3}$"),
                                              ("phi", r"$\Delta\phi$ = pred − true [mrad]", "mrad")), strict=True):
        data = {}
        for name, (prefix, label) in residuals.items():
            if f"{prefix}_{var}" not in columns:
                continue
            d = columns[f"{prefix}_{var}"] - columns[f"true_{var}"]
            d = wrap_phi(d) if var == "phi" else d
            d = 1000.0 * d[np.isfinite(d)]
            if d.size:
                s68 = methods.get(name, {}).get("overall", {}).get(var, {}).get("sigma68")
                s = 1000.0 * s68 if s68 else (float(np.std(d)) or 1.0)
                data[name] = (d, s, label)
        if not data:
            continue
        widest = max(s for _, s, _ in data.values())
        narrowest = min(s for _, s, _ in data.values())
        half = 6 * widest
        nbins = int(min(max(2 * half / (narrowest / 3), 40), 400))
        edges = np.linspace(-half, half, nbins + 1)
        tallest = 1.0
        for name, (d, s, label) in data.items():
            counts, _, _ = ax.hist(np.clip(d, -half, half), bins=edges, histtype="step", color=STYLE[name][0], lw=1.2,
                                   label=f"{label}: σ68 = {s:.2f} {unit} ({d.size} muons)")
            tallest = max(tallest, float(np.max(counts)))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"muons / {edges[1] - edges[0]:.2g}")
        ax.ticklabel_format(axis="x", useOffset=False, style="plain")
        ax.set_yscale("log")
        ax.set_ylim(0.5, 30 * tallest)  # room above the peak for the legend and the note
        ax.legend(fontsize=8, loc="upper right", title="edge bins: overflow", title_fontsize=7)
        ax.grid(alpha=0.3)


def plot_overlay(entries: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    """Resolution and scale vs pT of several evaluations of the same muons (``compare``), with errors."""
    plt = _plt()
    fig, axes = _three_panels(plt, width=7.0)
    colors = ["tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    markers = "o^vD<>pP"
    series = [(label, colors[i % len(colors)], markers[i % len(markers)], m["methods"]["model"])
              for i, (label, m) in enumerate(entries)]
    for _, m in entries:
        if "classical_fit" in m["methods"]:
            series.append(("classical fit", "k", "s", m["methods"]["classical_fit"]))
            break
    _resolution_scale_counts(axes[:, 0], {}, series=series)
    first = entries[0][1]
    fig.suptitle(f"relative $p_T$ resolution and scale, {len(entries)} evaluations\n"
                 f"{first.get('split', '?')} split · {first.get('n_muons', '?')} muons · dataset "
                 f"{Path(str(first.get('data', ''))).name}", y=1.0)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
