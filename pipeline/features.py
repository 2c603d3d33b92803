"""Derived hit features: r, s, θ, φ, η of a hit's Low edge, computed columnwise.

Pure functions on flat numpy arrays (the content of the jagged hit branches), so every executor,
``convert`` and ``migrate`` alike, produce bit-identical values.

Conventions (``../shared/reference/physics.md``):

* computed in float64 and stored as float32, so the result is the correctly rounded value;
* θ = atan2(r, z) (not arccos(z/s), which loses precision near the beam axis);
* η = asinh(z / r), the well-conditioned form of the seed's −ln tan(θ/2): symmetric under
  z → −z and exact near the axis;
* φ = atan2(y, x) folded into (−π, π] *after* rounding to float32 (atan2 returns −π for
  y = −0.0, x < 0, and −π + 1e-13 rounds to −float32(π)): stored φ = −float32(π) never occurs.

A hit on the beam axis (r = 0) has η = ±inf (or NaN at the origin). A muon-spectrometer hit
never sits there, so such values are *returned as they are* and flagged by
:func:`pipeline.rules.first_violations`; the caller decides (error, drop the hit, drop the event).
"""

from __future__ import annotations

import numpy as np

#: The derived fields this module can compute, in schema order.
DERIVED = ("r", "s", "theta", "phi", "eta")


def hit_features(x: np.ndarray, y: np.ndarray, z: np.ndarray,
                 names: tuple[str, ...] | list[str] = DERIVED) -> dict[str, np.ndarray]:
    """Compute the requested derived features of points (x, y, z) in mm; float32 out.

    Damaged inputs (a bit flip can make a coordinate 1e38) give inf/NaN quietly: the schema's value
    rules (``pipeline.rules``) refuse them afterwards with file, entry and field, and a numpy warning
    would only add a second, vaguer line to the batch log.
    """
    unknown = set(names) - set(DERIVED)
    if unknown:
        raise ValueError(f"unknown derived feature(s) {sorted(unknown)}; known: {DERIVED}")
    with np.errstate(over="ignore", invalid="ignore"):
        return _hit_features(x, y, z, names)


def _hit_features(x: np.ndarray, y: np.ndarray, z: np.ndarray, names) -> dict[str, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    # sqrt of a float64 sum of squares, not np.hypot (4x slower): squares of float32 inputs are
    # exact in float64, so the result is within 1 ulp of float64 before rounding to float32.
    r2 = x * x + y * y
    r = np.sqrt(r2)
    out: dict[str, np.ndarray] = {}
    if "r" in names:
        out["r"] = r.astype(np.float32)
    if "s" in names:
        out["s"] = np.sqrt(r2 + z * z).astype(np.float32)
    if "theta" in names:
        out["theta"] = np.arctan2(r, z).astype(np.float32)
    if "phi" in names:
        phi = np.arctan2(y, x).astype(np.float32)
        # (−π, π] after rounding: float32(−π + tiny) is −float32(π), the same direction as +float32(π).
        phi[phi == np.float32(-np.pi)] = np.float32(np.pi)
        out["phi"] = phi
    if "eta" in names:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["eta"] = np.arcsinh(z / r).astype(np.float32)
    return out




def truth_qpt(q: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """q/pT [1/GeV] of truth muons (q in e, pT in GeV): computed in float64, stored as float32."""
    with np.errstate(divide="ignore"):
        return (np.asarray(q).astype(np.float64) / np.asarray(pt).astype(np.float64)).astype(np.float32)
