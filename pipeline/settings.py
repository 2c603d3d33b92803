"""How a run is carried out, never what it produces: the typed run settings every executor receives.

:class:`RunSettings` travels with the work to every executor, in this process, to local pool workers
and to Dask workers of any cluster (an embedded one, a running ``--scheduler tcp://…``, SLURM jobs), so
a worker never depends on its own environment for them. None of them enters a unit's key: changing
them never invalidates finished work (what decides the bytes is the producer's configuration, e.g.
:class:`~pipeline.config.ConvertConfig`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError
from .remote import DEFAULT_REMOTE_TIMEOUT
from .sizes import parse_step_size

#: Scheduler spellings besides an address (``tcp://HOST:PORT``, ``tls://…``).
SCHEDULERS = ("local", "slurm")


@dataclass(frozen=True)
class RunSettings:
    """Settings of one run, checked and normalised when made (ConfigError names the option).

    * ``workers``: local processes, Dask workers of ``--scheduler local`` or SLURM jobs of ``slurm``
      (None: the CPUs of this machine, :attr:`worker_count`);
    * ``scheduler``: None (local processes), ``local``, ``slurm`` or a Dask scheduler address;
    * ``step_size``: entries read at once, an event count or a size (normalised to ``'N B'``);
    * ``remote_timeout``: seconds a remote server may stay silent (:mod:`pipeline.remote`);
    * ``skip_bad``: record unreadable inputs and units as skipped instead of failing;
    * ``quiet``: no progress output (and no chunk reports travel at all);
    * ``dashboard``: with ``scheduler='local'``, where Dask's dashboard listens (off by default).
    """

    workers: int | None = None
    scheduler: str | None = None
    step_size: int | str = "100 MB"
    remote_timeout: float = DEFAULT_REMOTE_TIMEOUT
    skip_bad: bool = False
    quiet: bool = False
    dashboard: str | None = None

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

    @property
    def worker_count(self) -> int:
        """``workers``, or the CPUs of this machine when not given."""
        return self.workers or os.cpu_count() or 1
