"""Turning surface crossings (muons) and random points (background) into dump-style hit records.

One function, :func:`digitize`, serves both, so a background hit carries exactly the identifiers,
edges, covariances and times a muon hit on the same element would (a network must not be able to
tell them apart by bookkeeping). Everything is vectorised over hits.

Measurement model per technology (resolution along the measuring coordinate):

* MDT: the nearest wire of the tube layer (30 mm pitch, alternate layers staggered by 15 mm);
  ``driftR`` = distance between the track and the wire, smeared by 80 µm, folded at 0, ≤ 15 mm;
  time = time of flight + 700 ns·(r/15 mm)^1.3 (a rough r–t relation).
* RPC (30 mm strips) and TGC (15 mm wire groups, 20 mm strips): the strip centre, i.e. pitch/√12
  ≈ 8.7 mm and 4.3 mm.
* sTGC and Micromegas: Gaussian 100 µm (charge interpolation).

Covariances (mm²): covXX = resolution², covYY = cell²/12 along the element, covXY = covYX = 0.
"""

from __future__ import annotations

import numpy as np

from . import geometry as geo

HIT_INT_FIELDS = (
    "spacePoint_readOutSide", "spacePoint_channel", "spacePoint_layer", "spacePoint_stationPhi",
    "spacePoint_stationEta", "spacePoint_stationIndex", "spacePoint_technology", "spacePoint_truthLink",
)
HIT_FLOAT_FIELDS = (
    "spacePoint_globEdgeHighX", "spacePoint_globEdgeHighY", "spacePoint_globEdgeHighZ",
    "spacePoint_globEdgeLowX", "spacePoint_globEdgeLowY", "spacePoint_globEdgeLowZ",
    "spacePoint_time", "spacePoint_driftR",
    "spacePoint_covXX", "spacePoint_covXY", "spacePoint_covYX", "spacePoint_covYY",
)
HIT_FIELDS = HIT_FLOAT_FIELDS + HIT_INT_FIELDS

TIME_JITTER_NS = {geo.MDT: 1.0, geo.RPC: 1.0, geo.TGC: 4.0, geo.STGC: 2.0, geo.MM: 5.0}
BACKGROUND_TIME_NS = (-200.0, 1200.0)  # out-of-time cavern background window


def local_to_global(rho: np.ndarray, t: np.ndarray, z: np.ndarray, sector: np.ndarray) -> np.ndarray:
    """(ρ_s, t, z) in sector ``sector`` → global (x, y, z), shape (n, 3)."""
    c, s = geo.sector_axes(sector)
    return np.stack([rho * c - t * s, rho * s + t * c, z], axis=1)


def to_local(pos: np.ndarray, sector: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global (n, 3) → (ρ_s, t, z) in sector ``sector``."""
    c, s = geo.sector_axes(sector)
    return pos[:, 0] * c + pos[:, 1] * s, -pos[:, 0] * s + pos[:, 1] * c, pos[:, 2]


def digitize(row: np.ndarray, sector: np.ndarray, local: tuple[np.ndarray, np.ndarray, np.ndarray],
             rng: np.random.Generator, *, direction: np.ndarray | None = None,
             drift_true: np.ndarray | None = None, time0: np.ndarray,
             smear: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Hit records for points ``local`` = (ρ_s, t, z) (metres) on layer rows ``row`` in sectors ``sector``.

    Muon hits pass the track ``direction`` (the MDT drift radius is the track–wire distance);
    background hits pass ``drift_true`` instead. ``time0`` is the time of flight (or the random
    background time) in ns. ``smear=False`` reports the exact drift radius and sTGC/MM position
    (strips keep their pitch), for tests of the geometry.

    Returns (hit columns with dump names and dtypes, truth columns in metres): truth holds the
    local coordinates ``rho``, ``t``, ``z`` of the point, the true drift radius ``drift`` and the
    measured coordinate ``meas`` before float32 rounding.
    """
    L = geo.LAYERS
    n = len(row)
    c, s = geo.sector_axes(sector)
    rho, t, z = local
    barrel = L.barrel[row]
    view = L.view[row]
    tech = L.tech[row]
    pitch = L.pitch[row]
    cell = L.cell[row]
    # end-cap cells shrink near the beam line (≤ 15 % of ρ along t, ≤ 3 % of ρ along ρ) so the
    # Low edge stays within a small Δη of the hit there too
    rho_pos = np.maximum(np.abs(rho), 0.3)
    cell = np.where(barrel, cell, np.minimum(cell, np.where(view == 1, 0.03, 0.15) * rho_pos))
    is_mdt = tech == geo.MDT

    # measuring coordinate of the point: z (barrel, view 0), ρ (disc, view 0), t (view 1)
    coord = np.where(view == 1, t, np.where(barrel, z, rho))
    stagger = L.stagger[row]
    meas = coord.copy()
    quant = L.quantize[row]
    meas[quant] = pitch[quant] * (np.floor(coord[quant] / pitch[quant]) + 0.5)
    meas[is_mdt] = stagger[is_mdt] + pitch[is_mdt] * np.round((coord[is_mdt] - stagger[is_mdt]) / pitch[is_mdt])
    gauss = ~quant & ~is_mdt
    if smear:
        meas[gauss] += rng.standard_normal(int(gauss.sum())) * L.sigma[row[gauss]]

    drift = np.zeros(n)
    if direction is not None:
        a = direction[:, 0] * c + direction[:, 1] * s  # along the sector normal
        cz = direction[:, 2]
        across = np.where(barrel, np.abs(a), np.abs(cz)) / np.maximum(np.hypot(a, cz), 1e-12)
        drift = np.abs(meas - coord) * across
    if drift_true is not None:
        drift = np.asarray(drift_true, dtype=float)
    drift = np.where(is_mdt, np.minimum(drift, geo.TUBE_RADIUS), 0.0)
    drift_meas = drift.copy()
    if smear:
        drift_meas[is_mdt] = np.abs(drift[is_mdt] + rng.standard_normal(int(is_mdt.sum())) * L.sigma[row[is_mdt]])
    drift_meas = np.minimum(drift_meas, geo.TUBE_RADIUS)

    # element: readout cell along the element direction containing the point
    along = np.where(view == 1, np.where(barrel, z, rho), t)
    a_lo = cell * np.floor(along / cell)
    a_hi = a_lo + cell
    surf = np.where(barrel, L.pos[row], np.sign(z) * L.pos[row])
    # view 0: element along t at (ρ or z measured); view 1: element along z (barrel) or ρ (disc)
    lo_rho = np.where(view == 1, np.where(barrel, surf, a_lo), np.where(barrel, surf, meas))
    hi_rho = np.where(view == 1, np.where(barrel, surf, a_hi), lo_rho)
    lo_t = np.where(view == 1, meas, a_lo)
    hi_t = np.where(view == 1, meas, a_hi)
    lo_z = np.where(view == 1, np.where(barrel, a_lo, surf), np.where(barrel, meas, surf))
    hi_z = np.where((view == 1) & barrel, a_hi, lo_z)
    low = local_to_global(lo_rho, lo_t, lo_z, sector)
    high = local_to_global(hi_rho, hi_t, hi_z, sector)

    # identifiers
    sgn = np.where(z >= 0, 1, -1)
    eta_coord = np.where(barrel, np.abs(z), rho - L.lo[row])
    chamber = L.chamber[row]
    station_eta = sgn * (np.floor(np.maximum(eta_coord, 0) / chamber).astype(np.int64) + 1)
    half_width = np.where(barrel, L.pos[row], L.hi[row]) * geo.TAN_HALF_SECTOR + 0.5
    ch_coord = np.where(view == 1, meas + half_width, np.mod(np.maximum(np.where(barrel, np.abs(meas), meas - L.lo[row]), 0), chamber))
    channel = np.clip(np.floor(ch_coord / pitch), 0, geo.MAX_CHANNEL).astype(np.int32)

    jitter = np.zeros(n)
    for code, sig in TIME_JITTER_NS.items():
        m = tech == code
        jitter[m] = rng.standard_normal(int(m.sum())) * sig
    time = time0 + jitter + np.where(is_mdt, geo.MDT_MAX_DRIFT_TIME * (drift / geo.TUBE_RADIUS) ** 1.3, 0.0)

    res_mm = L.resolution[row] * 1e3
    cov_along = (cell * 1e3) ** 2 / 12.0
    zeros = np.zeros(n, dtype=np.float32)
    cols = {
        "spacePoint_globEdgeHighX": (high[:, 0] * 1e3).astype(np.float32),
        "spacePoint_globEdgeHighY": (high[:, 1] * 1e3).astype(np.float32),
        "spacePoint_globEdgeHighZ": (high[:, 2] * 1e3).astype(np.float32),
        "spacePoint_globEdgeLowX": (low[:, 0] * 1e3).astype(np.float32),
        "spacePoint_globEdgeLowY": (low[:, 1] * 1e3).astype(np.float32),
        "spacePoint_globEdgeLowZ": (low[:, 2] * 1e3).astype(np.float32),
        "spacePoint_time": time.astype(np.float32),
        "spacePoint_driftR": (drift_meas * 1e3).astype(np.float32),
        "spacePoint_covXX": (res_mm**2).astype(np.float32),
        "spacePoint_covXY": zeros,
        "spacePoint_covYX": zeros.copy(),
        "spacePoint_covYY": cov_along.astype(np.float32),
        "spacePoint_readOutSide": np.where(is_mdt, sgn, 1).astype(np.int32),
        "spacePoint_channel": channel,
        "spacePoint_layer": L.layer[row].astype(np.int32),
        "spacePoint_stationPhi": np.asarray(sector, dtype=np.int32),
        "spacePoint_stationEta": station_eta.astype(np.int32),
        "spacePoint_stationIndex": L.station[row].astype(np.int32),
        "spacePoint_technology": tech.astype(np.int32),
    }
    truth = {"rho": rho, "t": t, "z": z, "drift": drift, "meas": meas}
    return cols, truth


def background(rng: np.random.Generator, n_events: int, mean: float) -> tuple[np.ndarray, dict, dict]:
    """Poisson(``mean``) background hits per event, uniform over the sensitive area.

    Returns (event index per hit, hit columns, truth columns). Rows are chosen in proportion to
    their area, then sector, side and a uniform point on the chamber surface; MDT drift radii
    are uniform in the tube, times uniform in ``BACKGROUND_TIME_NS``.
    """
    counts = rng.poisson(mean, n_events) if mean > 0 else np.zeros(n_events, np.int64)
    n = int(counts.sum())
    event = np.repeat(np.arange(n_events), counts)
    L = geo.LAYERS
    prob = L.area / L.area.sum()
    row = rng.choice(len(L), size=n, p=prob)
    sector = rng.integers(1, geo.N_SECTORS + 1, n).astype(np.int32)
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    barrel = L.barrel[row]
    u1, u2 = rng.random(n), rng.random(n)
    # barrel: ρ = R, z uniform; disc: ρ with density ∝ ρ, |z| = Z
    rho = np.where(barrel, L.pos[row], np.sqrt(L.lo[row] ** 2 + u1 * (L.hi[row] ** 2 - L.lo[row] ** 2)))
    z = side * np.where(barrel, u1 * L.hi[row], L.pos[row])
    t = (2 * u2 - 1) * rho * geo.TAN_HALF_SECTOR
    drift = rng.random(n) * geo.TUBE_RADIUS
    time0 = rng.uniform(*BACKGROUND_TIME_NS, n)
    cols, truth = digitize(row, sector, (rho, t, z), rng, drift_true=drift, time0=time0)
    cols["spacePoint_truthLink"] = np.full(n, -1, dtype=np.int32)
    return event, cols, truth
