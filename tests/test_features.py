"""Derived hit features against an independent float64 reference and the seed's formula."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.features import hit_features
from pipeline.rules import first_violations
from pipeline.schema import load_schema


def reference(x: float, y: float, z: float) -> dict[str, np.float32]:
    """Scalar float64 reference from the definitions (math module), rounded to float32 once."""
    r = math.hypot(x, y)
    s = math.hypot(x, y, z)
    theta = math.atan2(r, z)
    phi = math.atan2(y, x)
    eta = math.asinh(z / r) if r > 0 else math.copysign(math.inf, z)
    out = {k: np.float32(v) for k, v in {"r": r, "s": s, "theta": theta, "phi": phi, "eta": eta}.items()}
    if out["phi"] == np.float32(-math.pi):  # the (-pi, pi] convention, applied to the stored value
        out["phi"] = np.float32(math.pi)
    return out


def test_features_equal_float64_reference_within_float32_rounding():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(-15000, 15000, (2, 20000)).astype(np.float32)
    z = rng.uniform(-25000, 25000, 20000).astype(np.float32)
    got = hit_features(x, y, z)
    for i in range(0, 20000, 97):
        ref = reference(float(x[i]), float(y[i]), float(z[i]))
        for k, v in ref.items():
            # correctly rounded: the float32 result is the float32 nearest the float64 value
            assert got[k][i] == v, (k, i, got[k][i], v)


def test_eta_equals_seed_formula_where_well_conditioned():
    rng = np.random.default_rng(6)
    x, y = rng.uniform(-12000, 12000, (2, 5000))
    z = rng.uniform(-20000, 20000, 5000)
    got = hit_features(x, y, z)
    theta = np.arctan2(np.hypot(x, y), z)
    seed_eta = -np.log(np.tan(theta / 2.0))  # the seed's formula, in float64
    well = np.abs(seed_eta) < 3
    np.testing.assert_allclose(got["eta"][well], seed_eta[well], rtol=0, atol=2e-6)


@pytest.mark.parametrize("x,y,z", [
    (4500.0, 10.0, -12000.0),          # z < 0
    (1e-3, 2e-3, 7400.0),              # near the beam axis: the tan form loses precision here
    (-5000.0, -1e-9, 100.0),           # phi just above -pi
    (-5000.0, 1e-9, 100.0),            # phi just below +pi
    (-5000.0, -0.0, 100.0),            # atan2 gives -pi; the convention is (-pi, pi]
    (3000.0, 4000.0, 0.0),             # eta = 0
])
def test_edge_cases(x, y, z):
    got = hit_features(np.array([x]), np.array([y]), np.array([z]))
    ref = reference(x, y, z)
    for k, v in ref.items():
        assert got[k][0] == v, k
    assert np.float32(-np.pi) < got["phi"][0] <= np.float32(np.pi)


def test_eta_is_antisymmetric_in_z():
    rng = np.random.default_rng(7)
    x, y, z = rng.uniform(-1e4, 1e4, (3, 10000)).astype(np.float32)
    plus, minus = hit_features(x, y, z), hit_features(x, y, -z)
    np.testing.assert_array_equal(plus["eta"], -minus["eta"])
    assert np.all(np.abs(plus["theta"].astype(np.float64) + minus["theta"] - np.pi) < 1e-6)


def test_beam_axis_is_flagged_not_hidden():
    got = hit_features(np.array([0.0, 0.0]), np.array([0.0, 0.0]), np.array([5000.0, 0.0]))
    assert np.isposinf(got["eta"][0]) and np.isnan(got["eta"][1])
    schema = load_schema(2)
    columns = {"r": np.array([1.0, 2.0], np.float32), "eta": got["eta"]}
    bad, fields, why = first_violations(columns, schema.level("hit"))
    assert bad.tolist() == [True, True] and fields == ["eta", "eta"] and why == ["non-finite value"] * 2
