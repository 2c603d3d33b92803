"""The write contract every producer of a dataset shares: plan, resume, run the units, finalize.

A *producer* (``convert``: ROOT dumps → shards; any later one, e.g. a dataset derived from a parent
dataset, the same way) says what its configuration is, how its inputs are cut into work units, which
function runs one unit, and how the manifest is assembled (:class:`Producer`). :func:`produce` does
the rest, identically for all of them:

* checks the output (new, empty, or an output of the same kind; no linked folders), takes its lock
  (shared for a job-array task, exclusive otherwise);
* writes the :class:`~pipeline.plan.Plan`, or compares the existing one: another configuration, tool
  version or input set is refused unless ``reconfigure``; an input replaced since is refused;
* skips units recorded as done whose shard exists (a resume after kill -9 redoes only the rest);
* runs the rest on the executor the :class:`~pipeline.settings.RunSettings` name (in process, a
  local pool, Dask, SLURM), with progress; a job-array task runs its share only;
* finalizes the manifest (not for a job-array task: ``muon-pipeline finalize`` does it once); a finished
  dataset re-run changes nothing, not even the manifest's timing (it may be a read-only published copy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Protocol

from . import extras
from .config import config_diff
from .errors import ConfigError
from .executors import UnitJob, start_executor
from .format import MANIFEST, RECORDS, SHARDS, TMP_MARK, Unit
from .inputs import absolute_path, local_identity
from .plan import Plan, load_records
from .progress import Reporter
from .settings import RunSettings, available_cpus
from .storage import OutputDir


class Producer(Protocol):
    """What a kind of dataset brings to :func:`produce`."""

    #: The command's name, for messages ("re-run the same convert command").
    command: str

    def config_dict(self) -> dict:
        """The configuration that decides the output bytes (the plan records it)."""

    def config_hash(self) -> str:
        """Hash of :meth:`config_dict`: part of every unit key, the resume key."""

    def schema_doc(self) -> dict:
        """``{"name": …, "version": …}`` of the schema the shards are written in."""

    def plan_units(self, paths: list[str], settings: RunSettings) -> tuple[list[dict], list[dict], list[Unit]]:
        """Open the inputs and cut them into units: (input records, skipped inputs with reasons, units)."""

    def job(self, out_url: str, settings: RunSettings) -> UnitJob:
        """The job every executor runs per unit."""

    def finalize(self, out: OutputDir) -> tuple[dict, bool]:
        """Assemble and write the manifest from the plan and the unit records, unless the one there already
        says the same (a finished dataset re-run: it may be read-only); returns (manifest, written)."""


@dataclass
class RunResult:
    """What a run did: units planned, run now and reused, what was skipped, seconds, its task."""

    manifest: dict | None = field(repr=False)
    units_total: int
    units_run: int
    units_reused: int
    skipped_inputs: list[dict] = field(default_factory=list)
    skipped_units: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    task: tuple[int, int] | None = None
    #: a finished dataset re-run: nothing was planned anew, run or rewritten (its manifest kept as it is)
    already_complete: bool = False

    @property
    def skipped_anything(self) -> bool:
        return bool(self.skipped_inputs or self.skipped_units)


@dataclass
class _Executed:
    plan: Plan
    mine: list[Unit]  # this task's units (all units without a task)
    todo: list[Unit]  # of those, the ones run now


def produce(producer: Producer, paths: list[str], output: str, settings: RunSettings, *,
            task: tuple[int, int] | None = None, reconfigure: bool = False) -> RunResult:
    """Produce (or resume) the dataset in ``output`` from the listed ``paths``; see the module docstring.

    Nothing is written to the output until the run can start: the extras are present, the inputs listed,
    opened and checked, the plan compared with an existing one, and the executor started (the scheduler
    reached, the SLURM jobs submitted). A start that fails leaves the folder as it was. A plan from which
    nothing was produced (its run failed before a unit finished) does not refuse another configuration or
    input set (except for a job-array task).

    Raises ConfigError for a refused plan or output, InputError for a bad input (unless
    ``settings.skip_bad``), DatasetError when finalize finds units missing.
    """
    t0 = time.perf_counter()
    if task is not None and not (0 <= task[0] < task[1]):
        raise ConfigError(f"--task-index must be in [0, --task-count), got {task[0]} of {task[1]}")
    if not output.strip():
        raise ConfigError("--output must name a folder")
    extras.for_settings(settings.scheduler)  # a missing extra fails before anything is written
    out = OutputDir(output)
    check_output(out, output, producer.command)
    start = _Start(folders=[rel for rel in _FOLDERS if not out.exists(rel)])
    out.makedirs()  # the folder the lock is taken on
    try:
        with out.lock(shared=task is not None):
            done = _execute(producer, out, output, paths, settings, task, reconfigure, start)
            manifest, written = producer.finalize(out) if task is None else (None, False)
    except BaseException:
        start.undo(out)
        raise

    records = load_records(out, done.plan.units)
    skipped_units = [r for r in records.values() if r["status"] == "skipped"]
    return RunResult(manifest=manifest, units_total=len(done.plan.units), units_run=len(done.todo),
                     units_reused=len(done.mine) - len(done.todo), skipped_inputs=done.plan.skipped_inputs,
                     skipped_units=skipped_units, seconds=time.perf_counter() - t0, task=task,
                     already_complete=task is None and start.nothing_new and not written)


#: The folders a run may create, deepest last (removed in reverse order when the start fails).
_FOLDERS = (".", SHARDS, "_work", RECORDS)


@dataclass
class _Start:
    """What this run changed in the output before it could start, to undo when it fails.

    ``folders``: those that did not exist (removed when still empty: a failed start leaves no folder);
    ``nothing_new``: it wrote no plan and ran no unit (a finished dataset re-run: finalize has nothing to
    change). A plan this run wrote stays when a unit then fails (a Dask task cancelled on the failure may
    still be writing its record); as long as nothing was produced from it, it blocks no other command
    (:func:`_check_plan`)."""

    folders: list[str]
    nothing_new: bool = False

    def undo(self, out: OutputDir) -> None:
        if not out.local:
            return  # object stores have no empty folders to leave behind
        for rel in reversed(self.folders):
            with contextlib.suppress(OSError):  # not empty: something was written, keep it (resume needs it)
                os.rmdir(os.path.normpath(out.path(rel)))


def _holds_work(out: OutputDir) -> bool:
    """A unit record (done or skipped) or a shard, not a temporary, is in the output: something was produced."""
    return any(not n.startswith(TMP_MARK) for n in out.listdir(RECORDS)) or any(
        n.startswith("part-") for n in out.listdir(SHARDS))


def check_output(out: OutputDir, output: str, command: str = "convert") -> None:
    """Before any work (``output`` is not empty): the output is new, empty, or an output of a producer
    (it has a plan); never a file, a migrate output or someone else's folder (finalize would delete
    part-* files there); and no folder below it is a symbolic link (nothing may be deleted through one,
    so refuse now, not after the work)."""
    if out.local and os.path.isfile(out.root):
        raise ConfigError(f"--output {output} is a file, not a folder")
    for rel in (SHARDS, "_work", "_work/units"):
        out.check_no_links(rel)
    if Plan.load(out) is not None or not out.fs.exists(out.root):
        return
    files = list(out.fs.find(out.root)) if out.local else out.listdir(".")
    files = [f for f in files if not os.path.basename(f).startswith(TMP_MARK)]  # a killed run's own leftovers
    if files:
        shown = ", ".join(sorted(os.path.relpath(f, out.root) if out.local else f for f in files)[:5])
        raise ConfigError(f"output {output} exists and holds files but no {command} plan ({shown}): it is not a "
                          f"{command} output (a migrate output, or another folder); choose a new --output directory")


def _as_planned(old: Plan | None, paths: list[str]) -> list[str]:
    """``paths`` with each local input spelled as the existing plan recorded it, when both spellings
    name the same file (``in/a.root``, ``./in/a.root``, ``/abs/in/a.root``, a link to it): a resumed
    run then compares, keys and labels (``source_file``) its inputs exactly as the first run did.
    Remote inputs and files the plan does not hold are left as given."""
    if old is None:
        return paths
    recorded: dict[str | None, str] = {}
    for q in sorted(old.input_paths()):
        recorded.setdefault(local_identity(q), q)
    recorded.pop(None, None)  # remote inputs keep their spelling
    return [recorded.get(local_identity(p), p) for p in paths]


def _keep_finished_inputs(old: Plan | None, config_hash: str, paths: list[str], good: list[dict],
                          skipped: list[dict], units: list[Unit]) -> tuple[list[dict], list[dict], list[Unit]]:
    """With --skip-bad-files, an input that cannot be read now (a server down, a disk unmounted) but was
    planned before with the same configuration keeps its old units: the finished ones are reused, so
    their shards are never deleted because a file was briefly unreachable. Returns (good, skipped, units)."""
    if old is None or not old.same_run(config_hash):
        return good, skipped, units
    old_inputs = {i["path"]: i for i in old.inputs}
    back = {s["path"] for s in skipped if s["path"] in old_inputs}
    if not back:
        return good, skipped, units
    by_path = {i["path"]: i for i in good}
    new_units = {p: [u for u in units if u.input == p] for p in by_path}
    kept_good, kept_units = [], []
    for p in paths:
        if p in by_path:
            kept_good.append(by_path[p])
            kept_units += new_units[p]
        elif p in back:
            kept_good.append(old_inputs[p])
            kept_units += [u for u in old.units if u.input == p]
    kept_units = [Unit(k, u.input, u.entry_start, u.entry_stop, u.key, u.uuid) for k, u in enumerate(kept_units)]
    return kept_good, [s for s in skipped if s["path"] not in back], kept_units


def _check_plan(out: OutputDir, old: Plan | None, new: Plan, reconfigure: bool, binding: bool = True) -> bool:
    """Whether ``new`` must be written (``old`` is not the same plan); refuse another configuration, tool
    version, input set or a replaced input unless ``reconfigure`` or not ``binding`` (nothing was produced
    from ``old``). Writes nothing."""
    if old is not None and not binding:
        return old.to_dict() != new.to_dict()
    if old is not None:
        if not old.same_run(new.config_hash) and not reconfigure:
            diff = config_diff({"tool_version": old.tool_version or None, **old.config},
                               {"tool_version": new.tool_version, **new.config})
            raise ConfigError(f"{out.url} was produced with a different configuration:\n  " + "\n  ".join(diff)
                              + "\nUse a new --output directory, or --reconfigure to redo what the change affects.")
        if old.to_dict() == new.to_dict():
            return False
        # The input set is part of the dataset's identity, like the configuration: a different list
        # (a late file, an incomplete listing in one job-array task, a second `convert b.root -o DS`)
        # would make finalize delete finished shards of the inputs not listed now.
        was, now = old.input_paths(), new.input_paths()
        changed = [(i["path"], o.get("uuid"), i.get("uuid")) for i in new.inputs for o in old.inputs
                   if o["path"] == i["path"] and (o.get("uuid"), o.get("size")) != (i.get("uuid"), i.get("size"))]
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
    return True


def _write_plan(out: OutputDir, plan: Plan) -> None:
    """Write ``plan`` (a changed plan makes an old manifest stale: it would describe other shards).
    Refused while a reader reads the dataset the new plan makes stale (:meth:`OutputDir.replacing`)."""
    out.makedirs(SHARDS)
    with out.replacing():
        out.remove(MANIFEST)
        plan.write(out)


def _execute(producer: Producer, out: OutputDir, output: str, paths: list[str], settings: RunSettings,
             task: tuple[int, int] | None, reconfigure: bool, start: _Start) -> _Executed:
    old = Plan.load(out)
    paths = _as_planned(old, paths)
    config_hash = producer.config_hash()
    write = False
    # (paths and a plan's inputs are each free of duplicates: expand_inputs refuses them)
    if task is not None and old is not None and old.same_run(config_hash) and old.input_paths() == set(paths):
        plan = old  # job-array tasks: no need for every task to open every input again
    else:
        good, skipped, units = producer.plan_units(paths, settings)
        if skipped and not reconfigure:
            good, skipped, units = _keep_finished_inputs(old, config_hash, paths, good, skipped, units)
        plan = Plan(schema=producer.schema_doc(), config=producer.config_dict(), config_hash=config_hash,
                    inputs=good, skipped_inputs=skipped, units=units)
        # a plan nothing was produced from (its run failed before any unit finished) blocks no other
        # command; a job-array task keeps to it (the other tasks may be working from it)
        write = _check_plan(out, old, plan, reconfigure, binding=task is not None or _holds_work(out))

    finished = plan.finished(out)
    mine = [u for u in plan.units if task is None or u.index % task[1] == task[0]]
    todo = [u for u in mine if u.key not in finished]
    total = sum(u.entries for u in todo)
    start.nothing_new = not write and not todo
    remote = settings.scheduler is not None  # the units leave this process: paths resolved here, as typed here
    job_settings = dataclasses.replace(settings, base_dir=os.getcwd()) if remote else settings
    job = producer.job(absolute_path(output) if remote else output, job_settings)

    # The executor starts (a scheduler reached, SLURM jobs submitted) before the plan is written.
    with start_executor(settings, len(todo)) as run, Reporter(total, quiet=settings.quiet, units=len(todo)) as rep:
        if write:
            _write_plan(out, plan)
        if todo:
            where = settings.scheduler or f"{min(settings.worker_count, len(todo))} local process(es)"
            rep.log(f"{producer.command}: {len(todo)} unit(s) on {where} (CPUs available: {available_cpus()}; "
                    "-j sets the worker count)")
        if len(mine) > len(todo):
            rep.log(f"resuming: {len(mine) - len(todo)} of {len(mine)} units already done")
        for s in plan.skipped_inputs:
            rep.log(f"skipped input {s['path']}: {s['reason']}")

        def on_record(rec: dict) -> None:
            if rec["status"] == "skipped":
                rep.log(f"skipped {rec['unit']['input']} entries {rec['unit']['entry_start']}-"
                        f"{rec['unit']['entry_stop']}: {rec['reason']}")
            rep.unit_done()

        # Every executor reports entries as they are done and each record as its unit finishes; with
        # --quiet nothing is shown, so no chunk reports travel at all (no queue, no Dask events).
        run(todo, job, on_record, progress=None if settings.quiet else rep.advance)
    return _Executed(plan, mine, todo)


