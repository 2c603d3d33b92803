"""Resolution metrics in the conventions of docs/physics.md; pure numpy / scipy, no torch.

* relative pT resolution σ((pT_pred − pT_true)/pT_true) two ways: the σ of a Gaussian fitted to the
  core, iterated within ±2σ, and the half-width of the shortest interval holding 68.27 %;
* bias as the median residual, pT scale as the median of pT_pred/pT_true (inverting an unbiased
  1/pT estimate biases the mean, not the median);
* tail fraction beyond 3σ of the core;
* charge mis-identification with Clopper–Pearson (exact binomial) intervals;
* Δφ wrapped into (−π, π];
* statistical errors by bootstrap (:func:`bootstrap_errors`: ``BOOTSTRAP`` resamples, fixed seed,
  vectorised over resamples) of the core σ, the 68 % half-width and the pT scale, and of the η and φ
  68 % half-widths, for every set of muons summarised (overall, windows, pT bins, regions); the tail
  fraction's error is binomial, the charge mis-ID's the Clopper–Pearson interval;
* ``MIN_MUONS``: the one minimum count below which neither a plot nor a table shows a value;
* pulls (pred − true)/σ in q/pT where a per-muon σ(q/pT) is given (:func:`pull_stats`): the core width
  by the same iterated ±2σ Gaussian-core fit as the resolution, 1.4826·MAD beside it, and the
  coverage of the ±1σ and ±1.96σ intervals (nominal 68.27 % and 95 %).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

ONE_SIGMA = 0.682689492137086
#: Log bins of true pT in GeV; empty bins are dropped from the tables, kept as NaN in the JSON.
PT_BINS = (3.0, 5.0, 10.0, 20.0, 35.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0)
#: |η| regions; 1.4–1.6 is the weak-field barrel/end-cap transition (docs/physics.md).
REGIONS = {"barrel": (0.0, 1.4), "transition": (1.4, 1.6), "endcap": (1.6, math.inf)}
MIN_FIT = 10  # fewer entries than this: no Gaussian fit (NaN), the 68 % width is still given
#: Sets of fewer muons are not shown as values, in plots (not drawn; the count still shows) and in the
#: tables of ``evaluate`` and ``compare`` (``– (N)``): a bin of one muon has σ68 = 0.
MIN_MUONS = 20
#: Ranges of true pT (GeV) summarised as one set each: the benchmark's headline ranges.
WINDOWS = {"10-100": (10.0, 100.0), "100-300": (100.0, 300.0)}


#: Bootstrap resamples for the per-bin errors, and the seed that makes them reproducible.
BOOTSTRAP = 100
BOOTSTRAP_SEED = 12345


def _truncation_factor(k: float) -> float:
    """std of a unit Gaussian truncated to ±k: sqrt(1 − 2kφ(k)/(2Φ(k) − 1)); 0.8796 at k = 2."""
    phi = math.exp(-0.5 * k * k) / math.sqrt(2 * math.pi)
    inside = math.erf(k / math.sqrt(2))
    return math.sqrt(1.0 - 2.0 * k * phi / inside)


def gaussian_core(x: np.ndarray, nsigma: float = 2.0, iterations: int = 50) -> tuple[float, float]:
    """(μ, σ) of a Gaussian fitted to the core of ``x``, iterated within ±``nsigma``·σ.

    The fit is the maximum-likelihood one for a Gaussian truncated to the window, by moments: the
    window's mean estimates μ, its standard deviation divided by the truncated-Gaussian factor
    estimates σ; the window is re-centred and re-sized until it stops moving. Unbinned, so it has no
    binning choice and works for a few dozen entries.
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < MIN_FIT:
        return math.nan, math.nan
    mu = float(np.median(x))
    sigma = shortest_interval_halfwidth(x)
    if not sigma > 0:
        return mu, 0.0
    factor = _truncation_factor(nsigma)
    for _ in range(iterations):
        window = x[np.abs(x - mu) < nsigma * sigma]
        if window.size < MIN_FIT:
            break
        new_mu, new_sigma = float(window.mean()), float(window.std()) / factor
        done = abs(new_sigma - sigma) < 1e-6 * sigma and abs(new_mu - mu) < 1e-6 * sigma
        mu, sigma = new_mu, new_sigma
        if done or sigma == 0:
            break
    return mu, sigma


def shortest_interval_halfwidth(x: np.ndarray, fraction: float = ONE_SIGMA) -> float:
    """Half the width of the shortest interval holding ``fraction`` of ``x``."""
    x = np.sort(np.asarray(x, dtype=np.float64)[np.isfinite(x)])
    n = x.size
    if n == 0:
        return math.nan
    k = max(int(math.ceil(fraction * n)), 1)
    if k >= n:
        return 0.5 * float(x[-1] - x[0])
    widths = x[k - 1:] - x[: n - k + 1]
    return 0.5 * float(widths.min())


def clopper_pearson(k: int, n: int, cl: float = ONE_SIGMA) -> tuple[float, float]:
    """Exact binomial interval for k successes out of n (central, ``cl`` coverage)."""
    from scipy.stats import beta

    if n == 0:
        return math.nan, math.nan
    alpha = 1.0 - cl
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def wrap_phi(dphi: np.ndarray) -> np.ndarray:
    """Wrap angles into (−π, π]."""
    w = np.remainder(np.asarray(dphi, dtype=np.float64) + np.pi, 2 * np.pi) - np.pi  # [−π, π)
    return np.where(w == -np.pi, np.pi, w)


def _core_sigma_rows(x: np.ndarray, nsigma: float = 2.0, iterations: int = 30) -> np.ndarray:
    """:func:`gaussian_core`'s σ for each row of ``x`` [B, n] at once (the same iteration, vectorised)."""
    factor = _truncation_factor(nsigma)
    xs = np.sort(x, axis=1)
    n = xs.shape[1]
    k = max(int(math.ceil(ONE_SIGMA * n)), 1)
    mu = xs[:, n // 2] if n % 2 else 0.5 * (xs[:, n // 2 - 1] + xs[:, n // 2])
    sigma = 0.5 * (xs[:, k - 1:] - xs[:, : n - k + 1]).min(axis=1) if k < n else 0.5 * (xs[:, -1] - xs[:, 0])
    for _ in range(iterations):
        inside = np.abs(x - mu[:, None]) < nsigma * sigma[:, None]
        m = inside.sum(axis=1)
        ok = m >= MIN_FIT
        mean = np.where(ok, (x * inside).sum(axis=1) / np.maximum(m, 1), mu)
        var = (((x - mean[:, None]) ** 2) * inside).sum(axis=1) / np.maximum(m, 1)
        mu, sigma = mean, np.where(ok, np.sqrt(var) / factor, sigma)
    return sigma


def bootstrap_errors(residual: np.ndarray, ratio: np.ndarray, resamples: int = BOOTSTRAP,
                     seed: int = BOOTSTRAP_SEED) -> dict[str, float]:
    """Bootstrap errors (:func:`spread`) of the core σ and the 68 % half-width of ``residual`` and of the
    median of ``ratio`` (same muons, [n]); NaN below ``MIN_FIT`` muons. Resamples run in blocks of 20 rows,
    so memory stays at 20·n floats."""
    r = np.asarray(residual, np.float64)
    q = np.asarray(ratio, np.float64)
    n = r.size
    if n < MIN_FIT:
        return {"core_sigma_err": math.nan, "sigma68_err": math.nan, "pt_scale_err": math.nan}
    rng = np.random.default_rng(seed)
    core, s68, med = [], [], []
    k = max(int(math.ceil(ONE_SIGMA * n)), 1)
    for start in range(0, resamples, 20):
        idx = rng.integers(0, n, size=(min(20, resamples - start), n))
        rb = r[idx]
        core.append(_core_sigma_rows(rb))
        rs = np.sort(rb, axis=1)
        s68.append(0.5 * (rs[:, k - 1:] - rs[:, : n - k + 1]).min(axis=1) if k < n else 0.5 * (rs[:, -1] - rs[:, 0]))
        med.append(np.median(q[idx], axis=1))
    return {"core_sigma_err": spread(np.concatenate(core)), "sigma68_err": spread(np.concatenate(s68)),
            "pt_scale_err": spread(np.concatenate(med))}


def spread(replicas: np.ndarray) -> float:
    """The bootstrap error: half the central 68.27 % interval of the replicas. It equals their standard
    deviation when they are Gaussian, and ignores the rare resample of a small, wide sample whose core
    fit runs off (which made the standard deviation of 27 muons' σ come out 400 times the σ)."""
    r = np.asarray(replicas, np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return math.nan
    lo, hi = np.quantile(r, [0.5 - ONE_SIGMA / 2, 0.5 + ONE_SIGMA / 2])
    return float(0.5 * (hi - lo))


def bootstrap_sigma68_error(x: np.ndarray, resamples: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> float:
    """Bootstrap standard error of the 68 % half-width of ``x`` (NaN below ``MIN_FIT`` values)."""
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n < MIN_FIT:
        return math.nan
    rng = np.random.default_rng(seed)
    k = max(int(math.ceil(ONE_SIGMA * n)), 1)
    out = []
    for start in range(0, resamples, 20):
        rs = np.sort(x[rng.integers(0, n, size=(min(20, resamples - start), n))], axis=1)
        out.append(0.5 * (rs[:, k - 1:] - rs[:, : n - k + 1]).min(axis=1) if k < n else 0.5 * (rs[:, -1] - rs[:, 0]))
    return spread(np.concatenate(out))


def resolution(residual: np.ndarray) -> dict[str, float]:
    """Core σ, 68 % half-width, median (bias) and the fraction beyond 3 core σ of a residual."""
    r = np.asarray(residual, dtype=np.float64)
    r = r[np.isfinite(r)]
    mu, sigma = gaussian_core(r)
    tail = float(np.mean(np.abs(r - mu) > 3 * sigma)) if r.size and sigma > 0 else math.nan
    return {"n": int(r.size), "core_mean": mu, "core_sigma": sigma, "sigma68": shortest_interval_halfwidth(r),
            "median": float(np.median(r)) if r.size else math.nan, "tail_3sigma": tail,
            "tail_3sigma_err": math.sqrt(tail * (1 - tail) / r.size) if r.size and math.isfinite(tail) else math.nan}


#: Two-sided 95 % Gaussian quantile: the half-width of the 95 % interval in units of σ.
Z95 = 1.959963984540054


def pull_stats(pull: np.ndarray, errors: bool = False, z68: np.ndarray | float = 1.0,
               z95: np.ndarray | float = Z95) -> dict[str, Any]:
    """Width and coverage of pulls [N] (NaN entries dropped): ``core_mean``/``core_width`` (iterated
    ±2σ Gaussian-core fit, :func:`gaussian_core`), ``mad_width`` (1.4826·median |pull − median|),
    ``cover68``/``cover95`` (fraction inside the 68.27 % / 95 % intervals, |pull| < ``z68`` / ``z95``:
    ±1σ / ±1.96σ unless per-muon half-widths in units of σ are given, as a calibration gives them) with
    binomial errors; ``errors``: a bootstrap error of the core width."""
    x = np.asarray(pull, np.float64)
    keep = np.isfinite(x)
    x = x[keep]
    n = int(x.size)
    mu, width = gaussian_core(x)
    out: dict[str, Any] = {"n": n, "core_mean": mu, "core_width": width,
                           "mad_width": float(1.4826 * np.median(np.abs(x - np.median(x)))) if n else math.nan}
    for key, z in (("cover68", z68), ("cover95", z95)):
        z = np.broadcast_to(np.asarray(z, np.float64), keep.shape)[keep]
        p = float(np.mean(np.abs(x) < z)) if n else math.nan
        out[key], out[key + "_err"] = p, math.sqrt(p * (1 - p) / n) if n else math.nan
    if errors:
        out["core_width_err"] = bootstrap_errors(x, x)["core_sigma_err"]
    return out


def qpt_pulls(true_pt: np.ndarray, pred_pt: np.ndarray, true_q: np.ndarray, pred_q: np.ndarray,
              sigma_qpt: np.ndarray) -> np.ndarray:
    """(q/pT_pred − q/pT_true)/σ(q/pT) per muon [N]; NaN where pT or σ is not usable."""
    pred_pt, true_pt, sigma = (np.asarray(a, np.float64) for a in (pred_pt, true_pt, sigma_qpt))
    ok = np.isfinite(pred_pt) & (pred_pt > 0) & (true_pt > 0) & np.isfinite(sigma) & (sigma > 0)
    pred_qpt = np.where(np.asarray(pred_q, np.float64) < 0, -1.0, 1.0) / np.where(ok, pred_pt, 1.0)
    true_qpt = np.asarray(true_q, np.float64) / np.where(ok, true_pt, 1.0)
    return np.where(ok, (pred_qpt - true_qpt) / np.where(ok, sigma, 1.0), np.nan)


def summarise(true_pt: np.ndarray, pred_pt: np.ndarray, true_q: np.ndarray, pred_q: np.ndarray,
              true_eta: np.ndarray | None = None, pred_eta: np.ndarray | None = None,
              true_phi: np.ndarray | None = None, pred_phi: np.ndarray | None = None,
              errors: bool = False, sigma_qpt: np.ndarray | None = None,
              halfwidths_qpt: tuple[np.ndarray, np.ndarray] | None = None,
              sigma_qpt_raw: np.ndarray | None = None) -> dict[str, Any]:
    """Every metric of one method on one set of muons (all arrays [N]); ``errors``: add bootstrap
    errors (``pt.core_sigma_err``, ``pt.sigma68_err``, ``pt_scale_err``, ``eta.sigma68_err``,
    ``phi.sigma68_err``); ``sigma_qpt`` (GeV⁻¹, per muon): add ``pull`` (:func:`pull_stats` of the
    q/pT pulls), its coverage that of the 68 % / 95 % half-widths ``halfwidths_qpt`` (GeV⁻¹) where
    given, else of ±1σ / ±1.96σ; ``sigma_qpt_raw`` (the head's own σ before a calibration): add
    ``pull_raw`` the same way (±1σ / ±1.96σ)."""
    true_pt, pred_pt = np.asarray(true_pt, np.float64), np.asarray(pred_pt, np.float64)
    ok = np.isfinite(pred_pt) & (true_pt > 0)
    rel = (pred_pt[ok] - true_pt[ok]) / true_pt[ok]
    out: dict[str, Any] = {"n": int(ok.sum()), "pt": resolution(rel)}
    out["pt_scale"] = float(np.median(pred_pt[ok] / true_pt[ok])) if ok.any() else math.nan
    if errors:
        err = bootstrap_errors(rel, pred_pt[ok] / true_pt[ok])
        out["pt"]["core_sigma_err"], out["pt"]["sigma68_err"] = err["core_sigma_err"], err["sigma68_err"]
        out["pt_scale_err"] = err["pt_scale_err"]
    q_ok = ok & np.isfinite(np.asarray(pred_q, np.float64))
    wrong = int(np.sum(np.where(np.asarray(pred_q)[q_ok] < 0, -1, 1) != np.asarray(true_q)[q_ok]))
    n_q = int(q_ok.sum())
    lo, hi = clopper_pearson(wrong, n_q)
    out["charge_misid"] = {"k": wrong, "n": n_q, "rate": wrong / n_q if n_q else math.nan, "lo": lo, "hi": hi}
    if true_eta is not None and pred_eta is not None:
        d_eta = np.asarray(pred_eta, np.float64)[ok] - np.asarray(true_eta, np.float64)[ok]
        out["eta"] = resolution(d_eta)
        if errors:
            out["eta"]["sigma68_err"] = bootstrap_sigma68_error(d_eta)
    if true_phi is not None and pred_phi is not None:
        d_phi = wrap_phi(np.asarray(pred_phi, np.float64)[ok] - np.asarray(true_phi, np.float64)[ok])
        out["phi"] = resolution(d_phi)
        if errors:
            out["phi"]["sigma68_err"] = bootstrap_sigma68_error(d_phi)
    if sigma_qpt is not None:
        z = {}
        if halfwidths_qpt is not None:
            sig = np.asarray(sigma_qpt, np.float64)
            z = {"z68": halfwidths_qpt[0] / sig, "z95": halfwidths_qpt[1] / sig}
        out["pull"] = pull_stats(qpt_pulls(true_pt, pred_pt, true_q, pred_q, sigma_qpt), errors=errors, **z)
    if sigma_qpt_raw is not None:
        out["pull_raw"] = pull_stats(qpt_pulls(true_pt, pred_pt, true_q, pred_q, sigma_qpt_raw), errors=errors)
    return out


def binned(columns: dict[str, np.ndarray], prefix: str, edges: tuple[float, ...] = PT_BINS) -> list[dict[str, Any]]:
    """``summarise`` in bins of true pT; ``columns`` holds true_* and ``{prefix}_*`` arrays."""
    true_pt = columns["true_pt"]
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (true_pt >= lo) & (true_pt < hi)
        filled = true_pt[sel]
        row = {"lo": lo, "hi": hi, **summarise(*_args(columns, prefix, sel), errors=True,
                                               **_widths(columns, prefix, sel)),
               "true_pt_min": float(filled.min()) if filled.size else math.nan,
               "true_pt_max": float(filled.max()) if filled.size else math.nan,
               "true_pt_median": float(np.median(filled)) if filled.size else math.nan}
        rows.append(row)
    return rows


def _args(c: dict[str, np.ndarray], prefix: str, sel: np.ndarray) -> list[np.ndarray | None]:
    def get(name: str) -> np.ndarray | None:
        return c[name][sel] if name in c else None

    return [get("true_pt"), get(f"{prefix}_pt"), get("true_q"), get(f"{prefix}_q"), get("true_eta"),
            get(f"{prefix}_eta"), get("true_phi"), get(f"{prefix}_phi")]


def _widths(c: dict[str, np.ndarray], prefix: str, sel: np.ndarray) -> dict[str, Any]:
    """The per-muon width arguments of :func:`summarise` that ``c`` holds for ``prefix``, at ``sel``."""
    def get(name: str) -> np.ndarray | None:
        return c[f"{prefix}_{name}"][sel] if f"{prefix}_{name}" in c else None

    h68, h95 = get("halfwidth68_qpt"), get("halfwidth95_qpt")
    return {"sigma_qpt": get("sigma_qpt"), "sigma_qpt_raw": get("sigma_qpt_raw"),
            "halfwidths_qpt": (h68, h95) if h68 is not None and h95 is not None else None}


def evaluate_method(columns: dict[str, np.ndarray], prefix: str,
                    edges: tuple[float, ...] = PT_BINS) -> dict[str, Any]:
    """Overall, per pT window and bin, and per |η| region (each with its pT bins) for one method, each
    with its statistical errors."""
    everything = np.ones(len(columns["true_pt"]), dtype=bool)
    true_pt = columns["true_pt"]
    windows = {name: (true_pt >= lo) & (true_pt < hi) for name, (lo, hi) in WINDOWS.items()}
    out: dict[str, Any] = {"overall": summarise(*_args(columns, prefix, everything), errors=True,
                                                **_widths(columns, prefix, everything)),
                           "windows": {name: summarise(*_args(columns, prefix, sel), errors=True,
                                                       **_widths(columns, prefix, sel))
                                       for name, sel in windows.items()},
                           "pt_bins": binned(columns, prefix, edges), "regions": {}}
    abs_eta = np.abs(columns["true_eta"])
    for name, (lo, hi) in REGIONS.items():
        sel = (abs_eta >= lo) & (abs_eta < hi)
        sub = {k: v[sel] for k, v in columns.items()}
        every = np.ones(int(sel.sum()), dtype=bool)
        out["regions"][name] = {"overall": summarise(*_args(sub, prefix, every), errors=True,
                                                     **_widths(sub, prefix, every)),
                                "pt_bins": binned(sub, prefix, edges)}
    return out
