"""``convert``: plan the units, skip the finished ones, run the rest, finalize the manifest.

This module only orchestrates; reading, transforming and writing live in ``source``,
``transform`` and ``units``, the executors in ``executors``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from dataclasses import dataclass, field

from . import grid
from ._version import __version__
from .batch import slurm_cluster
from .config import ConvertConfig, config_diff
from .errors import ConfigError
from .executors import run_dask, run_processes, run_serial
from .manifest import MANIFEST, finalize, load_records
from .progress import Reporter
from .schema import load_schema
from .source import local_identity
from .storage import TMP_MARK, OutputDir
from .units import PLAN, SHARDS, Unit, plan_units


@dataclass
class ConvertResult:
    manifest: dict | None
    units_total: int
    units_run: int
    units_reused: int
    skipped_inputs: list[dict] = field(default_factory=list)
    skipped_units: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    task: tuple[int, int] | None = None

    @property
    def skipped_anything(self) -> bool:
        return bool(self.skipped_inputs or self.skipped_units)


def expand_inputs(specs: list[str]) -> list[str]:
    """Files, directories (their ``*.root``, sorted) and globs, in the order given, locally and on
    ``root://`` servers; other URLs as-is.

    An existing path is taken literally even when it looks like a pattern (``sample[1].root`` is that
    file, not ``sample1.root``); only a spec that names no existing path is expanded as a glob.
    """
    out: list[str] = []
    for spec in specs:
        if grid.is_xrootd(spec):  # directories and globs on an XRootD server, same rules
            out += grid.expand(spec)
            continue
        if "://" in spec and not spec.startswith("file://"):
            out.append(spec)
            continue
        prefix = "file://" if spec.startswith("file://") else ""  # file:// URLs follow the same rules
        local = spec[len(prefix):]
        if os.path.isdir(local):
            found = sorted(glob.glob(os.path.join(glob.escape(local), "*.root")))
            if not found:
                raise ConfigError(f"input directory {spec} holds no *.root file")
            out += [prefix + f for f in found]
        elif os.path.exists(local):
            out.append(spec)
        elif glob.has_magic(local):
            found = sorted(glob.glob(local))
            if not found:
                raise ConfigError(f"input pattern {spec!r} matches no file")
            out += [prefix + f for f in found]
        else:
            out.append(spec)
    if not out:
        raise ConfigError("no input files given")
    dupes = sorted({p for p in out if out.count(p) > 1})
    if dupes:
        raise ConfigError(f"input(s) given more than once: {dupes}")
    # the same local file under two spellings (./a.root and a.root, a link to it) would be converted twice
    real: dict[str, str] = {}
    for p in out:
        key = local_identity(p)
        if key is None:
            continue
        if key in real:
            raise ConfigError(f"inputs {real[key]!r} and {p!r} are the same file ({key}); give it once")
        real[key] = p
    return out


def _write_plan(out: OutputDir, cfg: ConvertConfig, inputs, skipped, units: list[Unit], reconfigure: bool) -> None:
    schema = load_schema(cfg.schema_version)
    plan = {"schema": {"name": schema.name, "version": schema.version}, "tool_version": __version__,
            "config": cfg.to_dict(), "config_hash": cfg.hash(), "inputs": [i.to_dict() for i in inputs],
            "skipped_inputs": skipped, "units": [u.to_dict() for u in units]}
    if out.exists(PLAN):
        old = out.read_json(PLAN)
        if (old.get("config_hash") != plan["config_hash"] or old.get("tool_version") != __version__) and not reconfigure:
            diff = config_diff({"tool_version": old.get("tool_version"), **old.get("config", {})},
                               {"tool_version": __version__, **plan["config"]})
            raise ConfigError(f"{out.url} was produced with a different configuration:\n  " + "\n  ".join(diff)
                              + "\nUse a new --output directory, or --reconfigure to redo what the change affects.")
        if old == plan:
            return
        # The input set is part of the dataset's identity, like the configuration: a different list
        # (a late file, an incomplete listing in one job-array task, a second `convert b.root -o DS`)
        # would make finalize delete finished shards of the inputs not listed now.
        was, now = _input_paths(old), _input_paths(plan)
        changed = [(i["path"], o.get("uuid"), i["uuid"]) for i in plan["inputs"] for o in old.get("inputs", [])
                   if o["path"] == i["path"] and (o.get("uuid"), o.get("size")) != (i["uuid"], i["size"])]
        if changed and not reconfigure:
            lines = [f"{p}: ROOT UUID {a} -> {b}" for p, a, b in changed]
            raise ConfigError(f"{out.url}: input file(s) replaced since the dataset was planned:\n  " + "\n  ".join(lines)
                              + "\nRestore them, use a new --output directory, or --reconfigure to redo their units "
                              "(their old shards are deleted).")
        if was != now and not reconfigure:
            lines = [f"+ {p}" for p in sorted(now - was)] + [f"- {p}" for p in sorted(was - now)]
            raise ConfigError(f"{out.url} was planned for other inputs (+ added, - removed):\n  " + "\n  ".join(lines)
                              + "\nList the same inputs to resume, use a new --output directory, or --reconfigure "
                              "to make the dataset follow the new list (shards of removed inputs are deleted).")
    out.remove(MANIFEST)  # the plan changes: an old manifest would describe other shards
    out.write_json(PLAN, plan)


def _as_planned(out: OutputDir, paths: list[str]) -> list[str]:
    """``paths`` with each local input spelled as the existing plan recorded it, when both spellings
    name the same file (``in/a.root``, ``./in/a.root``, ``/abs/in/a.root``, a link to it): a resumed
    run then compares, keys and labels (``source_file``) its inputs exactly as the first run did.
    Remote inputs and files the plan does not hold are left as given."""
    if not out.exists(PLAN):
        return paths
    recorded: dict[str | None, str] = {}
    for q in sorted(_input_paths(out.read_json(PLAN))):
        recorded.setdefault(local_identity(q), q)
    recorded.pop(None, None)  # remote inputs keep their spelling
    return [recorded.get(local_identity(p), p) for p in paths]


def _input_paths(plan: dict) -> set[str]:
    return {i["path"] for i in plan.get("inputs", [])} | {i["path"] for i in plan.get("skipped_inputs", [])}


def _reusable_plan(out: OutputDir, cfg: ConvertConfig, paths: list[str]) -> list[Unit] | None:
    """The existing plan's units if it was made for the same inputs, configuration and version.

    Each unit still checks its input's ROOT UUID when it runs, so a replaced file is caught.
    """
    if not out.exists(PLAN):
        return None
    plan = out.read_json(PLAN)
    planned = [i["path"] for i in plan["inputs"]] + [s["path"] for s in plan["skipped_inputs"]]
    if (plan.get("config_hash") != cfg.hash() or plan.get("tool_version") != __version__
            or sorted(planned) != sorted(paths)):
        return None
    return [Unit(**u) for u in plan["units"]]


def convert(inputs: list[str], output: str, cfg: ConvertConfig, *, workers: int | None = None,
            scheduler: str | None = None, step_size: int | str = "100 MB", skip_bad: bool = False,
            task: tuple[int, int] | None = None, reconfigure: bool = False,
            quiet: bool = False, dashboard: str | None = None) -> ConvertResult:
    """Convert ROOT dumps to a Parquet dataset in ``output``; resumable and idempotent."""
    t0 = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    if task is not None and not (0 <= task[0] < task[1]):
        raise ConfigError(f"--task-index must be in [0, --task-count), got {task[0]} of {task[1]}")
    if scheduler is not None and scheduler not in ("local", "slurm") and "://" not in scheduler:
        raise ConfigError(f"--scheduler {scheduler!r}: give 'local', 'slurm' or a scheduler address such as "
                          "tcp://HOST:8786")
    paths = expand_inputs(inputs)
    if not output.strip():
        raise ConfigError("--output must name a folder")
    out = OutputDir(output)
    _check_output(out, output)
    created = not out.fs.exists(out.root)
    out.makedirs(SHARDS)
    try:
        with out.lock(shared=task is not None):
            todo, units, mine, skipped = _run(out, output, paths, cfg, workers, scheduler, step_size, skip_bad,
                                              task, reconfigure, quiet, dashboard)
            manifest = None if task is not None else finalize(out)
    except BaseException:
        if created:
            _remove_empty_dirs(out)  # a command that failed before writing anything leaves no folder behind
        raise

    records = load_records(out, units)
    skipped_units = [r for r in records.values() if r["status"] == "skipped"]
    return ConvertResult(manifest=manifest, units_total=len(units), units_run=len(todo),
                         units_reused=len(mine) - len(todo), skipped_inputs=skipped,
                         skipped_units=skipped_units, seconds=time.perf_counter() - t0, task=task)


def _remove_empty_dirs(out: OutputDir) -> None:
    """Remove the output folder made by this run, and its sub-folders, where they hold nothing (local only)."""
    if not out.local:
        return  # object stores have no empty folders to leave behind
    for dirpath, _dirs, _files in sorted(os.walk(out.root), key=lambda w: -w[0].count(os.sep)):
        with contextlib.suppress(OSError):  # not empty: something was written, keep it (resume needs it)
            os.rmdir(dirpath)


def _keep_finished_inputs(out: OutputDir, cfg: ConvertConfig, paths: list[str], good, skipped, units):
    """With --skip-bad-files, an input that cannot be read now (a server down, a disk unmounted) but was
    planned before with the same configuration keeps its old units: the finished ones are reused, so
    their shards are never deleted because a file was briefly unreachable. Returns (good, skipped, units)."""
    from .source import InputInfo

    if not out.exists(PLAN):
        return good, skipped, units
    old = out.read_json(PLAN)
    if old.get("config_hash") != cfg.hash() or old.get("tool_version") != __version__:
        return good, skipped, units
    old_inputs = {i["path"]: i for i in old.get("inputs", [])}
    back = {s["path"] for s in skipped if s["path"] in old_inputs}
    if not back:
        return good, skipped, units
    by_path = {i.path: i for i in good}
    old_units = [Unit(**u) for u in old["units"]]
    new_units = {p: [u for u in units if u.input == p] for p in by_path}
    kept_good, kept_units = [], []
    for p in paths:
        if p in by_path:
            kept_good.append(by_path[p])
            kept_units += new_units[p]
        elif p in back:
            kept_good.append(InputInfo(**old_inputs[p]))
            kept_units += [u for u in old_units if u.input == p]
    kept_units = [Unit(k, u.input, u.entry_start, u.entry_stop, u.key, u.uuid) for k, u in enumerate(kept_units)]
    return kept_good, [s for s in skipped if s["path"] not in back], kept_units


def _check_output(out: OutputDir, output: str) -> None:
    """Before any work (``output`` is not empty; :func:`convert` checks that before making ``out``): the
    output is new, empty, or a convert output (it has a plan); never a file, a
    migrate output or someone else's folder (finalize would delete part-* files there); and no folder
    below it is a symbolic link (nothing may be deleted through one, so refuse now, not after the work)."""
    if out.local and os.path.isfile(out.root):
        raise ConfigError(f"--output {output} is a file, not a folder")
    for rel in (SHARDS, "_work", "_work/units"):
        out.check_no_links(rel)
    if out.exists(PLAN) or not out.fs.exists(out.root):
        return
    files = list(out.fs.find(out.root)) if out.local else out.listdir(".")
    files = [f for f in files if not os.path.basename(f).startswith(TMP_MARK)]  # a killed run's own leftovers
    if files:
        shown = ", ".join(sorted(os.path.relpath(f, out.root) if out.local else f for f in files)[:5])
        raise ConfigError(f"output {output} exists and holds files but no convert plan ({shown}): it is not a "
                          "convert output (a migrate output, or another folder); choose a new --output directory")


def _run(out: OutputDir, output: str, paths: list[str], cfg: ConvertConfig, workers: int, scheduler: str | None,
         step_size: int | str, skip_bad: bool, task: tuple[int, int] | None, reconfigure: bool, quiet: bool,
         dashboard: str | None = None):
    paths = _as_planned(out, paths)
    reused = _reusable_plan(out, cfg, paths) if task is not None else None
    if reused is not None:
        units = reused  # job-array tasks: no need for every task to open every input again
        skipped = out.read_json(PLAN)["skipped_inputs"]
    else:
        good, skipped, units = plan_units(paths, cfg, skip_bad)
        if skipped and not reconfigure:
            good, skipped, units = _keep_finished_inputs(out, cfg, paths, good, skipped, units)
        _write_plan(out, cfg, good, skipped, units, reconfigure)

    records = load_records(out, units)
    finished = {k for k, r in records.items() if r["status"] == "done" and out.exists(r["shard"]["path"])}
    mine = [u for u in units if task is None or u.index % task[1] == task[0]]
    todo = [u for u in mine if u.key not in finished]
    total = sum(u.entry_stop - u.entry_start for u in todo)
    job = {"cfg": cfg.to_dict(), "out_url": output, "step_size": step_size, "skip_bad": skip_bad}

    with Reporter(total, quiet=quiet, units=len(todo)) as rep:
        if len(mine) > len(todo):
            rep.log(f"resuming: {len(mine) - len(todo)} of {len(mine)} units already done")
        for s in skipped:
            rep.log(f"skipped input {s['path']}: {s['reason']}")

        def on_record(rec: dict) -> None:
            if rec["status"] == "skipped":
                rep.log(f"skipped {rec['unit']['input']} entries {rec['unit']['entry_start']}-"
                        f"{rec['unit']['entry_stop']}: {rec['reason']}")
            rep.unit_done()

        # Every executor reports entries as they are done and each record as its unit finishes; with
        # --quiet nothing is shown, so no chunk reports travel at all (no queue, no Dask events).
        advance = None if quiet else rep.advance
        if scheduler == "slurm":  # Dask workers as SLURM jobs (dask-jobqueue), one per --workers
            if todo:
                with slurm_cluster(min(workers, len(todo))) as address:
                    run_dask(todo, job, address, workers, on_record, progress=advance)
        elif scheduler:
            run_dask(todo, job, scheduler, workers, on_record, dashboard=dashboard, progress=advance)
        elif workers <= 1 or len(todo) <= 1:
            run_serial(todo, job, on_record, progress=advance)
        else:
            run_processes(todo, job, min(workers, len(todo)), on_record, progress=advance)

    return todo, units, mine, skipped
