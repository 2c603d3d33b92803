"""Classical reference fit: q, pT, η, φ of each truth muon from its own hits (field-map χ² fit).

Why: a learned regression must be compared with what a conventional track fit of the *same*
hits achieves; this is that baseline, and it is fast enough to run on every validation shard.

Method (vectorised over muons; segment sums with ``np.bincount``, no Python loop per muon):

1. φ: mean azimuth of the hit elements' midpoints (the toroid does not bend in φ).
2. Each hit element (the Low→High segment) that crosses the muon's r–z plane at a steep angle is a
   *bending* hit; its crossing point gives (r, z). MDT hits are drift circles of radius
   ``driftR`` around that wire point; RPC strips measure z; TGC wire groups, sTGC and MM measure r.
   Technology resolutions: MDT 80 µm (after an annealing schedule that resolves the left/right
   ambiguity: wire-only pre-fit, then 1 mm, 0.3 mm, 0.1 mm), RPC 8.7 mm, TGC 4.3 mm, sTGC/MM 0.1 mm.
3. In a per-muon frame (u along the mean hit direction from the origin, v perpendicular in the
   r–z plane) the trajectory obeys v'' = k·B_φ(r, z)·(1 + v'²)^{3/2} with k = 0.2998·q/p
   (``field.py``). With F(u) = ∫₀ᵘ (u − u')·B·(1 + v'²)^{3/2} du' evaluated along the current
   estimate of the path, v(u) = a + b·u + k·F(u) is *linear* in (a, b, k): weighted linear least
   squares per muon from bincount-summed normal equations, iterated 6 times (path, left/right).
   The intercept a is tied to the vertex with σ = 0.5 m·GeV/p + 2 mm (calorimeter scattering).
4. p at the vertex = 0.2998/|k| + the median calorimeter energy loss (``generate.ELOSS_MEDIAN``,
   2.92 GeV); q = sign k; η from the fitted direction at the origin; pT = p / cosh η.
5. σ(q/pT): the measurement part is the (k, k) element of the inverse normal matrix (the covariance of
   the weighted least squares), carried to q/pT at first order. The χ² has no material terms, so the
   multiple scattering is added in quadrature as a constant relative term ``MS_RELATIVE``·|q/pT|
   (θ₀ ∝ 1/p like the bending, so its share of σ(q/pT)/|q/pT| does not depend on p) and the spread of
   the calorimeter as ``ELOSS_SPREAD``·(q/pT)²/cosh η (an effective σ(p) in GeV).

The calibration of pT is the field map itself (the ∫B dl enters through F): no free constant in pT;
the two constants of step 5 only size σ.
Fits with fewer than 3 bending hits, or a singular system, give NaN.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from ..muon_frame import object_frames
from . import geometry as geo
from .field import C_LIGHT, field_phi
from .generate import ELOSS_MEDIAN

SIGMA_M = {geo.RPC: 0.030 / np.sqrt(12), geo.TGC: 0.015 / np.sqrt(12), geo.STGC: 1e-4, geo.MM: 1e-4}
MDT_SCHEDULE = (0.030 / np.sqrt(12), 1e-3, 3e-4, 1e-4, 1e-4, 1e-4)  # σ per iteration (m)
#: Multiple-scattering share of σ(q/pT)/|q/pT|, and the effective σ(p) in GeV of the calorimeter (its
#: energy-loss spread and, at low p, its scattering): calibrated once so that the fit's pulls have core
#: width 1 from 5 to 600 GeV on an independent simulated sample (docs/physics.md, "Pulls").
MS_RELATIVE = 0.019
ELOSS_SPREAD = 0.35
GRID = 320  # quadrature points along u per muon
CHUNK = 4000  # muons per chunk (bounds the (muons × GRID) arrays)

_NEEDED = ("spacePoint_globEdgeLowX", "spacePoint_globEdgeLowY", "spacePoint_globEdgeLowZ",
           "spacePoint_globEdgeHighX", "spacePoint_globEdgeHighY", "spacePoint_globEdgeHighZ",
           "spacePoint_driftR", "spacePoint_technology", "spacePoint_truthLink")


def _flat(hits: ak.Array, name: str) -> np.ndarray:
    return ak.to_numpy(ak.flatten(hits[name], axis=1))


def fit_tracks(hits: ak.Array, n_muons: np.ndarray | ak.Array | None = None) -> ak.Array:
    """Fit every truth muon of every event; returns ``var * {pt, q, eta, phi, sigma_qpt}`` (float32) per
    event; ``sigma_qpt`` is the fit's σ(q/pT) in GeV⁻¹ (step 5 of the module docstring).

    ``hits``: event-level array whose fields include the raw ``spacePoint_*`` names (either a
    jagged array of hit records or a record of jagged fields, as ``uproot`` returns). Muon ``i``
    of an event is fitted from the hits with ``truthLink == i``. ``n_muons`` (per event) fixes the
    output length; by default it is max(truthLink) + 1. Unfittable muons get NaN in every field.
    """
    counts = ak.to_numpy(ak.num(hits["spacePoint_truthLink"], axis=1)).astype(np.int64)
    n_evt = len(counts)
    cols = {k: _flat(hits, k) for k in _NEEDED}
    event = np.repeat(np.arange(n_evt), counts)
    link = cols["spacePoint_truthLink"].astype(np.int64)
    on = link >= 0
    if n_muons is None:
        n_mu_evt = np.zeros(n_evt, np.int64)
        np.maximum.at(n_mu_evt, event[on], link[on] + 1)
    else:
        n_mu_evt = np.asarray(ak.to_numpy(n_muons) if isinstance(n_muons, ak.Array) else n_muons, dtype=np.int64)
        on &= link < n_mu_evt[event]
    mu_off = np.concatenate([[0], np.cumsum(n_mu_evt)]).astype(np.int64)
    gid = mu_off[event[on]] + link[on]
    lo = np.stack([cols[f"spacePoint_globEdgeLow{c}"][on] for c in "XYZ"], axis=1).astype(float) * 1e-3
    hi = np.stack([cols[f"spacePoint_globEdgeHigh{c}"][on] for c in "XYZ"], axis=1).astype(float) * 1e-3
    res = fit_flat(gid, int(mu_off[-1]), lo, hi, cols["spacePoint_driftR"][on].astype(float) * 1e-3,
                   cols["spacePoint_technology"][on])
    off = ak.index.Index64(mu_off)
    names = ("pt", "q", "eta", "phi", "sigma_qpt")
    rec = ak.contents.RecordArray([ak.contents.NumpyArray(res[k].astype(np.float32)) for k in names], list(names))
    return ak.Array(ak.contents.ListOffsetArray(off, rec))


def fit_flat(gid: np.ndarray, n_mu: int, lo: np.ndarray, hi: np.ndarray, drift: np.ndarray,
             tech: np.ndarray) -> dict[str, np.ndarray]:
    """Fit flat hits (metres) belonging to muons ``gid`` in 0..n_mu-1; see the module docstring."""
    out = {k: np.full(n_mu, np.nan) for k in ("pt", "q", "eta", "phi", "sigma_qpt")}
    order = np.argsort(gid, kind="stable")
    gid, lo, hi, drift, tech = gid[order], lo[order], hi[order], drift[order], tech[order]
    bounds = np.searchsorted(gid, np.arange(0, n_mu + CHUNK, CHUNK))
    for c, (h0, h1) in enumerate(zip(bounds[:-1], bounds[1:], strict=False)):
        m0 = c * CHUNK
        m1 = min(m0 + CHUNK, n_mu)
        if m1 <= m0:
            break
        if h1 > h0:
            part = _fit_chunk(gid[h0:h1] - m0, m1 - m0, lo[h0:h1], hi[h0:h1], drift[h0:h1], tech[h0:h1])
            for k in out:
                out[k][m0:m1] = part[k]
    return out


def _solve3(A: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve symmetric 3×3 systems A x = y (A: (n, 3, 3)) with scaling; returns (x, ok)."""
    d = np.sqrt(np.maximum(np.einsum("nii->ni", A), 1e-300))
    As = A / d[:, :, None] / d[:, None, :]
    ys = y / d
    det = np.linalg.det(As)
    ok = np.isfinite(det) & (np.abs(det) > 1e-12)
    As[~ok] = np.eye(3)
    x = np.linalg.solve(As, ys[:, :, None])[:, :, 0] / d
    return x, ok


def _fit_chunk(g: np.ndarray, n: int, lo: np.ndarray, hi: np.ndarray, drift: np.ndarray,
               tech: np.ndarray) -> dict[str, np.ndarray]:
    def seg(w: np.ndarray, sel: np.ndarray | None = None) -> np.ndarray:
        if sel is None:
            return np.bincount(g, weights=w, minlength=n)
        return np.bincount(g[sel], weights=w, minlength=n)

    # 1–3. azimuth, crossings with the muon's r–z plane and the (u, v) frame: the same geometry the
    # training stage's muon-frame inputs use (pipeline.muon_frame)
    f = object_frames(g, n, lo, hi)
    phi = f.phi
    keep = np.flatnonzero(f.bending & np.isin(tech, (geo.MDT, geo.RPC, geo.TGC, geo.STGC, geo.MM))
                          & np.isfinite(f.r) & np.isfinite(f.z))
    g, drift, tech = g[keep], drift[keep], tech[keep]
    u_i, v_i = f.u[keep], f.v[keep]
    ur, uz = f.ur, f.uz
    nb = np.bincount(g, minlength=n)

    is_mdt = tech == geo.MDT
    is_rpc = tech == geo.RPC
    s_u = np.where(is_rpc, uz[g], ur[g])  # measuring direction along z (RPC) or r (others)
    s_v = np.where(is_rpc, ur[g], -uz[g])
    sig_strip = np.zeros(len(g))
    for code, sig in SIGMA_M.items():
        sig_strip[tech == code] = sig

    umax = np.zeros(n)
    np.maximum.at(umax, g, u_i)
    U = umax * 1.02 + 0.1
    lin = np.linspace(0.0, 1.0, GRID)
    ug = U[:, None] * lin[None, :]
    du = U / (GRID - 1)
    fpos = u_i / du[g]
    i0 = np.clip(np.floor(fpos).astype(np.int64), 0, GRID - 2)
    wgt = np.clip(fpos - i0, 0.0, 1.0)

    a = np.zeros(n)
    b = np.zeros(n)
    k = np.zeros(n)
    v_g = np.zeros_like(ug)
    vp_g = np.zeros_like(ug)
    ok = nb >= 3
    for it, sig_mdt in enumerate(MDT_SCHEDULE):
        rg = ug * ur[:, None] - v_g * uz[:, None]
        zg = ug * uz[:, None] + v_g * ur[:, None]
        gg = field_phi(rg, zg) * (1 + vp_g**2) ** 1.5
        # cumulative trapezoid along u
        G1 = np.concatenate([np.zeros((n, 1)), np.cumsum(0.5 * (gg[:, 1:] + gg[:, :-1]), axis=1)], axis=1) * du[:, None]
        ugg = ug * gg
        G2 = np.concatenate([np.zeros((n, 1)), np.cumsum(0.5 * (ugg[:, 1:] + ugg[:, :-1]), axis=1)], axis=1) * du[:, None]
        F = ug * G1 - G2
        F_i = F[g, i0] * (1 - wgt) + F[g, i0 + 1] * wgt
        G1_i = G1[g, i0] * (1 - wgt) + G1[g, i0 + 1] * wgt
        v_est = a[g] + b[g] * u_i + k[g] * F_i
        vp = b[g] + k[g] * G1_i
        stretch = np.sqrt(1 + vp**2)
        if it == 0:
            y = v_i.copy()
            sig = np.where(is_mdt, sig_mdt, sig_strip)
        else:
            side = np.where(v_i >= v_est, 1.0, -1.0)
            y = np.where(is_mdt, v_i - side * drift * stretch, v_i)
            sig = np.where(is_mdt, sig_mdt * stretch, sig_strip * np.maximum(np.abs(s_v - vp * s_u), 0.05))
        w = 1.0 / sig**2
        p_est = np.where(k != 0, C_LIGHT / np.maximum(np.abs(k), 1e-9), 10.0)
        sig_a = 0.5 / p_est + 0.002
        wa = 1.0 / sig_a**2
        A = np.empty((n, 3, 3))
        A[:, 0, 0] = seg(w) + wa
        A[:, 0, 1] = A[:, 1, 0] = seg(w * u_i)
        A[:, 0, 2] = A[:, 2, 0] = seg(w * F_i)
        A[:, 1, 1] = seg(w * u_i**2)
        A[:, 1, 2] = A[:, 2, 1] = seg(w * u_i * F_i)
        A[:, 2, 2] = seg(w * F_i**2)
        rhs = np.stack([seg(w * y), seg(w * u_i * y), seg(w * F_i * y)], axis=1)
        A[~ok] = np.eye(3)
        x, good = _solve3(A, rhs)
        ok &= good & np.all(np.isfinite(x), axis=1)
        a, b, k = (np.where(ok, x[:, j], 0.0) for j in range(3))
        v_g = a[:, None] + b[:, None] * ug + k[:, None] * F
        vp_g = b[:, None] + k[:, None] * G1

    # 4. parameters at the vertex
    ok &= k != 0
    kk = np.where(ok, k, 1.0)
    p = C_LIGHT / np.abs(kk) + ELOSS_MEDIAN
    dr = ur - b * uz
    dz = uz + b * ur
    eta = np.arcsinh(dz / np.maximum(dr, 1e-9))
    # 5. σ(q/pT): d(1/p)/d|k| = C/(C + E|k|)², 1/pT = cosh η / p; the last A is that of the final weights
    cov_kk = np.linalg.inv(np.where(ok[:, None, None], A, np.eye(3)))[:, 2, 2]
    sigma_meas = np.cosh(eta) * C_LIGHT * np.sqrt(np.maximum(cov_kk, 0.0)) / (C_LIGHT + ELOSS_MEDIAN * np.abs(kk)) ** 2
    inv_pt = np.cosh(eta) / p
    sigma_qpt = np.sqrt(sigma_meas**2 + (MS_RELATIVE * inv_pt) ** 2 + (ELOSS_SPREAD * inv_pt**2 / np.cosh(eta)) ** 2)
    res = {"pt": p / np.cosh(eta), "q": np.sign(kk), "eta": eta, "phi": phi, "sigma_qpt": sigma_qpt}
    for key in res:
        res[key] = np.where(ok, res[key], np.nan)
    return res
