"""Typed configuration of a conversion, normalised once at the boundary.

``ConvertConfig`` holds exactly the settings that determine the output bytes; its hash is part
of every work unit's resume key. Settings that only change *how* the work runs (workers,
scheduler, step size, progress) are not in it, so changing them never invalidates finished work.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from .errors import ConfigError
from .layout import SourceLayout
from .schema import load_schema
from .selection import SelectionConfig
from .transform import TransformConfig

#: Default byte caps of a row group and of a work unit (one shard). Filtered dumps (~60 hits per event)
#: reach the entry caps first (2,000 events ≈ 10 MB), so these only act on large events such as raw
#: pile-up dumps (~6,000 hits per event ≈ 0.5 MB each).
DEFAULT_ROW_GROUP_BYTES = 64 * 10**6
DEFAULT_SHARD_BYTES = 256 * 10**6

CODECS = ("zstd", "lz4", "snappy", "gzip", "brotli", "none")
#: Level used when a codec is named without one. zstd: 3, chosen by the rule in the README
#: (bench/bench_codecs.py: the fastest setting whose files are within 10 % of the smallest; pyarrow's
#: own default, 1, writes 17 % larger files).
DEFAULT_LEVELS = {"zstd": 3}
#: The levels Arrow's Parquet writer accepts per codec (the others take none): checked up front, so a
#: bad level is a usage error before any work, not an ArrowInvalid in the middle of a run.
_LEVEL_RANGES = {"zstd": (1, 22), "gzip": (1, 9), "brotli": (0, 11)}


@dataclass(frozen=True)
class Compression:
    codec: str = "zstd"
    level: int | None = None

    @classmethod
    def parse(cls, text: str) -> Compression:
        """``zstd``, ``zstd:5``, ``lz4``, ``none`` ... (the same spelling as ``simulate``)."""
        m = re.fullmatch(r"([a-z0-9]+)(?::(-?\d+))?", text.strip().lower())
        if not m or m.group(1) not in CODECS:
            raise ConfigError(f"unknown compression {text!r}; use one of {', '.join(CODECS)}, optionally CODEC:LEVEL")
        level = int(m.group(2)) if m.group(2) else None
        if level is not None:
            lo, hi = _LEVEL_RANGES.get(m.group(1), (None, None))
            if lo is None:
                raise ConfigError(f"compression {text!r}: {m.group(1)} takes no level")
            if not lo <= level <= hi:
                raise ConfigError(f"compression {text!r}: {m.group(1)} levels are {lo}..{hi}")
        return cls(m.group(1), level)

    def __str__(self) -> str:
        return self.codec if self.level is None else f"{self.codec}:{self.level}"

    def writer_kwargs(self) -> dict:
        kw = {"compression": self.codec}
        level = self.level if self.level is not None else DEFAULT_LEVELS.get(self.codec)
        if level is not None:
            kw["compression_level"] = level
        return kw


@dataclass(frozen=True)
class ConvertConfig:
    """What decides the bytes of a conversion's output; its :meth:`hash` is part of every unit key.

    * ``schema_version``: the schema written (``schemas/vN.yaml``);
    * ``layout``: where the raw fields are in the dumps (:class:`~pipeline.layout.SourceLayout`), checked
      against that schema when the configuration is made;
    * ``transform``: the physics selection and the policy for invalid values
      (:class:`~pipeline.transform.TransformConfig` of a :class:`~pipeline.selection.SelectionConfig`);
    * ``compression``: the Parquet codec and level;
    * ``row_group_size`` / ``row_group_bytes``: at most this many input entries / estimated bytes per
      row group; ``shard_events`` / ``shard_bytes``: per work unit (one shard). A byte cap of None: no cap.

    Raises ConfigError (SchemaError for an unknown schema version) when a value is unusable.
    """

    schema_version: int
    layout: SourceLayout = field(default_factory=SourceLayout)
    transform: TransformConfig = field(default_factory=lambda: TransformConfig(SelectionConfig()))
    compression: Compression = field(default_factory=Compression)
    row_group_size: int = 2000
    shard_events: int = 10000
    #: Byte caps (estimated in-memory bytes of the raw columns, see pipeline.sizing); None = no cap,
    #: which is what configurations written before these keys existed meant.
    row_group_bytes: int | None = DEFAULT_ROW_GROUP_BYTES
    shard_bytes: int | None = DEFAULT_SHARD_BYTES

    def __post_init__(self) -> None:
        for name, value, kind in (("layout", self.layout, SourceLayout), ("transform", self.transform, TransformConfig),
                                  ("compression", self.compression, Compression)):
            if not isinstance(value, kind):
                raise ConfigError(f"ConvertConfig.{name} must be a {kind.__name__}, got {type(value).__name__}")
        # a layout made by hand (the API) is checked like one read from a file: names, constants, counts
        object.__setattr__(self, "layout", self.layout.check(load_schema(self.schema_version)))
        if self.row_group_size < 1:
            raise ConfigError("--row-group-size must be at least 1 event")
        if self.shard_events < 1:
            raise ConfigError("--shard-events must be at least 1 entry")
        for name, value in (("--row-group-bytes", self.row_group_bytes), ("--shard-bytes", self.shard_bytes)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive size")

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "layout": self.layout.to_dict(),
            "selection": self.transform.selection.to_dict(),
            "on_invalid": self.transform.on_invalid,
            "compression": str(self.compression),
            "row_group_size": self.row_group_size,
            "shard_events": self.shard_events,
            "row_group_bytes": self.row_group_bytes,
            "shard_bytes": self.shard_bytes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ConvertConfig:
        return cls(
            schema_version=int(d["schema_version"]),
            layout=SourceLayout.from_dict(d["layout"]),
            transform=TransformConfig(SelectionConfig.from_dict(d["selection"]), on_invalid=d["on_invalid"]),
            compression=Compression.parse(d["compression"]),
            row_group_size=int(d["row_group_size"]),
            shard_events=int(d["shard_events"]),
            row_group_bytes=_opt_int(d.get("row_group_bytes")),
            shard_bytes=_opt_int(d.get("shard_bytes")),
        )

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def _opt_int(value) -> int | None:
    return None if value is None else int(value)


def config_diff(old: dict, new: dict) -> list[str]:
    """Human-readable list of keys whose values differ (for the refusal message)."""
    out = []
    flat_old, flat_new = _flatten(old), _flatten(new)
    for k in sorted(set(flat_old) | set(flat_new)):
        if flat_old.get(k) != flat_new.get(k):
            out.append(f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}")
    return out


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
