"""Toroidal field map and vectorised muon propagation through the spectrometer.

The field is purely azimuthal, B = B_φ(r, z)·φ̂, so a muon bends in its r–z plane: with α the
direction angle in that plane (from r̂ towards ẑ), dα/ds = 0.2998·q·B_φ/p for every region and
either sign of z. The reference fit (``fit.py``) relies on exactly this, and on the same map.

Map (numbers from ``docs/physics.md``):

* barrel toroid: B_φ = 3.9 T·m / r for 4.7 < r < 10 m, |z| < 12 m (∫B dl ≈ 2.9 T·m at η = 0);
* end-cap toroids: B_φ = 3.8 T·m / r for 1.65 < r < 10.7 m, 8 < |z| < 13 m;
* where both regions overlap the larger applies, and the field is scaled down by up to 70 % in
  the transition 1.4 < |η| < 1.6 (η of the field point), where the real fields partly cancel;
* region edges are smooth (tanh, 5 cm), so a fixed-step integrator and the fit's quadrature see
  a continuous field.

Propagation is a fixed-step RK4 for dx/ds = û, dû/ds = 0.2998·(q/p)·û × B, vectorised over all
muons (a Python loop over steps only). Multiple scattering in the spectrometer is applied as a
Gaussian kick after each step (PDG/Highland θ₀ for the step's share of ``ms_x0_per_m``).
Crossings of layer surfaces are found by ``searchsorted`` of the sector-normal distance ρ_s and
of |z| against the sorted layer positions, and interpolated linearly inside the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import geometry as geo

C_LIGHT = 0.299792458  # GeV / (T·m) per unit charge; also m/ns
EDGE = 0.05  # m, softness of the field-region edges


def _inside(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Smooth indicator of lo < x < hi."""
    return 0.25 * (1 + np.tanh((x - lo) / EDGE)) * (1 + np.tanh((hi - x) / EDGE))


def field_phi(r: np.ndarray, z: np.ndarray) -> np.ndarray:
    """B_φ in tesla at radius ``r`` and ``z`` (metres); arrays broadcast."""
    r = np.maximum(np.asarray(r, dtype=float), 1e-3)
    az = np.abs(z)
    barrel = 3.9 * _inside(r, 4.7, 10.0) * _inside(az, -12.0, 12.0)
    endcap = 3.8 * _inside(r, 1.65, 10.7) * _inside(az, 8.0, 13.0)
    eta = np.arcsinh(az / r)
    dip = 1.0 - 0.7 * np.exp(-0.5 * ((eta - 1.5) / 0.07) ** 2)
    return np.maximum(barrel, endcap) * dip / r


def _b_vector(x: np.ndarray) -> np.ndarray:
    """Field vector (N, 3) at positions ``x`` (N, 3)."""
    r = np.hypot(x[:, 0], x[:, 1])
    b = field_phi(r, x[:, 2]) / np.maximum(r, 1e-3)
    out = np.empty_like(x)
    out[:, 0] = -x[:, 1] * b
    out[:, 1] = x[:, 0] * b
    out[:, 2] = 0.0
    return out


def _deriv(x: np.ndarray, u: np.ndarray, kq: np.ndarray) -> np.ndarray:
    """dû/ds = 0.2998·(q/p)·û × B; ``kq`` is 0.2998·q/p with shape (N, 1)."""
    return kq * np.cross(u, _b_vector(x))


@dataclass
class Crossings:
    """Layer crossings found by :func:`propagate` (one entry per muon and crossed layer row)."""

    muon: np.ndarray  # index into the propagated muons
    row: np.ndarray  # index into geometry.LAYERS
    pos: np.ndarray  # (n, 3) crossing point (m)
    dir: np.ndarray  # (n, 3) unit direction at the crossing
    path: np.ndarray  # arc length from the propagation start (m)


def propagate(x0: np.ndarray, u0: np.ndarray, qop: np.ndarray, sector: np.ndarray,
              rng: np.random.Generator | None, *, step: float = 0.05, ms_x0_per_m: float = 0.3,
              max_path: float = 40.0) -> Crossings:
    """Follow muons from the calorimeter exit through the spectrometer; return all surface crossings.

    ``x0``/``u0`` (N, 3) start position and direction, ``qop`` q/p (1/GeV), ``sector`` the muon's
    sector (its planes are used for the barrel crossings). ``rng=None`` switches multiple
    scattering off (used by tests that compare with an analytic trajectory).
    """
    n = len(qop)
    cos_s, sin_s = geo.sector_axes(sector)
    x = np.array(x0, dtype=float, copy=True)
    u = np.array(u0, dtype=float, copy=True)
    kq_all = (C_LIGHT * np.asarray(qop, dtype=float))[:, None]
    active = np.arange(n)
    s_path = np.zeros(n)

    def rho_of(xa: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return xa[:, 0] * cos_s[idx] + xa[:, 1] * sin_s[idx]

    ib = np.searchsorted(geo.BARREL_POS, rho_of(x, active))
    iz = np.searchsorted(geo.DISC_POS, np.abs(x[:, 2]))
    out_mu, out_row, out_t, out_x0, out_x1, out_u0, out_u1, out_s = [], [], [], [], [], [], [], []

    # Highland θ₀ per √metre of path; the log term is evaluated for a 1.5 X₀ total.
    ms_rate = 0.0136 * np.sqrt(ms_x0_per_m) * (1 + 0.038 * np.log(1.5)) if rng is not None else 0.0
    h = step
    n_steps = int(np.ceil(max_path / h))
    for it in range(n_steps):
        if len(active) == 0:
            break
        kq = kq_all[active]
        xa, ua = x[active], u[active]
        k1 = _deriv(xa, ua, kq)
        k2 = _deriv(xa + 0.5 * h * ua, ua + 0.5 * h * k1, kq)
        u2 = ua + 0.5 * h * k1
        k3 = _deriv(xa + 0.5 * h * u2, ua + 0.5 * h * k2, kq)
        u3 = ua + 0.5 * h * k2
        k4 = _deriv(xa + h * u3, ua + h * k3, kq)
        xn = xa + h * (ua + h / 6.0 * (k1 + k2 + k3))
        un = ua + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if ms_rate > 0:
            theta0 = ms_rate * np.sqrt(h) * np.abs(kq[:, 0]) / C_LIGHT
            # two axes perpendicular to the direction
            e1 = np.cross(un, np.array([0.0, 0.0, 1.0]))
            e1 /= np.maximum(np.linalg.norm(e1, axis=1, keepdims=True), 1e-12)
            e2 = np.cross(un, e1)
            g = rng.standard_normal((len(active), 2)) * theta0[:, None]
            un = un + g[:, :1] * e1 + g[:, 1:] * e2
        un /= np.linalg.norm(un, axis=1, keepdims=True)

        ib_new = np.searchsorted(geo.BARREL_POS, rho_of(xn, active))
        iz_new = np.searchsorted(geo.DISC_POS, np.abs(xn[:, 2]))
        for old, new, positions, rows, is_barrel in (
            (ib, ib_new, geo.BARREL_POS, geo.BARREL_ROWS, True),
            (iz, iz_new, geo.DISC_POS, geo.DISC_ROWS, False),
        ):
            changed = np.flatnonzero(old != new)
            if len(changed) == 0:
                continue
            lo = np.minimum(old[changed], new[changed])
            cnt = np.abs(new[changed] - old[changed])
            rep = np.repeat(changed, cnt)
            offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            j = np.repeat(lo, cnt) + offs  # sorted-surface index crossed
            mu = active[rep]
            if is_barrel:
                c0 = rho_of(xa[rep], mu)
                c1 = rho_of(xn[rep], mu)
            else:
                c0 = np.abs(xa[rep, 2])
                c1 = np.abs(xn[rep, 2])
            frac = (positions[j] - c0) / (c1 - c0)
            out_mu.append(mu)
            out_row.append(rows[j])
            out_t.append(frac)
            out_x0.append(xa[rep])
            out_x1.append(xn[rep])
            out_u0.append(ua[rep])
            out_u1.append(un[rep])
            out_s.append(s_path[mu] + frac * h)

        x[active] = xn
        u[active] = un
        s_path[active] += h
        ib, iz = ib_new, iz_new
        rho_now = rho_of(xn, active)
        keep = (rho_now < geo.OUTER_RHO) & (np.abs(xn[:, 2]) < geo.OUTER_Z) & (rho_now > -1.0)
        if it % 10 == 9 or not keep.all():
            active, ib, iz = active[keep], ib[keep], iz[keep]

    if not out_mu:
        empty = np.zeros((0, 3))
        return Crossings(np.zeros(0, np.int64), np.zeros(0, np.int64), empty, empty, np.zeros(0))
    t = np.concatenate(out_t)[:, None]
    pos = (1 - t) * np.concatenate(out_x0) + t * np.concatenate(out_x1)
    d = (1 - t) * np.concatenate(out_u0) + t * np.concatenate(out_u1)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return Crossings(np.concatenate(out_mu), np.concatenate(out_row), pos, d, np.concatenate(out_s))
