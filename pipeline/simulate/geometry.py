"""A simplified ATLAS-like muon spectrometer: stations, detector layers and their identifiers.

Why a table: propagation, digitisation and background generation all need the same facts about
a layer (where it is, what it measures, how well), and vectorised numpy code wants them as arrays
indexed by a layer number, not as objects. ``LAYERS`` is that table; one row per *measuring
surface and view* (an RPC gas gap with an η and a φ strip plane is two rows at the same radius).

Conventions (all lengths in metres inside the simulator; the ROOT dump is written in mm):

* 16 azimuthal sectors, sector ``s`` (``stationPhi`` 1..16) centred at φ_s = (s-1)·π/8.
  Chambers are planar: a barrel layer is the plane ρ_s = R, where ρ_s = x cos φ_s + y sin φ_s is
  the distance along the sector's central direction, and |z| < z_max. Sixteen such planes tile a
  regular polygon, so there are no φ gaps. An end-cap layer is the disc |z| = Z with
  ρ_min < ρ_s < ρ_max. The lateral coordinate inside a sector is t = -x sin φ_s + y cos φ_s.
* View 0 measures the bending coordinate (z in the barrel, ρ_s in the end-caps): MDT tubes, RPC η
  strips, TGC wire groups, sTGC and Micromegas strips. These elements run along the lateral
  direction (tubes perpendicular to both r̂ and ẑ). View 1 measures t (RPC φ strips running along
  z, radial TGC strips).
* The element in a hit record is the *readout cell* of the tube or strip that contains the hit: a
  segment of length ``cell`` on a fixed grid along the element (MDT 0.5 m, strips 0.2–0.5 m; in
  the end-caps at most 15 % of ρ along t and 3 % of ρ along ρ, so cells stay small near the beam).
  Real tubes are 1–6 m long; cutting them into fixed cells keeps the Low edge (from which the
  converter derives r, θ, φ, η) a realistic coordinate near the track without centring the
  segment on the true crossing, which would leak the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Technology codes used by the ATLAS dumper (there is no 1; CSC is gone in run 3); names: selection.technology_name.
MDT, RPC, TGC, STGC, MM = 0, 2, 3, 4, 5

# stationIndex codes: small integers in the spirit of ATLAS station names.
BI, BM, BO, EI, EM, EO, NSW = 0, 1, 2, 3, 4, 5, 6

N_SECTORS = 16
HALF_SECTOR = np.pi / N_SECTORS  # half opening angle of a sector
TAN_HALF_SECTOR = float(np.tan(HALF_SECTOR))

# Calorimeter exit surface (the spectrometer starts behind it).
CALO_R = 4.25
CALO_Z = 6.5

# MDT tube geometry.
TUBE_RADIUS = 0.015
TUBE_PITCH = 0.030  # along the measuring coordinate
TUBE_LAYER_SPACING = 0.026  # hexagonal packing of 30 mm tubes
MDT_MAX_DRIFT_TIME = 700.0  # ns at the tube wall

MAX_CHANNEL = 6143  # channel numbers are clipped to 0..MAX_CHANNEL


@dataclass(frozen=True)
class LayerTable:
    """Column arrays, one entry per layer row; see the module docstring for the conventions."""

    barrel: np.ndarray  # bool: plane ρ_s = pos (True) or disc |z| = pos (False)
    pos: np.ndarray  # R or Z of the surface (m)
    lo: np.ndarray  # barrel: unused (0); disc: ρ_min (m)
    hi: np.ndarray  # barrel: |z|_max; disc: ρ_max (m)
    tech: np.ndarray  # technology code
    station: np.ndarray  # stationIndex
    layer: np.ndarray  # layer number inside the station (per technology)
    view: np.ndarray  # 0 bending coordinate, 1 lateral (φ) coordinate
    sigma: np.ndarray  # Gaussian resolution (m); 0 where the pitch quantisation sets it
    pitch: np.ndarray  # tube / strip pitch (m); channel numbering uses it
    quantize: np.ndarray  # bool: position = strip centre (RPC, TGC)
    stagger: np.ndarray  # MDT tube offset of this tube layer along the measuring coordinate (m)
    cell: np.ndarray  # readout-cell length along the element (m)
    chamber: np.ndarray  # chamber length along the stationEta coordinate (m)
    efficiency: np.ndarray  # per-layer hit efficiency

    def __len__(self) -> int:
        return len(self.pos)

    @property
    def resolution(self) -> np.ndarray:
        """Single-hit resolution along the measuring coordinate (m): σ, or pitch/√12."""
        return np.where(self.quantize, self.pitch / np.sqrt(12.0), self.sigma)

    @property
    def area(self) -> np.ndarray:
        """Sensitive area of the row summed over sectors and both detector sides (m²).

        Background hits are spread in proportion to it.
        """
        barrel_area = 2 * self.hi * 2 * self.pos * TAN_HALF_SECTOR * N_SECTORS
        disc_area = 2 * N_SECTORS * TAN_HALF_SECTOR * (self.hi**2 - self.lo**2)
        return np.where(self.barrel, barrel_area, disc_area)


def _build() -> LayerTable:
    rows: list[dict] = []
    counters: dict[tuple[int, int], int] = {}

    def add(barrel: bool, pos: float, lo: float, hi: float, tech: int, station: int, view: int,
            *, sigma: float = 0.0, pitch: float, quantize: bool, stagger: float = 0.0, cell: float,
            chamber: float, eff: float) -> None:
        key = (station, tech)
        layer = counters.get(key, 0)
        counters[key] = layer + 1
        rows.append(dict(barrel=barrel, pos=pos, lo=lo, hi=hi, tech=tech, station=station, layer=layer,
                         view=view, sigma=sigma, pitch=pitch, quantize=quantize, stagger=stagger,
                         cell=cell, chamber=chamber, efficiency=eff))

    def mdt(barrel: bool, station: int, first: list[float], n_tube_layers: int, lo: float, hi: float,
            chamber: float) -> None:
        """Two multilayers of ``n_tube_layers`` tube layers starting at the given positions."""
        for start in first:
            for i in range(n_tube_layers):
                add(barrel, start + i * TUBE_LAYER_SPACING, lo, hi, MDT, station, 0, sigma=80e-6,
                    pitch=TUBE_PITCH, quantize=False, stagger=(i % 2) * TUBE_PITCH / 2, cell=0.5,
                    chamber=chamber, eff=0.97)

    def rpc_gap(pos: float, station: int, zmax: float, chamber: float) -> None:
        """One RPC gas gap: an η strip plane (measures z) and a φ strip plane (measures t)."""
        add(True, pos, 0.0, zmax, RPC, station, 0, pitch=0.030, quantize=True, cell=0.5,
            chamber=chamber, eff=0.96)
        add(True, pos, 0.0, zmax, RPC, station, 1, pitch=0.030, quantize=True, cell=0.2,
            chamber=chamber, eff=0.96)

    def tgc(pos: float, station: int, lo: float, hi: float, views: tuple[int, ...]) -> None:
        """A TGC gap: wire groups (measure ρ, 15 mm pitch → 4.3 mm) and/or radial strips (t)."""
        for v in views:
            add(False, pos, lo, hi, TGC, station, v, pitch=0.015 if v == 0 else 0.020, quantize=True,
                cell=0.5 if v == 0 else 0.2, chamber=1.5, eff=0.96)

    # ---- barrel: BI (in front of the coils), BM (inside), BO (outside); |z| < z_max
    mdt(True, BI, [4.55, 4.72], 4, 0.0, 6.5, chamber=1.0)
    rpc_gap(6.80, BM, 9.5, 1.6)
    rpc_gap(6.82, BM, 9.5, 1.6)
    mdt(True, BM, [7.00, 7.30], 3, 0.0, 9.5, chamber=1.6)
    rpc_gap(7.50, BM, 9.5, 1.6)
    rpc_gap(7.52, BM, 9.5, 1.6)
    mdt(True, BO, [9.60, 9.92], 3, 0.0, 12.0, chamber=2.0)
    rpc_gap(10.20, BO, 12.0, 2.0)
    rpc_gap(10.22, BO, 12.0, 2.0)

    # ---- end-caps, both sides: inner wheel at |z|≈7 (TGC EI, NSW sTGC + MM, EI MDT),
    # big wheel at |z|≈13.4-15 (EM MDT + TGC), outer wheel at |z|≈21.5 (EO MDT)
    tgc(6.95, EI, 1.8, 5.2, (0, 1))
    add(False, 7.05, 0.95, 4.8, STGC, NSW, 0, sigma=100e-6, pitch=0.0032, quantize=False, cell=0.3,
        chamber=1.9, eff=0.95)
    add(False, 7.15, 0.95, 4.8, MM, NSW, 0, sigma=100e-6, pitch=0.00045, quantize=False, cell=0.3,
        chamber=1.9, eff=0.95)
    mdt(False, EI, [7.30, 7.50], 4, 1.0, 5.2, chamber=1.0)
    mdt(False, EM, [13.40, 13.72], 3, 1.8, 12.0, chamber=1.5)
    tgc(14.00, EM, 1.9, 11.5, (0, 1))
    tgc(14.02, EM, 1.9, 11.5, (0,))
    tgc(14.60, EM, 1.9, 11.5, (0, 1))
    tgc(15.00, EM, 1.9, 11.5, (0, 1))
    mdt(False, EO, [21.40, 21.72], 3, 2.5, 12.5, chamber=1.8)

    cols = {k: np.array([r[k] for r in rows]) for k in rows[0]}
    return LayerTable(
        barrel=cols["barrel"].astype(bool), pos=cols["pos"].astype(float), lo=cols["lo"].astype(float),
        hi=cols["hi"].astype(float), tech=cols["tech"].astype(np.int32),
        station=cols["station"].astype(np.int32), layer=cols["layer"].astype(np.int32),
        view=cols["view"].astype(np.int32), sigma=cols["sigma"].astype(float),
        pitch=cols["pitch"].astype(float), quantize=cols["quantize"].astype(bool),
        stagger=cols["stagger"].astype(float), cell=cols["cell"].astype(float),
        chamber=cols["chamber"].astype(float), efficiency=cols["efficiency"].astype(float),
    )


LAYERS = _build()

# Sorted surface positions for crossing detection (searchsorted over barrel radii / disc |z|).
BARREL_ROWS = np.flatnonzero(LAYERS.barrel)
BARREL_ROWS = BARREL_ROWS[np.argsort(LAYERS.pos[BARREL_ROWS], kind="stable")]
BARREL_POS = LAYERS.pos[BARREL_ROWS]
DISC_ROWS = np.flatnonzero(~LAYERS.barrel)
DISC_ROWS = DISC_ROWS[np.argsort(LAYERS.pos[DISC_ROWS], kind="stable")]
DISC_POS = LAYERS.pos[DISC_ROWS]

# The spectrometer volume a muon is followed through.
OUTER_RHO = 12.8
OUTER_Z = 22.5


def sector_of(phi: np.ndarray) -> np.ndarray:
    """Sector number 1..16 whose centre φ_s = (s-1)·π/8 is nearest to φ."""
    return (np.round(np.asarray(phi) / (2 * HALF_SECTOR)).astype(np.int64) % N_SECTORS + 1).astype(np.int32)


_SECTOR_COS = np.cos(np.arange(-1, N_SECTORS) * 2 * HALF_SECTOR)  # index = sector number
_SECTOR_SIN = np.sin(np.arange(-1, N_SECTORS) * 2 * HALF_SECTOR)


def sector_axes(sector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cos φ_s, sin φ_s) of the sectors: n = (c, s, 0) is the normal, l = (-s, c, 0) the lateral axis.

    A table lookup, because digitisation calls it for millions of background hits.
    """
    return _SECTOR_COS[sector], _SECTOR_SIN[sector]
