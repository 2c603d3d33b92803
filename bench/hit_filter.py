"""The hit filter on a converted dataset: working-point table, train and predict events/s, peak memory.

Trains the shipped ``hit_filter`` config (or ``--config``) for ``--max-steps`` steps, evaluates the test
split, scores every event with ``predict``; each stage runs as the CLI command in a fresh process
(peak RSS per stage). Any dataset works: a simulated one with background (``simulate
--background-per-event``) or pile-up events.

    python bench/hit_filter.py DATASET [--max-steps 300] [--attention window|full] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import BIN, run_rss  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--config", default="hit_filter")
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--attention", choices=["window", "full"], default=None,
                    help="override attention.kind of the config")
    ap.add_argument("--work", default=None, help="where the run, evaluation and scores go (default: a temp dir)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-hit-filter-"))
    shutil.rmtree(work / "run", ignore_errors=True)
    shutil.rmtree(work / "scores", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    config = args.config
    if args.attention:
        import yaml

        from pipeline.train.config import config_path

        raw = yaml.safe_load(config_path(config).read_text())
        raw.setdefault("attention", {})["kind"] = args.attention
        config = str(work / "config.yaml")
        Path(config).write_text(yaml.safe_dump(raw))
    mp = str(BIN / "muon-pipeline")
    train_s, train_mib = run_rss([mp, "train", "--config", config, "--data", args.dataset, "-o", str(work / "run"),
                                  "--max-steps", str(args.max_steps), "--device", "cpu"])
    summary = json.loads((work / "run" / "summary.json").read_text())
    eval_s, eval_mib = run_rss([mp, "evaluate", str(work / "run"), "--data", args.dataset, "--device", "cpu",
                                "--no-plots"])
    metrics = json.loads((work / "run" / "eval" / "metrics.json").read_text())
    pred_s, pred_mib = run_rss([mp, "predict", str(work / "run"), "--data", args.dataset, "-o",
                                str(work / "scores"), "--device", "cpu"])
    files = json.loads((work / "scores" / "_manifest.json").read_text())["files"]
    scores = {"events": sum(f["rows"] for f in files), "hits": sum(f["hits"] for f in files)}

    from pipeline.train.hitmetrics import hit_table

    print(hit_table(metrics))
    print()
    print(f"train:    {summary['steps']} steps, {summary['events_seen']} events in {summary['seconds']:.0f} s "
          f"({summary['events_seen'] / summary['seconds']:.0f} events/s), peak RSS {train_mib:.0f} MiB "
          f"(process {train_s:.0f} s)")
    print(f"evaluate: {metrics['events']} test events in {metrics['score_seconds']:.1f} s (open + checksums, "
          f"score, truth columns), peak RSS {eval_mib:.0f} MiB")
    print(f"predict:  {scores['events']} events, {scores['hits']} hits in {pred_s:.0f} s wall incl. start-up "
          f"({scores['events'] / pred_s:.0f} events/s), peak RSS {pred_mib:.0f} MiB")
    print(f"work: {work}")


if __name__ == "__main__":
    main()
