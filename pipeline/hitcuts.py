"""The simple-cut hit filter: the baseline a learned hit filter has to beat (numpy only).

Two cuts on flat hit columns (one entry per hit; any event order):

1. **time window**: t − s/c (s: distance of the Low edge from the origin, c = 299.79 mm/ns) within
   ±``window_ns`` of the triggered crossing; MDT hits get ``mdt_drift_ns`` more on the late side
   (their time includes the drift, up to ~700 ns);
2. **segment road**: a hit is kept when at least ``min_compatible`` hits that pass the time window
   (itself included) lie in its road: same event, stationIndex, stationPhi and side (sign of
   stationEta), with |Δη| ≤ ``road_eta`` (η of the Low edge; a track from the interaction point
   crosses a station at almost constant η). ``min_compatible = 1`` is the time window alone.
   Optionally, chambers (event, stationIndex, stationPhi, stationEta) with more than
   ``max_chamber_hits`` in-window hits are dropped (bursts).

:func:`scan` runs a grid of parameters and returns per-hit efficiency, purity, background rejection
and the fraction of muons keeping ≥ 3 hits for each; :func:`best_at` picks the purest point that
keeps a muon-hit efficiency. Works on a converted dataset (:meth:`HitColumns.from_table` on the
``hits`` column) as on simulated arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

MDT = 0  # technology code of the MDT drift tubes in the dumps
C_MM_PER_NS = 299.792458


@dataclass(frozen=True)
class CutParams:
    """One point of the cut: see the module docstring."""

    window_ns: float = 25.0
    mdt_drift_ns: float = 750.0
    road_eta: float = 0.05
    min_compatible: int = 3
    max_chamber_hits: int | None = None


@dataclass
class HitColumns:
    """Flat hit columns, shape (n_hits,): event index, time (ns), Low edge x/y/z (mm), identifiers."""

    event: np.ndarray
    time: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    technology: np.ndarray
    station_index: np.ndarray
    station_phi: np.ndarray
    station_eta: np.ndarray
    truth_link: np.ndarray | None = None  # -1 background, >= 0 the muon's index in its event

    def __post_init__(self) -> None:
        n = len(self.event)
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and len(value) != n:
                raise ValueError(f"hit column {f.name} has {len(value)} entries, event has {n}")

    @classmethod
    def from_table(cls, table, column: str = "hits") -> HitColumns:
        """From an Arrow table with the dataset's list<struct> ``hits`` column (``read_dataset``)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        hits = table[column].combine_chunks() if isinstance(table[column], pa.ChunkedArray) else table[column]
        flat = pc.list_flatten(hits)
        event = pc.list_parent_indices(hits).to_numpy().astype(np.int64)

        def col(name: str) -> np.ndarray:
            return flat.field(name).to_numpy(zero_copy_only=False)

        return cls(event, col("spacePoint_time"), col("spacePoint_globEdgeLowX"), col("spacePoint_globEdgeLowY"),
                   col("spacePoint_globEdgeLowZ"), col("spacePoint_technology"), col("spacePoint_stationIndex"),
                   col("spacePoint_stationPhi"), col("spacePoint_stationEta"), col("spacePoint_truthLink"))

    def time_residual(self) -> np.ndarray:
        """t − s/c in ns (float64): 0 for a prompt hit of the triggered crossing, + drift time for MDT."""
        x, y, z = (np.asarray(v, dtype=np.float64) for v in (self.x, self.y, self.z))
        return np.asarray(self.time, dtype=np.float64) - np.sqrt(x * x + y * y + z * z) / C_MM_PER_NS

    def eta(self) -> np.ndarray:
        """η of the Low edge, asinh(z / r), float64."""
        x, y, z = (np.asarray(v, dtype=np.float64) for v in (self.x, self.y, self.z))
        return np.arcsinh(z / np.hypot(x, y))


def _key(parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Dense group ids of the tuples of integer columns; ``parts`` = (column, bits) after the event."""
    key = np.zeros(len(parts[0][0]), dtype=np.int64)
    for values, bits in parts:
        v = np.asarray(values, dtype=np.int64)
        if len(v) and (v.min() < 0 or v.max() >= 1 << bits):
            raise ValueError(f"identifier out of range 0..{(1 << bits) - 1} after offset: {v.min()}..{v.max()}")
        key = (key << bits) | v
    return np.unique(key, return_inverse=True)[1].reshape(-1)


def in_time(hits: HitColumns, window_ns: float, mdt_drift_ns: float) -> np.ndarray:
    """Boolean mask of the time window (see the module docstring)."""
    dt = hits.time_residual()
    late = window_ns + np.where(np.asarray(hits.technology) == MDT, mdt_drift_ns, 0.0)
    return (dt >= -window_ns) & (dt <= late)


def road_counts(hits: HitColumns, selected: np.ndarray, road_eta: float) -> np.ndarray:
    """Per hit: the selected hits in its road (|Δη| ≤ road_eta in its event/station/sector/side), itself included.

    Hits that are not selected get 0. Vectorised: one sort by (group, η), two ``searchsorted``; groups
    are kept apart by a spacing larger than any η difference, so the count is exact up to the float64
    rounding of ``group × spacing + η`` (≈ 1e-8 at a million groups).
    """
    idx = np.flatnonzero(selected)
    out = np.zeros(len(selected), dtype=np.int64)
    if not len(idx):
        return out
    side = (np.asarray(hits.station_eta)[idx] >= 0).astype(np.int64)
    group = _key([(np.asarray(hits.event)[idx], 32), (np.asarray(hits.station_index)[idx], 11),
                  (np.asarray(hits.station_phi)[idx], 8), (side, 1)])
    eta = hits.eta()[idx]
    spacing = 2 * (np.max(np.abs(eta)) + road_eta) + 1.0
    v = group * spacing + eta
    s = np.sort(v)
    out[idx] = np.searchsorted(s, v + road_eta, side="right") - np.searchsorted(s, v - road_eta, side="left")
    return out


def chamber_counts(hits: HitColumns, selected: np.ndarray) -> np.ndarray:
    """Per hit: the selected hits in its chamber (event, stationIndex, stationPhi, stationEta); 0 if not selected."""
    idx = np.flatnonzero(selected)
    out = np.zeros(len(selected), dtype=np.int64)
    if not len(idx):
        return out
    group = _key([(np.asarray(hits.event)[idx], 32), (np.asarray(hits.station_index)[idx], 11),
                  (np.asarray(hits.station_phi)[idx], 8), (np.asarray(hits.station_eta)[idx] + 64, 8)])
    out[idx] = np.bincount(group)[group]
    return out


def select(hits: HitColumns, params: CutParams) -> np.ndarray:
    """The kept hits (bool, shape (n_hits,)) at one parameter point."""
    keep = in_time(hits, params.window_ns, params.mdt_drift_ns)
    if params.max_chamber_hits is not None:
        keep &= chamber_counts(hits, keep) <= params.max_chamber_hits
    if params.min_compatible > 1:
        keep &= road_counts(hits, keep, params.road_eta) >= params.min_compatible
    return keep


def metrics(keep: np.ndarray, event: np.ndarray, link: np.ndarray, min_hits: int = 3) -> dict[str, float]:
    """Per-hit efficiency (kept muon hits / muon hits), purity (kept muon hits / kept hits), background
    rejection (dropped background / background), kept hits per event, and the fraction of muons with
    ≥ ``min_hits`` hits before the cut that keep ≥ ``min_hits`` (``muons_kept``)."""
    keep = np.asarray(keep, dtype=bool)
    link = np.asarray(link)
    event = np.asarray(event, dtype=np.int64)
    muon = link >= 0
    n_mu, n_bkg, n_keep = int(muon.sum()), int((~muon).sum()), int(keep.sum())
    kept_mu = int((keep & muon).sum())
    mid = np.unique(event[muon] * (int(link.max(initial=0)) + 1) + link[muon], return_inverse=True)[1].reshape(-1)
    before = np.bincount(mid)
    after = np.bincount(mid, weights=keep[muon], minlength=len(before))
    eligible = before >= min_hits
    n_events = len(np.unique(event)) if len(event) else 0
    return {
        "efficiency": kept_mu / n_mu if n_mu else float("nan"),
        "purity": kept_mu / n_keep if n_keep else float("nan"),
        "rejection": (n_bkg - (n_keep - kept_mu)) / n_bkg if n_bkg else float("nan"),
        "hits_per_event": n_keep / n_events if n_events else float("nan"),
        "muons_kept": float((after[eligible] >= min_hits).mean()) if eligible.any() else float("nan"),
    }


def scan(hits: HitColumns, windows_ns: list[float], roads_eta: list[float], min_compatible: list[int], *,
         mdt_drift_ns: float = 750.0, max_chamber_hits: list[int | None] | None = None) -> list[dict]:
    """Metrics for every parameter point of the grid (needs ``hits.truth_link``): one dict per point
    with the parameters (``CutParams`` fields) and the :func:`metrics`."""
    if hits.truth_link is None:
        raise ValueError("scan needs truth links (HitColumns.truth_link) to measure efficiency and purity")
    rows = []
    for w in windows_ns:
        window = in_time(hits, w, mdt_drift_ns)
        for cap in max_chamber_hits or [None]:
            base = window if cap is None else window & (chamber_counts(hits, window) <= cap)
            for road in roads_eta:
                counts = road_counts(hits, base, road) if any(k > 1 for k in min_compatible) else None
                for k in min_compatible:
                    keep = base if k <= 1 else counts >= k
                    params = CutParams(w, mdt_drift_ns, road, k, cap)
                    rows.append({**params.__dict__, **metrics(keep, hits.event, hits.truth_link)})
    return rows


def best_at(rows: list[dict], efficiency: float) -> dict | None:
    """The purest scan point with a muon-hit efficiency ≥ ``efficiency`` (None if no point reaches it)."""
    ok = [r for r in rows if r["efficiency"] >= efficiency]
    return max(ok, key=lambda r: (r["purity"], r["efficiency"])) if ok else None
