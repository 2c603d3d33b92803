"""``convert``: ROOT dumps to a Parquet dataset, through the write contract of :mod:`pipeline.produce`.

This module only says what a conversion is (:class:`ConvertProducer`: its configuration, how inputs
are cut into units, the unit function, the manifest); reading, transforming and writing live in
``source``, ``transform`` and ``units``, planning and resuming in ``produce`` and ``plan``, the
executors in ``executors``.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import remote
from .config import ConvertConfig
from .executors import UnitJob
from .format import Unit
from .inputs import expand_inputs
from .manifest import finalize_status
from .produce import RunResult, produce
from .schema import load_schema
from .settings import RunSettings
from .storage import OutputDir
from .units import plan_units, run_unit

#: The result of :func:`convert` (the shared :class:`~pipeline.produce.RunResult`).
ConvertResult = RunResult


@dataclass(frozen=True)
class ConvertProducer:
    """A conversion of ROOT dumps with ``cfg`` (see :class:`~pipeline.produce.Producer`)."""

    cfg: ConvertConfig
    command: str = "convert"

    def config_dict(self) -> dict:
        return self.cfg.to_dict()

    def config_hash(self) -> str:
        return self.cfg.hash()

    def schema_doc(self) -> dict:
        schema = load_schema(self.cfg.schema_version)
        return {"name": schema.name, "version": schema.version}

    def plan_units(self, paths: list[str], settings: RunSettings) -> tuple[list[dict], list[dict], list[Unit]]:
        good, skipped, units = plan_units(paths, self.cfg, settings.skip_bad)
        return [i.to_dict() for i in good], skipped, units

    def job(self, out_url: str, settings: RunSettings) -> UnitJob:
        return UnitJob(run_unit, self.cfg, out_url, settings)

    def finalize(self, out: OutputDir) -> tuple[dict, bool]:
        return finalize_status(out)


def convert(inputs: list[str], output: str, cfg: ConvertConfig, *, settings: RunSettings | None = None,
            task: tuple[int, int] | None = None, reconfigure: bool = False, **options) -> RunResult:
    """Convert ROOT dumps to a Parquet dataset in ``output``; resumable and idempotent.

    ``inputs``: files, folders (their ``*.root``), globs, ``root://`` or other URLs
    (:func:`~pipeline.inputs.expand_inputs`). ``cfg``: what decides the output bytes. How to run:
    ``settings``, or its fields as keywords (``workers=2, step_size='50 MB', scheduler='local', …``; see
    :class:`~pipeline.settings.RunSettings`). ``task=(index, count)``: this job-array task's share only
    (run :func:`pipeline.manifest.finalize` afterwards). ``reconfigure``: accept a changed configuration
    or input set (units affected are redone, shards no longer planned deleted).

    Returns a :class:`~pipeline.produce.RunResult`. Raises ConfigError (usage, a refused output or
    plan), InputError (a bad input, naming file/entry/field), DatasetError (units missing at finalize).
    """
    if isinstance(inputs, (str, bytes)) or hasattr(inputs, "__fspath__"):
        inputs = [inputs]  # one input given as a path, not a list of them
    inputs = [str(i) for i in inputs]
    if settings is None:
        settings = RunSettings(**options)
    elif options:
        raise TypeError(f"give either settings or its fields as keywords, not both ({sorted(options)})")
    with remote.timeout_set(settings.remote_timeout):
        paths = expand_inputs(inputs)
        return produce(ConvertProducer(cfg), paths, output, settings, task=task, reconfigure=reconfigure)
