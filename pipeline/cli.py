"""The ``muon-pipeline`` command: a click group that parses options and calls library functions.

No logic lives here beyond turning options into typed configuration, printing, and mapping
``pipeline.errors`` to exit codes:

* 0 success, 1 failure (bad data, failed validation), 2 usage or configuration error,
* 3 finished, but some inputs were skipped (``convert --skip-bad-files``),
* 128 + N stopped by signal N: 130 SIGINT (Ctrl-C), 143 SIGTERM (a batch system's time limit or
  preemption), 138 SIGUSR1; finished work is kept, nothing partial is visible, and running the same
  command again resumes (``train`` saves a checkpoint at the step it was at: ``train --resume``).

Sub-commands of other stages live beside the code they drive (``pipeline.simulate.command``,
``pipeline.train.command``) and are registered here; the training commands import torch only
when they run, so preprocessing never pays for it.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys

import click

from ._version import __version__
from .cli_errors import run_command
from .cli_format import CONVERT_SECTIONS, SectionedCommand, print_convert_summary
from .errors import PipelineError

#: Signals every command stops on with exit code 128 + N (SIGINT arrives as KeyboardInterrupt).
#: Commands defined beside the stage they drive, imported only when used.
_LAZY_COMMANDS = {
    "simulate": "pipeline.simulate.command:simulate",
    "train": "pipeline.train.command:train",
    "evaluate": "pipeline.train.command:evaluate",
    "compare": "pipeline.train.command:compare",
    "calibrate": "pipeline.train.command:calibrate",
    "filter": "pipeline.cli_filter:filter_command",
    "predict": "pipeline.train.predict_command:predict",
}


class _Group(click.Group):
    """Lazily loads stage commands, and turns ``PipelineError`` (and a ``PermissionError`` from any
    command) into a one-line message and its exit code instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str):
        if name in _LAZY_COMMANDS and name not in self.commands:
            module, attr = _LAZY_COMMANDS[name].split(":")
            try:
                self.add_command(getattr(importlib.import_module(module), attr), name)
            except (ImportError, AttributeError) as err:
                self.add_command(_unavailable(name, err), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):  # noqa: D401
        return run_command(super().invoke, ctx)


def self_command(name: str) -> click.Command:
    """A sub-command of :func:`main` by name (loading a lazy one)."""
    ctx = click.Context(main)
    cmd = main.get_command(ctx, name)
    assert cmd is not None, name
    return cmd


def _unavailable(name: str, err: Exception) -> click.Command:
    """Stand-in for a stage whose optional dependencies are missing: says how to install them."""
    from .extras import install_line

    hint = (install_line("train") if name in ("train", "evaluate", "compare", "calibrate")
            else "reinstall it: pip install -e . in a clone of muon-pipeline")

    def fail() -> None:
        raise click.ClickException(f"command {name!r} is unavailable ({err}); {hint}")

    return click.Command(name, callback=fail, help=f"(unavailable: {hint})",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="muon-pipeline")
def main() -> None:
    """Turn ATLAS muon-spectrometer hit dumps (ROOT) into validated, versioned Parquet shards,
    and train / evaluate muon regression on them.

    \b
    Typical flow:
      muon-pipeline simulate raw.root --events 1000        # or use real dumps
      muon-pipeline convert raw.root --output data/        # ROOT -> Parquet + manifest
      muon-pipeline validate data/                         # CI / batch-job check
      muon-pipeline inspect data/                          # what is in it
      muon-pipeline train --config inverse_pt --data data/ --output runs/a --max-steps 200

    Run any command with --help for its options.
    """


# --------------------------------------------------------------------------------------------
# convert / finalize
# --------------------------------------------------------------------------------------------

@main.command(cls=SectionedCommand, sections=CONVERT_SECTIONS)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, help="Output directory (local path or fsspec URL). Created if missing.")
@click.option("--schema-version", type=int, default=None, help="Schema version to write (default: the newest).")
@click.option("--tree", default=None,
              help="Name of the TTree or RNTuple to read in each input [default: MuonHitDump].")
@click.option("--layout", "layout_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML mapping raw field -> branch name (and 'tree'), for dumps with other branch names.")
@click.option("--step-size", default="100 MB", show_default=True,
              help="Entries read at once: an event count (5000) or a memory size ('100 MB'). Sets peak memory.")
@click.option("--min-pt", type=float, default=5.0, show_default=True, help="Keep truth muons with pT >= this [GeV].")
@click.option("--max-abs-eta", type=float, default=2.7, show_default=True, help="Keep truth muons with |eta| <= this.")
@click.option("--min-hits", type=int, default=3, show_default=True,
              help="Keep truth muons with at least this many hits. A muon no hit points to is never kept, "
                   "even with 0 (as in the reference script, whose tracks come from the hits' links).")
@click.option("--keep-muons-without-hits", is_flag=True,
              help="With --min-hits 0: also keep truth muons that no (kept) hit points to.")
@click.option("--technologies", default="all", show_default=True,
              help="Hits kept by technology: 'all' (every hit, whatever its code), or comma-separated names "
                   "MDT, CSC, RPC, TGC, STGC, MM and integer codes. Hits of codes no name covers are counted "
                   "per code in the cut flow.")
@click.option("--keep-empty-events", is_flag=True, help="Keep events left without a muon after the selection.")
@click.option("--on-invalid", type=click.Choice(["error", "drop-hit", "drop-event"]), default="error",
              show_default=True, help="What to do with a hit or event holding a non-finite value, a value outside "
                                      "the schema's range, or a truth link to no muon of its event.")
@click.option("--precision", type=click.Choice(["exact", "round"]), default=None,
              help="Values whose type differs from the schema's (float64 -> float32 ...). exact (default): "
                   "refuse any value that is not stored exactly, naming file, entry, field and value, so a "
                   "dataset never silently differs from its dump; round: store it correctly rounded "
                   "(nearest even) and count it per field in the manifest. Out-of-range values are always "
                   "errors. Per field: 'precision:' in a --layout file.")
@click.option("--compression", default="zstd", show_default=True, help="Parquet codec[:level]: zstd, lz4, snappy, gzip, brotli, none.")
@click.option("--row-group-size", type=int, default=2000, show_default=True, help="At most this many input entries per Parquet row group.")
@click.option("--row-group-bytes", default="64 MB", show_default=True,
              help="At most this many bytes per row group, estimated from each event's hit and muon counts "
                   "(raw columns in memory); 'none' for no cap.")
@click.option("--shard-events", type=int, default=10000, show_default=True,
              help="At most this many input entries per work unit; each unit writes one shard.")
@click.option("--shard-bytes", default="256 MB", show_default=True,
              help="About this many bytes per work unit, estimated from the file's basket sizes; 'none' for no cap.")
@click.option("-j", "--workers", type=click.IntRange(min=1), default=None,
              help="Local worker processes [default: number of cores].")
@click.option("--scheduler", default=None, help="Run units on Dask: tcp://HOST:PORT of a running scheduler, 'local' "
              "(an embedded cluster on loopback that only this run can use: temporary TLS credentials), "
              "or 'slurm' (--workers SLURM jobs of one Dask worker each, via dask-jobqueue; needs [grid]).")
@click.option("--dashboard", default=None, metavar="ADDRESS",
              help="With --scheduler local: serve Dask's dashboard at ADDRESS (e.g. 127.0.0.1:8787); off by default.")
@click.option("--task-index", type=int, default=None, help="Job arrays: this task's index (0-based).")
@click.option("--task-count", type=int, default=None, help="Job arrays: number of tasks; run `finalize` afterwards.")
@click.option("--skip-bad-files", is_flag=True, help="Skip unreadable inputs, list them in the manifest, exit 3.")
@click.option("--reconfigure", is_flag=True, help="Accept a changed configuration or input set in an existing output; redo affected units, delete shards no longer planned.")
@click.option("--remote-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Seconds a remote server (http://, root://) may stay silent before the read fails with the "
                   "file and entry range.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def convert(inputs, output, schema_version, tree, layout_file, step_size, min_pt, max_abs_eta, min_hits,
            technologies, keep_empty_events, on_invalid, compression, row_group_size, row_group_bytes, shard_events,
            shard_bytes, workers, scheduler, dashboard, task_index, task_count, skip_bad_files, reconfigure,
            remote_timeout, quiet, keep_muons_without_hits=False, precision=None):
    """Convert ROOT hit dumps (files, directories, globs, URLs) to Parquet shards + manifest.

    Each input is split into work units (--shard-events entries, --shard-bytes bytes) that each
    write one shard; finished units are recorded, so re-running the same command resumes after a
    crash. Row groups and read steps are sized from each event's actual hit count, so peak memory
    follows --step-size even when event sizes vary within a file. Exit codes: 0 ok, 1 bad input,
    2 usage, 3 done but some inputs were skipped (--skip-bad-files), 130/143 stopped by Ctrl-C/SIGTERM
    (re-run to resume).
    """
    from .config import Compression, ConvertConfig
    from .conversion import convert as run
    from .layout import SourceLayout
    from .schema import latest_version, load_schema
    from .selection import SelectionConfig, parse_technologies
    from .settings import RunSettings
    from .sizes import parse_optional_size
    from .transform import TransformConfig

    version = latest_version() if schema_version is None else schema_version
    try:
        schema = load_schema(version)
    except PipelineError as err:
        raise click.BadParameter(str(err), param_hint="--schema-version") from None
    layout = SourceLayout.from_yaml(layout_file, schema) if layout_file else SourceLayout()
    if tree:
        layout = dataclasses.replace(layout, tree=tree)
    if precision:
        layout = dataclasses.replace(layout, precision=precision)
    if dashboard and scheduler != "local":
        raise click.UsageError("--dashboard goes with --scheduler local (a running cluster has its own)")
    if (task_index is None) != (task_count is None):
        raise click.UsageError("--task-index and --task-count go together")
    sel = SelectionConfig(min_pt=min_pt, max_abs_eta=max_abs_eta, min_hits=min_hits,
                          technologies=parse_technologies(technologies), keep_empty_events=keep_empty_events,
                          keep_muons_without_hits=keep_muons_without_hits)
    cfg = ConvertConfig(schema_version=version, layout=layout, transform=TransformConfig(sel, on_invalid),
                        compression=Compression.parse(compression), row_group_size=row_group_size,
                        shard_events=shard_events,
                        row_group_bytes=parse_optional_size(row_group_bytes, "--row-group-bytes"),
                        shard_bytes=parse_optional_size(shard_bytes, "--shard-bytes"))
    settings = RunSettings(workers=workers, scheduler=scheduler, step_size=step_size, remote_timeout=remote_timeout,
                           skip_bad=skip_bad_files, quiet=quiet, dashboard=dashboard)
    task = (task_index, task_count) if task_index is not None else None
    res = run(list(inputs), output, cfg, settings=settings, task=task, reconfigure=reconfigure)
    print_convert_summary(res, output, quiet)
    if res.skipped_anything:
        sys.exit(3)


@main.command("submit-script", context_settings={"ignore_unknown_options": True})
@click.option("--system", type=click.Choice(["slurm", "htcondor"]), required=True, help="Batch system.")
@click.option("--job", type=click.Choice(["convert", "filter", "train"]), default="convert", show_default=True,
              help="convert (or filter): a job array of its tasks, then finalize. train: one training job (SLURM) "
                   "that checkpoints at its time-limit warning and requeues itself until the run is complete.")
@click.option("--tasks", type=click.IntRange(min=1), default=None, help="Number of job-array tasks (convert).")
@click.option("--script", "script_file", type=click.Path(dir_okay=False), default=None,
              help="Write the script here [default: print it].")
@click.option("--job-name", default=None, help="Job name (and log file prefix) [default: muon-convert, muon-filter, muon-train].")
@click.option("--cpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cores per task; convert runs with -j CPUS unless the arguments set -j.")
@click.option("--memory", default=None, help="Memory per task, e.g. 4G (SLURM --mem, HTCondor request_memory).")
@click.option("--time", "walltime", default=None, help="SLURM time limit per task, e.g. 02:00:00.")
@click.option("--partition", default=None, help="SLURM partition.")
@click.option("--log-dir", default="logs", show_default=True, help="Folder for the job logs (created now).")
@click.option("--gpus", type=click.IntRange(min=0), default=0, show_default=True, help="GPUs of the training job.")
@click.option("--warn-seconds", type=click.IntRange(min=1), default=300, show_default=True,
              help="Training job: SLURM sends the checkpoint signal this long before the time limit.")
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED, required=True)
def submit_script(system, job, tasks, script_file, job_name, cpus, memory, walltime, partition, log_dir, gpus,
                  warn_seconds, job_args):
    """Write a batch script: a job array of `convert JOB_ARGS` tasks then `finalize`, or (--job train) a
    training job of `train JOB_ARGS` that survives time limits and preemption.

    \b
    muon-pipeline submit-script --system slurm --tasks 100 --script convert.sh -- /data/*.root -o /shared/ds
    sbatch convert.sh         # task 0 also submits finalize, to run after the whole array
    muon-pipeline submit-script --system slurm --job train --time 04:00:00 --script train.sh -- \\
        --config inverse_pt --data /shared/ds --output /shared/runs/a
    sbatch train.sh           # checkpoints 5 min before each time limit and requeues itself until done
    The job's arguments are checked now (a typo fails here, not in 100 jobs).
    """
    from pathlib import Path

    from .batch import submit_script as make
    from .batch import train_script

    args = list(job_args)
    command = convert if job == "convert" else self_command(job)
    try:
        ctx = command.make_context(job, list(args))
    except click.ClickException as err:
        raise click.UsageError(f"{job} arguments: {err.format_message()}") from err
    if job == "train":
        if system != "slurm":
            raise click.UsageError("--job train writes a SLURM script (its requeue needs scontrol); use --system slurm")
        text = train_script(args, ctx.params["run_dir"], job_name=job_name or "muon-train", cpus=cpus, memory=memory,
                            time=walltime, partition=partition, gpus=gpus, warn_seconds=warn_seconds, log_dir=log_dir)
        tasks = 1
    else:
        if tasks is None:
            raise click.UsageError(f"--tasks is required for a {job} job array")
        text = make(system, tasks, args, ctx.params, job_name=job_name or f"muon-{job}", cpus=cpus, memory=memory,
                    time=walltime, partition=partition, log_dir=log_dir, command=job)
    Path(log_dir).mkdir(parents=True, exist_ok=True)  # SLURM and HTCondor do not create it
    if script_file:
        Path(script_file).write_text(text)
        Path(script_file).chmod(0o755)
        submit = "sbatch" if system == "slurm" else "condor_submit"
        what = "one training job (requeued until done)" if job == "train" else f"{tasks} task(s)"
        click.echo(f"{script_file}: {what}; submit with: {submit} {script_file}", err=True)
    else:
        click.echo(text, nl=False)


@main.command()
@click.argument("directory")
def finalize(directory):
    """Assemble _manifest.json once all job-array tasks are done (lists missing units otherwise)."""
    from .manifest import finalize_status
    from .storage import OutputDir

    out = OutputDir(directory)
    with out.lock(what="finalize"):
        m, written = finalize_status(out)
    what = "manifest written" if written else "already complete, manifest unchanged"
    click.echo(f"{directory}: {what}, {m['totals']['events']} events in {len(m['shards'])} shard(s)")
    if m["skipped"]["inputs"] or m["skipped"]["units"]:
        sys.exit(3)


# --------------------------------------------------------------------------------------------
# validate / inspect / migrate
# --------------------------------------------------------------------------------------------

@main.command()
@click.argument("directory")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for machines).")
@click.option("--no-values", is_flag=True, help="Skip the value checks (structure, metadata and checksums only).")
@click.option("--no-checksums", is_flag=True, help="Skip the sha256 check of each shard.")
@click.option("--source", default=None, is_flag=False, flag_value="3", metavar="[N|all]",
              help="Also re-derive N units (default 3, spread over the dataset) or all of them from the raw "
                   "inputs the manifest names, and compare with the shards bit for bit.")
@click.option("--remote-timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="With --source: seconds a remote server (http://, root://) may stay silent.")
def validate(directory, as_json, no_values, no_checksums, source, remote_timeout):
    """Check a dataset: manifest, every shard, every value; optionally against the raw inputs.

    \b
    Levels and what each costs (measured on 161 MB, 9 501 events, 4 shards;
    bench/bench_validate.py):
      --no-values --no-checksums  manifest + Parquet footers only: paths, sizes, schemas,
                                  shard identities, unit coverage, counts      0.01 s
      --no-values                 + sha256 of every shard (reads every byte)   0.3 s
      (default)                   + every value decoded once: rules, cuts, formulas,
                                  event order and uniqueness, statistics
                                  recomputed                                   2.7 s
      --source N                  + N units converted again from the raw ROOT inputs
                                  (paths as the manifest records them) and compared
                                  byte for byte: the convert cost of N units   5.7 s (N=1)
      --source all                + the whole dataset converted again          16 s
    Only --source catches a value edited after writing with every checksum and
    statistic recomputed.

    Exit 0 when sound, 1 when any problem is found (all are reported), 2 on usage errors
    (no such directory, a bad --source).
    """
    import json

    from .remote import timeout_set
    from .validate import summarize, validate_dataset

    if source is not None and source != "all" and not (source.isdigit() and int(source) > 0):
        raise click.BadParameter(f"expected a positive number of units or 'all', got {source!r}", param_hint="--source")
    with timeout_set(remote_timeout):
        report = validate_dataset(directory, check_values=not no_values, check_checksums=not no_checksums,
                                  source=None if source is None else (source if source == "all" else int(source)))
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else summarize(report))
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("directory")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--no-scan", is_flag=True, help="Use the manifest only (no technology counts; instant).")
def inspect(directory, as_json, no_scan):
    """Events, hits, muons, technology mix, cut flow and feature statistics of a dataset."""
    import json

    from rich.console import Console

    from .summary import render, summarize_dataset

    info = summarize_dataset(directory, scan=not no_scan)
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        render(info, Console(width=max(100, Console().width)))


@main.command()
@click.argument("directory")
@click.option("--to-version", type=int, required=True, help="Schema version to upgrade to.")
@click.option("-o", "--output", required=True,
              help="New dataset directory: new or empty, outside DIRECTORY (or this same migration's output, "
                   "to resume or re-run it).")
def migrate(directory, to_version, output):
    """Upgrade a dataset to a newer schema version (e.g. v1 -> v2 adds eta) without the ROOT files.

    Every shard's sha256 is checked before it is read; new columns are computed from stored ones, the
    others copied. DIRECTORY is locked while it is read (no convert, job-array task or finalize may
    write it meanwhile) and OUTPUT while it is written. An interrupted run resumes when re-run; a
    finished one is a no-op (redone if a shard of it has gone)."""
    from .migrate import migrate_dataset

    m = migrate_dataset(directory, output, to_version)
    click.echo(f"{output}: {m['totals']['events']} events migrated to schema v{to_version} "
               f"in {len(m['shards'])} shard(s)")


def run() -> None:
    """The ``muon-pipeline`` console script: :func:`main`, then a hard exit with its status.

    Interpreter teardown after a finished command aborted about one run in 20 with ``terminate
    called without an active exception`` (SIGABRT, exit 134) from a C++ library thread, after
    ``validate`` had printed OK: a batch job or CI would read a sound dataset as failed. Every
    command closes its files, pools and clusters before returning, so once ``main`` has returned or
    exited, output is flushed and the process ends with ``os._exit`` and the command's own status,
    skipping the teardown. Tests call ``main`` in-process and are unaffected.
    """
    try:
        main(standalone_mode=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, int) and stop.code is not None:
            print(stop.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # python -m pipeline.cli, as python -m pipeline
    main()
