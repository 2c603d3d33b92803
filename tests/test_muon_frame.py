"""Muon-frame inputs: equal a slow per-muon reference; invariant under φ rotations; a z mirror flips v.

The reference below is written independently of ``pipeline.muon_frame``: one muon at a time, the
element ∩ plane crossing solved as a 3×3 linear system, segments fitted with ``np.polyfit``.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.muon_frame import frame_features, frame_field_docs, frame_field_names
from pipeline.shards import list_column

NAMES = frame_field_names()
COLS = ("spacePoint_globEdgeLowX", "spacePoint_globEdgeLowY", "spacePoint_globEdgeLowZ",
        "spacePoint_globEdgeHighX", "spacePoint_globEdgeHighY", "spacePoint_globEdgeHighZ",
        "spacePoint_driftR", "spacePoint_technology", "spacePoint_stationIndex", "spacePoint_truthLink")


@pytest.fixture(scope="module")
def hits(converted_sample):
    """Flat hit columns (float64 coordinates) of the first 150 events of the converted shipped sample."""
    path = sorted((converted_sample / "shards").glob("*.parquet"))[0]
    table = pq.read_table(path, columns=["hits"]).slice(0, 150)
    offsets, cols = list_column(table.column("hits"))
    event = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    out = {k: np.asarray(cols[k]) for k in COLS}
    out["event"] = event
    out["lo"] = np.stack([cols[f"spacePoint_globEdgeLow{c}"] for c in "XYZ"], axis=1).astype(np.float64)
    out["hi"] = np.stack([cols[f"spacePoint_globEdgeHigh{c}"] for c in "XYZ"], axis=1).astype(np.float64)
    return out


def compute(h, lo=None, hi=None, link=None):
    return frame_features(h["spacePoint_truthLink"] if link is None else link, h["event"],
                          h["lo"] if lo is None else lo, h["hi"] if hi is None else hi,
                          h["spacePoint_driftR"], h["spacePoint_technology"], h["spacePoint_stationIndex"], NAMES)


def reference_muon(lo, hi, drift, tech, station):
    """All frame quantities of one muon's hits, in plain per-hit Python/numpy (mm)."""
    n = len(lo)
    mids = 0.5 * (lo + hi)
    ex = ey = 0.0
    for m in mids:
        rr = math.hypot(m[0], m[1])
        ex, ey = ex + m[0] / rr, ey + m[1] / rr
    phi = math.atan2(ey, ex)
    ex = ey = 0.0
    for a, b, m in zip(lo, hi, mids, strict=True):
        e = (b - a) / np.linalg.norm(b - a)
        w = 100.0 if abs(-e[0] * math.sin(phi) + e[1] * math.cos(phi)) < 0.3 else 1.0
        rr = math.hypot(m[0], m[1])
        ex, ey = ex + w * m[0] / rr, ey + w * m[1] / rr
    phi = math.atan2(ey, ex)
    normal = np.array([-math.sin(phi), math.cos(phi), 0.0])  # the plane's normal: points x with normal·x = 0
    radial = np.array([math.cos(phi), math.sin(phi), 0.0])
    r, z, bending = np.zeros(n), np.zeros(n), np.zeros(n, bool)
    for i in range(n):
        e = (hi[i] - lo[i]) / np.linalg.norm(hi[i] - lo[i])
        if abs(e @ normal) > 0.7:
            lam = -(normal @ lo[i]) / (normal @ e)  # solve normal·(lo + λ e) = 0
            x = lo[i] + lam * e
            bending[i] = True
        else:
            x = mids[i]
        r[i], z[i] = x @ radial, x[2]
    use = bending if bending.any() else np.ones(n, bool)
    d = np.array([sum(r[use] / np.hypot(r[use], z[use])), sum(z[use] / np.hypot(r[use], z[use]))])
    d /= np.linalg.norm(d)
    u = r * d[0] + z * d[1]
    v = -r * d[1] + z * d[0]
    # left/right: anneal a weighted parabola (np.polyfit, the origin appended as a point) per muon
    mdt = bending & (tech == 0)
    strip_sigma = {2: 8.7, 3: 4.3, 4: 0.1, 5: 0.1}
    y = v.copy()
    bu = u[bending]
    for k, s_mdt in enumerate((30 / math.sqrt(12), 2.0, 1.0, 0.5)):
        sig = np.array([s_mdt if t == 0 else strip_sigma.get(int(t), 10.0) for t in tech[bending]])
        if bending.sum() >= 3:
            c, b, a = np.polyfit(np.append(bu, 0.0), np.append(y[bending], 0.0), 2, w=1 / np.append(sig, 50.0))
        else:  # the weighted line through the origin
            a, c = 0.0, 0.0
            b = np.sum(bu * y[bending] / sig**2) / np.sum(bu**2 / sig**2)
        if k == 3:
            break
        for i in np.flatnonzero(mdt):
            side = 1.0 if v[i] >= a + b * u[i] + c * u[i] ** 2 else -1.0
            y[i] = v[i] - side * drift[i] * math.sqrt(1 + (b + 2 * c * u[i]) ** 2)
    curvature = c
    # a last fit at the final σ gives the parabola whose slope stands in for one-tube segments
    sig = np.array([0.5 if t == 0 else strip_sigma.get(int(t), 10.0) for t in tech[bending]])
    if bending.sum() >= 3:
        c2, b2, _ = np.polyfit(np.append(bu, 0.0), np.append(y[bending], 0.0), 2, w=1 / np.append(sig, 50.0))
    else:
        c2, b2 = 0.0, np.sum(bu * y[bending] / sig**2) / np.sum(bu**2 / sig**2)
    slope, resid = np.zeros(n), np.zeros(n)
    for st in np.unique(station[mdt]):
        idx = np.flatnonzero(mdt & (station == st))
        uu, yy = u[idx], y[idx]
        if len(idx) >= 2 and np.ptp(uu) > 1e-6 * np.abs(uu).max():
            beta, alpha = np.polyfit(uu, yy, 1)
            slope[idx], resid[idx] = beta, yy - (alpha + beta * uu)
        else:
            slope[idx] = b2 + 2 * c2 * uu
    v_res = y
    eta_o, phi_o = math.asinh(d[1] / d[0]), phi
    raw = {"frame_u": u, "frame_v": v, "frame_v_resolved": v_res, "frame_drift": np.where(mdt, drift, 0.0),
           "frame_slope": slope, "frame_residual": resid, "frame_bending": bending.astype(float),
           "frame_curvature": np.full(n, curvature), "frame_eta": np.full(n, eta_o), "frame_phi": np.full(n, phi_o)}
    docs = frame_field_docs()
    cols = []
    for name in NAMES:
        x = raw[docs[name]["source"]] / float(docs[name]["scale"])
        if "clip" in docs[name]:
            x = np.clip(x, -docs[name]["clip"], docs[name]["clip"])
        cols.append(x)
    return np.stack(cols, axis=1)


def test_frame_features_equal_slow_per_muon_reference(hits):
    got = compute(hits)
    link, event = hits["spacePoint_truthLink"], hits["event"]
    assert np.all(got[link < 0] == 0)  # background hits: no frame
    n_muons = 0
    for ev in np.unique(event):
        for mu in np.unique(link[(event == ev) & (link >= 0)]):
            idx = np.flatnonzero((event == ev) & (link == mu))
            ref = reference_muon(hits["lo"][idx], hits["hi"][idx], hits["spacePoint_driftR"][idx],
                                 hits["spacePoint_technology"][idx], hits["spacePoint_stationIndex"][idx])
            np.testing.assert_allclose(got[idx], ref.astype(np.float32), rtol=2e-5, atol=2e-5,
                                       err_msg=f"event {ev} muon {mu}")
            n_muons += 1
    assert n_muons > 150


#: Fields set by the discrete left/right decision: a tube whose side is a near-tie after the last
#: refit can decide differently when the input is rotated by rounding noise.
LR_FIELDS = ("frame_v_resolved", "frame_slope", "frame_residual", "frame_curvature")


def assert_same_up_to_lr_ties(got, want):
    cont = [NAMES.index(n) for n in NAMES if n not in LR_FIELDS]
    np.testing.assert_allclose(got[:, cont], want[:, cont], rtol=1e-6, atol=1e-6)
    lr = [NAMES.index(n) for n in LR_FIELDS]
    same = np.isclose(got[:, lr], want[:, lr], rtol=1e-5, atol=1e-5).all(axis=1)
    assert same.mean() > 0.999, f"{(~same).sum()} of {len(same)} hits changed their left/right decision"


def test_invariant_under_rotation_in_phi(hits):
    base = compute(hits)
    for alpha in (0.3, -2.0, math.pi):
        c, s = math.cos(alpha), math.sin(alpha)
        rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        got = compute(hits, lo=hits["lo"] @ rot.T, hi=hits["hi"] @ rot.T)
        j = NAMES.index("frame_phi")  # the object's azimuth turns with the event, by definition
        on = hits["spacePoint_truthLink"] >= 0
        np.testing.assert_allclose(np.angle(np.exp(1j * (got[on, j] - base[on, j] - alpha))), 0.0, atol=1e-6)
        got[:, j] = base[:, j]
        assert_same_up_to_lr_ties(got, base)


def test_mirror_in_z_flips_the_bending_coordinate(hits):
    flip = np.array([1.0, 1.0, -1.0])
    base = compute(hits)
    got = compute(hits, lo=hits["lo"] * flip, hi=hits["hi"] * flip)
    sign = np.array([-1.0 if n in ("frame_v", "frame_v_resolved", "frame_slope", "frame_residual", "frame_curvature",
                                   "frame_eta") else 1.0 for n in NAMES])
    assert_same_up_to_lr_ties(got, base * sign)
    j = NAMES.index("frame_v")
    assert np.abs(base[:, j]).max() > 0.1  # the bending is really there to be flipped


def test_any_assignment_works_and_labels_are_arbitrary(hits):
    link = hits["spacePoint_truthLink"]
    # relabel objects within each event (a tracking model numbers its tracks its own way)
    relabelled = np.where(link >= 0, 7 - link, -1)
    np.testing.assert_array_equal(compute(hits, link=relabelled), compute(hits))
    # an assignment that merges every muon of an event into one object still gives finite features
    merged = np.where(link >= 0, 0, -1)
    got = compute(hits, link=merged)
    assert np.isfinite(got).all() and np.any(got != compute(hits))


def test_unknown_name_and_no_assigned_hits():
    lo = np.array([[5000.0, 0.0, 100.0]])
    hi = np.array([[5000.0, 500.0, 100.0]])
    args = (np.array([0]), lo, hi, np.array([3.0]), np.array([0]), np.array([0]))
    with pytest.raises(KeyError, match="frame_bogus"):
        frame_features(np.array([0]), *args, ["frame_bogus"])
    none = frame_features(np.array([-1]), *args, NAMES)
    assert none.shape == (1, len(NAMES)) and not none.any()
    one = frame_features(np.array([0]), *args, ["frame_u", "frame_v", "frame_drift"])
    # a single tube cell from (5000, 0, 100) to (5000, 500, 100) mm: the object's azimuth is its midpoint's,
    # the crossing is the midpoint, and the direction points through it: u = |midpoint|, v = 0
    np.testing.assert_allclose(one[0], [math.sqrt(5000.0**2 + 250.0**2 + 100.0**2) / 1e4, 0.0, 3.0 / 15.0],
                               atol=1e-7)


def test_parabola_fit_recovers_a_hand_made_track():
    from pipeline.muon_frame import fit_parabola

    u = np.array([4500.0, 4530.0, 7200.0, 7250.0, 9800.0, 9850.0, 5000.0, 8000.0])  # mm
    obj = np.array([0, 0, 0, 0, 0, 0, 1, 1])  # object 1 has 2 hits: the line through the origin
    y = np.where(obj == 0, 1e-3 * u + 2e-6 * u**2, 0.01 * u)  # through the origin: exact with the vertex point
    a, b, c = fit_parabola(obj, 2, u, y, np.full(len(u), 0.1))
    np.testing.assert_allclose([a[0], b[0], c[0]], [0.0, 1e-3, 2e-6], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose([a[1], b[1], c[1]], [0.0, 0.01, 0.0], rtol=1e-12, atol=0)


def test_objects_of_far_apart_event_numbers_stay_apart(hits):
    """Any integers identify events: numbers near 2**62 must not make two objects collide."""
    idx = np.flatnonzero((hits["event"] < 2) & (hits["spacePoint_truthLink"] == 0))
    sub = {k: v[idx] for k, v in hits.items()}
    link = np.full(len(idx), 3)  # event * (max + 1) + 3 wraps to 3 for event 2**62: a naive key collides
    base = compute(sub, link=link)
    sub["event"] = np.where(sub["event"] == 0, 0, 2**62).astype(np.int64)
    wide = compute(sub, link=link)
    np.testing.assert_array_equal(wide, base)
    assert len({tuple(r) for r in base[:, [NAMES.index("frame_phi")]]}) == 2  # two objects, two azimuths
