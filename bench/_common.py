"""Shared helpers for the benchmarks: simulated inputs (cached), medians, subprocess RSS."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
CACHE = Path(os.environ.get("BENCH_CACHE", "/tmp/muon-pipeline-bench"))


def simulated(name: str, events: int, background: int = 300, files: int = 1, seed: int = 1) -> list[Path]:
    """Simulated raw dumps made with the tool itself (cached between runs)."""
    d = CACHE / f"{name}-{events}x{files}-bkg{background}-s{seed}"
    if not d.exists() or not list(d.glob("*.root")):
        d.mkdir(parents=True, exist_ok=True)
        cmd = [str(BIN / "muon-pipeline"), "simulate", str(d / "sim.root"), "--events", str(events),
               "--seed", str(seed), "--background-per-event", str(background)]
        if files > 1:
            cmd += ["--files", str(files)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return sorted(d.glob("*.root"))


def median_time(fn, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def run_rss(cmd: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of a command run in a fresh child process."""
    wrapper = (  # the child reports its own children's peak RSS
        "import resource,subprocess,sys,time;t=time.perf_counter();"
               "subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
               "print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], check=True, capture_output=True, text=True).stdout
    secs, kib = out.split()
    return float(secs), int(kib) / 1024




def write_hit_scores(parent: Path, out: Path, score, run: dict | None = None) -> None:
    """A scores folder for every event of dataset ``parent``: ``score(table)`` gives one float32 per hit of
    a shard's table (columns eventNumber and hits), in the shard's hit order; ``run`` says what made them."""
    import json

    import pyarrow.parquet as pq

    from pipeline.scores import write_scores
    from pipeline.shards import list_column

    manifest = json.loads((parent / "_manifest.json").read_text())

    def per_shard():
        for s in manifest["shards"]:
            t = pq.read_table(parent / s["path"], columns=["eventNumber", "hits"])
            offsets, _ = list_column(t.column("hits"))
            yield s["path"], t.column("eventNumber").to_numpy(), offsets, score(t)

    write_scores(str(out), str(parent), per_shard(), run=run)
