"""Pile-up background: the ~7,200 non-muon hits a muon event carries at ⟨μ⟩ = 200, as columns.

Used by ``simulate --pileup MU`` (``SimConfig.pileup``) in place of the flat background of
``hits.background``. Every hit goes through ``hits.digitize``, so it carries the same identifiers,
edges, covariances and r–t relation as a muon hit on the same element. Components (rates quoted at
MU = 200 and scaled ∝ MU/200, except the δ-electrons, which follow the muon hits; every count is
Poisson per event; ``docs/physics.md`` states what is not modelled):

* **cavern** (``SOURCE_CAVERN``): ``CAVERN_AT_200`` uncorrelated hits. Technology shares ``TECH_SHARE``
  (the hit mix of the users' filtered sample: the only mix the reference gives); inside a technology,
  layer rows in proportion to their area; end-cap discs with density ∝ 1/ρ (rates rise towards the
  beam). Times: ``IN_TIME`` of them from the triggered bunch crossing, ``NEIGHBOUR`` from a crossing
  up to ``NEIGHBOUR_BC`` × 25 ns away, the rest uniform in ``SLOW_NS`` (slow neutrons, photons);
* **δ-electrons / cluster neighbours** (``SOURCE_DELTA``): beside a muon hit with probability
  ``DELTA_PROB`` per technology, one hit 1 (70 %) or 2 tubes (MDT) or 1 strip (RPC, TGC) away in the
  same layer, at the muon's time with a random drift radius. Labelled background (truthLink −1): they
  are not on the muon's trajectory, and the filter's target is "hit on a muon track";
* **fake segments** (``SOURCE_SEGMENT``): ``SEGMENTS_AT_200`` short straight tracks (punch-through,
  soft particles) per event, each through the first 3…all layers of one station (weights
  ``SEGMENT_STATIONS``), pointing to the interaction point within ~``SEGMENT_SPREAD`` rad; half in
  time, half at a cavern time;
* **chamber bursts** (``SOURCE_BURST``): ``BURSTS_AT_200`` per event; ``BURST_MIN`` + geometric(mean
  ``BURST_EXTRA``) hits in one chamber (station × technology × sector × side, one stationEta length),
  at one cavern time with an exponential spread of ``BURST_SPREAD_NS``.

Time and drift radius stay consistent, as in real data where the drift radius comes from the time:
an MDT hit shifted by ``offset`` ns from its in-time value reports the radius of drift time
``rt(r) + offset`` clipped to 0…700 ns (``_shift_time``). All times lie in ``TIME_RANGE_NS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import geometry as geo
from .hits import digitize, local_to_global

MU_REFERENCE = 200.0
CAVERN_AT_200 = 7000.0
SEGMENTS_AT_200 = 30.0
BURSTS_AT_200 = 1.0
BURST_MIN, BURST_EXTRA, BURST_SPREAD_NS = 10, 40.0, 50.0
#: mean background hits per event at MU = 200 (all components; used to size generator batches)
HITS_AT_200 = 7200.0

TECH_SHARE = {geo.MDT: 0.646, geo.TGC: 0.177, geo.RPC: 0.154, geo.STGC: 0.013, geo.MM: 0.010}
DELTA_PROB = {geo.MDT: 0.08, geo.RPC: 0.15, geo.TGC: 0.15}
IN_TIME, NEIGHBOUR, NEIGHBOUR_BC, BUNCH_NS = 0.10, 0.25, 40, 25.0
SLOW_NS = (-950.0, 19000.0)
TIME_RANGE_NS = (-1000.0, 20000.0)
SEGMENT_STATIONS = {geo.BI: 0.25, geo.BM: 0.15, geo.BO: 0.10, geo.EI: 0.25, geo.EM: 0.15, geo.EO: 0.10}
SEGMENT_SPREAD = 0.1  # rad per component of the direction
SEGMENT_IN_TIME = 0.5

SOURCE_MUON, SOURCE_BACKGROUND, SOURCE_DELTA, SOURCE_SEGMENT, SOURCE_BURST = 0, 1, 2, 3, 4
SOURCE_CAVERN = SOURCE_BACKGROUND  # the flat background of hits.background is "cavern" too
C_M_PER_NS = 0.299792458


@dataclass
class MuonHits:
    """The muon hits a batch already has (flat, one entry per hit): where δ-electrons start."""

    event: np.ndarray  # event index in the batch
    row: np.ndarray  # layer row (geometry.LAYERS)
    sector: np.ndarray  # stationPhi 1..16
    local: tuple[np.ndarray, np.ndarray, np.ndarray]  # (ρ_s, t, z) of the crossing, m
    tof: np.ndarray  # time of flight, ns


def _rt(drift_m: np.ndarray) -> np.ndarray:
    """The simulator's MDT r–t relation (``hits.digitize``): drift radius (m) → drift time (ns)."""
    return geo.MDT_MAX_DRIFT_TIME * (np.clip(drift_m, 0, geo.TUBE_RADIUS) / geo.TUBE_RADIUS) ** 1.3


def _rt_inverse(time_ns: np.ndarray) -> np.ndarray:
    return geo.TUBE_RADIUS * (np.clip(time_ns, 0, geo.MDT_MAX_DRIFT_TIME) / geo.MDT_MAX_DRIFT_TIME) ** (1 / 1.3)


def _row_weights(techs: dict[int, float]) -> np.ndarray:
    """Probability per layer row: the technology's share, split over its rows by area."""
    L = geo.LAYERS
    w = np.zeros(len(L))
    for code, share in techs.items():
        m = L.tech == code
        w[m] = share * L.area[m] / L.area[m].sum()
    return w / w.sum()


ROW_WEIGHTS = _row_weights(TECH_SHARE)


def _surface(rng: np.random.Generator, row: np.ndarray) -> tuple[np.ndarray, ...]:
    """(sector, ρ_s, t, z) of uniform points on ``row``'s surfaces; end-cap discs ∝ 1/ρ."""
    L = geo.LAYERS
    n = len(row)
    sector = rng.integers(1, geo.N_SECTORS + 1, n).astype(np.int32)
    side = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    barrel = L.barrel[row]
    u1, u2 = rng.random(n), rng.random(n)
    rho = np.where(barrel, L.pos[row], L.lo[row] + u1 * (L.hi[row] - L.lo[row]))
    z = side * np.where(barrel, u1 * L.hi[row], L.pos[row])
    t = (2 * u2 - 1) * rho * geo.TAN_HALF_SECTOR
    return sector, rho, t, z


def _tof(local: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    rho, t, z = local
    return np.sqrt(rho**2 + t**2 + z**2) / C_M_PER_NS


def _offsets(rng: np.random.Generator, n: int, in_time: float) -> np.ndarray:
    """Time offsets (ns) from the triggered crossing: 0 (fraction ``in_time``), a neighbouring crossing, slow."""
    u = rng.random(n)
    bc = rng.integers(1, NEIGHBOUR_BC + 1, n) * np.where(rng.random(n) < 0.5, -1, 1) * BUNCH_NS
    slow = rng.uniform(*SLOW_NS, n)
    neighbour_cut = in_time + (1 - in_time) * NEIGHBOUR / (1 - IN_TIME)
    return np.where(u < in_time, 0.0, np.where(u < neighbour_cut, bc, slow))


def _shift_time(cols: dict[str, np.ndarray], drift_m: np.ndarray, offset: np.ndarray,
                rng: np.random.Generator) -> None:
    """Move hits by ``offset`` ns; MDT hits report the radius of their shifted drift time (in place)."""
    cols["spacePoint_time"] = np.clip(cols["spacePoint_time"] + offset, *TIME_RANGE_NS).astype(np.float32)
    m = (cols["spacePoint_technology"] == geo.MDT) & (offset != 0)
    r = _rt_inverse(_rt(drift_m[m]) + offset[m]) + rng.standard_normal(int(m.sum())) * 80e-6
    driftr = cols["spacePoint_driftR"].copy()
    driftr[m] = (np.minimum(np.abs(r), geo.TUBE_RADIUS) * 1e3).astype(np.float32)
    cols["spacePoint_driftR"] = driftr


def cavern(rng: np.random.Generator, n_events: int, mu: float) -> tuple[np.ndarray, dict, dict]:
    """Uncorrelated hits: (event index, hit columns, truth columns); see the module docstring."""
    counts = rng.poisson(CAVERN_AT_200 * mu / MU_REFERENCE, n_events)
    n = int(counts.sum())
    row = rng.choice(len(geo.LAYERS), size=n, p=ROW_WEIGHTS)
    sector, *local = _surface(rng, row)
    drift = rng.random(n) * geo.TUBE_RADIUS
    cols, truth = digitize(row, sector, tuple(local), rng, drift_true=drift, time0=_tof(tuple(local)))
    _shift_time(cols, truth["drift"], _offsets(rng, n, IN_TIME), rng)
    return np.repeat(np.arange(n_events), counts), cols, truth


def delta_electrons(rng: np.random.Generator, muon: MuonHits) -> tuple[np.ndarray, dict, dict]:
    """In-time hits in the tube or strip beside a muon hit (one per chosen muon hit)."""
    L = geo.LAYERS
    tech = L.tech[muon.row]
    prob = np.zeros(len(muon.row))
    for code, p in DELTA_PROB.items():
        prob[tech == code] = p
    sel = np.flatnonzero(rng.random(len(prob)) < prob)
    row, sector = muon.row[sel], muon.sector[sel]
    steps = np.where((tech[sel] == geo.MDT) & (rng.random(len(sel)) < 0.3), 2, 1)
    shift = steps * L.pitch[row] * np.where(rng.random(len(sel)) < 0.5, -1.0, 1.0)
    rho, t, z = (c[sel].copy() for c in muon.local)
    view1, barrel = L.view[row] == 1, L.barrel[row]
    t[view1] += shift[view1]
    z[~view1 & barrel] += shift[~view1 & barrel]
    rho[~view1 & ~barrel] += shift[~view1 & ~barrel]
    drift = rng.random(len(sel)) * geo.TUBE_RADIUS
    cols, truth = digitize(row, sector, (rho, t, z), rng, drift_true=drift, time0=muon.tof[sel])
    return muon.event[sel], cols, truth


def _station_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(station codes, rows per station padded with -1 and ordered outwards, row count per station)."""
    L = geo.LAYERS
    codes = np.array(list(SEGMENT_STATIONS), dtype=np.int32)
    lists = [np.flatnonzero(L.station == c) for c in codes]
    lists = [r[np.argsort(L.pos[r], kind="stable")] for r in lists]
    width = max(len(r) for r in lists)
    table = np.full((len(codes), width), -1, dtype=np.int64)
    for i, r in enumerate(lists):
        table[i, :len(r)] = r
    return codes, table, np.array([len(r) for r in lists])


STATION_CODES, STATION_ROWS, STATION_NROWS = _station_rows()


def segments(rng: np.random.Generator, n_events: int, mu: float) -> tuple[np.ndarray, dict, dict]:
    """Short straight tracks through one station, roughly pointing to the interaction point."""
    L = geo.LAYERS
    counts = rng.poisson(SEGMENTS_AT_200 * mu / MU_REFERENCE, n_events)
    n = int(counts.sum())
    w = np.array(list(SEGMENT_STATIONS.values()))
    st = rng.choice(len(STATION_CODES), size=n, p=w / w.sum())
    rows = STATION_ROWS[st]  # (n, K)
    sector, rho0, t0, z0 = _surface(rng, rows[:, 0])
    d = np.stack([rho0, t0, z0], axis=1)
    d = d / np.linalg.norm(d, axis=1, keepdims=True) + SEGMENT_SPREAD * rng.standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    keep = rng.integers(3, STATION_NROWS[st] + 1)
    offset = np.where(rng.random(n) < SEGMENT_IN_TIME, 0.0, _offsets(rng, n, 0.0))

    safe = np.maximum(rows, 0)
    barrel = L.barrel[safe]
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(barrel, (L.pos[safe] - rho0[:, None]) / d[:, :1],
                       (np.sign(z0)[:, None] * L.pos[safe] - z0[:, None]) / d[:, 2:])
    rho, t, z = (c[:, None] + lam * d[:, i:i + 1] for i, c in enumerate((rho0, t0, z0)))
    ok = (rows >= 0) & (np.arange(rows.shape[1]) < keep[:, None]) & np.isfinite(lam) & (lam >= -1e-9)
    ok &= np.where(barrel, np.abs(z) <= L.hi[safe], (rho >= L.lo[safe]) & (rho <= L.hi[safe]))
    ok &= np.abs(t) <= rho * geo.TAN_HALF_SECTOR
    ok &= rng.random(rows.shape) < L.efficiency[safe]
    seg, col = np.nonzero(ok)
    row = rows[seg, col]
    local = (rho[seg, col], t[seg, col], z[seg, col])
    direction = local_to_global(d[seg, 0], d[seg, 1], d[seg, 2], sector[seg])
    cols, truth = digitize(row, sector[seg], local, rng, direction=direction, time0=_tof(local))
    _shift_time(cols, truth["drift"], offset[seg], rng)
    return np.repeat(np.arange(n_events), counts)[seg], cols, truth


def bursts(rng: np.random.Generator, n_events: int, mu: float) -> tuple[np.ndarray, dict, dict]:
    """Many hits in one chamber at one time (a shower or a noisy chamber)."""
    L = geo.LAYERS
    counts = rng.poisson(BURSTS_AT_200 * mu / MU_REFERENCE, n_events)
    nb = int(counts.sum())
    row0 = rng.choice(len(L), size=nb, p=ROW_WEIGHTS)
    sector0, rho0, _, z0 = _surface(rng, row0)
    size = BURST_MIN - 1 + rng.geometric(1.0 / BURST_EXTRA, nb)
    burst_time = _offsets(rng, nb, IN_TIME)
    b = np.repeat(np.arange(nb), size)
    n = len(b)
    # a random row of the same station and technology as the burst's first row
    same = (L.station[None, :] == L.station[row0][:, None]) & (L.tech[None, :] == L.tech[row0][:, None])
    cum = np.cumsum(same, axis=1)
    pick = (rng.random(n) * cum[b, -1]).astype(np.int64)
    row = np.argmax(cum[b] > pick[:, None], axis=1)
    barrel = L.barrel[row]
    spread = (rng.random(n) - 0.5) * L.chamber[row]
    rho = np.where(barrel, L.pos[row], np.clip(rho0[b] + spread, L.lo[row], L.hi[row]))
    z = np.where(barrel, np.clip(z0[b] + spread, -L.hi[row], L.hi[row]), np.sign(z0[b]) * L.pos[row])
    t = (2 * rng.random(n) - 1) * rho * geo.TAN_HALF_SECTOR
    drift = rng.random(n) * geo.TUBE_RADIUS
    local = (rho, t, z)
    cols, truth = digitize(row, sector0[b], local, rng, drift_true=drift, time0=_tof(local))
    _shift_time(cols, truth["drift"], burst_time[b] + rng.exponential(BURST_SPREAD_NS, n), rng)
    return np.repeat(np.arange(n_events), counts)[b], cols, truth


def pileup_background(rng: np.random.Generator, n_events: int, mu: float,
                      muon: MuonHits) -> tuple[np.ndarray, dict, dict]:
    """All components for ``n_events`` events at ⟨μ⟩ = ``mu``: (event index per hit, hit columns, truth).

    The truth columns add ``source`` (int8: ``SOURCE_*``) per hit; every hit's truthLink is −1.
    """
    parts = [(SOURCE_CAVERN, cavern(rng, n_events, mu)), (SOURCE_DELTA, delta_electrons(rng, muon)),
             (SOURCE_SEGMENT, segments(rng, n_events, mu)), (SOURCE_BURST, bursts(rng, n_events, mu))]
    event = np.concatenate([p[0] for _, p in parts])
    cols = {k: np.concatenate([p[1][k] for _, p in parts]) for k in parts[0][1][1]}
    cols["spacePoint_truthLink"] = np.full(len(event), -1, dtype=np.int32)
    truth = {k: np.concatenate([p[2][k] for _, p in parts]) for k in parts[0][1][2]}
    truth["source"] = np.concatenate([np.full(len(p[0]), s, np.int8) for s, p in parts])
    return event, cols, truth


def readout_order(event: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
    """Hit order per event as a detector reads out: technology, station, sector, stationEta, layer, channel.

    Muon and background hits are interleaved, so a hit's position in the event says nothing about
    its truth. Returns the permutation (stable for hits on the same channel).
    """
    key = event.astype(np.int64) << 36
    for name, shift, off in (("spacePoint_technology", 33, 0), ("spacePoint_stationIndex", 29, 0),
                             ("spacePoint_stationPhi", 24, 0), ("spacePoint_stationEta", 18, 32),
                             ("spacePoint_layer", 13, 0)):
        key |= (cols[name].astype(np.int64) + off) << shift
    key |= cols["spacePoint_channel"].astype(np.int64)
    return np.argsort(key, kind="stable")
