"""pipeline.add_hit_features: the notebook / coffea entry point gives convert's columns bit for bit."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

import pipeline
from pipeline.features import DERIVED

LOW = ("spacePoint_globEdgeLowX", "spacePoint_globEdgeLowY", "spacePoint_globEdgeLowZ")


def _bits(a) -> np.ndarray:
    return ak.to_numpy(ak.flatten(a, axis=None)).view(np.uint32)


@pytest.fixture(scope="module")
def converted_hits(converted_random):
    files = sorted((converted_random / "shards").glob("*.parquet"))
    return ak.concatenate([ak.from_parquet(f) for f in files]).hits


def test_hit_records_get_convert_values_bit_for_bit(converted_hits):
    stored = converted_hits
    raw = stored[[f for f in ak.fields(stored) if f not in DERIVED]]  # what a user reads from the dump
    out = pipeline.add_hit_features(raw)
    assert ak.fields(out) == ak.fields(raw) + list(DERIVED)
    assert ak.all(ak.num(out, axis=1) == ak.num(stored, axis=1))
    for name in DERIVED:
        assert out[name].type == stored[name].type
        np.testing.assert_array_equal(_bits(out[name]), _bits(stored[name]))


def test_straight_from_the_root_file(random_dump, converted_random):
    """uproot → awkward → add_hit_features, matched per (entry, hit) to what convert stored."""
    events = uproot.open(random_dump)["MuonHitDump"].arrays(list(LOW))  # hits of all entries
    hits = ak.zip({k: events[k] for k in LOW})
    out = pipeline.add_hit_features(hits)
    files = sorted((converted_random / "shards").glob("*.parquet"))
    shards = ak.concatenate([ak.from_parquet(f) for f in files])
    entries = ak.to_numpy(shards.source_entry)
    # convert keeps every hit of technologies kept by default, so the surviving events' hits line up
    for name in DERIVED:
        np.testing.assert_array_equal(_bits(out[name][entries]), _bits(shards.hits[name]))


def test_x_y_z_form_nested_deeper_and_float64_reference(converted_hits):
    x, y, z = (converted_hits[c] for c in LOW)
    out = pipeline.add_hit_features(x=x, y=y, z=z)
    assert ak.fields(out) == ["x", "y", "z", *DERIVED]
    for name in DERIVED:
        np.testing.assert_array_equal(_bits(out[name]), _bits(converted_hits[name]))
    # hits grouped once more (e.g. per station): the same values, the same nesting
    n = ak.num(x, axis=1)
    inner = ak.to_numpy(ak.flatten(ak.Array([[k // 2, k - k // 2] for k in ak.to_list(n)]), axis=None))
    nested = {c: ak.unflatten(converted_hits[c], ak.Array(np.asarray(inner, dtype=np.int64)), axis=1)
              for c in LOW}
    deep = pipeline.add_hit_features(ak.zip(nested))
    assert deep.ndim == 3
    np.testing.assert_array_equal(_bits(deep.eta), _bits(converted_hits.eta))
    # an independent float64 reference: eta = -ln tan(theta/2) within float32 rounding
    xf, yf, zf = (ak.to_numpy(ak.flatten(a)).astype(np.float64) for a in (x, y, z))
    ref = -np.log(np.tan(np.arctan2(np.hypot(xf, yf), zf) / 2))
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(out.eta)), ref, rtol=2e-6, atol=2e-6)


def test_errors_are_plain():
    with pytest.raises(ValueError, match="lack the coordinate"):
        pipeline.add_hit_features(ak.Array([[{"x": 1.0}]]))
    with pytest.raises(ValueError, match="same jagged structure"):
        pipeline.add_hit_features(x=ak.Array([[1.0, 2.0]]), y=ak.Array([[1.0]]), z=ak.Array([[1.0, 2.0]]))
