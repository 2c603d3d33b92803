"""The plan of a run (``_work/plan.json``) and the records of its finished units (``_work/units/``).

A producer (``convert``; later ones the same way) writes the plan before any unit runs: the schema,
the tool version, the configuration and its hash, the inputs (with their identities) and the inputs
skipped, and the ordered work units. A resumed run reads it back as a :class:`Plan`, compares it
(:meth:`Plan.same_run`, :meth:`Plan.input_paths`), reuses its units and skips those whose record says
done and whose shard exists (:meth:`Plan.finished`); ``finalize`` builds the manifest from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._version import __version__
from .errors import DatasetError
from .format import FORMAT, FORMAT_VERSION, LEGACY_MANIFEST, PLAN, RECORDS, Unit, dataset_id
from .storage import OutputDir


@dataclass(frozen=True)
class Plan:
    """``_work/plan.json`` as a value. ``inputs``/``skipped_inputs`` are the producer's input records
    (dicts with at least ``path``); ``units`` are in plan order (their ``index``)."""

    schema: dict
    config: dict
    config_hash: str
    inputs: list[dict]
    skipped_inputs: list[dict]
    units: list[Unit]
    tool_version: str = __version__
    extra: dict = field(default_factory=dict)  # keys of a plan this version does not know, kept as they are

    _KEYS = ("schema", "tool_version", "config", "config_hash", "inputs", "skipped_inputs", "units")

    @classmethod
    def from_dict(cls, doc: dict) -> Plan:
        return cls(schema=doc.get("schema", {}), config=doc.get("config", {}), config_hash=doc.get("config_hash", ""),
                   inputs=list(doc.get("inputs", [])), skipped_inputs=list(doc.get("skipped_inputs", [])),
                   units=[_unit(u) for u in doc.get("units", [])], tool_version=doc.get("tool_version", ""),
                   extra={k: v for k, v in doc.items() if k not in cls._KEYS})

    def to_dict(self) -> dict:
        """The JSON document (key order as written since format 1: plans compare equal across versions)."""
        return {"schema": self.schema, "tool_version": self.tool_version, "config": self.config,
                "config_hash": self.config_hash, "inputs": self.inputs, "skipped_inputs": self.skipped_inputs,
                "units": [u.to_dict() for u in self.units], **self.extra}

    def manifest_head(self) -> dict:
        """The first keys of the manifest finalize writes from this plan, whatever the producer: the
        format, the schema, the tool version, the dataset id and the configuration."""
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "schema": self.schema,
                "tool_version": self.tool_version, "dataset_id": dataset_id(self.config_hash, self.tool_version),
                "config": self.config}

    @classmethod
    def load(cls, out: OutputDir) -> Plan | None:
        """The plan of ``out``, or None when there is none yet."""
        return cls.from_dict(out.read_json(PLAN)) if out.exists(PLAN) else None

    @classmethod
    def require(cls, out: OutputDir) -> Plan:
        """The plan of ``out``; DatasetError when there is none (not an output of this tool)."""
        plan = cls.load(out)
        if plan is None:
            raise DatasetError(f"{out.url} has no {PLAN}: not a muon-pipeline output directory (run convert first)")
        return plan

    def write(self, out: OutputDir) -> None:
        """Write the plan. A new plan makes any manifest stale: the producer removes ``MANIFEST`` before
        calling this; a manifest under its name before the rename (``manifest.json``) goes here."""
        out.remove(LEGACY_MANIFEST)
        out.write_json(PLAN, self.to_dict())

    def same_run(self, config_hash: str) -> bool:
        """Made with the same configuration and tool version: its finished units can be reused."""
        return self.config_hash == config_hash and self.tool_version == __version__

    def input_paths(self) -> set[str]:
        """Every input path the plan names, read or skipped."""
        return {i["path"] for i in self.inputs} | {i["path"] for i in self.skipped_inputs}

    def finished(self, out: OutputDir) -> set[str]:
        """Keys of the units recorded as done whose shard exists."""
        return {k for k, r in load_records(out, self.units).items()
                if r["status"] == "done" and out.exists(r["shard"]["path"])}


def _unit(doc: dict) -> Unit:
    """A planned unit; keys this version does not know are left out."""
    return Unit(**{k: v for k, v in doc.items() if k in Unit.__dataclass_fields__})


def load_records(out: OutputDir, units: list[Unit]) -> dict[str, dict]:
    """Unit records present in the output directory, by unit key (unreadable or foreign ones ignored)."""
    present = set(out.listdir(RECORDS))
    records = {}
    for u in units:
        name = u.record.rsplit("/", 1)[1]
        if name in present:
            try:
                rec = out.read_json(u.record)
            except ValueError:
                continue
            if rec.get("unit", {}).get("key") == u.key:
                records[u.key] = rec
    return records


def finished_records(out: OutputDir, units: list[Unit], command: str,
                     statuses: tuple[str, ...] = ("done", "skipped")) -> dict[str, dict]:
    """The records of ``units`` (by key), all finished (a status in ``statuses``); else DatasetError
    listing the first 20 units that are not, and how to finish them (``command``: "convert", "filter")."""
    records = load_records(out, units)
    missing = [u for u in units if u.key not in records or records[u.key]["status"] not in statuses]
    if missing:
        lines = [f"  unit {u.index}: {u.input} entries {u.entry_start}-{u.entry_stop}" for u in missing[:20]]
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise DatasetError(f"{len(missing)} of {len(units)} units are not finished:\n" + "\n".join(lines) + more
                           + f"\nRe-run the same {command} command (or the missing job-array tasks) to complete them.")
    return records


def shard_totals(shards: list[dict]) -> dict[str, int]:
    """The manifest's ``totals``: events, hits, muons and bytes summed over its shard entries."""
    return {k: sum(s[key] for s in shards) for k, key in (("events", "rows"), ("hits", "hits"), ("muons", "muons"),
                                                          ("bytes", "bytes"))}


def timing_block(records: dict[str, dict], units: list[Unit]) -> dict:
    """The manifest's ``timing``: when and by which version it was finalized, and the units' seconds."""
    import datetime as _dt

    return {"finalized_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "finalized_by": __version__,
            "unit_seconds": sum(records[u.key].get("timing", {}).get("seconds", 0.0) for u in units)}
