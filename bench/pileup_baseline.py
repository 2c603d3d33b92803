"""The simple-cut hit filter on simulated ⟨μ⟩ = 200 events: the baseline a learned hit filter must beat.

    .venv/bin/python bench/pileup_baseline.py [--events 500] [--pileup 200] [--seed 1] [--out DIR]

1. ``muon-pipeline simulate --pileup MU`` (timed: events/s, peak RSS), ``convert`` (default cuts: pT ≥ 5 GeV,
   |η| ≤ 2.7, ≥ 3 hits; hits of removed muons become background, as in the users' preparation) and
   ``validate`` of the result (timed);
2. the dataset's hit columns (``read_dataset`` → ``HitColumns.from_table``) through a grid of
   ``pipeline.hitcuts`` parameters: time window, η road, compatible hits, chamber cap;
3. prints the grid's best points at muon-hit efficiency 0.99 and 0.995 (the purest point reaching it), the
   time window alone, and the whole grid as JSON lines with ``--grid``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BIN, run_rss  # noqa: E402

from pipeline.dataset import read_dataset  # noqa: E402
from pipeline.hitcuts import HitColumns, best_at, scan  # noqa: E402

WINDOWS = [10.0, 15.0, 25.0, 50.0]
ROADS = [0.01, 0.015, 0.02, 0.03, 0.05, 0.1]
MIN_COMPATIBLE = [1, 2, 3, 4, 5, 6, 8]
CAPS: list[int | None] = [None, 20, 40]


def _row(label: str, r: dict | None) -> str:
    if r is None:
        return f"| {label} | not reached | | | | | |"
    cap = "–" if r["max_chamber_hits"] is None else r["max_chamber_hits"]
    road = "–" if r["min_compatible"] <= 1 else f"≥ {r['min_compatible']} hits within Δη ±{r['road_eta']:g}"
    params = f"±{r['window_ns']:g} ns (MDT +{r['mdt_drift_ns']:g}); road {road}; chamber cap {cap}"
    return (f"| {label} | {params} | {100 * r['efficiency']:.2f} % | {100 * r['purity']:.1f} % | "
            f"{100 * r['rejection']:.2f} % | {100 * r['muons_kept']:.2f} % | {r['hits_per_event']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500)
    ap.add_argument("--pileup", type=float, default=200.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--grid", action="store_true", help="print every grid point as a JSON line")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="pileup-baseline-") if args.out is None else None
    work = Path(tmp.name) if tmp else args.out
    work.mkdir(parents=True, exist_ok=True)
    raw, ds = work / "pileup.root", work / "pileup_ds"
    exe = str(BIN / "muon-pipeline")

    sim_s, sim_mb = run_rss([exe, "simulate", str(raw), "--events", str(args.events), "--seed", str(args.seed),
                             "--pileup", str(args.pileup), "-q"])
    conv_s, conv_mb = run_rss([exe, "convert", str(raw), "--output", str(ds)])
    val_s, _ = run_rss([exe, "validate", str(ds)])

    t0 = time.perf_counter()
    hits = HitColumns.from_table(read_dataset(str(ds), columns=["hits"]))
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = scan(hits, WINDOWS, ROADS, MIN_COMPATIBLE, max_chamber_hits=CAPS)
    scan_s = time.perf_counter() - t0
    n_events = int(hits.event.max()) + 1
    n_hits = len(hits.time)
    n_muon_hits = int((hits.truth_link >= 0).sum())

    print(f"{date.today()}, {platform.node()} ({platform.processor() or platform.machine()}), "
          f"python {platform.python_version()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"simulate --pileup {args.pileup:g}: {args.events} events in {sim_s:.1f} s "
          f"({args.events / sim_s:.0f} events/s, peak RSS {sim_mb:.0f} MB); convert {conv_s:.1f} s "
          f"(peak RSS {conv_mb:.0f} MB); validate {val_s:.1f} s (OK)")
    print(f"dataset: {n_events} events, {n_hits / n_events:.0f} hits/event, {n_muon_hits / n_events:.1f} on muons; "
          f"read {read_s:.1f} s; scan of {len(rows)} points {scan_s:.1f} s")
    print()
    print("| working point | cut | muon-hit efficiency | hit purity | background rejection | muons keeping ≥ 3 hits "
          "| hits kept per event |")
    print("|---|---|---:|---:|---:|---:|---:|")
    window_only = [r for r in rows if r["min_compatible"] == 1 and r["max_chamber_hits"] is None]
    print(_row("time window only, efficiency ≥ 0.99", best_at(window_only, 0.99)))
    for wp in (0.99, 0.995):
        print(_row(f"efficiency ≥ {wp}", best_at(rows, wp)))
    print(_row("efficiency ≥ 0.95", best_at(rows, 0.95)))
    if args.grid:
        for r in rows:
            print(json.dumps(r))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
