"""Click command ``predict``: per-hit scores of a hit-filter run (:mod:`.predict`).

Imported by ``pipeline/cli.py`` when the command is used: click, the stdlib and two leaves only here;
torch loads in the command body.
"""

from __future__ import annotations

import click

from .. import extras
from .device import DEVICE_HELP


@click.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Dataset directory to score (written by `muon-pipeline convert`).")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Scores folder to write (or to resume): _manifest.json + scores/*.parquet, as `filter --scores` reads.")
@click.option("--split", type=click.Choice(["all", "test", "val", "train"]), default="all", show_default=True,
              help="Which events: all (scores `filter` takes), or one hash split of the run's config.")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu", "cuda"], case_sensitive=False), default="auto",
              show_default=True, help=DEVICE_HELP)
@click.option("--batch-size", type=click.IntRange(min=1), help="Events per batch [default: the run's data.batch_size].")
@click.option("-q", "--quiet", is_flag=True, help="No progress output (the summary line stays).")
def predict(run_dir: str, data_dir: str, output: str, split: str, device: str, batch_size: int | None,
            quiet: bool = False) -> None:
    """Score every hit of a dataset with a hit-filter run: one float per hit, in the parent's hit order.

    Streams the dataset one row group at a time; each file appears only when complete and the manifest
    last, so a killed run leaves nothing partial visible and the same command resumes it. A dataset or a
    checkpoint that changed since the output was started is refused by name. `--split all` scores are
    what `muon-pipeline filter DATA --scores OUTPUT` takes.
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
    from .predict import predict as run_predict

    result = run_predict(run_dir, data_dir, output, split=split, device=device, batch_size=batch_size, quiet=quiet)
    if result["already_complete"]:
        click.echo(f"predict: {output} is complete already ({result['events']} events, {result['hits']} hits); "
                   "nothing to do")
        return
    rate = result["events"] / result["seconds"] if result["seconds"] > 0 else float("nan")
    resumed = f", {result['resumed_parts']} file(s) kept from an earlier run" if result["resumed_parts"] else ""
    click.echo(f"predict: {result['events']} events, {result['hits']} hits scored in {result['seconds']:.0f} s "
               f"({rate:.0f} events/s{resumed}); wrote {str(output).rstrip('/') or '/'}/_manifest.json and {len(result['files'])} file(s)")
