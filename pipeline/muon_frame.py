"""Hit positions in each muon's own bending frame, columnwise (numpy on flat arrays, float64).

Why: the toroid bends muons in their r–z plane by 20–400 mm over ~10 m. On globally normalised
coordinates that is a 1e-3 … 1e-2 difference between inputs, which a small network does not
learn and bf16 rounds away. In the muon's own frame the bending is the O(1) coordinate ``v``.

Definitions (``physics.md``, "What a network needs to learn pT"; the same geometry the classical
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
4. **left/right**: an MDT measures the distance ``driftR`` from its wire. Per object and station
   (``stationIndex``) a straight segment v = α + β·u is fitted to the MDT crossings: it starts as the
   line through the origin and the wires' mean, then is refitted ``ITERATIONS`` times to the
   drift-circle tangent points on the side of each wire the current segment passes:
   ``v_resolved = v_wire − side·driftR·√(1 + β²)``. Segments with one tube use β = v/u.

Units: inputs in mm (any consistent length unit works for :func:`object_frames`); outputs as
:data:`FRAME_FIELDS` documents (``schemas/frame.yaml``), float32, 0 for unassigned hits.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Technology codes of the dump (``spacePoint_technology``).
MDT = 0
#: |ê·φ̂| above which an element crosses the object's r–z plane steeply enough to intersect it.
STEEP = 0.7
#: Weight of φ-measuring elements in the azimuth refinement.
PHI_STRIP_WEIGHT = 100.0
#: Segment refits after the wire-only fit.
ITERATIONS = 3

FRAME_SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "frame.yaml"


@lru_cache(maxsize=1)
def frame_field_docs() -> dict[str, dict]:
    """``schemas/frame.yaml`` as ``{name: {unit, scale, formula, description}}``."""
    import yaml

    raw = yaml.safe_load(FRAME_SCHEMA.read_text())
    return {f["name"]: f for f in raw["fields"]}


def frame_field_names() -> list[str]:
    """Every muon-frame input, in the documented order."""
    return list(frame_field_docs())


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


def resolve_left_right(seg: np.ndarray, n_seg: int, u: np.ndarray, v: np.ndarray,
                       drift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 4: tangent points of drift circles on straight segments, per segment id ``seg`` [n].

    Returns ``(v_resolved, slope, residual)`` per hit: the resolved position, the segment's
    dv/du and the hit's distance from the final segment line (all in input units).
    """
    n_in = np.bincount(seg, minlength=n_seg)
    s0 = n_in.astype(np.float64)
    su, suu = _segment_sum(seg, u, n_seg), _segment_sum(seg, u * u, n_seg)
    det = s0 * suu - su * su
    # relative test: a segment whose tubes all sit at one u (or a single tube) has no slope of its own
    ok = (n_in >= 2) & (det > 1e-9 * np.maximum(suu * s0, 1e-300))
    safe = np.where(ok, det, 1.0)
    # Start from the line through the origin and the wires' mean: a muon points roughly back to the
    # vertex, while a line through the wires themselves follows the tube staggering and, with two
    # tubes, passes through both wires, leaving every side undecided.
    y = v.copy()
    su_safe = np.where(su != 0, su, 1.0)  # u = 0 only for a hit at the origin's perpendicular
    slope = np.where(su != 0, _segment_sum(seg, y, n_seg) / su_safe, 0.0)
    alpha = np.zeros(n_seg)
    for it in range(ITERATIONS + 1):
        if it > 0:
            sy, suy = _segment_sum(seg, y, n_seg), _segment_sum(seg, u * y, n_seg)
            vertex_slope = np.where(su != 0, sy / su_safe, 0.0)
            slope = np.where(ok, (s0 * suy - su * sy) / safe, vertex_slope)
            alpha = np.where(ok, (sy - slope * su) / np.where(n_in > 0, s0, 1.0), 0.0)
        if it == ITERATIONS:
            break
        line = alpha[seg] + slope[seg] * u
        side = np.where(v >= line, 1.0, -1.0)
        y = v - side * drift * np.sqrt(1.0 + slope[seg] ** 2)
    return y, slope[seg], y - (alpha[seg] + slope[seg] * u)


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
    # object id = (event, assignment) pair, numbered densely
    ev = np.asarray(event, dtype=np.int64)
    key = np.where(on, ev * (int(assignment.max()) + 1) + assignment, -1)
    uniq, obj_on = np.unique(key[on], return_inverse=True)
    obj = np.full(N, -1, dtype=np.int64)
    obj[on] = obj_on
    f = object_frames(obj, len(uniq), lo, hi)
    sel, g = f.sel, f.obj
    d = np.asarray(drift, dtype=np.float64)[sel]
    tech = np.asarray(technology)[sel]
    is_mdt = (tech == MDT) & f.bending
    # segments: (object, station) of MDT bending hits; other hits keep their position
    st = np.asarray(station, dtype=np.int64)[sel]
    st = st - st.min(initial=0)
    seg_key = g * (int(st.max(initial=0)) + 1) + st
    v_res, slope, resid = f.v.copy(), np.zeros(len(g)), np.zeros(len(g))
    if is_mdt.any():
        seg_ids, seg = np.unique(seg_key[is_mdt], return_inverse=True)
        y, b, res = resolve_left_right(seg, len(seg_ids), f.u[is_mdt], f.v[is_mdt], d[is_mdt])
        v_res[is_mdt], slope[is_mdt], resid[is_mdt] = y, b, res
    values = {"frame_u": f.u, "frame_v": f.v, "frame_v_resolved": v_res, "frame_drift": np.where(is_mdt, d, 0.0),
              "frame_slope": slope, "frame_residual": resid, "frame_bending": f.bending.astype(np.float64)}
    for j, name in enumerate(names):
        doc = docs[name]
        x = values[doc["source"]] / float(doc["scale"])
        if "clip" in doc:
            x = np.clip(x, -float(doc["clip"]), float(doc["clip"]))
        out[sel, j] = x
    return out
