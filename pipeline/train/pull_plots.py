"""The pull plot of an evaluation: is each muon's σ(q/pT) the size of its error?

Drawn where a method carries per-muon widths (the network with an uncertainty head, the classical fit):
pull = (q/pT_pred − q/pT_true)/σ(q/pT). Four panels: the pull core width (iterated ±2σ Gaussian-core
fit, bootstrap errors) per true-pT bin with the 0.9–1.1 band; the same per |η| region; the coverage of
the 68 % and 95 % intervals per pT bin beside the nominal 68.27 % and 95 % (the calibrated intervals of
``calibration.json`` where applied, else ±1σ and ±1.96σ); the pull distribution of all muons over a
unit Gaussian. Same rules as :mod:`.plots`: markers with error bars, no joining lines,
bins under ``MIN_MUONS`` left out, legends outside the axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .metrics import MIN_MUONS, ONE_SIGMA, qpt_pulls
from .plots import OUTSIDE, SHIFT, STYLE, _centres, _get, _masked, _plt, _xlim


def has_pulls(methods: dict[str, Any]) -> bool:
    """Whether any method of an evaluation carries pulls (a per-muon σ)."""
    return any("pull" in (m.get("overall") or {}) for m in methods.values())


def plot_pulls(columns: dict[str, np.ndarray], metrics: dict[str, Any], path: Path, title: str) -> Path:
    """Write the four-panel pull figure to ``path``; ``title`` goes on top. Returns ``path``."""
    plt = _plt()
    methods = {k: v for k, v in metrics["methods"].items() if k in STYLE and "pull" in (v.get("overall") or {})}
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.6), gridspec_kw={"hspace": 0.3, "wspace": 0.6, "top": 0.9})
    ax_w, ax_r, ax_c, ax_h = axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]
    for name, m in methods.items():
        color, marker, label = STYLE[name]
        bins = m["pt_bins"]
        keep = _get(bins, "pull", "n") >= MIN_MUONS
        x = _centres(bins) * SHIFT[name]
        ax_w.errorbar(x, _masked(_get(bins, "pull", "core_width"), keep),
                      yerr=_masked(_get(bins, "pull", "core_width_err"), keep), marker=marker, color=color,
                      ls="none", capsize=2, label=label)
        for key, fill in (("cover68", "full"), ("cover95", "none")):
            ax_c.errorbar(x, _masked(100 * _get(bins, "pull", key), keep),
                          yerr=_masked(100 * _get(bins, "pull", key + "_err"), keep), marker=marker, color=color,
                          mfc=color if fill == "full" else "none", ls="none", capsize=2,
                          label=f"{label}: {'68' if key == 'cover68' else '95'} % interval")
        regions = m.get("regions", {})
        for i, r in enumerate(regions.values()):
            p = r["overall"].get("pull", {})
            if (p.get("n") or 0) >= MIN_MUONS:
                ax_r.errorbar(i + (0.08 if name == "classical_fit" else -0.08), p.get("core_width"),
                              yerr=p.get("core_width_err"), marker=marker, color=color, ls="none", capsize=2,
                              label=label if i == 0 else None)
        ax_r.set_xticks(range(len(regions)), list(regions))
        ax_r.set_xlim(-0.5, len(regions) - 0.5)
        prefix = "pred" if name == "model" else "fit"
        if f"{prefix}_sigma_qpt" in columns:
            pull = qpt_pulls(columns["true_pt"], columns[f"{prefix}_pt"], columns["true_q"], columns[f"{prefix}_q"],
                             columns[f"{prefix}_sigma_qpt"])
            pull = pull[np.isfinite(pull)]
            ax_h.hist(np.clip(pull, -6, 6), bins=np.linspace(-6, 6, 61), density=True, histtype="step", color=color,
                      label=f"{label} (core width {m['overall']['pull']['core_width']:.2f})")
    grid = np.linspace(-6, 6, 241)
    ax_h.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), color="0.3", ls=":", label="unit Gaussian")
    for ax in (ax_w, ax_r):
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhspan(0.9, 1.1, color="0.85", zorder=0, label="0.9–1.1")
        ax.set_ylabel("pull core width")
    for nominal in (100 * ONE_SIGMA, 95.0):
        ax_c.axhline(nominal, color="k", lw=0.8)
        ax_c.axhspan(nominal - 2, nominal + 2, color="0.85", zorder=0)
    ax_c.set_ylabel("interval coverage [%]")
    ax_r.set_title(r"by $|\eta|$ region (all $p_T$)")
    ax_h.set(xlabel=r"pull $(q/p_T^{pred} - q/p_T^{true})/\sigma(q/p_T)$ (clipped to ±6)", ylabel="density",
             yscale="log", ylim=(1e-4, 1.0))
    for ax in (ax_w, ax_c):
        ax.set_xscale("log")
        ax.set_xlabel(r"true $p_T$ [GeV]")
        _xlim(ax, [m["pt_bins"] for m in methods.values()])
    for ax in axes.flat:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, **OUTSIDE)
    fig.suptitle(title, y=1.0)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
