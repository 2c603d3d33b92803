"""Click commands of the training stage: ``train``, ``evaluate``, ``compare``.

``pipeline/cli.py`` imports this module at start-up to register the commands, so only click and the
stdlib are imported here; torch, lightning and matplotlib load inside the command bodies. Without the
``[train]`` extra the commands still show in ``--help`` and fail with an install hint.
"""

from __future__ import annotations

import json

import click

_DEVICE_HELP = "Lightning accelerator: auto (default from the config), cpu, gpu/cuda, mps."


def _require_train_extra() -> None:
    from ..errors import ConfigError

    missing = []
    for name in ("torch", "lightning", "matplotlib", "scipy"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"the training stage needs {', '.join(missing)}: pip install 'muon-pipeline[train]'")


@click.command("train")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="YAML training config (see configs/). Optional with --resume.")
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset directory written by `muon-pipeline convert`.")
@click.option("--output", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory: checkpoints, logs, resolved config.")
@click.option("--max-epochs", type=click.IntRange(min=1),
              help="Stop after N epochs (overrides trainer.max_epochs and clears trainer.max_steps).")
@click.option("--max-steps", type=click.IntRange(min=1),
              help="Stop after N optimiser steps (overrides trainer.max_steps; the lr schedule spans them).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override data.batch_size.")
@click.option("--num-workers", type=click.IntRange(min=0), help="Override data.num_workers.")
@click.option("--device", "--accelerator", "accelerator", help=_DEVICE_HELP)
@click.option("--devices", type=click.IntRange(min=1), help="Override trainer.devices (>1 uses DDP).")
@click.option("--limit-train-batches", type=click.IntRange(min=0), help="Cap batches per epoch (smoke tests).")
@click.option("--resume", is_flag=True, help="Continue from RUN_DIR/checkpoints/last.ckpt.")
@click.option("--no-verify-checksums", is_flag=True,
              help="Skip the sha256 check of every shard before training (data.verify_checksums: false); "
                   "path, size and schema checks still run.")
def train(config_path: str | None, data_dir: str, run_dir: str, max_epochs: int | None, max_steps: int | None,
          batch_size: int | None,
          num_workers: int | None, accelerator: str | None, devices: int | None,
          limit_train_batches: int | None, resume: bool, no_verify_checksums: bool) -> None:
    """Train the weighted-pooling muon regression on a converted dataset."""
    _require_train_extra()
    from .config import load_config
    from .fit import train as run_train

    cfg = load_config(config_path) if config_path else None
    if max_epochs is not None and max_steps is None:
        max_steps = 0  # an explicit epoch count wins over a step budget from the config
    overrides = {"trainer.max_epochs": max_epochs, "trainer.max_steps": max_steps,
                 "data.batch_size": batch_size, "data.num_workers": num_workers,
                 "trainer.accelerator": accelerator, "trainer.devices": devices,
                 "trainer.limit_train_batches": limit_train_batches,
                 "data.verify_checksums": False if no_verify_checksums else None}
    summary = run_train(cfg, data_dir, run_dir, resume=resume, overrides=overrides)
    click.echo(json.dumps(summary, indent=2))


@click.command("evaluate")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset directory to evaluate on.")
@click.option("--output", type=click.Path(file_okay=False), help="Evaluation directory (default RUN_DIR/eval).")
@click.option("--split", type=click.Choice(["test", "val", "train", "all"]), default="test", show_default=True,
              help="Which hash split of the events to evaluate.")
@click.option("--device", help="torch device (default: cuda if available, else cpu).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def evaluate(run_dir: str, data_dir: str, output: str | None, split: str, device: str | None, no_plots: bool) -> None:
    """Predictions, metrics.json and resolution plots of a trained run (with the classical-fit baseline)."""
    _require_train_extra()
    from .compare import table
    from .evaluate import evaluate as run_evaluate

    metrics = run_evaluate(run_dir, data_dir, output, split=split, device=device, plots=not no_plots)
    click.echo(table([(metrics["label"], metrics)]))
    click.echo(f"baseline: {metrics['baseline_status']}")


@click.command("compare")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output", default="compare", show_default=True, type=click.Path(file_okay=False),
              help="Where compare.md and the overlay plot go.")
def compare(dirs: tuple[str, ...], output: str) -> None:
    """Side-by-side metrics of runs or evaluations (RUN_DIR uses RUN_DIR/eval)."""
    _require_train_extra()
    from .compare import compare as run_compare

    click.echo(run_compare(list(dirs), output))
