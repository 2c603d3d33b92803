"""A faithful per-event Python re-implementation of the existing preparation script.

What ``../shared/reference/raw-format.md`` describes: read 50 entries at a time, loop over events
and tracks in Python (printing per event), apply the track cuts, turn hits of removed tracks into
background, renumber the surviving links, drop events without a track, and write NaN-padded
fixed-size rows with gzip plus a metadata YAML with cut-flow counters. h5py is not a dependency
of this project, so the padded rows go to a gzip-compressed ``.npz`` (same padding, same codec).
Used only as the baseline of ``bench/bench_scaling.py``.
"""

from __future__ import annotations

import sys

import numpy as np
import uproot
import yaml

HIT = ["spacePoint_globEdgeHighX", "spacePoint_globEdgeHighY", "spacePoint_globEdgeHighZ",
       "spacePoint_globEdgeLowX", "spacePoint_globEdgeLowY", "spacePoint_globEdgeLowZ", "spacePoint_time",
       "spacePoint_driftR", "spacePoint_covXX", "spacePoint_covXY", "spacePoint_covYX", "spacePoint_covYY",
       "spacePoint_channel", "spacePoint_layer", "spacePoint_stationPhi", "spacePoint_stationEta",
       "spacePoint_stationIndex", "spacePoint_technology", "spacePoint_truthLink"]
MUON = ["truthMuon_pt", "truthMuon_eta", "truthMuon_phi", "truthMuon_q"]


def prepare(path: str, out: str, min_pt=5.0, max_eta=2.7, min_hits=3, max_hits=None, max_muons=2) -> dict:
    counters = {"events_in": 0, "events_out": 0, "tracks_in": 0, "tracks_out": 0}
    rows_hits, rows_muons = [], []
    tree = uproot.open(path)["MuonHitDump"]
    for arrays in tree.iterate(HIT + MUON + ["eventNumber"], step_size=50, library="np"):
        for i in range(len(arrays["eventNumber"])):
            counters["events_in"] += 1
            hits = {k: arrays[k][i].copy() for k in HIT}
            muons = {k: arrays[k][i] for k in MUON}
            keep, mapping = [], {}
            for t in range(len(muons["truthMuon_pt"])):
                counters["tracks_in"] += 1
                n = int(np.sum(hits["spacePoint_truthLink"] == t))
                if muons["truthMuon_pt"][t] >= min_pt and abs(muons["truthMuon_eta"][t]) <= max_eta and n >= min_hits:
                    mapping[t] = len(keep)
                    keep.append(t)
            link = hits["spacePoint_truthLink"]
            new_link = np.full_like(link, -1)
            for old, new in mapping.items():
                new_link[link == old] = new
            hits["spacePoint_truthLink"] = new_link
            if not keep:
                continue
            counters["events_out"] += 1
            counters["tracks_out"] += len(keep)
            rows_hits.append(np.stack([hits[k].astype(np.float32) for k in HIT], axis=1))
            rows_muons.append(np.stack([muons[k][keep].astype(np.float32) for k in MUON], axis=1))
            print(f"event {arrays['eventNumber'][i]}: {len(keep)} tracks, {len(link)} hits", file=sys.stderr)
    width = max_hits or max((len(h) for h in rows_hits), default=0)
    padded = np.full((len(rows_hits), width, len(HIT)), np.nan, np.float32)
    padded_mu = np.full((len(rows_muons), max_muons, len(MUON)), np.nan, np.float32)
    for j, (h, m) in enumerate(zip(rows_hits, rows_muons)):
        padded[j, : min(len(h), width)] = h[:width]
        padded_mu[j, : min(len(m), max_muons)] = m[:max_muons]
    np.savez_compressed(out, hits=padded, muons=padded_mu)
    with open(out + ".yaml", "w") as fh:
        yaml.safe_dump(counters, fh)
    return counters


if __name__ == "__main__":
    print(prepare(sys.argv[1], sys.argv[2]))
