"""Test helper: write hand-made raw dumps (the MuonHitDump layout) with uproot.

Records zipped under ``spacePoint`` / ``truthMuon`` become branches ``spacePoint_<field>`` with one
shared counter, which is the raw layout (see ``docs/raw-format.md``).
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import uproot

HIT_FLOAT = ["globEdgeHighX", "globEdgeHighY", "globEdgeHighZ", "globEdgeLowX", "globEdgeLowY",
             "globEdgeLowZ", "time", "driftR", "covXX", "covXY", "covYX", "covYY"]
HIT_INT = ["readOutSide", "channel", "layer", "stationPhi", "stationEta", "stationIndex", "technology", "truthLink"]


def random_events(n: int, seed: int = 0, n_hits=None) -> dict[str, ak.Array]:
    """Random but well-formed events: 0-2 muons, links valid, coordinates away from the axis.
    ``n_hits``: hits per event (an array of length n); default 3-39 at random."""
    rng = np.random.default_rng(seed)
    nh = rng.integers(3, 40, n) if n_hits is None else np.asarray(n_hits, dtype=np.int64)
    nm = rng.integers(0, 3, n)
    H, M = int(nh.sum()), int(nm.sum())
    hits = {}
    for edge in ("High", "Low"):  # points in a spectrometer-like volume: 1 < r < 12 m, |z| < 22 m
        r, phi = rng.uniform(1000, 12000, H), rng.uniform(-np.pi, np.pi, H)
        hits[f"globEdge{edge}X"] = (r * np.cos(phi)).astype(np.float32)
        hits[f"globEdge{edge}Y"] = (r * np.sin(phi)).astype(np.float32)
        hits[f"globEdge{edge}Z"] = rng.uniform(-22000, 22000, H).astype(np.float32)
    for k in HIT_FLOAT[6:]:
        hits[k] = rng.uniform(0, 15, H).astype(np.float32)
    for k in HIT_INT[:-2]:
        hits[k] = rng.integers(0, 8, H).astype(np.int32)
    hits["technology"] = rng.choice([0, 2, 3, 4, 5], H).astype(np.int32)
    ev_mu = np.repeat(nm, nh)
    link = np.where(ev_mu > 0, rng.integers(0, 3, H) % np.maximum(ev_mu, 1), -1)
    link[rng.random(H) < 0.3] = -1
    hits["truthLink"] = link.astype(np.int32)
    muons = {"pt": rng.uniform(1, 50, M).astype(np.float32), "eta": rng.uniform(-3, 3, M).astype(np.float32),
             "phi": rng.uniform(-3.1, 3.1, M).astype(np.float32), "q": rng.choice([-1, 1], M).astype(np.int32)}
    return {
        "spacePoint": ak.unflatten(ak.zip(hits), nh),
        "truthMuon": ak.unflatten(ak.zip(muons), nm),
        "eventNumber": np.arange(1000, 1000 + n, dtype=np.int64),
    }


def write_dump(path, events: dict, tree: str = "MuonHitDump", compression=None, basket_entries=None) -> None:
    """Write ``events`` as one TTree; ``basket_entries``: entries per basket (default: one basket)."""
    n = len(next(iter(events.values())))
    step = basket_entries or max(n, 1)
    with uproot.recreate(path, compression=compression) as f:
        f.mktree(tree, {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in events.items()})
        for lo in range(0, n, step):
            f[tree].extend({k: v[lo: lo + step] for k, v in events.items()})


def flat_branches(events: dict) -> dict:
    """The records of ``random_events`` as one jagged array per branch name (``spacePoint_time`` ...)."""
    out = {}
    for group, value in events.items():
        if isinstance(value, ak.Array) and ak.fields(value):
            out.update({f"{group}_{k}": value[k] for k in ak.fields(value)})
        else:
            out[group] = value
    return out


def write_rntuple(path, events: dict, name: str = "MuonHitDump") -> None:
    """An RNTuple of ``events``: records give fields ``spacePoint.time``; ``flat_branches`` gives fields
    named like the TTree branches."""
    with uproot.recreate(path) as f:
        f.mkrntuple(name, events)


def dump_files(directory, n: int = 3, seed: int = 0, events: int = 150) -> list[str]:
    """``n`` small random dumps ``in0.root`` … in ``directory`` (seeds ``seed``, ``seed + 1``, …)."""
    paths = []
    for i in range(n):
        p = directory / f"in{i}.root"
        write_dump(p, random_events(events, seed=seed + i))
        paths.append(str(p))
    return paths


def convert_dump(dump, out, **config):
    """``dump`` converted into ``out`` by one process, schema v2 unless ``config`` says otherwise."""
    from pipeline import convert
    from pipeline.config import ConvertConfig

    config.setdefault("schema_version", 2)
    convert([str(dump)], str(out), ConvertConfig(**config), workers=1, quiet=True)
    return out
