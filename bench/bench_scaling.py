"""Scale-out figures (issue 4), each a ratio measured in the same run, medians of --repeat runs:

1. speed-up of 2 local workers over 1 (goal >= 1.7x on 2 cores);
2. Dask (embedded LocalCluster, 2 workers) overhead vs 2 local processes (goal <= 10 %);
3. peak RSS converting an input 1x and 8x larger at the same step size (goal within 1.3x);
4. convert vs a faithful per-event Python re-implementation of the existing preparation
   (bench/legacy_prep.py) on the same input (goal >= 50x faster).

    .venv/bin/python bench/bench_scaling.py [--events 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import BIN, run_rss, simulated

CLI = str(BIN / "muon-pipeline")


def timed(cmd: list[str], repeat: int, output: Path | None = None) -> float:
    """Median wall time of ``cmd``; ``output`` is removed before each run (no resume)."""
    times = []
    for _ in range(repeat):
        if output is not None:
            shutil.rmtree(output, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def running_cluster_time(cmd: list[str], output: Path, repeat: int) -> float:
    """Convert on an already running Dask cluster (the production setup): scheduler start-up and
    worker imports are not part of the job."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    addr = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        time.sleep(1.5)
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", addr, "--nworkers", "2", "--nthreads", "1",
                                       "--no-dashboard"], **quiet))
        from distributed import Client

        with Client(addr, timeout="30s") as client:
            client.wait_for_workers(2, timeout=60)
            client.run(lambda: __import__("pipeline.units"))  # warm imports, as a long-lived cluster has
        return timed([*cmd, "-o", str(output), "--scheduler", addr], repeat, output)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10000, help="events per file (4 files)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    files = [str(p) for p in simulated("scaling", args.events, files=4)]
    base = [CLI, "convert", *files, "-q", "--shard-events", str(args.events // 2)]

    def fresh(name: str) -> str:
        shutil.rmtree(tmp / name, ignore_errors=True)
        return str(tmp / name)

    t1 = timed([*base, "-o", str(tmp / "w1"), "-j", "1"], args.repeat, tmp / "w1")
    t2 = timed([*base, "-o", str(tmp / "w2"), "-j", "2"], args.repeat, tmp / "w2")
    td = timed([*base, "-o", str(tmp / "dask"), "-j", "2", "--scheduler", "local"], args.repeat, tmp / "dask")
    tr = running_cluster_time([*base, "-j", "2"], tmp / "dask-tcp", args.repeat)
    print(f"1. workers: 1 -> {t1:.2f} s, 2 -> {t2:.2f} s: speed-up {t1 / t2:.2f}x (goal >= 1.7)")
    print(f"2. dask, 2 worker processes: running cluster (dask scheduler + dask worker) {tr:.2f} s, "
          f"overhead {100 * (tr / t2 - 1):+.1f} % vs 2 local processes (goal <= 10 %); embedded "
          f"LocalCluster incl. its start-up {td:.2f} s ({100 * (td / t2 - 1):+.1f} %)")

    small = simulated("rss", args.events)
    large = simulated("rss", args.events * 8)
    rss = {}
    for label, path in (("1x", small[0]), ("8x", large[0])):
        _, rss[label] = run_rss([CLI, "convert", str(path), "-o", fresh(f"rss{label}"), "-q", "-j", "1",
                                 "--step-size", "20 MB", "--shard-events", str(10**9)])
    print(f"3. peak RSS at --step-size '20 MB': 1x {rss['1x']:.0f} MiB, 8x {rss['8x']:.0f} MiB: "
          f"ratio {rss['8x'] / rss['1x']:.2f} (goal <= 1.3)")

    tc = timed([CLI, "convert", str(small[0]), "-o", str(tmp / "one"), "-q", "-j", "1"], args.repeat, tmp / "one")
    legacy = [sys.executable, str(Path(__file__).with_name("legacy_prep.py")), str(small[0]), str(tmp / "legacy")]
    tl = timed(legacy, 1)
    print(f"4. same {args.events}-event file: legacy per-event prep {tl:.2f} s, convert {tc:.2f} s "
          f"(both incl. start-up): {tl / tc:.1f}x faster (goal >= 50)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
