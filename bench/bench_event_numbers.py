"""Cost of convert's eventNumber uniqueness check while planning (``pipeline.units.check_event_numbers``).

    .venv/bin/python bench/bench_event_numbers.py [--entries 5000000] [--out DIR]

Writes one TTree with an int64 ``eventNumber`` branch (zstd:3, baskets of 500 000 entries), once with
the numbers increasing (most dumps) and once in random order, and times the check on a freshly
opened file without uproot's array cache: the branch read plus the uniqueness test. Best of 3.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import uproot

from pipeline.units import check_event_numbers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=5_000_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/muon-pipeline-bench/event_numbers"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "events.root"
    n = args.entries
    for name, values in (("increasing", np.arange(n, dtype=np.int64) * 7 + 3),
                         ("random order", np.random.default_rng(1).permutation(n).astype(np.int64) * 7 + 3)):
        with uproot.recreate(path, compression=uproot.ZSTD(3)) as f:
            f.mktree("T", {"eventNumber": np.int64})
            for lo in range(0, n, 500_000):
                f["T"].extend({"eventNumber": values[lo: lo + 500_000]})
        times = []
        for _ in range(3):
            with uproot.open(path, array_cache=None) as f:
                t0 = time.perf_counter()
                check_event_numbers(f["T"], str(path), "eventNumber")
                times.append(time.perf_counter() - t0)
        print(f"{name}: {min(times):.2f} s for {n} entries ({min(times) / n * 1e6:.3f} s per million)")
    path.unlink()


if __name__ == "__main__":
    main()
