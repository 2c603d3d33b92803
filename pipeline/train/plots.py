"""PNG plots of an evaluation (matplotlib, Agg backend: batch nodes have no display)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import wrap_phi

STYLE = {"model": ("tab:blue", "o", "network"), "classical_fit": ("tab:red", "s", "classical fit")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _centres(bins: list[dict[str, Any]]) -> np.ndarray:
    return np.array([math.sqrt(b["lo"] * b["hi"]) for b in bins])


def _get(bins: list[dict[str, Any]], *keys: str) -> np.ndarray:
    out = []
    for b in bins:
        v: Any = b
        for k in keys:
            v = v.get(k) if isinstance(v, dict) else None
        out.append(np.nan if v is None else v)
    return np.array(out, dtype=float)


def _resolution_axes(ax: Any, methods: dict[str, Any], key: str = "pt_bins", region: str | None = None,
                     label_prefix: str = "") -> None:
    for name, (color, marker, label) in STYLE.items():
        if name not in methods:
            continue
        src = methods[name] if region is None else methods[name]["regions"][region]
        bins = src[key]
        x = _centres(bins)
        ax.plot(x, 100 * _get(bins, "pt", "core_sigma"), marker=marker, color=color, ls="-",
                label=f"{label_prefix}{label}: Gaussian core")
        ax.plot(x, 100 * _get(bins, "pt", "sigma68"), marker=marker, color=color, ls="--", mfc="none",
                label=f"{label_prefix}{label}: 68 % half-width")
    ax.set_xscale("log")
    ax.set_xlabel("true $p_T$ [GeV]")
    ax.set_ylabel(r"$\sigma(p_T)/p_T$ [%]")
    ax.grid(alpha=0.3, which="both")


def plot_all(columns: dict[str, np.ndarray], metrics: dict[str, Any], out_dir: Path) -> list[Path]:
    plt = _plt()
    methods = metrics["methods"]
    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4.2))
    _resolution_axes(ax, methods)
    ax.set_title(f"relative $p_T$ resolution ({metrics['label']})")
    ax.legend(fontsize=7)
    save(fig, "pt_resolution_vs_pt.png")

    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharey=True)
    for ax, (region, (lo, hi)) in zip(axes, metrics["regions"].items(), strict=True):
        _resolution_axes(ax, methods, region=region)
        ax.set_title(f"{region}: {lo} ≤ |η| < {hi}")
    axes[0].legend(fontsize=7)
    save(fig, "pt_resolution_by_region.png")

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, (color, marker, label) in STYLE.items():
        if name in methods:
            bins = methods[name]["pt_bins"]
            ax.plot(_centres(bins), _get(bins, "pt_scale"), marker=marker, color=color, label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("true $p_T$ [GeV]")
    ax.set_ylabel(r"median $p_T^{pred}/p_T^{true}$")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    save(fig, "pt_scale_vs_pt.png")

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, (color, marker, label) in STYLE.items():
        if name in methods:
            bins = methods[name]["pt_bins"]
            rate = _get(bins, "charge_misid", "rate")
            lo, hi = _get(bins, "charge_misid", "lo"), _get(bins, "charge_misid", "hi")
            ax.errorbar(_centres(bins), 100 * rate, yerr=[100 * (rate - lo), 100 * (hi - rate)], marker=marker,
                        color=color, ls="none", capsize=2, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("true $p_T$ [GeV]")
    ax.set_ylabel("charge mis-ID [%] (Clopper–Pearson 68 %)")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    save(fig, "charge_misid_vs_pt.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    residuals = {"model": ("pred", "network"), "classical_fit": ("fit", "classical fit")}
    for ax, (var, xlabel) in zip(axes, (("eta", r"$\Delta\eta$"), ("phi", r"$\Delta\phi$ [rad]")), strict=True):
        for name, (prefix, label) in residuals.items():
            if f"{prefix}_{var}" not in columns:
                continue
            d = columns[f"{prefix}_{var}"] - columns[f"true_{var}"]
            d = wrap_phi(d) if var == "phi" else d
            d = d[np.isfinite(d)]
            if d.size == 0:
                continue
            s = methods[name]["overall"].get(var, {}).get("sigma68") or float(np.std(d)) or 1.0
            ax.hist(d, bins=80, range=(-6 * s, 6 * s), histtype="step", color=STYLE[name][0],
                    label=f"{label}: σ68 = {s:.3g}")
        ax.set_xlabel(xlabel)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    save(fig, "eta_phi_residuals.png")
    return written


def plot_overlay(entries: list[tuple[str, dict[str, Any]]], path: Path) -> None:
    """Resolution vs pT of several evaluations on one plot (``compare``)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    baseline_drawn = False
    for i, (label, metrics) in enumerate(entries):
        bins = metrics["methods"]["model"]["pt_bins"]
        c = colors[i % len(colors)]
        ax.plot(_centres(bins), 100 * _get(bins, "pt", "core_sigma"), marker="o", color=c, label=f"{label}: core σ")
        ax.plot(_centres(bins), 100 * _get(bins, "pt", "sigma68"), marker="o", mfc="none", ls="--", color=c,
                label=f"{label}: σ68")
        if not baseline_drawn and "classical_fit" in metrics["methods"]:
            fb = metrics["methods"]["classical_fit"]["pt_bins"]
            ax.plot(_centres(fb), 100 * _get(fb, "pt", "core_sigma"), marker="s", color="k", label="classical fit")
            baseline_drawn = True
    ax.set_xscale("log")
    ax.set_xlabel("true $p_T$ [GeV]")
    ax.set_ylabel(r"$\sigma(p_T)/p_T$ [%]")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
