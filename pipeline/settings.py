"""How a run is carried out, never what it produces: the typed run settings every executor receives.

:class:`RunSettings` travels with the work to every executor, in this process, to local pool workers
and to Dask workers of any cluster (an embedded one, a running ``--scheduler tcp://…``, SLURM jobs), so
a worker never depends on its own environment for them. None of them enters a unit's key: changing
them never invalidates finished work (what decides the bytes is the producer's configuration, e.g.
:class:`~pipeline.config.ConvertConfig`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .remote import DEFAULT_REMOTE_TIMEOUT
from .sizes import parse_step_size

#: Scheduler spellings besides an address (``tcp://HOST:PORT``, ``tls://…``).
SCHEDULERS = ("local", "slurm")


@dataclass(frozen=True)
class RunSettings:
    """Settings of one run, checked and normalised when made (ConfigError names the option).

    * ``workers``: local processes, Dask workers of ``--scheduler local`` or SLURM jobs of ``slurm``
      (None: the CPUs this process may use, :func:`available_cpus`);
    * ``scheduler``: None (local processes), ``local``, ``slurm`` or a Dask scheduler address;
    * ``step_size``: entries read at once, an event count or a size (normalised to ``'N B'``);
    * ``remote_timeout``: seconds a remote server may stay silent (:mod:`pipeline.remote`);
    * ``skip_bad``: record unreadable inputs and units as skipped instead of failing;
    * ``quiet``: no progress output (and no chunk reports travel at all);
    * ``dashboard``: with ``scheduler='local'``, where Dask's dashboard listens (off by default);
    * ``base_dir``: the folder relative local paths are resolved against wherever a unit runs (None: the
      current folder of the process running it). :func:`pipeline.produce.produce` sets it to the client's
      folder when units leave this process (a Dask cluster, SLURM jobs), whose workers may have been
      started elsewhere; what is recorded (plan, unit records, ``source_file``) keeps the user's spelling.
    """

    workers: int | None = None
    scheduler: str | None = None
    step_size: int | str = "100 MB"
    remote_timeout: float = DEFAULT_REMOTE_TIMEOUT
    skip_bad: bool = False
    quiet: bool = False
    dashboard: str | None = None
    base_dir: str | None = None

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.workers == 0:  # as before RunSettings existed: 0 means the default
            object.__setattr__(self, "workers", None)
        if self.scheduler is not None and self.scheduler not in SCHEDULERS and "://" not in self.scheduler:
            raise ConfigError(f"--scheduler {self.scheduler!r}: give 'local', 'slurm' or a scheduler address such "
                              "as tcp://HOST:8786")
        if not self.remote_timeout > 0:
            raise ConfigError(f"--remote-timeout must be a positive number of seconds, got {self.remote_timeout!r}")
        object.__setattr__(self, "step_size", parse_step_size(self.step_size))

    def locate(self, path: str) -> str:
        """Where a unit opens ``path``: a relative local path joined to ``base_dir`` (when set); absolute
        paths and URLs (``root://``, ``file://``, ``http://``) as they are."""
        if self.base_dir is None or "://" in path or os.path.isabs(path):
            return path
        return os.path.join(self.base_dir, path)

    @property
    def worker_count(self) -> int:
        """``workers``, or the CPUs this process may use when not given (:func:`available_cpus`)."""
        return self.workers or available_cpus()


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may use: the least of its CPU affinity (``taskset``, a batch slot's cpuset),
    the cgroup CPU quota (a container's or a SLURM job's ``cpu.max``, rounded up), and
    ``SLURM_CPUS_PER_TASK``; at least 1. ``os.cpu_count()`` is the machine's count: a 2-CPU slot on a
    64-core node would start 64 workers, each holding its step in memory.
    """
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)]
    quota = _cgroup_quota(cgroup)
    if quota is not None:
        counts.append(quota)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        counts.append(int(slurm))
    return max(1, min(counts))


def _cgroup_quota(root: Path) -> int | None:
    """CPUs of the cgroup quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:
        q = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        p = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return max(1, math.ceil(q / p)) if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None
