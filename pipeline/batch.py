"""Batch systems: Dask workers as SLURM jobs, and job-array submission scripts for SLURM and HTCondor.

* :func:`slurm_cluster` starts a ``dask_jobqueue.SLURMCluster`` (``convert --scheduler slurm``): a Dask
  scheduler in this process and ``--workers`` SLURM jobs, each running one Dask worker, that the work
  units are sent to like any other Dask cluster. Partition, walltime, memory, interface... come from
  dask-jobqueue's own configuration (``~/.config/dask/jobqueue.yaml`` or ``DASK_JOBQUEUE__SLURM__*``
  variables); only what it leaves unset gets a default here (1 core, 1 process, 2 GB, this Python).
* :func:`submit_script` writes the job-array script for ``convert --task-index/--task-count`` from the
  same arguments as ``convert`` (``muon-pipeline submit-script``), so nobody hand-writes the array
  arithmetic: SLURM gets an ``sbatch`` script whose task 0 also submits ``finalize`` to run after the
  whole array; HTCondor gets a submit description with ``queue N``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from ._version import __version__
from .errors import ConfigError
from .extras import jobqueue

SYSTEMS = ("slurm", "htcondor")
#: Defaults for what dask-jobqueue's configuration leaves unset (one single-threaded worker per job).
SLURM_DEFAULTS = {"cores": 1, "processes": 1, "memory": "2GB"}


@contextlib.contextmanager
def slurm_cluster(jobs: int) -> Iterator[str]:
    """A Dask scheduler here and ``jobs`` SLURM jobs of one worker each; yields the scheduler address.

    Raises ConfigError when dask-jobqueue is missing (with the install hint) or ``sbatch`` is not on
    PATH. The worker jobs are cancelled (``scancel``) when the block ends, whatever happened.
    """
    SLURMCluster = jobqueue("--scheduler slurm").SLURMCluster
    import dask

    if shutil.which("sbatch") is None:
        raise ConfigError("--scheduler slurm submits the Dask workers with sbatch, which is not on PATH: "
                          "run convert on a SLURM submit host")
    conf = dask.config.get("jobqueue.slurm", default={}) or {}
    kwargs = {k: v for k, v in SLURM_DEFAULTS.items() if conf.get(k) is None}
    if conf.get("python") is None:
        kwargs["python"] = sys.executable  # the workers run this installation
    if not (conf.get("scheduler-options") or {}).get("dashboard_address"):
        kwargs["scheduler_options"] = {**(conf.get("scheduler-options") or {}), "dashboard_address": None}
    try:
        cluster = SLURMCluster(**kwargs)
    except Exception as err:  # bad jobqueue configuration: dask-jobqueue raises ValueError and others
        raise ConfigError(f"cannot set up the SLURM cluster: {err}") from err
    try:
        cluster.scale(jobs=jobs)
        yield cluster.scheduler_address
    finally:
        cluster.close()


# --------------------------------------------------------------------------------------------
# job-array scripts
# --------------------------------------------------------------------------------------------

#: convert options that the script sets itself (per task) or that make no sense in a job array.
_SCRIPT_OWNS = {"task_index": "--task-index", "task_count": "--task-count", "scheduler": "--scheduler"}


def _command(*args: str) -> list[str]:
    """This installation's command line: the same Python, so the jobs run the same tool."""
    return [sys.executable, "-m", "pipeline", *args]


def submit_script(system: str, tasks: int, convert_args: list[str], params: dict, *, job_name: str = "muon-convert",
                  cpus: int = 1, memory: str | None = None, time: str | None = None, partition: str | None = None,
                  log_dir: str = "logs", workdir: str | None = None, command: str = "convert") -> str:
    """The text of a job-array script running ``convert CONVERT_ARGS`` as ``tasks`` tasks (``command``:
    ``filter`` for a derived dataset, with that command's arguments and options; the same contract).

    ``params`` are the parsed ``convert`` options (to find the output and refuse options the script
    owns). Task *i* runs ``convert ... -j cpus --task-index i --task-count tasks`` in ``workdir`` (default:
    the current folder), so relative inputs resolve as they do here. Raises ConfigError for an unknown
    system, fewer than one task, or convert options the script sets itself.
    """
    if system not in SYSTEMS:
        raise ConfigError(f"unknown batch system {system!r}; known: {list(SYSTEMS)}")
    if tasks < 1:
        raise ConfigError(f"--tasks must be at least 1, got {tasks}")
    owned = [opt for key, opt in _SCRIPT_OWNS.items() if params.get(key) is not None]
    if owned:
        raise ConfigError(f"the script sets {owned} itself; leave them out of the convert arguments")
    workdir = os.path.abspath(workdir or os.getcwd())
    extra = [] if params.get("workers") is not None else ["-j", str(cpus)]
    if system == "slurm":
        return _slurm(tasks, convert_args + extra, params["output"], job_name=job_name, cpus=cpus,
                      memory=memory, time=time, partition=partition, log_dir=log_dir, workdir=workdir,
                      command=command)
    return _htcondor(tasks, convert_args + extra, params["output"], job_name=job_name, cpus=cpus,
                     memory=memory, log_dir=log_dir, workdir=workdir, command=command)


def _slurm(tasks: int, args: list[str], output: str, *, job_name: str, cpus: int, memory: str | None,
           time: str | None, partition: str | None, log_dir: str, workdir: str, command: str = "convert") -> str:
    logs = str(Path(workdir, log_dir))
    directives = [f"--job-name={job_name}", f"--array=0-{tasks - 1}", f"--cpus-per-task={cpus}",
                  f"--chdir={workdir}", f"--output={logs}/{job_name}-%A_%a.log"]
    directives += [f"--mem={memory}"] if memory else []
    directives += [f"--time={time}"] if time else []
    directives += [f"--partition={partition}"] if partition else []
    finalize = shlex.join(_command("finalize", output))
    follow = ["sbatch", "--parsable", f"--job-name={job_name}-finalize", "--dependency=afterany:$SLURM_ARRAY_JOB_ID",
              f"--chdir={workdir}", f"--output={logs}/{job_name}-finalize-%j.log",
              f"--wrap={finalize}"]
    follow_line = " ".join(a if "$SLURM" in a else shlex.quote(a) for a in follow)
    convert = shlex.join(_command(command, *args))
    return "\n".join([
        "#!/bin/bash",
        f"# Generated by muon-pipeline {__version__} submit-script: {tasks} job-array task(s) of {command},",
        "# then finalize (submitted by task 0, runs when every task has ended). Submit with: sbatch THIS_FILE",
        *[f"#SBATCH {shlex.quote(d)}" for d in directives],
        "set -euo pipefail",
        'if [ "$SLURM_ARRAY_TASK_ID" = 0 ]; then',
        "  # afterany: finalize also runs after a failed task, and lists the units still missing (exit 1)",
        f"  {follow_line}",
        "fi",
        f'exec {convert} --task-index "$SLURM_ARRAY_TASK_ID" --task-count {tasks}',
        "",
    ])


def condor_arguments(args: list[str]) -> str:
    """HTCondor's ``arguments`` value in its new syntax: the whole list in double quotes, an argument
    with white space or quotes in single quotes, quotes inside doubled. ``$(`` would be expanded as a
    submit macro, so it is refused."""
    out = []
    for a in args:
        if "$(" in a and a != "$(Process)":
            raise ConfigError(f"argument {a!r} holds '$(', which HTCondor would expand as a macro")
        a = a.replace('"', '""')
        if any(c in a for c in " \t'") or a == "":
            a = "'" + a.replace("'", "''") + "'"
        out.append(a)
    return '"' + " ".join(out) + '"'


def _htcondor(tasks: int, args: list[str], output: str, *, job_name: str, cpus: int, memory: str | None,
              log_dir: str, workdir: str, command: str = "convert") -> str:
    logs = str(Path(workdir, log_dir))
    cmd = _command(command, *args, "--task-index", "$(Process)", "--task-count", str(tasks))
    lines = [
        f"# Generated by muon-pipeline {__version__} submit-script: {tasks} job(s) of {command}.",
        "# Submit with: condor_submit THIS_FILE; when all jobs have left the queue:",
        f"#   {shlex.join(_command('finalize', output))}",
        "universe       = vanilla",
        f"executable     = {cmd[0]}",
        f"arguments      = {condor_arguments(cmd[1:])}",
        f"initialdir     = {workdir}",
        "getenv         = true",
        f"request_cpus   = {cpus}",
        *([f"request_memory = {memory}"] if memory else []),
        f"output         = {logs}/{job_name}-$(Cluster)_$(Process).out",
        f"error          = {logs}/{job_name}-$(Cluster)_$(Process).err",
        f"log            = {logs}/{job_name}-$(Cluster).log",
        f"queue {tasks}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# a training job that survives its time limit
# --------------------------------------------------------------------------------------------

#: Exit codes of ``train`` stopped by a signal with a checkpoint written (SIGUSR1, SIGTERM): continue later.
STOPPED_WITH_CHECKPOINT = (128 + 10, 128 + 15)


def train_script(train_args: list[str], output: str, *, job_name: str = "muon-train", cpus: int = 1,
                 memory: str | None = None, time: str | None = None, partition: str | None = None,
                 gpus: int = 0, warn_seconds: int = 300, log_dir: str = "logs", workdir: str | None = None) -> str:
    """A SLURM batch script running ``train TRAIN_ARGS`` until its step budget is reached, across time limits.

    SLURM sends SIGUSR1 to the script ``warn_seconds`` before the time limit (``--signal=B:USR1@N``); the
    script passes it to ``train``, which writes ``last.ckpt`` at the step it is at and exits 138; the script
    then requeues the job (``scontrol requeue``: the same job id runs again, ``--requeue``). A new start
    finds the checkpoint and adds ``--resume``: the run continues exactly where it stopped. A preemption
    (SIGTERM to every process of the job) ends ``train`` the same way (exit 143) and requeues it too. Any
    other exit status ends the job with that status (0: the run is complete).
    """
    workdir = os.path.abspath(workdir or os.getcwd())
    logs = str(Path(workdir, log_dir))
    ckpts = Path(output) / "checkpoints"
    directives = [f"--job-name={job_name}", f"--cpus-per-task={cpus}", f"--chdir={workdir}",
                  f"--output={logs}/{job_name}-%j.log", "--open-mode=append", "--requeue",
                  f"--signal=B:USR1@{warn_seconds}"]
    directives += [f"--mem={memory}"] if memory else []
    directives += [f"--time={time}"] if time else []
    directives += [f"--partition={partition}"] if partition else []
    directives += [f"--gpus={gpus}"] if gpus else []
    stopped = " || ".join(f'[ "$status" -eq {c} ]' for c in STOPPED_WITH_CHECKPOINT)
    return "\n".join([
        "#!/bin/bash",
        f"# Generated by muon-pipeline {__version__} submit-script --job train: a training run that continues",
        "# across time limits and preemptions (requeued until train exits 0). Submit with: sbatch THIS_FILE",
        *[f"#SBATCH {shlex.quote(d)}" for d in directives],
        "set -uo pipefail",
        f"cmd=({shlex.join(_command('train', *train_args))})",
        f"if [ -e {shlex.quote(str(ckpts / 'last.ckpt'))} ] || [ -e {shlex.quote(str(ckpts / 'previous.ckpt'))} ]; then",
        "  cmd+=(--resume)",
        "fi",
        'echo "muon-pipeline train: start ${SLURM_RESTART_COUNT:-0} of job $SLURM_JOB_ID: ${cmd[*]}"',
        '"${cmd[@]}" &',
        "pid=$!",
        "# the time-limit warning (to this script only) and a preemption: train checkpoints and exits",
        "trap 'kill -USR1 \"$pid\" 2>/dev/null' USR1",
        "trap 'kill -TERM \"$pid\" 2>/dev/null' TERM",
        "while true; do  # a trapped signal ends wait early: wait until train has exited, for its own status",
        '  wait "$pid"; status=$?',
        '  if ! kill -0 "$pid" 2>/dev/null; then',
        '    wait "$pid" 2>/dev/null; own=$?  # bash kept the status of a child reaped meanwhile (127: none)',
        '    [ "$own" -ne 127 ] && status=$own',
        "    break",
        "  fi",
        "done",
        f"if {stopped}; then",
        '  echo "muon-pipeline train: stopped with a checkpoint (exit $status); requeueing job $SLURM_JOB_ID"',
        '  scontrol requeue "$SLURM_JOB_ID" && exit 0',
        "fi",
        'exit "$status"',
        "",
    ])
