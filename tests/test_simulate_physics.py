"""Physics of the simulator, each against an independent reference.

* Bending: for an η = 0 muon in B_φ = B₀r₀/r (B₀r₀ = 3.9 T·m, from r₀ = 4.7 m), small-angle
  integration of dα/dr = 0.2998·(q/p)·B gives z(r) = 0.2998·(q/p)·3.9·[r·ln(r/r₀) − (r − r₀)];
  the sagitta of three stations follows from it (≈ −5.4 mm·q at 100 GeV, cf. physics.md's 5 mm).
* Resolutions: residuals of the recorded measurement (read back from the Low edge and driftR,
  as the converter would) against the true crossing, per technology: Gaussian σ or pitch/√12.
* Geometry: η of the Low edge follows the truth η; technology mix and hits per muon as in dumps.
* Reference fit: pT core resolution, bias and charge against the generator truth.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from pipeline.simulate import SimConfig, fit_tracks, simulate_events
from pipeline.simulate import geometry as geo
from pipeline.simulate.field import propagate

R0, B0R0 = 4.7, 3.9


def _z_analytic(r: np.ndarray, qop: float) -> np.ndarray:
    r = np.asarray(r)
    return np.where(r > R0, 0.2998 * qop * B0R0 * (r * np.log(r / R0) - (r - R0)), 0.0)


def _sagitta(r: np.ndarray, z: np.ndarray) -> float:
    """Deviation of the middle point from the chord through the outer two."""
    return z[1] - (z[0] + (z[2] - z[0]) * (r[1] - r[0]) / (r[2] - r[0]))


def _core(x: np.ndarray) -> tuple[float, float]:
    """Gaussian core: mean and σ iterated within ±2σ (σ corrected for the truncation)."""
    x = x[np.isfinite(x)]
    mu, s = np.median(x), 1.4826 * np.median(np.abs(x - np.median(x)))
    for _ in range(20):
        y = x[np.abs(x - mu) < 2 * s]
        mu, s = y.mean(), y.std() / 0.8796
    return float(mu), float(s)


@pytest.mark.parametrize("q", [1, -1])
def test_barrel_sagitta_matches_1_over_r_field_and_scales_as_1_over_p(q: int) -> None:
    p = np.array([10.0, 20.0, 50.0, 100.0, 200.0])
    n = len(p)
    x0 = np.tile([geo.CALO_R, 0.0, 0.0], (n, 1))  # η = 0, φ = 0 (centre of sector 1)
    u0 = np.tile([1.0, 0.0, 0.0], (n, 1))
    cr = propagate(x0, u0, q / p, np.ones(n, np.int32), rng=None)
    rows = [int(np.flatnonzero(np.isclose(geo.LAYERS.pos, R) & geo.LAYERS.barrel)[0]) for R in (4.55, 7.00, 9.60)]
    sag = np.empty(n)
    for i in range(n):
        pts = [cr.pos[(cr.muon == i) & (cr.row == r)][0] for r in rows]
        r = np.array([np.hypot(pt[0], pt[1]) for pt in pts])
        z = np.array([pt[2] for pt in pts])
        sag[i] = _sagitta(r, z)
        expected = _sagitta(r, _z_analytic(r, q / p[i]))
        # 2 %: small-angle approximation (α² < 1 % at 10 GeV) and the 5 cm soft field edges
        assert sag[i] == pytest.approx(expected, rel=0.02), (p[i], sag[i], expected)
    assert np.all(np.sign(sag) == -q)  # positive muons bend towards +z: the curve is convex
    assert np.ptp(sag * p) / abs(np.mean(sag * p)) < 0.02  # ∝ 1/p
    assert abs(sag[3]) == pytest.approx(5.4e-3, rel=0.05)  # ≈ 5 mm at 100 GeV (physics.md)


@pytest.fixture(scope="module")
def truth_events() -> ak.Array:
    return simulate_events(400, seed=21, config=SimConfig(background_per_event=0), truth=True)


def _flat(ev: ak.Array, name: str) -> np.ndarray:
    return ak.to_numpy(ak.flatten(ev[name]))


def test_hit_residuals_match_configured_resolution(truth_events) -> None:
    ev = truth_events
    tech = _flat(ev, "spacePoint_technology")
    lo = np.stack([_flat(ev, f"spacePoint_globEdgeLow{c}") for c in "XYZ"], axis=1).astype(float) / 1e3
    hi = np.stack([_flat(ev, f"spacePoint_globEdgeHigh{c}") for c in "XYZ"], axis=1).astype(float) / 1e3
    phi_s = (_flat(ev, "spacePoint_stationPhi") - 1) * np.pi / 8
    rho_lo = lo[:, 0] * np.cos(phi_s) + lo[:, 1] * np.sin(phi_s)
    t_lo = -lo[:, 0] * np.sin(phi_s) + lo[:, 1] * np.cos(phi_s)
    along_z = np.abs(hi[:, 2] - lo[:, 2]) > 1e-3  # RPC φ strips run along z
    radial = np.abs(np.hypot(hi[:, 0], hi[:, 1]) - np.hypot(lo[:, 0], lo[:, 1])) > 0.05  # TGC strips
    t_rho, t_t, t_z = (_flat(ev, k) for k in ("truth_rho", "truth_t", "truth_z"))

    mdt = (tech == 0) & (_flat(ev, "truth_drift") > 1e-3) & (_flat(ev, "truth_drift") < 14e-3)
    d = _flat(ev, "spacePoint_driftR")[mdt] / 1e3 - _flat(ev, "truth_drift")[mdt]
    assert np.std(d) == pytest.approx(80e-6, rel=0.1)
    assert abs(np.mean(d)) < 5e-6

    checks = [
        ((tech == 2) & ~along_z, lo[:, 2] - t_z, 0.030 / np.sqrt(12)),  # RPC η strips: z
        ((tech == 2) & along_z, t_lo - t_t, 0.030 / np.sqrt(12)),  # RPC φ strips: t
        ((tech == 3) & ~radial, rho_lo - t_rho, 0.015 / np.sqrt(12)),  # TGC wire groups: ρ
        (tech == 4, rho_lo - t_rho, 100e-6),  # sTGC
        (tech == 5, rho_lo - t_rho, 100e-6),  # MM
    ]
    for sel, res, sigma in checks:
        assert sel.sum() > 100
        assert np.std(res[sel]) == pytest.approx(sigma, rel=0.12), (sigma, np.std(res[sel]))
        assert abs(np.mean(res[sel])) < 0.2 * sigma


def test_hit_eta_follows_truth_eta(truth_events) -> None:
    ev = truth_events
    link = ev["spacePoint_truthLink"]
    eta_truth = ev["truthMuon_eta"][ak.where(link >= 0, link, 0)]
    pt_truth = ev["truthMuon_pt"][ak.where(link >= 0, link, 0)]
    sel = ak.flatten((link >= 0) & (pt_truth > 20)).to_numpy()
    x, y, z = (_flat(ev, f"spacePoint_globEdgeLow{c}").astype(float)[sel] for c in "XYZ")
    deta = np.arcsinh(z / np.hypot(x, y)) - ak.to_numpy(ak.flatten(eta_truth)).astype(float)[sel]
    # bending at pT > 20 GeV plus the ≤ 0.5 m readout cells: |Δη| < 0.06 for 99 %
    assert np.quantile(np.abs(deta), 0.99) < 0.06
    assert np.median(np.abs(deta)) < 0.01


def test_technology_mix_and_hits_per_muon(truth_events) -> None:
    ev = truth_events
    link = _flat(ev, "spacePoint_truthLink")
    tech = _flat(ev, "spacePoint_technology")[link >= 0]
    frac = {t: np.mean(tech == t) for t in (0, 2, 3, 4, 5)}
    assert 0.55 < frac[0] < 0.75  # MDT ~65 %
    assert 0.10 < frac[2] < 0.20  # RPC ~15 %
    assert 0.12 < frac[3] < 0.24  # TGC ~18 %
    assert 0.003 < frac[4] < 0.03 and 0.003 < frac[5] < 0.03  # sTGC, MM ~1 %
    n_mu = ak.to_numpy(ak.num(ev["truthMuon_pt"]))
    off = np.concatenate([[0], np.cumsum(n_mu)])
    event = np.repeat(np.arange(len(ev)), ak.to_numpy(ak.num(ev["spacePoint_truthLink"])))
    per_mu = np.bincount(off[event[link >= 0]] + link[link >= 0], minlength=off[-1])
    hit = per_mu[per_mu > 0]
    assert 22 < hit.mean() < 34 and 3 < hit.std() < 12  # dumps: 26 ± 8
    assert hit.max() <= 60
    assert np.mean(per_mu == 0) < 0.05  # range-out and |η| > 2.7 holes only


def test_reference_fit_resolution_and_charge() -> None:
    cfg = SimConfig(background_per_event=10, pt_min=10, pt_max=100, max_abs_eta=2.5)
    ev = simulate_events(1200, seed=31, config=cfg)
    fit = fit_tracks(ev, ak.num(ev["truthMuon_pt"]))
    assert ak.all(ak.num(fit) == ak.num(ev["truthMuon_pt"]))
    pt, q, eta, phi = (_flat(ev, f"truthMuon_{k}").astype(float) for k in ("pt", "q", "eta", "phi"))
    fpt, fq, feta, fphi = (ak.to_numpy(ak.flatten(fit[k])).astype(float) for k in ("pt", "q", "eta", "phi"))
    ok = np.isfinite(fpt)
    assert ok.mean() > 0.97
    bias, sigma = _core(fpt[ok] / pt[ok] - 1)
    assert sigma < 0.06 and abs(bias) < 0.01, (bias, sigma)
    assert sigma > 0.01  # scattering and energy-loss floor: the fit is not fed the truth
    assert np.mean(fq[ok] == q[ok]) > 0.98
    assert _core(feta[ok] - eta[ok])[1] < 0.01
    assert _core(np.angle(np.exp(1j * (fphi[ok] - phi[ok]))))[1] < 0.01


def test_fit_returns_nan_for_unfittable_and_honours_n_muons() -> None:
    ev = simulate_events(5, seed=2, config=SimConfig(background_per_event=0, muon_counts=(1,), muon_weights=(1.0,),
                                                     pt_min=20, pt_max=21, max_abs_eta=0.5))
    hits = ev[[f for f in ev.fields if f.startswith("spacePoint_")]]
    # keep only 2 hits of event 0 → too few; ask for 2 muons per event → the second is NaN
    short = ak.concatenate([hits[:1, :2], hits[1:]])
    fit = fit_tracks(short, np.full(5, 2))
    assert ak.to_list(ak.num(fit)) == [2] * 5
    assert np.isnan(fit[0, 0].pt) and np.all(np.isnan(ak.to_numpy(fit[:, 1].pt)))
    assert np.all(np.isfinite(ak.to_numpy(fit[1:, 0].pt)))
