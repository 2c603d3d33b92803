"""``muon-pipeline filter``: derive a dataset from a parent dataset and per-hit scores (see :mod:`pipeline.derive`).

Part of the CLI layer: it parses options and prints; ``pipeline.cli`` registers it.
"""

from __future__ import annotations

import click

from .cli_format import SectionedCommand

FILTER_SECTIONS = {
    "Input and output": ("scores", "output"),
    "Filter": ("working_point", "threshold", "max_muons_per_event", "max_hits_per_event"),
    "Running: workers, Dask, batch, resume": ("workers", "scheduler", "dashboard", "task_index", "task_count",
                                              "reconfigure", "quiet"),
}


@click.command("filter", cls=SectionedCommand, sections=FILTER_SECTIONS)
@click.argument("dataset")
@click.option("--scores", required=True, help="Scores folder of DATASET's hits (muon-pipeline/scores format).")
@click.option("-o", "--output", required=True, help="Output directory of the derived dataset. Created if missing.")
@click.option("--working-point", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Muon-hit efficiency to keep, e.g. 0.99: the threshold is the largest score cut keeping at "
                   "least this fraction of the hits on muons, computed over the whole dataset.")
@click.option("--threshold", type=float, default=None, help="Keep hits with score >= this (instead of --working-point).")
@click.option("--max-muons-per-event", type=click.IntRange(min=1), default=None,
              help="Drop (not truncate) events left with more muons than this.  [default: no cap]")
@click.option("--max-hits-per-event", type=click.IntRange(min=1), default=None,
              help="Drop (not truncate) events left with more hits than this.  [default: no cap]")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes [default: the CPUs available].")
@click.option("--scheduler", default=None, help="Run units on Dask: tcp://HOST:PORT of a running scheduler, 'local' "
                                                "for a local cluster.")
@click.option("--dashboard", default=None, metavar="ADDRESS", help="With --scheduler local: serve the Dask dashboard.")
@click.option("--task-index", type=int, default=None, help="Job arrays: this task's index (0-based).")
@click.option("--task-count", type=int, default=None, help="Job arrays: number of tasks; run `finalize` afterwards.")
@click.option("--reconfigure", is_flag=True, help="Accept a changed parent, scores or filter settings in an existing "
                                                  "output; redo the units, delete shards no longer planned.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def filter_command(dataset, scores, output, working_point, threshold, max_muons_per_event, max_hits_per_event,
                   workers, scheduler, dashboard, task_index, task_count, reconfigure, quiet):
    """Derive a dataset from DATASET: keep the hits whose score passes, re-apply DATASET's selection
    (muons left with too few hits, events left without a muon), drop events over the caps.

    \b
    muon-pipeline filter raw_ds --scores raw_scores --working-point 0.99 \\
        --max-muons-per-event 2 --max-hits-per-event 600 -o tracking_ds

    One work unit per shard of DATASET, resumable like convert; the manifest records the lineage
    (parent, scores, threshold, caps), which validate checks and inspect shows. Exit codes: 0 ok,
    1 bad data (scores for another dataset, a changed parent shard), 2 usage or a refused output,
    130/143 stopped by Ctrl-C/SIGTERM (re-run to resume).
    """
    from .derive import filter_dataset
    from .settings import RunSettings

    if (working_point is None) == (threshold is None):
        raise click.UsageError("give exactly one of --working-point and --threshold")
    if dashboard and scheduler != "local":
        raise click.UsageError("--dashboard goes with --scheduler local (a running cluster has its own)")
    if (task_index is None) != (task_count is None):
        raise click.UsageError("--task-index and --task-count go together")
    settings = RunSettings(workers=workers, scheduler=scheduler, quiet=quiet, dashboard=dashboard)
    task = (task_index, task_count) if task_index is not None else None
    res = filter_dataset(dataset, scores, output, working_point=working_point, threshold=threshold,
                         max_muons_per_event=max_muons_per_event, max_hits_per_event=max_hits_per_event,
                         settings=settings, task=task, reconfigure=reconfigure)
    if res.manifest is None:
        click.echo(f"task {res.task[0]}/{res.task[1]}: ran {res.units_run} unit(s), {res.units_reused} already done "
                   f"({res.seconds:.1f} s). When all tasks are done: muon-pipeline finalize {output}")
        return
    m = res.manifest
    tot, f, lin = m["totals"], m["filter_cutflow"], m["lineage"]
    click.echo(f"{output}: {tot['events']} events, {tot['hits']} hits, {tot['muons']} muons in {len(m['shards'])} "
               f"shard(s), {tot['bytes'] / 1e6:.1f} MB")
    if quiet:
        return
    eff = f["hits_on_muons_passing"] / f["hits_on_muons_in"] if f["hits_on_muons_in"] else float("nan")
    wp = f", working point {lin['working_point']}" if lin["working_point"] is not None else ""
    click.echo(f"  threshold {lin['threshold']:.6g}{wp}: muon-hit efficiency {eff:.4f}, "
               f"{f['hits_out'] / max(f['events_out'], 1):.1f} hits per event kept")
    click.echo(f"  events in {f['events_in']} = out {f['events_out']} + no muon {f['events_no_muon']} + capped "
               f"(muons {f['events_capped_muons']}, hits {f['events_capped_hits']})")
    click.echo(f"  muons in {f['muons_in']} = out {f['muons_out']} + fail hits {f['muons_fail_hits']} + in capped "
               f"events {f['muons_capped']}")
    click.echo(f"  hits in {f['hits_in']} = out {f['hits_out']} + below threshold {f['hits_below_threshold']} + in "
               f"dropped events {f['hits_in_events_no_muon'] + f['hits_capped']}")
    click.echo(f"  units: {res.units_run} run, {res.units_reused} reused of {res.units_total}; {res.seconds:.1f} s")
