"""Reading cost of the input side (issue 11): TTree vs RNTuple, and float64 branches under --precision round.

    .venv/bin/python bench/bench_containers.py [--events 4000] [--repeat 3]

The same simulated events are written as a TTree, as an RNTuple (``simulate --format rntuple``) and as a
TTree whose float hit branches are float64 (float32 values plus an offset below float32 resolution would
be rounded away, so an offset of 1e-4 mm: every value is rounded). Each is converted in-process, serially,
``--repeat`` times in alternation; medians and ratios to the TTree of the same run are printed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BIN  # noqa: E402


def _float64_copy(src: Path, dst: Path) -> None:
    tree = uproot.open(src)["MuonHitDump"]
    arrays = tree.arrays(library="ak", how=dict)
    out = {}
    for k, v in arrays.items():
        if k.startswith("n"):  # counters; uproot writes its own
            continue
        if k.startswith("spacePoint_") and ak.to_layout(v).content.dtype == np.float32:
            flat = ak.to_numpy(ak.flatten(v)).astype(np.float64) + 1e-4
            v = ak.unflatten(flat, ak.num(v))
        out[k] = v
    with uproot.recreate(dst) as f:
        f.mktree("MuonHitDump", {k: v.type if isinstance(v, ak.Array) else v.dtype for k, v in out.items()})
        f["MuonHitDump"].extend(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from pipeline import convert
    from pipeline.config import ConvertConfig
    from pipeline.layout import SourceLayout

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for fmt in ("ttree", "rntuple"):
            subprocess.run([str(BIN / "muon-pipeline"), "simulate", str(d / f"{fmt}.root"), "-n", str(args.events),
                            "--format", fmt], check=True, stdout=subprocess.DEVNULL)
        _float64_copy(d / "ttree.root", d / "float64.root")
        cases = {"ttree": ConvertConfig(schema_version=2), "rntuple": ConvertConfig(schema_version=2),
                 "float64": ConvertConfig(schema_version=2, layout=SourceLayout(precision="round"))}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for r in range(args.repeat):
            for name, cfg in cases.items():
                t0 = time.perf_counter()
                convert([str(d / f"{name}.root")], str(d / f"out-{name}-{r}"), cfg, workers=1, quiet=True)
                times[name].append(time.perf_counter() - t0)
        base = statistics.median(times["ttree"])
        print(f"{args.events} simulated events, median of {args.repeat} serial conversions:")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:8s} {med:6.2f} s  ({med / base:.2f} x the TTree)   runs: {', '.join(f'{t:.2f}' for t in ts)}")


if __name__ == "__main__":
    main()
