"""The users' sizes: raw events at ~7 000 hits → convert → scores → filter to ~60 hits → the training loaders.

    .venv/bin/python bench/filter_sizes.py [--events 200] [--background 7000] [--working-point 0.99]
                                           [--plan-events 2690000] [--plan-cores 64] [--no-loaders] [--no-legacy]

Each step runs as its own process with one worker (``-j 1``); per step it prints wall seconds, CPU
seconds, events/s per core (events in / CPU second), MB/s (bytes read / wall second) and peak RSS.
The scores stand in for a hit filter: a deterministic function of each hit's own features (``score``
below) that keeps ~99 % of the muon hits and ~0.15 % of the background at the working point, which
lands near the ~60 hits per event of the tracking dataset. The loaders (``bench/bench_loader.py`` on the
filtered dataset, 0 workers, CPU) read the few hundred filtered events epoch after epoch. The legacy
per-event preparation (``bench/legacy_prep.py``) runs on the same ROOT file, as the baseline of
``convert`` (it pads every event to the file's largest). Last, a paper plan for ``--plan-events`` events
on ``--plan-cores`` cores from these figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import BIN, CACHE, simulated  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def score(hits: dict) -> np.ndarray:
    """Stand-in hit-filter score (float32 per hit) from the hit's own time, r and truth link."""
    frac = (np.abs(hits["spacePoint_time"].astype(np.float64)) * 7.3 + hits["r"].astype(np.float64) * 1e-3) % 1.0
    muon = hits["spacePoint_truthLink"] >= 0
    return np.where(muon | (frac > 1 - 0.0015), 0.9 + 0.1 * frac, 0.8 * frac).astype(np.float32)


def write_stand_in_scores(ds: str, out: str) -> None:
    import pyarrow.parquet as pq

    from pipeline.scores import write_scores
    from pipeline.shards import list_column

    manifest = json.loads(Path(ds, "_manifest.json").read_text())

    def per_shard():
        for s in manifest["shards"]:
            t = pq.read_table(Path(ds, s["path"]), columns=["eventNumber", "hits"])
            offsets, hits = list_column(t.column("hits"))
            yield s["path"], t.column("eventNumber").to_numpy(), offsets, score(hits)

    write_scores(out, ds, per_shard(), run={"stand_in": "bench/filter_sizes.py score()"})


def run(cmd: list[str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MiB, stdout) of ``cmd`` in a fresh child process."""
    wrapper = ("import resource,subprocess,sys,time,json;t=time.perf_counter();"
               "p=subprocess.run(sys.argv[1:],check=True,capture_output=True,text=True);"
               "r=resource.getrusage(resource.RUSAGE_CHILDREN);"
               "print(json.dumps([time.perf_counter()-t,r.ru_utime+r.ru_stime,r.ru_maxrss/1024,p.stdout]))")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def plan_unit_events(manifest: dict, hits_per_event: float) -> float:
    """Entries per unit of ``convert`` at these event sizes: ``shard_events``, or fewer when ``shard_bytes``
    (the estimated in-memory bytes of the raw columns, :mod:`pipeline.sizing`) is reached first."""
    from pipeline.schema import load_schema
    from pipeline.sizing import item_bytes

    cfg = manifest["config"]
    per = item_bytes(load_schema(cfg["schema_version"]))
    muons = manifest["cutflow"]["muons_in"] / max(manifest["cutflow"]["entries_in"], 1)
    event_bytes = per["event"] + hits_per_event * per["hit"] + muons * per["muon"]
    cap = cfg["shard_events"]
    return min(cap, cfg["shard_bytes"] / event_bytes) if cfg.get("shard_bytes") else cap


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--background", type=int, default=7000)
    ap.add_argument("--working-point", type=float, default=0.99)
    ap.add_argument("--plan-events", type=int, default=2_690_000)
    ap.add_argument("--plan-cores", type=int, default=64)
    ap.add_argument("--no-loaders", action="store_true")
    ap.add_argument("--no-legacy", action="store_true")
    ap.add_argument("--write-scores", nargs=2, metavar=("DS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_scores:
        write_stand_in_scores(*args.write_scores)
        return
    raw = simulated("filter-sizes", args.events, args.background)[0]
    work = CACHE / f"filter-sizes-{args.events}-bkg{args.background}"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    ds, sc, flt = work / "ds", work / "scores", work / "tracking"
    mp = str(BIN / "muon-pipeline")
    rows = []

    def step(name: str, cmd: list[str], events: int, read_bytes: int) -> tuple[float, float, float, str]:
        wall, cpu, rss, out = run(cmd)
        rows.append((name, events, wall, cpu, events / cpu, read_bytes / 1e6 / wall, rss))
        return wall, cpu, rss, out

    step("convert", [mp, "convert", str(raw), "-o", str(ds), "-j", "1", "-q"], args.events, raw.stat().st_size)
    m = json.loads((ds / "_manifest.json").read_text())
    ev, hits = m["totals"]["events"], m["totals"]["hits"]
    step("scores (stand-in)", [sys.executable, __file__, "--write-scores", str(ds), str(sc)], ev, size(ds / "shards"))
    step("filter", [mp, "filter", str(ds), "--scores", str(sc), "--working-point", str(args.working_point),
                    "--max-muons-per-event", "2", "--max-hits-per-event", "600", "-o", str(flt), "-j", "1", "-q"],
         ev, size(ds / "shards") + size(sc))
    f = json.loads((flt / "_manifest.json").read_text())
    fc = f["filter_cutflow"]
    print(f"# {raw.name}: {args.events} events, {raw.stat().st_size / 1e6:.0f} MB ROOT; converted {ev} events, "
          f"{hits / ev:,.0f} hits/event, {len(m['shards'])} unit(s), {m['totals']['bytes'] / 1e6:.1f} MB Parquet "
          f"({m['totals']['bytes'] / ev / 1e3:.0f} kB/event)")
    print(f"# filtered: threshold {f['lineage']['threshold']:.6g} (working point {args.working_point}), muon-hit "
          f"efficiency {fc['hits_on_muons_passing'] / fc['hits_on_muons_in']:.4f}, {f['totals']['events']} events, "
          f"{f['totals']['hits'] / max(f['totals']['events'], 1):.1f} hits/event, "
          f"{f['totals']['muons'] / max(f['totals']['events'], 1):.2f} muons/event, "
          f"{f['totals']['bytes'] / 1e6:.2f} MB ({f['totals']['bytes'] / max(f['totals']['events'], 1) / 1e3:.1f} "
          f"kB/event); capped: {fc['events_capped_muons']} on muons, {fc['events_capped_hits']} on hits")
    if not args.no_legacy:
        step("legacy_prep (per-event loop)", [sys.executable, str(REPO / "bench" / "legacy_prep.py"), str(raw),
                                              str(work / "legacy.npz")], args.events, raw.stat().st_size)
    if not args.no_loaders:
        _, _, rss, out = run([sys.executable, str(REPO / "bench" / "bench_loader.py"), "--data", str(flt),
                              "--workers", "0", "--repeat", "1", "--device", "cpu", "--threads", "1"])
        print("# loaders on the filtered dataset (bench/bench_loader.py, 1 torch thread), peak RSS "
              f"{rss:.0f} MiB:\n" + "\n".join(ln for ln in out.splitlines() if ln.startswith(("|", "#"))))
    print("| step | events | wall s | CPU s | events/s per core | MB/s read | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n, wall, cpu, rate, mbs, rss in rows:
        print(f"| {name} | {n} | {wall:.2f} | {cpu:.2f} | {rate:,.1f} | {mbs:.1f} | {rss:.0f} |")
    # the paper plan: per-core rates, unit sizes and bytes per event scale linearly with events
    conv = next(r for r in rows if r[0] == "convert")
    filt = next(r for r in rows if r[0] == "filter")
    n, cores = args.plan_events, args.plan_cores
    raw_per_event = m["totals"]["bytes"] / ev
    per_event = plan_unit_events(m, hits / ev)
    units = n / per_event
    conv_h = n / conv[4] / 3600
    filt_h = n / filt[4] / 3600
    print(f"# plan for {n:,} events on {cores} cores: convert {conv_h:,.0f} core-hours ({conv_h / cores:.1f} h wall), "
          f"~{units:,.0f} units of ~{per_event:.0f} events, "
          f"{n * raw_per_event / 1e12:.2f} TB of raw Parquet; filter {filt_h:,.0f} core-hours "
          f"({filt_h / cores:.1f} h wall), "
          f"{n * f['totals']['bytes'] / max(f['totals']['events'], 1) / 1e9:.1f} GB tracking dataset; "
          f"a job array of {cores} tasks runs ~{units / cores:,.0f} units each")


if __name__ == "__main__":
    main()
