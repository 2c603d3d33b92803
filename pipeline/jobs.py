"""What every executor runs per work unit (:class:`UnitJob`) and how its progress adds up
(:class:`UnitProgress`), whoever runs it: this process, a local pool, a Dask worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import remote
from .format import Unit
from .settings import RunSettings

#: ``on_record(record)``: called in the caller's process as each unit finishes.
OnRecord = Callable[[dict], None]
#: ``progress(entries, hits)``: called as entries of the input are done (any thread of the caller's process).
OnProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class UnitJob:
    """What every executor runs for each unit: ``run(unit, config, out_url, settings, progress=…)``.

    ``run`` is a module-level function (pickled by reference to pool and Dask workers), ``config`` the
    producer's typed configuration (what decides the bytes) and ``settings`` how to run. Calling the job
    runs one unit under the run's remote timeout (:func:`pipeline.remote.timeout_set`), wherever it runs.
    """

    run: Callable[..., dict]
    config: Any
    out_url: str
    settings: RunSettings

    def __call__(self, unit: Unit, progress: OnProgress | None = None) -> dict:
        with remote.timeout_set(self.settings.remote_timeout):
            return self.run(unit, self.config, self.out_url, self.settings, progress=progress)


class UnitProgress:
    """Adds up what was reported per unit, and tops a unit up to its full size when its record arrives.

    A chunk report may be lost or late (a skipped unit stops mid-way; a Dask event may arrive after its
    unit's result), yet the entries reported in total must equal the entries planned, so the bar ends
    at 100 %. Reports for units that are not ours (another job on a shared Dask cluster) are ignored.
    """

    def __init__(self, units: list[Unit], progress: OnProgress | None) -> None:
        self.size = {u.key: u.entry_stop - u.entry_start for u in units}
        self.done = dict.fromkeys(self.size, 0)
        self.progress = progress

    def chunk(self, key: str, entries: int, hits: int) -> None:
        if key not in self.size:
            return
        entries = min(entries, self.size[key] - self.done[key])  # never past a finished unit
        self.done[key] += entries
        if self.progress is not None and entries > 0:
            self.progress(entries, hits)

    def finished(self, record: dict) -> None:
        key = record["unit"]["key"]
        rest = self.size[key] - self.done[key]
        self.done[key] = self.size[key]
        if self.progress is not None and rest > 0:
            hits = record.get("shard", {}).get("hits", 0) if rest == self.size[key] else 0
            self.progress(rest, hits)
