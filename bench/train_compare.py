"""The seed's comparison, honestly: direct pT vs inverse_fields 1/pT vs signed q/pT vs the 1/pT head with a
per-muon uncertainty (``inverse_pt_sigma``), several seeds each.

    .venv/bin/python bench/train_compare.py                       # 2-core CPU: 4 heads x 3 seeds
    .venv/bin/python bench/train_compare.py --events 100000 --train-pt-max 600 --heads inverse_pt_sigma \
        --seeds 1 --steps 3000 --parallel 1                       # train on pT up to 600 GeV, evaluate to 300
    .venv/bin/python bench/train_compare.py --ablation            # what each muon-frame input adds
    .venv/bin/python bench/train_compare.py --device cuda --parallel 1 --events 200000 \\
        --background 300 --batch-size 512 --workers 6 --seeds 1 --heads inverse_pt   # one GPU

Same dataset, same number of optimiser steps, same model for every run; only the head (the config
in ``configs/``) and the seed change. Each run is ``muon-pipeline train`` then ``muon-pipeline
evaluate`` as subprocesses (``--parallel`` at a time, one torch thread each on CPU, the loader in
the process), so what is measured is what a user runs. Reported per head: mean ± standard
deviation over seeds of the core σ(pT)/pT, the pT scale (median pT_pred/pT_true) and the charge
mis-ID per true-pT bin and in 10–100 GeV, beside the classical χ² fit of the same test muons;
training wall time and events/s; for heads with a per-muon σ (and the fit) the pull core width and
the 68 % / 95 % interval coverage per bin and per |η| region (the intervals of the run's
``calibration.json``, fitted by ``train`` on the validation split of the data it trained on, or by
``calibrate`` here for a run without one; ``--calibration-data`` calibrates on a sample of its own
instead). ``--train-pt-max`` trains on a second sample generated to
a higher pT (another seed) and evaluates on the first, so no evaluated bin sits at the generation
edge. ``--keep`` reuses the runs of an earlier invocation in the same folder. Output: markdown on
stdout and in ``OUT/compare_heads.md``, ``OUT/results.json``, ``OUT/compare_heads.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loader import make_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEADS = {"direct_pt": "direct_pt.yaml", "inverse_pt": "inverse_pt.yaml", "signed_curvature": "signed_curvature.yaml",
         "inverse_pt_sigma": "inverse_pt_sigma.yaml"}
#: Cumulative muon-frame input sets of the ablation (each adds to the one before).
ABLATION = {
    "global only": [],
    "+ u, v": ["frame_u", "frame_v", "frame_bending"],
    "+ drift, resolved": ["frame_u", "frame_v", "frame_bending", "frame_drift", "frame_v_resolved"],
    "+ segments": ["frame_u", "frame_v", "frame_bending", "frame_drift", "frame_v_resolved", "frame_slope",
                   "frame_residual"],
    "+ curvature, direction (all)": None,  # the config's default list
}


def run_config(head: str, args: argparse.Namespace, seed: int, frame_fields: list[str] | None) -> dict:
    cfg = yaml.safe_load((REPO / "configs" / HEADS[head]).read_text())
    if frame_fields is not None:
        cfg["frame_fields"] = frame_fields
    cfg.setdefault("data", {}).update({"batch_size": args.batch_size, "num_workers": args.workers})
    cfg.setdefault("trainer", {}).update({
        "max_steps": head_steps(args, head), "seed": seed, "patience": 0, "progress_every": 500,
        "accelerator": "gpu" if args.device == "cuda" else "cpu", "threads": args.threads})
    return cfg


def finished(run_dir: Path) -> bool:
    """A run of an earlier invocation whose training ended (its summary and wall time are written)."""
    return (run_dir / "run" / "summary.json").exists() and (run_dir / "wall.json").exists()


def head_steps(args: argparse.Namespace, head: str) -> int:
    """``--steps``, or the head's entry in ``--steps-for HEAD=N,...``."""
    for item in filter(None, (args.steps_for or "").split(",")):
        name, _, n = item.partition("=")
        if name == head:
            return int(n)
    return args.steps


def launch(jobs: list[tuple[str, list[str], Path]], parallel: int, env: dict[str, str]) -> dict[str, float]:
    """Run ``(name, argv, log)`` jobs, ``parallel`` at a time; returns each job's wall seconds; raises on failure."""
    pending, running, walls = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            name, argv, log = pending.pop(0)
            fh = log.open("w")
            running[name] = (subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env), time.perf_counter(),
                             fh, log)
            print(f"# started {name}", file=sys.stderr, flush=True)
        time.sleep(2)
        for name, (proc, t0, fh, log) in list(running.items()):
            if proc.poll() is None:
                continue
            fh.close()
            del running[name]
            walls[name] = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(f"{name} failed (exit {proc.returncode}); see {log}")
            print(f"# finished {name} in {walls[name]:.0f} s", file=sys.stderr, flush=True)
    return walls


def stat(values: list[float | None], scale: float = 1.0, digits: int = 2) -> str:
    x = np.array([v for v in values if v is not None], dtype=float) * scale
    if x.size == 0:
        return "–"
    if x.size == 1:
        return f"{x[0]:.{digits}f}"
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f}"


def summary_tables(results: dict[str, list[dict]], fit: dict | None) -> str:
    """Markdown: 10–100 GeV headline, then per-bin core σ, scale and mis-ID, mean ± std over seeds."""
    lines = ["| head | seeds | core σ(pT)/pT 10–100 GeV [%] | charge mis-ID 10–100 GeV [%] | σ68 10–100 [%] | "
             "train wall [s] | events/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for head, runs in results.items():
        w = [r["metrics"]["methods"]["model"]["windows"]["10-100"] for r in runs]
        lines.append(f"| {head} | {len(runs)} | {stat([x['pt']['core_sigma'] for x in w], 100)} | "
                     f"{stat([x['charge_misid']['rate'] for x in w], 100, 3)} | "
                     f"{stat([x['pt']['sigma68'] for x in w], 100)} | {stat([r['wall_s'] for r in runs], 1, 0)} | "
                     f"{stat([r['events_per_s'] for r in runs], 1, 0)} |")
    if fit:
        w = fit["windows"]["10-100"]
        lines.append(f"| classical fit | – | {100 * w['pt']['core_sigma']:.2f} | "
                     f"{100 * w['charge_misid']['rate']:.3f} | {100 * w['pt']['sigma68']:.2f} | – | – |")
    first = next(iter(results.values()))[0]["metrics"]["methods"]["model"]["pt_bins"]
    quantities = [("core σ(pT)/pT [%]", ("pt", "core_sigma"), 100, 2),
                  ("pT scale (median pT_pred / pT_true)", ("pt_scale",), 1, 3),
                  ("charge mis-ID [%]", ("charge_misid", "rate"), 100, 2)]
    if any("pull" in r["metrics"]["methods"]["model"]["overall"] for runs in results.values() for r in runs):
        quantities += [("pull core width, q/pT", ("pull", "core_width"), 1, 2),
                       ("68 % interval coverage [%] (nominal 68.3)", ("pull", "cover68"), 100, 1),
                       ("95 % interval coverage [%] (nominal 95)", ("pull", "cover95"), 100, 1),
                       ("pull core width, the head's own σ before calibration", ("pull_raw", "core_width"), 1, 2)]
    for title, key, scale, digits in quantities:
        lines += ["", f"**{title}** per true-pT bin, mean ± std over seeds", "",
                  "| true pT [GeV] | muons | " + " | ".join(results) + (" | classical fit |" if fit else " |"),
                  "|---" * (len(results) + 2 + bool(fit)) + "|"]
        for i, b in enumerate(first):
            if b["n"] == 0:
                continue
            vals = []
            for runs in results.values():
                got = []
                for r in runs:
                    x = r["metrics"]["methods"]["model"]["pt_bins"][i]
                    for k in key:
                        x = x.get(k) if isinstance(x, dict) else None
                    got.append(x)
                vals.append(stat(got, scale, digits))
            row = f"| {b['lo']:g}–{b['hi']:g} | {b['n']} | " + " | ".join(vals)
            if fit:
                x = fit["pt_bins"][i]
                for k in key:
                    x = x.get(k) if isinstance(x, dict) else None
                row += f" | {stat([x], scale, digits)}"
            lines.append(row + " |")
    lines += region_table(results, fit)
    return "\n".join(lines)


def region_table(results: dict[str, list[dict]], fit: dict | None) -> list[str]:
    """Markdown: pull core width and 68 % / 95 % coverage per |η| region, for heads with pulls."""
    heads = {h: rs for h, rs in results.items() if "pull" in rs[0]["metrics"]["methods"]["model"]["overall"]}
    if not heads:
        return []
    regions = list(next(iter(heads.values()))[0]["metrics"]["methods"]["model"]["regions"])
    lines = ["", "**pulls per |η| region** (all pT), mean ± std over seeds: core width / 68 % / 95 % coverage [%]", "",
             "| region | " + " | ".join(heads) + (" | classical fit |" if fit else " |"),
             "|---" * (len(heads) + 1 + bool(fit)) + "|"]
    for region in regions:
        cells = []
        for runs in heads.values():
            got = [r["metrics"]["methods"]["model"]["regions"][region]["overall"].get("pull", {}) for r in runs]
            cells.append(" / ".join([stat([g.get("core_width") for g in got], 1, 2),
                                     stat([g.get("cover68") for g in got], 100, 1),
                                     stat([g.get("cover95") for g in got], 100, 1)]))
        if fit:
            g = fit["regions"][region]["overall"].get("pull", {})
            cells.append(" / ".join([stat([g.get("core_width")], 1, 2), stat([g.get("cover68")], 100, 1),
                                     stat([g.get("cover95")], 100, 1)]))
        lines.append(f"| {region} | " + " | ".join(cells) + " |")
    return lines


def plot(results: dict[str, list[dict]], fit: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.2))
    first = next(iter(results.values()))[0]["metrics"]["methods"]["model"]["pt_bins"]
    keep = [i for i, b in enumerate(first) if b["n"] > 0]
    centres = np.array([np.sqrt(first[i]["lo"] * first[i]["hi"]) for i in keep])
    for j, (head, runs) in enumerate(results.items()):
        shift = 1 + 0.04 * (j - 1)
        for ax, getter, scale in ((ax1, lambda b: b["pt"]["core_sigma"], 100), (ax2, lambda b: b["pt_scale"], 1)):
            vals = np.array([[getter(r["metrics"]["methods"]["model"]["pt_bins"][i]) or np.nan for i in keep]
                             for r in runs], dtype=float) * scale
            err = vals.std(axis=0, ddof=1) if len(runs) > 1 else None
            ax.errorbar(centres * shift, vals.mean(axis=0), yerr=err, marker="o", capsize=3, color=f"C{j}",
                        label=f"{head} ({len(runs)} seeds)")
        if all("pull" in r["metrics"]["methods"]["model"]["pt_bins"][keep[0]] for r in runs):
            vals = np.array([[r["metrics"]["methods"]["model"]["pt_bins"][i]["pull"]["core_width"] or np.nan
                              for i in keep] for r in runs], dtype=float)
            ax3.errorbar(centres * shift, vals.mean(axis=0), yerr=vals.std(axis=0, ddof=1) if len(runs) > 1 else None,
                         marker="o", ls="none", capsize=3, color=f"C{j}", label=f"{head} ({len(runs)} seeds)")
    if fit:
        ax1.plot(centres, [100 * (fit["pt_bins"][i]["pt"]["core_sigma"] or np.nan) for i in keep], "k--s",
                 label="classical χ² fit")
        if "pull" in fit["pt_bins"][keep[0]]:
            ax3.plot(centres, [fit["pt_bins"][i]["pull"]["core_width"] for i in keep], "ks", label="classical χ² fit")
        ax2.plot(centres, [fit["pt_bins"][i]["pt_scale"] for i in keep], "k--s", label="classical χ² fit")
    ax1.set(xscale="log", xlabel="true pT [GeV]", ylabel="core σ(pT)/pT [%]", title="pT resolution (test split)")
    ax2.set(xscale="log", xlabel="true pT [GeV]", ylabel="median pT_pred / pT_true", title="pT scale")
    ax2.axhspan(0.98, 1.02, color="0.9")
    ax3.set(xscale="log", xlabel="true pT [GeV]", ylabel="pull core width, q/pT", title="σ calibration")
    ax3.axhspan(0.9, 1.1, color="0.9")
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000, help="simulated events (default 20000)")
    ap.add_argument("--background", type=int, default=20, help="background hits per event (default 20)")
    ap.add_argument("--pt-max", type=float, help="highest simulated pT in GeV (simulator default 300)")
    ap.add_argument("--steps", type=int, default=5000, help="optimiser steps per run (default 5000)")
    ap.add_argument("--steps-for", help="per-head steps, e.g. inverse_pt_sigma=5000,direct_pt=1500")
    ap.add_argument("--train-pt-max", type=float, help="train on a second sample (seed 2) generated to this pT")
    ap.add_argument("--data", type=Path, help="an existing dataset to evaluate on (instead of simulating one)")
    ap.add_argument("--train-data", type=Path, help="an existing dataset to train on (default: the evaluation one)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per head (default 3)")
    ap.add_argument("--heads", default=",".join(HEADS), help="comma list of " + ", ".join(HEADS))
    ap.add_argument("--ablation", action="store_true", help="instead: the inverse-pT head with growing muon-frame input sets")
    ap.add_argument("--parallel", type=int, default=2, help="runs at a time (default 2: one per core)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers per run (default 0: loader in-process)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out", type=Path, default=Path("/tmp/muon-pipeline-bench/train_compare"))
    ap.add_argument("--docs", type=Path, help="also copy the plot here (e.g. docs/img/)")
    ap.add_argument("--calibration-data", type=Path,
                    help="calibrate every run with an uncertainty head on this dataset (a sample of its own, "
                         "neither trained nor evaluated on) instead of the validation split train used")
    ap.add_argument("--calibration-split", default="all", choices=["all", "train", "val", "test"],
                    help="the split of --calibration-data (default all)")
    ap.add_argument("--keep", action="store_true",
                    help="reuse runs of an earlier invocation that finished training (same folder): only "
                         "calibrate and evaluate them again")
    args = ap.parse_args()

    t0 = time.perf_counter()
    suffix = f"-ptmax{args.pt_max:g}" if args.pt_max else ""
    if args.data:
        data, how = args.data, f"dataset {args.data}"
    else:
        data, how = make_dataset(args.out / f"data-{args.events}-bkg{args.background}{suffix}", args.events,
                                 background=args.background, pt_max=args.pt_max)
    train_data = args.train_data or data
    if args.train_pt_max and not args.train_data:
        train_data, train_how = make_dataset(args.out / f"data-{args.events}-bkg{args.background}-ptmax"
                                             f"{args.train_pt_max:g}-seed2", args.events, seed=2,
                                             background=args.background, pt_max=args.train_pt_max)
        how += f"; trained on {train_how}"
        suffix += f"-train{args.train_pt_max:g}"
    elif args.train_data:
        how += f"; trained on {args.train_data}"
    kind = "ablation" if args.ablation else "heads"
    out = args.out / f"{kind}-{args.steps}steps{suffix}"
    out.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, str, int, Path]] = []  # (group, head, seed, run dir)
    if args.ablation:
        for label, fields in ABLATION.items():
            slug = label.replace(" ", "").replace(",", "_").replace("+", "plus").replace("(", "").replace(")", "")
            run_dir = out / slug
            cfg = run_config("inverse_pt", args, 1, fields)
            runs.append((label, "inverse_pt", 1, run_dir))
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            (run_dir.parent / f"{slug}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    else:
        for head in args.heads.split(","):
            for seed in range(1, args.seeds + 1):
                run_dir = out / f"{head}-seed{seed}"
                if not (args.keep and finished(run_dir)):
                    shutil.rmtree(run_dir, ignore_errors=True)
                run_dir.mkdir(parents=True, exist_ok=True)
                (run_dir.parent / f"{head}-seed{seed}.yaml").write_text(
                    yaml.safe_dump(run_config(head, args, seed, None), sort_keys=False))
                runs.append((head, head, seed, run_dir))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cli = str(BIN / "muon-pipeline")
    train_jobs = [(d.name, [cli, "train", "--config", str(d.parent / f"{d.name}.yaml"), "--data", str(train_data),
                            "--output", str(d / "run")], d / "train.log") for _, _, _, d in runs
                  if not (args.keep and finished(d))]
    for name, _, _ in train_jobs:
        shutil.rmtree(out / name / "run", ignore_errors=True)
    walls = launch(train_jobs, args.parallel, env)
    for _, _, _, d in runs:
        if d.name not in walls:  # kept: its wall time is the one recorded when it was trained
            walls[d.name] = json.loads((d / "wall.json").read_text())["wall_s"]
        (d / "wall.json").write_text(json.dumps({"wall_s": walls[d.name]}))
    # Runs with an uncertainty head: train calibrates on its validation split; a run trained by a version
    # without calibration gets it here, from the same split of the same data.
    # --calibration-data: every such run is calibrated on that sample instead.
    calibration = ["--data", str(args.calibration_data), "--split", args.calibration_split] if args.calibration_data \
        else ["--data", str(train_data), "--split", "val"]
    calibrate_jobs = [(d.name, [cli, "calibrate", str(d / "run"), *calibration, "--device", args.device],
                       d / "calibrate.log") for _, _, _, d in runs
                      if yaml.safe_load((d / "run" / "config.yaml").read_text()).get("uncertainty", "none") != "none"
                      and (args.calibration_data or not (d / "run" / "calibration.json").exists())]
    launch(calibrate_jobs, args.parallel, env)
    eval_jobs = [(d.name, [cli, "evaluate", str(d / "run"), "--data", str(data), "--device", args.device],
                  d / "evaluate.log") for _, _, _, d in runs]
    launch(eval_jobs, args.parallel, env)

    results: dict[str, list[dict]] = {}
    fit = None
    for group, head, seed, d in runs:
        metrics = json.loads((d / "run" / "eval" / "metrics.json").read_text())
        summary = json.loads((d / "run" / "summary.json").read_text())
        fit = fit or metrics["methods"].get("classical_fit")
        results.setdefault(group, []).append({
            "seed": seed, "head": head, "metrics": metrics, "wall_s": walls[d.name], "train_s": summary["seconds"],
            "steps": summary["steps"], "events_per_s": summary["events_seen"] / summary["seconds"]})
    steps = ", ".join(f"{h} {head_steps(args, h)}" for h in results)
    sample = how if args.data else f"{args.events} simulated events ({how})"
    sample += (f"; σ calibrated on the {args.calibration_split} split of {args.calibration_data}" if args.calibration_data
               else "; σ calibrated on the validation split of the training data")
    md = (f"{sample}, steps x batch {args.batch_size} per run: {steps}; "
          f"{args.parallel} runs in parallel, {args.threads} torch thread(s) each, device {args.device}\n\n"
          + summary_tables(results, fit))
    print(md)
    (out / f"compare_{kind}.md").write_text(md + "\n")
    plot(results, fit, out / f"compare_{kind}.png")
    if args.docs:
        args.docs.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / f"compare_{kind}.png", args.docs / f"cpu_compare_{kind}.png")
    (out / "results.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "dataset": str(data),
        "runs": {g: [{k: v for k, v in r.items() if k != "metrics"} | {"windows": r["metrics"]["methods"]["model"]["windows"]}
                     for r in rs] for g, rs in results.items()},
        "wall_s": time.perf_counter() - t0}, indent=2, default=str))
    print(f"\n# total wall time {time.perf_counter() - t0:.0f} s; results in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
