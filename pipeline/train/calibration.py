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

Cells: each |η| region of :data:`.metrics.REGIONS` (of the predicted η) is cut like a k-d tree, in
the predicted |η| and log pT: a cell of at least ``2·min_cell`` muons is split at the median of the
coordinate whose two halves' pull core widths differ more, as long as both halves keep ``min_cell``
muons; so cells follow the calibration sample's density (finer where it has more muons) and cut where
the width changes (pT in the barrel, |η| across the transition region). A region with fewer than
``min_cell`` muons is one cell fitted on every muon. The cells of a region tile it from pT 0 to +∞,
so every muon with a finite prediction has a cell.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .metrics import ONE_SIGMA, REGIONS, gaussian_core

#: Fewest calibration muons per cell: the core width to ~4 % (the ±2σ core fit of n pulls scatters by
#: ≈ 1.2/√n), the 95 % coverage to ~0.7 point.
MIN_CELL = 1000
#: The interval probabilities calibrated: 68.27 % (±1σ of a Gaussian) and 95 %.
LEVELS = {"z68": ONE_SIGMA, "z95": 0.95}


@dataclass(frozen=True)
class Cell:
    """One calibration cell (a leaf of the k-d tree): predicted |η| in [eta_lo, eta_hi), predicted pT
    in [pt_lo, pt_hi) GeV.

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
    k = _core_width(pull)  # 1 where too few muons for a core fit (below metrics.MIN_FIT)
    scaled = np.abs(pull) / k
    return k, conformal_quantile(scaled, LEVELS["z68"]), conformal_quantile(scaled, LEVELS["z95"])


def _core_width(pull: np.ndarray) -> float:
    k = gaussian_core(pull)[1]
    return k if math.isfinite(k) and k > 0 else 1.0


def _split(pull: np.ndarray, coords: tuple[np.ndarray, np.ndarray], sel: np.ndarray,
           box: list[float], min_cell: int) -> list[tuple[list[float], np.ndarray]]:
    """Leaves (box [eta_lo, eta_hi, pt_lo, pt_hi], mask) of the k-d tree below ``box`` (muons ``sel``)."""
    if sel.sum() < 2 * min_cell:
        return [(box, sel)]
    best: tuple[float, int, float] | None = None
    for dim, x in enumerate(coords):  # 0: |η|, 1: pT
        cut = float(np.median(x[sel]))
        low, high = sel & (x < cut), sel & (x >= cut)
        if low.sum() < min_cell or high.sum() < min_cell:
            continue  # ties at the median: no cut in this coordinate
        gain = abs(math.log(_core_width(pull[low]) / _core_width(pull[high])))
        if best is None or gain > best[0]:
            best = (gain, dim, cut)
    if best is None:
        return [(box, sel)]
    _, dim, cut = best
    x = coords[dim]
    lo_box, hi_box = list(box), list(box)
    lo_box[2 * dim + 1], hi_box[2 * dim] = cut, cut
    return (_split(pull, coords, sel & (x < cut), lo_box, min_cell)
            + _split(pull, coords, sel & (x >= cut), hi_box, min_cell))


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
        for (e0, e1, p0, p1), sel in _split(pull, (eta, pt), in_region, [elo, ehi, 0.0, math.inf], min_cell):
            cells.append(Cell(region, e0, e1, p0, p1, int(sel.sum()), *_fit_cell(pull[sel])))
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
