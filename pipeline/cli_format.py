"""How the command line shows things: option help in titled sections, and ``convert``'s summary.

Part of the CLI layer (``pipeline/cli.py`` imports it; nothing else does).
"""

from __future__ import annotations

import click


class SectionedCommand(click.Command):
    """A command whose ``--help`` lists its options in titled sections (click has no option groups).

    ``sections`` maps a title to the option names (their ``name``, e.g. ``min_pt``) it shows; options in
    no section are listed last under ``Other options``."""

    def __init__(self, *args, sections: dict[str, tuple[str, ...]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sections = sections or {}

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        records = {k: v for k, v in records.items() if v is not None}
        shown: set[str] = set()
        for title, names in self.sections.items():
            rows = [records[n] for n in names if n in records]
            shown.update(names)
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)
        rest = [v for k, v in records.items() if k not in shown]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)


#: ``convert --help``: its options by what they decide.
CONVERT_SECTIONS = {
    "Input and output": ("output", "schema_version", "tree", "layout_file", "precision", "remote_timeout"),
    "Selection": ("min_pt", "max_abs_eta", "min_hits", "keep_muons_without_hits", "technologies",
                  "keep_empty_events", "on_invalid"),
    "Shards and sizes": ("compression", "row_group_size", "row_group_bytes", "shard_events", "shard_bytes",
                         "step_size"),
    "Running: workers, Dask, batch, resume": ("workers", "scheduler", "dashboard", "task_index", "task_count",
                                              "skip_bad_files", "reconfigure", "quiet"),
}


def print_convert_summary(res, output: str, quiet: bool) -> None:
    """What ``convert`` prints at the end: totals, the cut flow, units and rate, reading notes, skips."""
    if res.manifest is None:
        click.echo(f"task {res.task[0]}/{res.task[1]}: ran {res.units_run} unit(s), {res.units_reused} already done "
                   f"({res.seconds:.1f} s). When all tasks are done: muon-pipeline finalize {output}")
        return
    tot = res.manifest["totals"]
    if res.already_complete:
        click.echo(f"{output}: already complete ({tot['events']} events in {len(res.manifest['shards'])} shard(s)); "
                   "nothing to do, nothing rewritten")
    else:
        _print_totals(res, output, quiet)
    from .summary import reading_lines

    for line in reading_lines(res.manifest):
        click.echo(f"  {line}")
    for s in res.skipped_inputs:
        click.secho(f"  SKIPPED input {s['path']}: {s['reason']}", fg="yellow", err=True)
    for r in res.skipped_units:
        u = r["unit"]
        click.secho(f"  SKIPPED {u['input']} entries {u['entry_start']}-{u['entry_stop']}: {r['reason']}",
                    fg="yellow", err=True)


def _print_totals(res, output: str, quiet: bool) -> None:
    """Totals, cut flow, units and rate of a run that did something."""
    cf = res.manifest["cutflow"]
    tot = res.manifest["totals"]
    rate = cf["hits_in"] / res.seconds if res.seconds else 0.0
    click.echo(f"{output}: {tot['events']} events, {tot['hits']} hits, {tot['muons']} muons in "
               f"{len(res.manifest['shards'])} shard(s), {tot['bytes'] / 1e6:.1f} MB")
    if not quiet:
        click.echo(f"  entries in {cf['entries_in']} = out {cf['events_out']} + cut {cf['events_cut']} "
                   f"(no muon {cf['events_no_muon']}, invalid {cf['events_invalid']}) + skipped {cf['entries_skipped']}")
        click.echo(f"  muons in {cf['muons_in']}: fail pT {cf['muons_fail_pt']}, fail |eta| {cf['muons_fail_eta']}, "
                   f"fail hits {cf['muons_fail_hits']}, out {cf['muons_out']}")
        click.echo(f"  units: {res.units_run} run, {res.units_reused} reused of {res.units_total}; "
                   f"{res.seconds:.1f} s, {rate / 1e6:.2f} M hits/s in")
