"""Calibration of the per-muon σ(q/pT) and of its 68 % / 95 % intervals on a held-out split (numpy only).

A likelihood head's width is trained, not measured: on a finite run it comes out some percent too
narrow or too wide, differently per region and pT, and its tails are not Gaussian (nor are the
classical fit's: ±1.96σ covers 88–89 % for both). Two steps, fitted per *cell* of (|η| region of the
predicted η, range of the predicted pT) on muons the network did not train on (the validation split):

1. **σ scaling** (the tracking's "error scaling"): ``σ_cal = k·σ`` with ``k`` the core width of the
   cell's raw pulls (q/pT_pred − q/pT_true)/σ, by the iterated ±2σ Gaussian-core fit of
   :func:`.metrics.gaussian_core`. The calibrated pulls have core width 1.
2. **intervals by split conformal prediction** on the normalised residual |pull_cal| (Papadopoulos
   et al. 2002; Lei et al. 2018, JASA 113:1094), per cell (Mondrian, Vovk et al. 2005): the 68.27 %
   interval is ``q/pT_pred ± z68·σ_cal`` and the 95 % one ``± z95·σ_cal``, with ``z_p`` the
   ⌈(n+1)·p⌉-th smallest |pull_cal| of the cell's ``n`` muons. For muons exchangeable with the
   calibration ones the coverage is at least ``p`` (and below ``p + 1/(n+1)``), in every cell. With
   Gaussian pulls ``z68 = 1`` and ``z95 = 1.96``; heavier tails give larger ``z``.

Cells: the |η| regions of :data:`.metrics.REGIONS`; within each, the true-pT bins of
:data:`.metrics.PT_BINS` applied to the *predicted* pT, merged from low pT upwards until each holds at
least ``min_cell`` muons (a short last cell joins the one before; a region with fewer muons than
``min_cell`` is one cell fitted on every muon). The first cell starts at 0 and the last ends at +∞,
so every muon with a finite prediction has a cell.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .metrics import ONE_SIGMA, PT_BINS, REGIONS, gaussian_core

#: Fewest calibration muons per cell: the core width to ~4 % (the ±2σ core fit of n pulls scatters by
#: ≈ 1.2/√n), the 95 % coverage to ~0.7 point.
MIN_CELL = 1000
#: The interval probabilities calibrated: 68.27 % (±1σ of a Gaussian) and 95 %.
LEVELS = {"z68": ONE_SIGMA, "z95": 0.95}


@dataclass(frozen=True)
class Cell:
    """One calibration cell: predicted |η| in [eta_lo, eta_hi), predicted pT in [pt_lo, pt_hi) GeV.

    ``scale``: k, σ_cal = k·σ; ``z68``, ``z95``: interval half-widths in units of σ_cal; ``n``: the
    calibration muons it was fitted on."""

    region: str
    eta_lo: float
    eta_hi: float
    pt_lo: float
    pt_hi: float
    n: int
    scale: float
    z68: float
    z95: float


def conformal_quantile(scores: np.ndarray, p: float) -> float:
    """The ⌈(n+1)·p⌉-th smallest of ``scores`` [n] (finite): the split-conformal bound that covers a
    new exchangeable score with probability ≥ ``p``; +∞ when n is too small for ``p``."""
    s = np.sort(np.asarray(scores, np.float64))
    rank = math.ceil((s.size + 1) * p)
    return float(s[rank - 1]) if 1 <= rank <= s.size else math.inf


def _fit_cell(pull: np.ndarray) -> tuple[float, float, float]:
    """(k, z68, z95) of one cell's raw pulls [n]."""
    _, k = gaussian_core(pull)
    if not (math.isfinite(k) and k > 0):
        k = 1.0  # too few muons for a core fit (below metrics.MIN_FIT): the width is left as it is
    scaled = np.abs(pull) / k
    return k, conformal_quantile(scaled, LEVELS["z68"]), conformal_quantile(scaled, LEVELS["z95"])


def _pt_ranges(pt: np.ndarray, min_cell: int) -> list[tuple[float, float]]:
    """Ranges of predicted pT [GeV]: PT_BINS merged upwards to ≥ ``min_cell`` muons, from 0 to +∞."""
    inner = list(PT_BINS[1:-1])  # the outer edges become 0 and +∞
    edges = [0.0, *inner, math.inf]
    counts = np.histogram(pt, bins=edges)[0]
    ranges: list[list[float]] = []
    held = 0
    for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True):
        if ranges and held < min_cell:
            ranges[-1][1], held = hi, held + int(n)  # the open cell is still short: extend it
        else:
            ranges.append([lo, hi])
            held = int(n)
    if len(ranges) > 1 and held < min_cell:  # a short last cell joins the one before
        last = ranges.pop()
        ranges[-1][1] = last[1]
    return [(a, b) for a, b in ranges]


def fit_cells(pull: np.ndarray, pred_abs_eta: np.ndarray, pred_pt: np.ndarray,
              min_cell: int = MIN_CELL) -> list[Cell]:
    """The calibration cells from raw pulls [N] (NaN: not used), predicted |η| [N] and pT [N] (GeV).

    Raises ``ValueError`` when no pull is finite."""
    pull, eta, pt = (np.asarray(a, np.float64) for a in (pull, pred_abs_eta, pred_pt))
    ok = np.isfinite(pull) & np.isfinite(eta) & np.isfinite(pt)
    if not ok.any():
        raise ValueError("no muon with a finite pull to calibrate on")
    cells: list[Cell] = []
    for region, (elo, ehi) in REGIONS.items():
        in_region = ok & (eta >= elo) & (eta < ehi)
        if in_region.sum() < min_cell:  # too few for its own cells: one cell fitted on every muon
            cells.append(Cell(region, elo, ehi, 0.0, math.inf, int(ok.sum()), *_fit_cell(pull[ok])))
            continue
        for plo, phi in _pt_ranges(pt[in_region], min_cell):
            sel = in_region & (pt >= plo) & (pt < phi)
            cells.append(Cell(region, elo, ehi, plo, phi, int(sel.sum()), *_fit_cell(pull[sel])))
    return cells


def cell_index(cells: list[Cell], pred_abs_eta: np.ndarray, pred_pt: np.ndarray) -> np.ndarray:
    """The cell of each muon [N] (int; −1 where η or pT is not finite)."""
    eta, pt = np.asarray(pred_abs_eta, np.float64), np.asarray(pred_pt, np.float64)
    index = np.full(eta.shape, -1, dtype=np.int64)
    for i, c in enumerate(cells):
        index[(eta >= c.eta_lo) & (eta < c.eta_hi) & (pt >= c.pt_lo) & (pt < c.pt_hi)] = i
    return index


def apply_cells(cells: list[Cell], sigma_qpt: np.ndarray, pred_abs_eta: np.ndarray,
                pred_pt: np.ndarray) -> dict[str, np.ndarray]:
    """Calibrated ``sigma_qpt`` (GeV⁻¹) and the 68 % / 95 % interval half-widths in q/pT,
    ``halfwidth68_qpt`` and ``halfwidth95_qpt`` (GeV⁻¹), each [N] float64; NaN without a cell."""
    index = cell_index(cells, pred_abs_eta, pred_pt)
    table = np.array([[c.scale, c.z68, c.z95] for c in cells] + [[math.nan] * 3], np.float64)
    k, z68, z95 = table[index].T  # index −1 picks the NaN row
    sigma = k * np.asarray(sigma_qpt, np.float64)
    return {"sigma_qpt": sigma, "halfwidth68_qpt": z68 * sigma, "halfwidth95_qpt": z95 * sigma}


def cells_to_dicts(cells: list[Cell]) -> list[dict[str, Any]]:
    """JSON-ready cells (+∞ as the string ``"inf"``, which JSON lacks)."""
    return [{k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(c).items()}
            for c in cells]


def cells_from_dicts(rows: list[dict[str, Any]]) -> list[Cell]:
    """Inverse of :func:`cells_to_dicts`; ``KeyError``/``TypeError``/``ValueError`` on a malformed row."""
    return [Cell(region=str(r["region"]), n=int(r["n"]),
                 **{k: float(r[k]) for k in ("eta_lo", "eta_hi", "pt_lo", "pt_hi", "scale", "z68", "z95")})
            for r in rows]
