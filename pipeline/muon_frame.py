"""Hit positions in each muon's own bending frame, columnwise (numpy on flat arrays, float64).

Why: the toroid bends muons in their r–z plane by 20–400 mm over ~10 m. On globally normalised
coordinates that is a 1e-3 … 1e-2 difference between inputs, which a small network does not
learn and bf16 rounds away. In the muon's own frame the bending is the O(1) coordinate ``v``.

Definitions (``docs/physics.md``, "Muon-frame inputs"; the same geometry the classical
fit ``pipeline.simulate.fit`` uses, which calls :func:`object_frames`). For every *object* (a truth
muon, or a track candidate of a tracking model: any hit → object assignment) from its own hits:

1. **azimuth** φ_o: direction of the summed unit vectors of the hit elements' midpoints in x–y,
   refined with weight 100 for φ-measuring elements (those parallel to the r–z plane, whose
   midpoints sit at the measured azimuth). The toroid does not bend in φ.
2. **crossing** (r, z) of each hit in the object's r–z plane: elements steep to that plane
   (|ê·φ̂_o| > 0.7: tubes, η strips, wire groups) are intersected with it; the others (φ strips)
   are projected onto it from their midpoint. ``bending`` marks the first kind.
3. **direction** (u_r, u_z): the normalised sum of the unit vectors from the origin to the bending
   crossings (all crossings if none bends); ``u = r·u_r + z·u_z`` is along it and
   ``v = −r·u_z + z·u_r`` across it. With an azimuthal field a positive charge curves towards +v
   in the barrel and in both end-caps, so a mirror z → −z flips v and the apparent charge.
4. **left/right**: an MDT measures the distance ``driftR`` from its wire. Per object, a parabola
   v = a + b·u + c·u² through its bending hits and the origin is annealed as in the classical fit:
   fitted to the wires, then to the drift-circle tangent points on the side of each wire the current
   parabola passes, with shrinking σ (``MDT_SCHEDULE``):
   ``v_resolved = v_wire − side·driftR·√(1 + v'²)``.
5. **curvature**: c of the final parabola; c ∝ q/p at a fixed direction. Like ``frame_eta`` and
   ``frame_phi`` (the direction's η and the azimuth φ_o) it is the same for every hit of an object.
6. **segments**: per object and station (``stationIndex``) a straight line through the resolved MDT
   points gives the local direction ``slope`` (dv/du) and each hit's ``residual`` from it.

Units: inputs in mm (any consistent length unit works for :func:`object_frames`); outputs as
:data:`FRAME_FIELDS` documents (``schemas/frame.yaml``), float32, 0 for unassigned hits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Technology codes of the dump (``spacePoint_technology``).
MDT = 0
#: |ê·φ̂| above which an element crosses the object's r–z plane steeply enough to intersect it.
STEEP = 0.7
#: Weight of φ-measuring elements in the azimuth refinement.
PHI_STRIP_WEIGHT = 100.0
#: MDT σ (mm) of the successive parabola fits of the left/right annealing: the wire alone (30 mm/√12),
#: then resolved points, looser than the 80 µm tube resolution because a parabola is not the exact
#: trajectory in a 1/r field.
MDT_SCHEDULE = (30.0 / np.sqrt(12.0), 2.0, 1.0, 0.5)
#: σ (mm) of the other bending measurements by technology code (RPC 30 mm/√12, TGC 15 mm/√12, sTGC
#: and MM 0.1 mm; codes 0 and 1 are not strips and never used) and of the vertex point.
SIGMA_STRIP = np.array([10.0, 10.0, 8.7, 4.3, 0.1, 0.1])
SIGMA_VERTEX = 50.0

@lru_cache(maxsize=1)
def frame_field_docs() -> dict[str, dict]:
    """``schemas/frame.yaml`` as ``{name: {unit, scale, formula, description}}`` (found like the dataset
    schemas: inside the wheel, ``pipeline/_schemas``, or the source tree)."""
    import yaml

    from .schema import schema_dir

    raw = yaml.safe_load((schema_dir() / "frame.yaml").read_text())
    return {f["name"]: f for f in raw["fields"]}


def frame_field_names() -> list[str]:
    """Every muon-frame input, in the documented order."""
    return list(frame_field_docs())


def per_object_fields() -> list[str]:
    """The muon-frame inputs that are one value per object (``per_object: true`` in the YAML)."""
    return [n for n, d in frame_field_docs().items() if d.get("per_object")]


@dataclass
class Frames:
    """Per-hit geometry of hits ``sel`` (the assigned ones) in their object's frame; lengths in input units."""

    sel: np.ndarray  # [n] positions of the assigned hits in the input arrays
    obj: np.ndarray  # [n] object index of each, 0..n_obj-1
    phi: np.ndarray  # [n_obj] object azimuth
    ur: np.ndarray  # [n_obj] direction, r component
    uz: np.ndarray  # [n_obj] direction, z component
    r: np.ndarray  # [n] crossing r
    z: np.ndarray  # [n] crossing z
    u: np.ndarray  # [n] along the direction
    v: np.ndarray  # [n] across it
    bending: np.ndarray  # [n] bool: the element was intersected with the plane (measures v)


def _segment_sum(ids: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(ids, weights=weights, minlength=n)


def object_frames(obj: np.ndarray, n_obj: int, lo: np.ndarray, hi: np.ndarray) -> Frames:
    """Steps 1–3 of the module docstring for every object at once.

    ``obj`` [N] int: object index per hit (0..n_obj-1, or −1 = not assigned); ``lo``/``hi`` [N, 3]
    float64: the element's end points (x, y, z). Objects without hits get φ = 0 and u = (1, 0).
    """
    sel = np.flatnonzero(obj >= 0)
    g = np.asarray(obj)[sel].astype(np.int64)
    lo = np.asarray(lo, dtype=np.float64)[sel]
    hi = np.asarray(hi, dtype=np.float64)[sel]
    mid = 0.5 * (lo + hi)
    rm = np.maximum(np.hypot(mid[:, 0], mid[:, 1]), 1e-300)
    phi = np.arctan2(_segment_sum(g, mid[:, 1] / rm, n_obj), _segment_sum(g, mid[:, 0] / rm, n_obj))
    cphi, sphi = np.cos(phi)[g], np.sin(phi)[g]
    e = hi - lo
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-300)
    wphi = np.where(np.abs(-e[:, 0] * sphi + e[:, 1] * cphi) < 0.3, PHI_STRIP_WEIGHT, 1.0)
    phi = np.arctan2(_segment_sum(g, wphi * mid[:, 1] / rm, n_obj), _segment_sum(g, wphi * mid[:, 0] / rm, n_obj))
    cphi, sphi = np.cos(phi)[g], np.sin(phi)[g]

    en = -e[:, 0] * sphi + e[:, 1] * cphi  # element direction · φ̂_o
    bending = np.abs(en) > STEEP
    lam = np.where(bending, (lo[:, 0] * sphi - lo[:, 1] * cphi) / np.where(bending, en, 1.0), 0.0)
    cross = np.where(bending[:, None], lo + lam[:, None] * e, mid)
    r = cross[:, 0] * cphi + cross[:, 1] * sphi
    z = cross[:, 2]

    rho = np.maximum(np.hypot(r, z), 1e-300)
    has_bending = np.bincount(g[bending], minlength=n_obj) > 0
    use = bending | ~has_bending[g]
    ur = _segment_sum(g[use], (r / rho)[use], n_obj)
    uz = _segment_sum(g[use], (z / rho)[use], n_obj)
    norm = np.hypot(ur, uz)
    empty = norm == 0
    ur = np.where(empty, 1.0, ur / np.where(empty, 1.0, norm))
    uz = np.where(empty, 0.0, uz / np.where(empty, 1.0, norm))
    u = r * ur[g] + z * uz[g]
    v = -r * uz[g] + z * ur[g]
    return Frames(sel, g, phi, ur, uz, r, z, u, v, bending)


def fit_parabola(obj: np.ndarray, n_obj: int, u: np.ndarray, y: np.ndarray,
                 sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least-squares parabola y = a + b·u + c·u² per object: ``(a, b, c)``, each [n_obj].

    Over the hits given (weights 1/σ²) plus the origin as a point with σ = ``SIGMA_VERTEX`` (the
    muon comes from the vertex; the calorimeter scatters it by ~cm). Normal equations summed with
    ``bincount``, solved for all objects at once after scaling to a unit diagonal (the u⁴ sums span
    16 orders of magnitude in mm). An object with fewer than 3 hits, or a singular system, gets the
    least-squares line through the origin (a = c = 0).
    """
    w = 1.0 / sigma**2
    sums = [_segment_sum(obj, w * u**k, n_obj) for k in range(5)]
    sums[0] = sums[0] + 1.0 / SIGMA_VERTEX**2  # the vertex point (0, 0)
    rhs = np.stack([_segment_sum(obj, w * y * u**k, n_obj) for k in range(3)], axis=1)
    A = np.empty((n_obj, 3, 3))
    for i in range(3):
        for j in range(3):
            A[:, i, j] = sums[i + j]
    dscale = np.sqrt(np.maximum(np.einsum("nii->ni", A), 1e-300))
    As = A / dscale[:, :, None] / dscale[:, None, :]
    det = np.linalg.det(As)
    ok = (np.bincount(obj, minlength=n_obj) >= 3) & np.isfinite(det) & (np.abs(det) > 1e-12)
    As[~ok] = np.eye(3)
    x = np.linalg.solve(As, (rhs / dscale)[:, :, None])[:, :, 0] / dscale
    line = rhs[:, 1] / np.where(sums[2] > 0, sums[2], 1.0)
    return np.where(ok, x[:, 0], 0.0), np.where(ok, x[:, 1], line), np.where(ok, x[:, 2], 0.0)


def resolve_left_right(obj: np.ndarray, n_obj: int, u: np.ndarray, v: np.ndarray, drift: np.ndarray,
                       is_mdt: np.ndarray, sigma_other: np.ndarray
                       ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Step 4: MDT tangent points on the side of the wire the object's parabola passes.

    Annealing, as the classical fit: the parabola is first fitted to the wires (σ = ``MDT_SCHEDULE[0]``,
    the tube's size), then each tube's side is taken from it and the parabola refitted to the
    resolved points with the next, smaller σ. Hits are one object's bending hits (``obj`` [n]).
    Returns ``(v_resolved [n], (a, b, c))``: the resolved positions and the final parabola, fitted to
    them at ``MDT_SCHEDULE[-1]``, each [n_obj].
    """
    y = v.copy()
    for s_mdt in MDT_SCHEDULE[:-1]:
        a, b, c = fit_parabola(obj, n_obj, u, y, np.where(is_mdt, s_mdt, sigma_other))
        side = np.where(v >= a[obj] + (b[obj] + c[obj] * u) * u, 1.0, -1.0)
        stretch = np.sqrt(1.0 + (b[obj] + 2.0 * c[obj] * u) ** 2)
        y = np.where(is_mdt, v - side * drift * stretch, v)
    return y, fit_parabola(obj, n_obj, u, y, np.where(is_mdt, MDT_SCHEDULE[-1], sigma_other))


def segment_lines(seg: np.ndarray, n_seg: int, u: np.ndarray, y: np.ndarray,
                  fallback_slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step 6: the straight line y = α + β·u of each segment ``seg`` [n]: ``(β, y − line)`` per hit.

    A segment with one tube, or with all its tubes at one u, has no slope of its own: it gets
    ``fallback_slope`` (per hit; the object's parabola there) and residual 0.
    """
    n_in = np.bincount(seg, minlength=n_seg)
    s0 = n_in.astype(np.float64)
    su, suu = _segment_sum(seg, u, n_seg), _segment_sum(seg, u * u, n_seg)
    sy, suy = _segment_sum(seg, y, n_seg), _segment_sum(seg, u * y, n_seg)
    det = s0 * suu - su * su
    ok = (n_in >= 2) & (det > 1e-9 * np.maximum(suu * s0, 1e-300))
    safe = np.where(ok, det, 1.0)
    slope = (s0 * suy - su * sy) / safe
    alpha = (sy - slope * su) / np.where(n_in > 0, s0, 1.0)
    good = ok[seg]
    return (np.where(good, slope[seg], fallback_slope),
            np.where(good, y - (alpha[seg] + slope[seg] * u), 0.0))


def frame_features(assignment: np.ndarray, event: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   drift: np.ndarray, technology: np.ndarray, station: np.ndarray,
                   names: list[str] | tuple[str, ...]) -> np.ndarray:
    """The muon-frame inputs ``names`` of every hit, ``[N, len(names)]`` float32.

    ``assignment`` [N]: object index of each hit within its event (−1 = none; e.g.
    ``spacePoint_truthLink`` or a tracking model's output); ``event`` [N]: event index of each hit
    (any integers, equal within an event); ``lo``/``hi`` [N, 3] element ends in mm; ``drift`` [N]
    drift radius in mm; ``technology``/``station`` [N] the dump's codes. Unassigned hits get 0.
    Raises ``KeyError`` for an unknown name (see :func:`frame_field_names`).
    """
    docs = frame_field_docs()
    unknown = [n for n in names if n not in docs]
    if unknown:
        raise KeyError(f"unknown muon-frame field(s) {unknown}; known: {list(docs)}")
    N = len(assignment)
    out = np.zeros((N, len(names)), dtype=np.float32)
    assignment = np.asarray(assignment, dtype=np.int64)
    on = assignment >= 0
    if not names or not on.any():
        return out
    # object id = (event, assignment) pair, numbered densely; both factorised first, so any integers
    # (event numbers near 2**63, assignments of 10**9) give a key without overflow
    _, ev_code = np.unique(np.asarray(event)[on], return_inverse=True)
    a_values, a_code = np.unique(assignment[on], return_inverse=True)
    uniq, obj_on = np.unique(ev_code.astype(np.int64) * len(a_values) + a_code, return_inverse=True)
    obj = np.full(N, -1, dtype=np.int64)
    obj[on] = obj_on
    f = object_frames(obj, len(uniq), lo, hi)
    sel, g = f.sel, f.obj
    d = np.asarray(drift, dtype=np.float64)[sel]
    tech = np.asarray(technology)[sel]
    is_mdt = (tech == MDT) & f.bending
    sigma_other = SIGMA_STRIP[np.clip(tech, 0, len(SIGMA_STRIP) - 1)]
    v_res, slope, resid = f.v.copy(), np.zeros(len(g)), np.zeros(len(g))
    curvature = np.zeros(len(uniq))
    b_idx = np.flatnonzero(f.bending)
    if len(b_idx):
        gb, ub = g[b_idx], f.u[b_idx]
        v_res[b_idx], (_, b, curvature) = resolve_left_right(gb, len(uniq), ub, f.v[b_idx], d[b_idx],
                                                             is_mdt[b_idx], sigma_other[b_idx])
        # segments: (object, station) of the MDT hits, fitted once to the resolved points
        m = np.flatnonzero(is_mdt)
        if len(m):
            st = np.asarray(station, dtype=np.int64)[sel][m]
            st = st - st.min()
            seg_ids, seg = np.unique(g[m] * (int(st.max()) + 1) + st, return_inverse=True)
            parabola_slope = b[g[m]] + 2.0 * curvature[g[m]] * f.u[m]
            slope[m], resid[m] = segment_lines(seg, len(seg_ids), f.u[m], v_res[m], parabola_slope)
    direction_eta = np.arcsinh(f.uz / np.maximum(f.ur, 1e-12))
    values = {"frame_u": f.u, "frame_v": f.v, "frame_v_resolved": v_res, "frame_drift": np.where(is_mdt, d, 0.0),
              "frame_slope": slope, "frame_residual": resid, "frame_bending": f.bending.astype(np.float64),
              "frame_curvature": curvature[g], "frame_eta": direction_eta[g], "frame_phi": f.phi[g]}
    for j, name in enumerate(names):
        doc = docs[name]
        x = values[doc["source"]] / float(doc["scale"])
        if "clip" in doc:
            x = np.clip(x, -float(doc["clip"]), float(doc["clip"]))
        out[sel, j] = x
    return out
