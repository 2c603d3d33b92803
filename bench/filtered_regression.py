"""The regression trained on a filtered dataset made from network scores, beside truth-filtered hits.

The users' stage 3 → 4 on this machine: a trained hit filter (``RUN``, e.g. from ``bench/hit_filter.py``)
scores every event of a pile-up dataset (``predict --split all``); ``filter`` keeps the hits passing the
working point (with the users' caps); ``inverse_pt`` trains on the result. The same training runs on
the dataset filtered with the truth (score 1 for a hit on a muon, 0 otherwise, threshold 0.5, the same
caps): the regression with a perfect filter. Both evaluate on their test split (the same hash split of
eventNumber as the hit filter's, so no test event was seen by either network in training).

    python bench/filtered_regression.py PARENT --hit-filter RUN [--working-point 0.99] [--steps 1500]
        [--work DIR] [--max-muons-per-event 2] [--max-hits-per-event 600]

Prints, per dataset: events, hits per event, muons; core σ(pT)/pT and charge mis-ID at 10–100 GeV
and in all, with the number of test muons (small samples: read the counts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from _common import BIN, run_rss, write_hit_scores  # noqa: E402


def truth_scores(parent: Path, out: Path) -> None:
    """Scores 1.0 for hits on a truth muon, 0.0 otherwise, for every event of ``parent``."""
    from pipeline.shards import list_column

    def truth(table) -> np.ndarray:
        return (list_column(table.column("hits"))[1]["spacePoint_truthLink"] >= 0).astype(np.float32)

    write_hit_scores(parent, out, truth)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("parent", type=Path)
    ap.add_argument("--hit-filter", type=Path, required=True, help="a finished hit-filter training run")
    ap.add_argument("--working-point", type=float, default=0.99)
    ap.add_argument("--max-muons-per-event", type=int, default=2)
    ap.add_argument("--max-hits-per-event", type=int, default=600)
    ap.add_argument("--steps", type=int, default=1500, help="regression optimiser steps per run")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-filtered-"))
    work.mkdir(parents=True, exist_ok=True)
    mp = str(BIN / "muon-pipeline")
    caps = ["--max-muons-per-event", str(args.max_muons_per_event), "--max-hits-per-event", str(args.max_hits_per_event)]

    pred_s, pred_mib = run_rss([mp, "predict", str(args.hit_filter), "--data", str(args.parent), "-o",
                                str(work / "net_scores"), "--split", "all", "--device", "cpu"])
    if not (work / "truth_scores" / "_manifest.json").exists():
        shutil.rmtree(work / "truth_scores", ignore_errors=True)
        truth_scores(args.parent, work / "truth_scores")
    made = {}
    for name, scores, cut in (("network", "net_scores", ["--working-point", str(args.working_point)]),
                              ("truth", "truth_scores", ["--threshold", "0.5"])):
        ds = work / f"{name}_ds"
        secs, mib = run_rss([mp, "filter", str(args.parent), "--scores", str(work / scores), *cut, *caps,
                             "-o", str(ds), "-q"])
        made[name] = (ds, secs, mib)

    cfg = yaml.safe_load((Path(__file__).parent.parent / "pipeline" / "configs" / "inverse_pt.yaml").read_text())
    cfg.setdefault("data", {}).update({"batch_size": args.batch_size})
    cfg.setdefault("trainer", {}).update({"max_steps": args.steps, "patience": 0, "seed": 1})
    (work / "inverse_pt.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = []
    for name, (ds, fsecs, fmib) in made.items():
        run = work / f"{name}_run"
        shutil.rmtree(run, ignore_errors=True)
        subprocess.run([mp, "train", "--config", str(work / "inverse_pt.yaml"), "--data", str(ds), "-o", str(run),
                        "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([mp, "evaluate", str(run), "--data", str(ds), "--device", "cpu", "--no-plots"], check=True,
                       stdout=subprocess.DEVNULL)
        man = json.loads((ds / "_manifest.json").read_text())
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
        model = metrics["methods"]["model"]
        w = model["windows"]["10-100"]
        t = man["totals"]
        rows.append(f"| {name} | {t['events']} | {t['hits'] / max(t['events'], 1):.1f} | {t['muons']} | "
                    f"{w['n']} | {100 * (w['pt']['core_sigma'] or float('nan')):.2f} | "
                    f"{100 * w['charge_misid']['rate']:.2f} | {fsecs:.0f} s, {fmib:.0f} MiB |")
    print(f"predict --split all: {pred_s:.0f} s, peak {pred_mib:.0f} MiB; regression: inverse_pt, {args.steps} steps "
          f"x batch {args.batch_size}\n")
    print("| filtered with | events | hits/event | muons | test muons 10–100 GeV | core σ(pT)/pT 10–100 [%] | "
          "charge mis-ID 10–100 [%] | filter wall, peak |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"work: {work}")


if __name__ == "__main__":
    main()
