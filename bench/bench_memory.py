"""Peak memory of `convert` when event sizes vary, and on a raw pile-up dump (issue 9, case 10).

    .venv/bin/python bench/bench_memory.py [--events 3000] [--pileup-events 2000] [--pileup-hits 6000]
                                            [--step-size "20 MB"] [--repeat 3] [--out DIR]
                                            [--cases uneven,pileup,tail,single] [--skew-events 10000]

1. *Uneven vs even*: two dumps with the same number of events and hits; in the uneven one event sizes
   vary tenfold (small and large events in clustered blocks, the worst case for a step computed from
   the average event size), in the even one every event has the mean size. Both are converted with
   the same ``--step-size`` and ``-j 1``; the ratio of peak RSS (median of ``--repeat`` runs) is the
   figure (goal: within 1.3x).
2. *Pile-up dump*: ``--pileup-events`` events of ``--pileup-hits`` hits each converted at the
   defaults, with ``-j 1`` and ``-j 2``: peak RSS per process (goal: under 1 GB), number of work
   units, and the wall-time ratio (two units or more let ``-j 2`` work).
3. *Strong skew, tail* (``tail``): ``--skew-events`` entries of 10 hits where the last 2 % carry 20,000
   hits each, written in baskets of 200 entries (the heavy events fill whole baskets), against the same
   hits spread evenly; ``--step-size``, ``--row-group-size 100``. Peak RSS of each, the ratio, and the
   bound ``250 MB + 4 × max(step, row group)`` with the largest row group the run wrote.
4. *One huge event* (``single``): the even dump of case 3 with 50 hits fewer per event and one event in
   the middle carrying them all (``50 × --skew-events`` hits: 40 MB at 10,000 entries, twice a 20 MB
   step: a step, and a row group, of its own), against the even dump; same options and bound.

Peak RSS is the maximum resident set of the converting process and its workers (``getrusage`` of
the children of a small wrapper process), so each run is measured in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from rawdump import random_events, write_dump  # noqa: E402

BIN = Path(sys.executable).parent
WRAP = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB of the largest process the command ran, wall seconds)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAP, str(BIN / "muon-pipeline"), *args],
                         capture_output=True, text=True)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"convert failed: {out.stderr or out.stdout}")
    return int(out.stdout.strip().splitlines()[-1]) / 1024, took


def write_in_pieces(path: Path, hits: np.ndarray, seed: int, piece: int = 200) -> None:
    """Write a dump in baskets of ``piece`` events (as a producer flushing regularly would)."""
    write_dump(path, random_events(len(hits), seed=seed, n_hits=hits), compression=None, basket_entries=piece)


def largest_row_group_mb(dataset: Path) -> float:
    """Estimated raw bytes (80 per hit, 16 per muon, 8 per event: the sizing rule) of the largest row group written."""
    import pyarrow.parquet as pq

    biggest = 0.0
    for shard in sorted((dataset / "shards").glob("*.parquet")):
        pf = pq.ParquetFile(shard)
        for g in range(pf.num_row_groups):
            t = pf.read_row_group(g, columns=["hits", "truthMuons"])
            hits = sum(len(c.values) for c in t.column("hits").chunks)
            muons = sum(len(c.values) for c in t.column("truthMuons").chunks)
            biggest = max(biggest, (80 * hits + 16 * muons + 8 * t.num_rows) / 1e6)
    return biggest


def skew_case(work: Path, name: str, hits: np.ndarray, even: np.ndarray, args) -> dict:
    """Peak RSS of ``hits`` against ``even`` (same total), ``--row-group-size 100``, and the stated bound."""
    out: dict = {}
    for label, h in ((name, hits), (f"{name}-even", even)):
        path = work / f"{label}.root"
        if not path.exists():
            write_dump(path, random_events(len(h), seed=8, n_hits=h), compression=None, basket_entries=200)
        rss = []
        for k in range(args.repeat):
            ds = work / f"{label}-{k}"
            shutil.rmtree(ds, ignore_errors=True)  # a finished output would make the run a no-op
            r, _ = peak_rss_mb(["convert", str(path), "-o", str(ds), "-q", "-j", "1", "--step-size", args.step_size,
                                "--row-group-size", "100"])
            rss.append(r)
        group = largest_row_group_mb(work / f"{label}-0")
        bound = 250 + 4 * max(float(args.step_size.split()[0]), group)
        out[label] = {"events": len(h), "hits": int(h.sum()), "peak_rss_mb": statistics.median(rss), "runs": rss,
                      "largest_row_group_mb": group, "bound_mb": bound}
    out["ratio"] = out[name]["peak_rss_mb"] / out[f"{name}-even"]["peak_rss_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--pileup-events", type=int, default=2000)
    ap.add_argument("--pileup-hits", type=int, default=6000)
    ap.add_argument("--step-size", default="20 MB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cases", default="uneven,pileup,tail,single")
    ap.add_argument("--skew-events", type=int, default=10_000)
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    work = args.out or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}

    if cases & {"tail", "single"}:
        n = args.skew_events
        tail = np.full(n, 10)
        tail[-n // 50:] = 20_000
        even = np.full(n, int(tail.sum() // n))
        if "tail" in cases:
            results["tail"] = skew_case(work, "tail", tail, even, args)
        if "single" in cases:
            single = even - 50
            single[n // 2] += 50 * n  # one event of 40 % of all hits: 40 MB, twice the 20 MB step
            results["single"] = skew_case(work, "single", single, even, args)
        for c in ("tail", "single"):
            if c in results:
                r = results[c]
                print(f"{c}: peak {r[c]['peak_rss_mb']:.0f} MB vs {r[c + '-even']['peak_rss_mb']:.0f} MB even "
                      f"({r['ratio']:.2f}x; bound {r[c]['bound_mb']:.0f} MB with row groups up to "
                      f"{r[c]['largest_row_group_mb']:.0f} MB)")
    if "uneven" not in cases and "pileup" not in cases:
        print(json.dumps(results, indent=2))
        return
    n = args.events
    uneven = np.where((np.arange(n) // (n // 6)) % 2 == 0, 60, 600)  # blocks of 60-hit and 600-hit events
    even = np.full(n, int(round(uneven.mean())))
    for name, hits in (("uneven", uneven), ("even", even)):
        path = work / f"{name}.root"
        if not path.exists():
            write_in_pieces(path, hits, seed=5)
        rss = []
        for k in range(args.repeat):
            r, _ = peak_rss_mb(["convert", str(path), "-o", str(work / f"{name}-{k}"), "-q", "-j", "1",
                                "--step-size", args.step_size])
            rss.append(r)
        results[name] = {"events": n, "hits": int(hits.sum()), "peak_rss_mb": statistics.median(rss), "runs": rss}
    results["uneven_over_even"] = results["uneven"]["peak_rss_mb"] / results["even"]["peak_rss_mb"]

    pile = work / "pileup.root"
    if not pile.exists():
        write_in_pieces(pile, np.full(args.pileup_events, args.pileup_hits), seed=6, piece=100)
    runs = {}
    for j in (1, 2):
        ds = work / f"pileup-j{j}"
        rss, took = peak_rss_mb(["convert", str(pile), "-o", str(ds), "-q", "-j", str(j)])
        manifest = json.loads((ds / "_manifest.json").read_text())
        runs[j] = {"peak_rss_mb": rss, "seconds": took, "units": len(manifest["shards"])}
    results["pileup"] = {"events": args.pileup_events, "hits_per_event": args.pileup_hits,
                         "file_mb": pile.stat().st_size / 1e6, "j1": runs[1], "j2": runs[2],
                         "speedup_j2": runs[1]["seconds"] / runs[2]["seconds"]}
    print(json.dumps(results, indent=2))
    print(f"\nuneven/even peak RSS at --step-size {args.step_size}: {results['uneven_over_even']:.2f}x "
          f"({results['uneven']['peak_rss_mb']:.0f} vs {results['even']['peak_rss_mb']:.0f} MB, median of "
          f"{args.repeat}); pile-up {args.pileup_events} x {args.pileup_hits} hits "
          f"({results['pileup']['file_mb']:.0f} MB file): {runs[1]['units']} units, peak "
          f"{runs[1]['peak_rss_mb']:.0f} MB (-j 1), {runs[2]['peak_rss_mb']:.0f} MB (-j 2, largest process), "
          f"-j 2 speed-up {results['pileup']['speedup_j2']:.2f}x")


if __name__ == "__main__":
    main()
