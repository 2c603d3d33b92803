"""The event generator: truth muons → calorimeter → toroid → hits, plus background, as arrays.

Chain per batch of events (all vectorised over muons / hits):

1. truth muons: multiplicity from ``muons_per_event``; pT log-uniform or falling (∝ pT⁻²) in
   [pt_min, pt_max]; η uniform in |η| ≤ max_abs_eta; φ uniform in (-π, π]; q = ±1; from (0, 0, 0);
2. straight line to the calorimeter exit (r = 4.25 m or |z| = 6.5 m; the solenoid is ignored);
3. calorimeter: energy loss = 2.8 GeV + 0.15 GeV × Moyal (a Landau approximation, mean ≈ 3 GeV,
   tail capped at +6 GeV); muons left with p < 0.5 GeV range out and leave no hits (they stay
   truth muons). Multiple scattering θ₀ = 0.16 GeV/p (p at the vertex) applied as angle kick plus
   the correlated lateral offset of a 2 m thick scatterer;
4. ``field.propagate``: RK4 in the toroid with spectrometer multiple scattering (0.3 X₀/m, ≈1.7 X₀ from BI to BO);
5. acceptance (|z| and ρ extents, see ``geometry``), per-layer efficiency (95–97 %),
   digitisation (``hits.digitize``), Poisson background (``hits.background``) or, with
   ``pileup`` > 0, the pile-up model of ``pileup`` (hits then in readout order).

Seeds: batch ``b`` of a run uses ``SeedSequence(seed, spawn_key=(stream, b))``; the batch size is a
function of the configuration (``batch_events``), so the arrays depend only on (seed, stream, options).
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from . import geometry as geo
from .field import propagate
from .hits import HIT_FIELDS, background, digitize, to_local
from .pileup import HITS_AT_200, MU_REFERENCE, MuonHits, pileup_background, readout_order

BATCH_EVENTS = 2000  # events per generator batch at low background (part of the seed → array contract)
BATCH_HITS = 1_000_000  # approximate hits per batch at high background (bounds memory)

ELOSS_MPV = 2.8  # GeV, calorimeter energy-loss location
ELOSS_XI = 0.15  # GeV, Landau/Moyal width
ELOSS_TAIL_CAP = 40.0  # Moyal variable cap (×ξ = 6 GeV)
# Median of the loss: what the reference fit adds back (Moyal median = -ln(2·erfinv(1/2)²) ≈ 0.787).
ELOSS_MEDIAN = ELOSS_MPV + ELOSS_XI * 0.7869
CALO_MS = 0.16  # θ₀·p in GeV·rad
CALO_THICKNESS = 2.0  # m, for the lateral offset that goes with the kick
RANGE_OUT_P = 0.5  # GeV

TRUTH_FIELDS = ("truthMuon_pt", "truthMuon_eta", "truthMuon_phi", "truthMuon_q")


@dataclass(frozen=True)
class SimConfig:
    """Generator settings; defaults describe a pile-up-free ATLAS-like sample."""

    muon_counts: tuple[int, ...] = (1, 2)
    muon_weights: tuple[float, ...] = (0.25, 0.75)
    pt_min: float = 3.0
    pt_max: float = 300.0
    pt_spectrum: str = "log-uniform"  # or "falling" (dN/dpT ∝ pT^-2)
    max_abs_eta: float = 2.8
    background_per_event: float = 300.0
    pileup: float = 0.0  # ⟨μ⟩ of the pile-up model (pileup.py); > 0 replaces background_per_event
    multiple_scattering: bool = True
    energy_loss: bool = True
    smear: bool = True
    inefficiency: bool = True

    def __post_init__(self) -> None:
        if self.pt_spectrum not in ("log-uniform", "falling"):
            raise ValueError(f"pt_spectrum must be 'log-uniform' or 'falling', not {self.pt_spectrum!r}")
        if not 0 < self.pt_min < self.pt_max:
            raise ValueError(f"need 0 < pt_min < pt_max, got {self.pt_min}, {self.pt_max}")
        if not 0 < self.max_abs_eta <= 4:
            raise ValueError(f"max_abs_eta must be in (0, 4], got {self.max_abs_eta}")
        if self.background_per_event < 0:
            raise ValueError("background_per_event must be >= 0")
        if not 0 <= self.pileup < float("inf"):
            raise ValueError(f"pileup must be a finite number >= 0, got {self.pileup}")
        if len(self.muon_counts) != len(self.muon_weights) or not self.muon_counts:
            raise ValueError("muon_counts and muon_weights must have the same non-zero length")
        if min(self.muon_counts) < 0 or min(self.muon_weights) < 0 or sum(self.muon_weights) <= 0:
            raise ValueError("muon counts and weights must be non-negative with a positive sum")


@dataclass
class Batch:
    """Flat columns of a batch of events (numpy), ready for awkward or uproot."""

    hit_offsets: np.ndarray  # int64, n_events + 1
    hits: dict[str, np.ndarray]
    truth_offsets: np.ndarray
    truth: dict[str, np.ndarray]
    event_number: np.ndarray
    hit_truth: dict[str, np.ndarray] | None = None  # per hit, metres (only with truth=True)

    @property
    def n_events(self) -> int:
        return len(self.event_number)


def _sample_pt(rng: np.random.Generator, n: int, cfg: SimConfig) -> np.ndarray:
    u = rng.random(n)
    if cfg.pt_spectrum == "log-uniform":
        return cfg.pt_min * (cfg.pt_max / cfg.pt_min) ** u
    # dN/dpT ∝ pT^-2: inverse CDF of 1/pT uniform
    return 1.0 / (1.0 / cfg.pt_min - u * (1.0 / cfg.pt_min - 1.0 / cfg.pt_max))


def _perp_axes(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to the unit vectors ``u`` (n, 3) and to each other."""
    ref = np.where(np.abs(u[:, 2:3]) < 0.9, np.array([[0.0, 0.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
    e1 = np.cross(u, ref)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1, np.cross(u, e1)


def simulate_batch(rng: np.random.Generator, n_events: int, cfg: SimConfig, first_event: int = 0,
                   truth: bool = False) -> Batch:
    """Simulate ``n_events`` events with ``rng``; see the module docstring for the chain."""
    weights = np.asarray(cfg.muon_weights, dtype=float)
    n_mu_evt = rng.choice(np.asarray(cfg.muon_counts), size=n_events, p=weights / weights.sum())
    n_mu = int(n_mu_evt.sum())
    mu_event = np.repeat(np.arange(n_events), n_mu_evt)
    truth_offsets = np.concatenate([[0], np.cumsum(n_mu_evt)]).astype(np.int64)
    link = (np.arange(n_mu) - truth_offsets[mu_event]).astype(np.int32)

    pt = _sample_pt(rng, n_mu, cfg)
    eta = rng.uniform(-cfg.max_abs_eta, cfg.max_abs_eta, n_mu)
    phi = np.pi - rng.random(n_mu) * 2 * np.pi  # (-π, π]
    q = np.where(rng.random(n_mu) < 0.5, -1, 1).astype(np.int32)

    p = pt * np.cosh(eta)
    theta = 2 * np.arctan(np.exp(-eta))
    u = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    # straight to the calorimeter exit
    s_calo = np.minimum(geo.CALO_R / np.maximum(np.sin(theta), 1e-9), geo.CALO_Z / np.maximum(np.abs(np.cos(theta)), 1e-9))
    x = u * s_calo[:, None]
    if cfg.energy_loss:
        moyal = np.minimum(-np.log(np.maximum(rng.standard_normal(n_mu) ** 2, 1e-300)), ELOSS_TAIL_CAP)
        p_spec = p - (ELOSS_MPV + ELOSS_XI * moyal)
    else:
        p_spec = p.copy()
    if cfg.multiple_scattering:
        theta0 = CALO_MS / p
        e1, e2 = _perp_axes(u)
        z1 = rng.standard_normal((n_mu, 2))
        z2 = rng.standard_normal((n_mu, 2))
        # PDG: θ_plane = z2·θ₀, y_plane = (z1/√12 + z2/2)·x·θ₀ for a scatterer of thickness x
        ang = z2 * theta0[:, None]
        off = (z1 / np.sqrt(12.0) + z2 / 2.0) * (theta0 * CALO_THICKNESS)[:, None]
        x = x + off[:, :1] * e1 + off[:, 1:] * e2
        u = u + ang[:, :1] * e1 + ang[:, 1:] * e2
        u /= np.linalg.norm(u, axis=1, keepdims=True)
    alive = p_spec > RANGE_OUT_P
    idx = np.flatnonzero(alive)
    sector = geo.sector_of(np.arctan2(x[:, 1], x[:, 0]))
    cr = propagate(x[idx], u[idx], (q[idx] / p_spec[idx]), sector[idx],
                   rng if cfg.multiple_scattering else None)
    mu = idx[cr.muon]
    rho_s = np.einsum("ij,ij->i", cr.pos[:, :2], np.stack(geo.sector_axes(sector[mu]), axis=1))
    L = geo.LAYERS
    accept = np.where(L.barrel[cr.row], np.abs(cr.pos[:, 2]) <= L.hi[cr.row],
                      (rho_s >= L.lo[cr.row]) & (rho_s <= L.hi[cr.row]))
    if cfg.inefficiency:
        accept &= rng.random(len(mu)) < L.efficiency[cr.row]
    sel = np.flatnonzero(accept)
    mu, row = mu[sel], cr.row[sel]
    tof = (s_calo[mu] + cr.path[sel]) / 0.299792458
    local = to_local(cr.pos[sel], sector[mu])
    cols, htruth = digitize(row, sector[mu], local, rng, direction=cr.dir[sel], time0=tof, smear=cfg.smear)
    cols["spacePoint_truthLink"] = link[mu]
    hit_event = mu_event[mu]

    if cfg.pileup > 0:
        muon_hits = MuonHits(hit_event, row, sector[mu], local, tof)
        bkg_event, bcols, btruth = pileup_background(rng, n_events, cfg.pileup, muon_hits)
    else:
        bkg_event, bcols, btruth = background(rng, n_events, cfg.background_per_event)
    event = np.concatenate([hit_event, bkg_event])
    hits = {k: np.concatenate([cols[k], bcols[k]]) for k in HIT_FIELDS}
    # without pile-up, per event: muon hits (in crossing order), then background; with it, readout order
    order = readout_order(event, hits) if cfg.pileup > 0 else np.argsort(event, kind="stable")
    hits = {k: v[order] for k, v in hits.items()}
    hit_offsets = np.concatenate([[0], np.cumsum(np.bincount(event, minlength=n_events))]).astype(np.int64)
    hit_truth = None
    if truth:
        pos_all = np.concatenate([cr.pos[sel], np.full((len(bkg_event), 3), np.nan)])[order]
        hit_truth = {k: np.concatenate([htruth[k], btruth[k]])[order] for k in htruth}
        hit_truth.update(x=pos_all[:, 0], y=pos_all[:, 1], z_global=pos_all[:, 2])
        bkg_source = btruth.get("source", np.ones(len(bkg_event), np.int8))
        hit_truth["source"] = np.concatenate([np.zeros(len(hit_event), np.int8), bkg_source])[order]

    truth_cols = {
        "truthMuon_pt": pt.astype(np.float32),
        "truthMuon_eta": eta.astype(np.float32),
        "truthMuon_phi": phi.astype(np.float32),
        "truthMuon_q": q,
    }
    return Batch(hit_offsets, hits, truth_offsets, truth_cols,
                 np.arange(first_event, first_event + n_events, dtype=np.int64), hit_truth)


def iter_batches(n_events: int, seed: int, cfg: SimConfig, *, stream: int = 0, first_event: int = 0,
                 truth: bool = False):
    """Yield :class:`Batch` objects of :func:`batch_events` events each (bounded memory)."""
    size = batch_events(cfg)
    for b, start in enumerate(range(0, n_events, size)):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(stream, b))))
        yield simulate_batch(rng, min(size, n_events - start), cfg, first_event + start, truth)


def batch_events(cfg: SimConfig) -> int:
    """Events per batch: 2000, fewer when background makes events big (~1 M hits per batch).

    A function of the configuration only, so the same seed and options give the same arrays.
    """
    background = HITS_AT_200 * cfg.pileup / MU_REFERENCE if cfg.pileup > 0 else cfg.background_per_event
    return int(np.clip(BATCH_HITS // (background + 60), 100, BATCH_EVENTS))


def _jagged(offsets: np.ndarray, columns: dict[str, np.ndarray]) -> dict[str, ak.Array]:
    off = ak.index.Index64(offsets)
    return {k: ak.Array(ak.contents.ListOffsetArray(off, ak.contents.NumpyArray(v))) for k, v in columns.items()}


def batch_to_awkward(batch: Batch) -> ak.Array:
    """Event-level array with the dump's branch names as fields (as ``tree.arrays()`` returns)."""
    fields = {**_jagged(batch.hit_offsets, batch.hits), **_jagged(batch.truth_offsets, batch.truth),
              "eventNumber": batch.event_number}
    if batch.hit_truth is not None:
        fields.update({f"truth_{k}": v for k, v in _jagged(batch.hit_offsets, batch.hit_truth).items()})
    return ak.zip(fields, depth_limit=1)


def simulate_events(n_events: int, seed: int = 0, config: SimConfig | None = None, *, stream: int = 0,
                    first_event: int = 0, truth: bool = False) -> ak.Array:
    """Simulate ``n_events`` events and return them as one awkward array (fields = branch names).

    ``truth=True`` adds per-hit ``truth_*`` fields in metres (crossing point x/y/z_global, local
    rho/t/z, true drift radius ``drift``, measured coordinate ``meas``; NaN/0 for background)
    that are never written to ROOT; tests use them to check resolutions.
    """
    if n_events <= 0:
        raise ValueError(f"n_events must be positive, got {n_events}")
    cfg = config or SimConfig()
    parts = [batch_to_awkward(b) for b in iter_batches(n_events, seed, cfg, stream=stream,
                                                       first_event=first_event, truth=truth)]
    return parts[0] if len(parts) == 1 else ak.concatenate(parts)
