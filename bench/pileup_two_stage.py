"""A two-stage hit filter on pile-up events: the simple time window first, the network on what it keeps.

Stage 1 writes the time-window cut (``pipeline.hitcuts``) as scores (1 kept, 0 not) and ``filter``s the
pile-up dataset with them (≈ 1,400 of ≈ 7,300 hits per event stay); stage 2 trains the shipped
``hit_filter`` on that derived dataset (``bench/hit_filter.py``) and evaluates it on its test split.
Beside it, the simple cuts (window + segment road) at the same overall muon-hit efficiency, on the
same parent dataset.

    python bench/pileup_two_stage.py PILEUP_DS [--window-ns 25] [--max-steps 500] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BIN, run_rss, write_hit_scores  # noqa: E402

from pipeline.dataset import read_dataset  # noqa: E402
from pipeline.hitcuts import HitColumns, best_at, in_time, metrics, scan  # noqa: E402


def window_scores(parent: Path, out: Path, window_ns: float, drift_ns: float) -> None:
    """1.0 for hits inside the time window, 0.0 outside, for every event of ``parent``."""
    write_hit_scores(parent, out, lambda t: in_time(HitColumns.from_table(t), window_ns, drift_ns).astype(np.float32),
                     run={"tool": "pipeline.hitcuts.in_time", "window_ns": window_ns, "mdt_drift_ns": drift_ns})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parent", type=Path)
    ap.add_argument("--window-ns", type=float, default=25.0)
    ap.add_argument("--mdt-drift-ns", type=float, default=750.0)
    ap.add_argument("--max-steps", type=int, default=500)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-two-stage-"))
    work.mkdir(parents=True, exist_ok=True)
    mp = str(BIN / "muon-pipeline")

    hits = HitColumns.from_table(read_dataset(str(args.parent), columns=["hits"]))
    stage1 = metrics(in_time(hits, args.window_ns, args.mdt_drift_ns), hits.event, hits.truth_link)
    if not (work / "window_scores" / "_manifest.json").exists():
        window_scores(args.parent, work / "window_scores", args.window_ns, args.mdt_drift_ns)
    pre = work / "window_ds"
    f_s, f_mib = run_rss([mp, "filter", str(args.parent), "--scores", str(work / "window_scores"), "--threshold",
                          "0.5", "-o", str(pre), "-q"])
    subprocess.run([sys.executable, str(Path(__file__).parent / "hit_filter.py"), str(pre), "--max-steps",
                    str(args.max_steps), "--work", str(work / "net")], check=True)
    net = json.loads((work / "net" / "run" / "eval" / "metrics.json").read_text())
    print(f"\nstage 1 (time window ±{args.window_ns:g} ns, MDT +{args.mdt_drift_ns:g}): efficiency "
          f"{100 * stage1['efficiency']:.2f} %, purity {100 * stage1['purity']:.2f} %, "
          f"{stage1['hits_per_event']:.0f} hits/event kept; filter {f_s:.0f} s, peak {f_mib:.0f} MiB")
    rows = scan(hits, [10.0, 15.0, 25.0, 50.0], [0.01, 0.015, 0.02, 0.03, 0.05, 0.1], [1, 2, 3, 4, 5, 6, 8],
                max_chamber_hits=[None, 20, 40])
    print(json.dumps({"stage1": stage1, "network_on_stage1": {k: net[k] for k in net if k != "groups"}},
                     default=str)[:4000])
    for wp in (0.99, 0.995):
        overall = stage1["efficiency"] * wp
        cut = best_at(rows, overall)
        print(f"overall efficiency {100 * overall:.2f} % (stage 1 × network at {wp}): simple cuts at that "
              f"efficiency: purity {100 * cut['purity']:.2f} %" if cut else "simple cuts: not reached")


if __name__ == "__main__":
    main()
