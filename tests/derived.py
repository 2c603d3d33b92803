"""Helpers of the derived-dataset tests: a simulated + converted parent, test scores, and a slow per-event
reference of ``filter`` in plain Python (no numpy masks, no pipeline code)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from click.testing import CliRunner

from pipeline.cli import main


def cli(*args, code: int = 0) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res.output


def parent_dataset(root: Path, events: int = 160, seed: int = 3, background: int = 200, *extra: str) -> Path:
    """``simulate`` + ``convert`` into ``root/ds``: several units and row groups."""
    raw = root / "raw.root"
    if not raw.exists():
        cli("simulate", raw, "-n", events, "--seed", seed, "--background-per-event", background, "-q")
    ds = root / "ds"
    cli("convert", raw, "-o", ds, "--shard-events", 40, "--row-group-size", 15, "-j", 1, "-q", *extra)
    return ds


def hit_score(hits: dict, salt: float = 7.3) -> np.ndarray:
    """A deterministic score per hit from its own features: muon hits score higher on average, both spread."""
    frac = (np.abs(hits["spacePoint_time"].astype(np.float64)) * salt + hits["r"].astype(np.float64) * 1e-3) % 1.0
    return (0.3 * (hits["spacePoint_truthLink"] >= 0) + 0.7 * frac).astype(np.float32)


def shard_scores(ds: Path, salt: float = 7.3):
    """``write_scores``' per-shard tuples for dataset ``ds``."""
    from pipeline.shards import list_column

    manifest = json.loads((ds / "_manifest.json").read_text())
    for s in manifest["shards"]:
        t = pq.read_table(ds / s["path"])
        offsets, hits = list_column(t.column("hits"))
        yield s["path"], t.column("eventNumber").to_numpy(), offsets, hit_score(hits, salt)


def make_scores(ds: Path, out: Path, salt: float = 7.3, run: dict | None = None) -> Path:
    from pipeline.scores import write_scores

    write_scores(str(out), str(ds), shard_scores(ds, salt), run=run)
    return out


def read_rows(ds: Path) -> list[tuple[str, dict]]:
    """(parent shard path, row as Python objects) of every event, in manifest order."""
    manifest = json.loads((ds / "_manifest.json").read_text())
    return [(s["path"], row) for s in manifest["shards"] for row in pq.read_table(ds / s["path"]).to_pylist()]


def read_score_rows(scores: Path) -> dict[str, list[list[float]]]:
    manifest = json.loads((scores / "_manifest.json").read_text())
    return {f["parent_shard"]: pq.read_table(scores / f["path"]).column("score").to_pylist()
            for f in manifest["files"]}


def reference_threshold(ds: Path, scores: Path, wp: float) -> float:
    """The k-th largest muon-hit score, k the smallest with k / N >= wp (float64), by sorting in Python."""
    per_shard = read_score_rows(scores)
    muon_scores, at = [], {}
    for rel, row in read_rows(ds):
        i = at.get(rel, 0)
        at[rel] = i + 1
        muon_scores += [s for h, s in zip(row["hits"], per_shard[rel][i]) if h["spacePoint_truthLink"] >= 0]
    n = len(muon_scores)
    k = next(k for k in range(1, n + 1) if k / n >= wp)
    return sorted(muon_scores, reverse=True)[k - 1]


def reference_filter(ds: Path, scores: Path, threshold: float, max_muons: int | None = None,
                     max_hits: int | None = None) -> tuple[list[dict], dict]:
    """upstream's loop: per event, keep hits with score >= threshold, muons with enough hits (the parent's
    selection), renumber links, drop empty events, then drop events over the caps. Returns (events, counts)."""
    sel = json.loads((ds / "_manifest.json").read_text())["config"]["selection"]
    per_shard = read_score_rows(scores)
    out, at = [], {}
    n = dict.fromkeys(("below", "fail_hits", "no_muon", "capped_muons", "capped_hits", "muons_capped",
                       "hits_capped", "hits_no_muon"), 0)
    for rel, row in read_rows(ds):
        i = at.get(rel, 0)
        at[rel] = i + 1
        kept = [dict(h) for h, s in zip(row["hits"], per_shard[rel][i]) if float(s) >= threshold]
        n["below"] += len(row["hits"]) - len(kept)
        new_index, muons = {}, []
        for m, mu in enumerate(row["truthMuons"]):
            count = sum(1 for h in kept if h["spacePoint_truthLink"] == m)
            if mu["truthMuon_pt"] >= sel["min_pt"] and abs(mu["truthMuon_eta"]) <= sel["max_abs_eta"] \
                    and count >= max(sel["min_hits"], 1):
                new_index[m] = len(muons)
                muons.append(mu)
            else:
                n["fail_hits"] += 1
        if not muons:
            n["no_muon"] += 1
            n["hits_no_muon"] += len(kept)
            continue
        for h in kept:
            h["spacePoint_truthLink"] = new_index.get(h["spacePoint_truthLink"], -1)
        if max_muons is not None and len(muons) > max_muons:
            n["capped_muons"] += 1
        elif max_hits is not None and len(kept) > max_hits:
            n["capped_hits"] += 1
        else:
            out.append({**row, "hits": kept, "truthMuons": muons})
            continue
        n["muons_capped"] += len(muons)
        n["hits_capped"] += len(kept)
    return out, n


def same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in g:
            if k in ("hits", "truthMuons"):
                assert len(g[k]) == len(w[k]), (w["eventNumber"], k)
                for a, b in zip(g[k], w[k]):
                    assert all(a[f] == b[f] or (isinstance(b[f], float) and math.isnan(b[f])) for f in b), \
                        (w["eventNumber"], k)
            else:
                assert g[k] == w[k], k
