"""Click commands of the training stage: ``train``, ``evaluate``, ``calibrate``, ``compare``.

``pipeline/cli.py`` imports this module at start-up to register the commands, so only click, the
stdlib and two leaves (:mod:`pipeline.extras`, :mod:`.device`) are imported here; torch, lightning and
matplotlib load inside the command bodies. Without the ``[train]`` extra the commands still show in
``--help`` and fail with the install line of :func:`pipeline.extras.train`.
"""

from __future__ import annotations

import json

import click

from .. import extras
from .device import DEVICE_HELP

_DEVICE_CHOICE = click.Choice(["auto", "cpu", "gpu", "cuda"], case_sensitive=False)


@click.command("train")
@click.option("--config", "config_path",
              help="A shipped config by name (inverse_pt, direct_pt, signed_curvature, hit_filter) or a YAML file. "
                   "Optional with --resume.")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset directory written by `muon-pipeline convert`.")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: checkpoints, logs, resolved config.")
@click.option("--max-epochs", type=click.IntRange(min=1),
              help="Stop after N epochs (overrides trainer.max_epochs and clears trainer.max_steps).")
@click.option("--max-steps", type=click.IntRange(min=1),
              help="Stop after N optimiser steps (overrides trainer.max_steps; the lr schedule spans them).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override data.batch_size.")
@click.option("--num-workers", type=click.IntRange(min=0), help="Override data.num_workers.")
@click.option("--device", "--accelerator", "device", type=_DEVICE_CHOICE,
              help=DEVICE_HELP + " [default: the config's trainer.accelerator, auto]")
@click.option("--devices", type=click.IntRange(min=1), help="Override trainer.devices (>1 uses DDP).")
@click.option("--limit-train-batches", type=click.IntRange(min=0), help="Cap batches per epoch (smoke tests).")
@click.option("--resume", is_flag=True, help="Continue from RUN_DIR/checkpoints/last.ckpt.")
@click.option("--no-verify-checksums", is_flag=True,
              help="Skip the sha256 check of every shard before training (data.verify_checksums: false); "
                   "path, size and schema checks still run.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run's summary as JSON on stdout (it is always written to RUN_DIR/summary.json).")
def train(config_path: str | None, data_dir: str, run_dir: str, max_epochs: int | None, max_steps: int | None,
          batch_size: int | None,
          num_workers: int | None, device: str | None, devices: int | None,
          limit_train_batches: int | None, resume: bool, no_verify_checksums: bool, as_json: bool = False) -> None:
    """Train the weighted-pooling muon regression (or a per-hit filter: config hit_filter) on a converted dataset.

    The config, the dataset, the run directory and the device are checked before torch loads, so
    a typo costs no import time. Progress: a live line on a terminal, a plain line every
    trainer.progress_every steps in a batch log. Ends with one summary line (--json: the whole summary,
    as RUN_DIR/summary.json holds it); writes only under --output.
    """
    from .config import config_path as resolve_config
    from .config import load_config
    from .data.info import require_manifest
    from .device import check_before_import, normalise
    from .fit import preflight

    cfg = load_config(config_path) if config_path else None
    require_manifest(data_dir, "--data ")  # exit 1: bad input, as for every command
    preflight(cfg, run_dir, resume)
    if device is not None:
        device = normalise(device)
    check_before_import(device or (normalise(cfg.trainer.accelerator) if cfg else "auto"))
    extras.train()
    from .fit import train as run_train

    if max_epochs is not None and max_steps is None:
        max_steps = 0  # an explicit epoch count wins over a step budget from the config
    overrides = {"trainer.max_epochs": max_epochs, "trainer.max_steps": max_steps,
                 "data.batch_size": batch_size, "data.num_workers": num_workers,
                 "trainer.accelerator": device, "trainer.devices": devices,
                 "trainer.limit_train_batches": limit_train_batches,
                 "data.verify_checksums": False if no_verify_checksums else None}
    if config_path:  # which file, whatever its spelling (a shipped name, a path)
        click.echo(f"train: config {resolve_config(config_path)}", err=True)
    summary = run_train(cfg, data_dir, run_dir, resume=resume, overrides=overrides)
    _calibrate_after_training(run_dir, data_dir)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        best = summary.get("best_val_loss")
        click.echo(f"train: {summary.get('steps')} steps, {summary.get('epochs')} epoch(s), best val/loss "
                   f"{'–' if best is None else f'{best:.4g}'}, {summary.get('seconds', 0):.0f} s "
                   f"(summary: {run_dir}/summary.json)")
    click.echo(f"train: wrote {run_dir}/ (checkpoints/best.ckpt, checkpoints/last.ckpt, config.yaml, run.json, "
               f"logs/); next: muon-pipeline evaluate {run_dir} --data {data_dir}", err=True)


def _calibrate_after_training(run_dir: str, data_dir: str) -> None:
    """A finished run with an uncertainty head: calibrate its σ on the validation split of the data it
    trained on (rank 0 only under DDP; a run whose calibration is up to date keeps it)."""
    import os
    from pathlib import Path

    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
        return
    from ..errors import ConfigError, DatasetError
    from .calibrate import CALIBRATION, load_calibration, run_uncertainty, summary_line
    from .evaluate import calibrate_run, find_checkpoint

    if not (Path(run_dir) / "config.yaml").is_file() or run_uncertainty(run_dir) == "none":
        return  # nothing trained here (a stub trainer in a test), or no widths to calibrate
    try:
        if load_calibration(run_dir, find_checkpoint(Path(run_dir))) is not None:
            return  # made for this checkpoint already (a resume of a finished run)
    except ConfigError:
        pass  # stale or unreadable: made again below
    click.echo(f"train: calibrating the per-muon σ on the validation split of {data_dir} (if stopped, "
               f"`train --resume` makes it)", err=True)
    try:
        doc = calibrate_run(run_dir, data_dir, split="val")
    except DatasetError as err:
        click.echo(f"train: the widths are not calibrated ({err}); muon-pipeline calibrate {run_dir} --data DATA "
                   "calibrates them on other data", err=True)
        return
    click.echo(f"train: wrote {run_dir}/{CALIBRATION}: {summary_line(doc)}", err=True)


@click.command("calibrate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset whose muons calibrate the widths (not the ones you will evaluate on).")
@click.option("--split", type=click.Choice(["val", "test", "train", "all"]), default="val", show_default=True,
              help="Which hash split of --data to calibrate on (all: a sample of its own, not trained on).")
@click.option("--min-cell", type=click.IntRange(min=20), default=None,
              help="Fewest muons per calibration cell [default: 1000]; an |eta| region with fewer is one cell "
                   "fitted on every muon.")
@click.option("--device", type=_DEVICE_CHOICE, default="auto", show_default=True, help=DEVICE_HELP)
def calibrate(run_dir: str, data_dir: str, split: str, min_cell: int | None, device: str) -> None:
    """Calibrate a run's per-muon σ(q/pT) and its 68 % / 95 % intervals on held-out muons.

    Per |η| region and range of predicted pT: σ is scaled so that the pulls (q/pT_pred − q/pT_true)/σ
    have core width 1, and the 68 % / 95 % interval half-widths are the split-conformal quantiles of
    |pull|. Writes RUN_DIR/calibration.json (atomically), which evaluate applies. train does this at
    the end on its validation split; run it again for another dataset or split.
    """
    from pathlib import Path

    from .calibrate import check_calibratable
    from .data.info import require_manifest
    from .device import check_before_import, normalise
    from .evaluate import find_checkpoint

    find_checkpoint(Path(run_dir))
    check_calibratable(run_dir)
    require_manifest(data_dir, "--data ")
    device = normalise(device)
    check_before_import(device)
    extras.train()
    from .calibrate import CALIBRATION, summary_line, trained_on
    from .evaluate import calibrate_run

    if split in ("train", "all") and trained_on(run_dir, data_dir):
        click.echo(f"calibrate: warning: the {split} split of {data_dir} holds the muons {run_dir} trained on; "
                   "widths calibrated on them come out too narrow for new muons (use --split val)", err=True)
    replaced = (Path(run_dir) / CALIBRATION).exists()
    doc = calibrate_run(run_dir, data_dir, split=split, device=device, min_cell=min_cell)
    click.echo(f"calibrate: {'replaced' if replaced else 'wrote'} {run_dir}/{CALIBRATION}: {summary_line(doc)}")


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset directory to evaluate on.")
@click.option("-o", "--output", type=click.Path(file_okay=False), help="Evaluation directory (default RUN_DIR/eval).")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True,
              help="Which hash split of the events to evaluate.")
@click.option("--device", type=_DEVICE_CHOICE, default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def evaluate(run_dir: str, data_dir: str, output: str | None, split: str, device: str, no_plots: bool) -> None:
    """Predictions, metrics.json and resolution plots of a trained run (with the classical-fit baseline).

    The checkpoint, the dataset and the device are checked before torch loads; the output folder is
    created only once the predictions exist.
    """
    from pathlib import Path

    from .data.info import require_manifest
    from .device import check_before_import, normalise
    from .evaluate import find_checkpoint

    find_checkpoint(Path(run_dir))
    require_manifest(data_dir, "--data ")
    device = normalise(device)
    check_before_import(device)
    extras.train()
    from .compare import table
    from .evaluate import evaluate as run_evaluate

    metrics = run_evaluate(run_dir, data_dir, output, split=split, device=device, plots=not no_plots, quiet=False)
    if metrics.get("task") == "hit_filter":  # a hit-filter run: the working-point table
        from .hitmetrics import hit_table

        click.echo(hit_table(metrics))
        click.echo(f"evaluate: wrote {metrics['output']}/ ({', '.join(metrics['written'])})")
        return
    click.echo(table([(metrics["label"], metrics)]))
    calibration = metrics.get("calibration", {})
    if calibration.get("status") == "applied":
        same = " (the muons evaluated: in-sample)" if calibration.get("in_sample") else ""
        click.echo(f"σ calibration: applied, fitted on {calibration['n_muons']} muons of the {calibration['split']} "
                   f"split of {calibration['data']}{same}")
    elif calibration.get("status") == "absent":
        click.echo(f"σ calibration: {calibration['why']}")
    status = metrics["baseline_status"]
    click.echo("classical-fit baseline: " + ("ok (its column is in the table above)" if status == "ok" else status))
    click.echo(f"evaluate: wrote {metrics['output']}/ ({', '.join(metrics['written'])})")


@click.command("compare")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("-o", "--output", default="compare", show_default=True, type=click.Path(file_okay=False),
              help="Where compare.md and the overlay plot go.")
def compare(dirs: tuple[str, ...], output: str) -> None:
    """Side-by-side metrics of evaluations of the same events (RUN_DIR uses RUN_DIR/eval).

    Evaluations of different datasets, splits or event selections are refused (exit 2): their
    numbers are not comparable.
    """
    extras.train()
    from .compare import compare as run_compare

    md, written = run_compare(list(dirs), output)
    click.echo(md)
    click.echo(f"compare: wrote {', '.join(str(p) for p in written)}")
