"""root:// read and convert throughput against the same local file, in the same run (medians).

Starts a real XRootD server on loopback (tests/grid_fixtures.py: Debian's xrootd-server, run as
``nobody`` when root), serves a simulated dump, then times, alternating local and root:// each repeat:

* read: uproot ``tree.arrays`` of every raw branch the tool reads, in the tool's chunks (100 MB steps);
* convert: ``convert -j 1`` of the whole file (one unit) to a local folder.

    .venv/bin/python bench/bench_xrootd.py [--events 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uproot
from _common import simulated

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from grid_fixtures import _stop, start_xrootd, xrootd_missing  # noqa: E402

from pipeline import convert  # noqa: E402
from pipeline.config import ConvertConfig  # noqa: E402
from pipeline.schema import load_schema  # noqa: E402
from pipeline.source import _remote_options, raw_fields  # noqa: E402


def read_all(path: str, branches: list[str]) -> int:
    options = _remote_options(path) if "://" in path else {}  # the tool's XRootD source and timeouts
    with uproot.open(path, **options) as f:
        tree = f["MuonHitDump"]
        n = 0
        for arrays in tree.iterate(branches, step_size="100 MB", library="ak", how=dict):
            n += len(next(iter(arrays.values())))
        return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10000)
    ap.add_argument("--background", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    reason = xrootd_missing()
    if reason:
        sys.exit(f"cannot run: {reason}")
    [raw] = simulated("xrootd", args.events, args.background)
    server = start_xrootd()
    tmp = Path(tempfile.mkdtemp())
    try:
        shutil.copy(raw, server.data / "bench.root")
        url = server.url("bench.root")
        branches = [f.source for fields in raw_fields(load_schema(2)).values() for f in fields]
        cfg = ConvertConfig(schema_version=2, shard_events=10**9)
        times: dict[str, list[float]] = {k: [] for k in ("read local", "read root://", "convert local",
                                                          "convert root://")}
        read_all(url, branches)  # warm both page caches alike
        read_all(str(raw), branches)
        for i in range(args.repeat):
            for label, path in (("local", str(raw)), ("root://", url)):
                t0 = time.perf_counter()
                assert read_all(path, branches) == args.events
                times[f"read {label}"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                convert([path], str(tmp / f"{label[:4]}{i}"), cfg, workers=1, quiet=True)
                times[f"convert {label}"].append(time.perf_counter() - t0)
        mb = raw.stat().st_size / 1e6
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{args.events} events, {mb:.0f} MB ROOT, {args.repeat} repeats, medians:")
        for k, v in med.items():
            print(f"  {k:16s} {v:6.2f} s  {mb / v:7.1f} MB/s   (all: {', '.join(f'{t:.2f}' for t in times[k])})")
        print(f"  read:    root:// / local = {med['read root://'] / med['read local']:.2f} x the time")
        print(f"  convert: root:// / local = {med['convert root://'] / med['convert local']:.2f} x the time")
    finally:
        _stop(server.pidfile)
        shutil.rmtree(server.base, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
