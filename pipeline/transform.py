"""One chunk through the whole transform: checks, derived features, selection, Arrow table.

``process_chunk`` is the pure function every executor runs (and ``migrate`` reuses the feature
step), so the dataset depends only on the inputs and the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .chunk import EventChunk
from .errors import ConfigError, InputError
from .features import DERIVED, hit_features, truth_qpt
from .rules import first_violations
from .schema import Schema
from .selection import CutFlow, SelectionConfig, apply_selection
from .stats import RunningStats, StatsTable

ON_INVALID = ("error", "drop-hit", "drop-event")
LOW_EDGE = ("spacePoint_globEdgeLowX", "spacePoint_globEdgeLowY", "spacePoint_globEdgeLowZ")


@dataclass(frozen=True)
class TransformConfig:
    """The per-chunk transform's settings: the physics ``selection`` and what to do with invalid values
    (``on_invalid``: ``error`` refuses the input naming file/entry/field, ``drop-hit``, ``drop-event``)."""

    selection: SelectionConfig
    on_invalid: str = "error"

    def __post_init__(self) -> None:
        if self.on_invalid not in ON_INVALID:
            raise ConfigError(f"--on-invalid must be one of {ON_INVALID}, got {self.on_invalid!r}")


def add_hit_features(chunk: EventChunk, schema: Schema) -> None:
    """Add the schema's derived hit features (those ``features`` knows) to ``chunk.hits``."""
    names = [n for n in schema.names("hit") if n in DERIVED]
    chunk.hits.update(hit_features(*(chunk.hits[c] for c in LOW_EDGE), names))


def _handle_invalid(chunk: EventChunk, schema: Schema, policy: str, flow: CutFlow) -> EventChunk:
    """The schema's value rules (``pipeline.rules``, the same ``validate`` applies) plus truth links in
    range and pT > 0, under the ``--on-invalid`` policy."""
    hit_bad, hit_fields, hit_why = first_violations(chunk.hits, schema.level("hit"))
    # A truth link must point at one of the event's muons (or be -1 for background).
    link = chunk.hits["spacePoint_truthLink"]
    n_mu = np.diff(chunk.muon_offsets)[chunk.hit_event_index()]
    link_bad = (link < -1) | (link >= n_mu)
    mu_bad, mu_fields, mu_why = first_violations(chunk.muons, schema.level("muon"))
    pt_bad = chunk.muons["truthMuon_pt"] <= 0
    if not hit_bad.any() and not link_bad.any() and not mu_bad.any() and not pt_bad.any():
        return chunk
    if policy == "error":
        hint = " (use --on-invalid drop-hit|drop-event to drop and count such data)"
        candidates = []  # (entry, field, reason) of the first violation of each kind
        if hit_bad.any():
            i = int(np.flatnonzero(hit_bad)[0])
            why = hit_why[0]
            if why == "non-finite value":  # name it: NaN and ±inf are different defects upstream
                why = f"non-finite value {chunk.hits[hit_fields[0]][i].item()!r}"
            candidates.append((chunk.hit_event_index()[i], hit_fields[0], why + hint))
        if link_bad.any():
            i = int(np.flatnonzero(link_bad)[0])
            n = int(n_mu[i])
            valid = f"-1..{n - 1}" if n else "only -1 (background)"
            candidates.append((chunk.hit_event_index()[i], "spacePoint_truthLink",
                               f"truth link {int(link[i])} points to no truth muon: the event has {n}, so a "
                               f"link must be {valid}" + hint))
        if mu_bad.any():
            i = int(np.flatnonzero(mu_bad)[0])
            why = mu_why[0]
            if why == "non-finite value":
                why = f"non-finite value {chunk.muons[mu_fields[0]][i].item()!r}"
            candidates.append((chunk.muon_event_index()[i], mu_fields[0], why + " (truth value)"))
        if pt_bad.any():
            i = int(np.flatnonzero(pt_bad)[0])
            candidates.append((chunk.muon_event_index()[i], "truthMuon_pt", "non-positive truth pT"))
        event, name, why = min(candidates, key=lambda c: c[0])
        raise InputError(why, file=chunk.source_file, entry=int(chunk.event["source_entry"][event]), field=name)
    hit_bad = hit_bad | link_bad
    mu_bad = mu_bad | pt_bad
    # Events with a bad muon are always dropped: a muon cannot be half-kept.
    bad_event = np.zeros(chunk.n_events, bool)
    bad_event[chunk.muon_event_index()[mu_bad]] = True
    if policy == "drop-event":
        bad_event[chunk.hit_event_index()[hit_bad]] = True
        keep_hit = None
    else:
        keep_hit = ~hit_bad
        flow.hits_invalid += int((hit_bad & ~np.repeat(bad_event, np.diff(chunk.hit_offsets))).sum())
    flow.events_invalid += int(bad_event.sum())
    return chunk.filter(keep_event=~bad_event, keep_hit=keep_hit)


def process_chunk(chunk: EventChunk, schema: Schema, cfg: TransformConfig) -> tuple[EventChunk, CutFlow]:
    """Derived features, invalid-data policy and the selection for one chunk of raw events."""
    n_in, mu_in, hits_in, rounded = chunk.n_events, chunk.n_muons, chunk.n_hits, dict(chunk.rounded)
    add_hit_features(chunk, schema)
    pre = CutFlow()
    chunk = _handle_invalid(chunk, schema, cfg.on_invalid, pre)
    out, flow = apply_selection(chunk, cfg.selection)
    flow.events_in, flow.muons_in, flow.hits_in = n_in, mu_in, hits_in
    flow.events_invalid, flow.hits_invalid = pre.events_invalid, pre.hits_invalid
    flow.values_rounded = rounded
    out.muons["truthMuon_qpt"] = truth_qpt(out.muons["truthMuon_q"], out.muons["truthMuon_pt"])
    return out, flow


def _arrow(values: np.ndarray, typ):
    """``pa.array(values, type=typ)``; a numeric numpy array of exactly that type is wrapped from its
    buffer instead (zero-copy): ``pa.array`` imports pandas where it is installed, 0.3 s in every
    worker process before its first chunk (bench/bench_scaling.py). Other types, or another dtype
    (which ``pa.array`` casts with overflow checks), go through ``pa.array``."""
    import pyarrow as pa

    if (pa.types.is_integer(typ) or pa.types.is_floating(typ)) and isinstance(values, np.ndarray) \
            and values.ndim == 1 and values.dtype == np.dtype(typ.to_pandas_dtype()):
        values = np.ascontiguousarray(values)
        return pa.Array.from_buffers(typ, len(values), [None, pa.py_buffer(values)])
    return pa.array(values, type=typ)


def _one_string(text: str):
    """A one-element Arrow string array, from its buffers (see :func:`_arrow`)."""
    import pyarrow as pa

    data = text.encode()
    return pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int32)),
                                                   pa.py_buffer(data)])


def to_arrow(chunk: EventChunk, schema: Schema):
    """The chunk as an Arrow table with exactly ``schema.arrow_schema()`` (no copies of content)."""
    import pyarrow as pa

    arrow_schema = schema.arrow_schema()
    cols = []
    for f in schema.level("event"):
        if f.name == "source_file":
            cols.append(pa.DictionaryArray.from_arrays(_arrow(np.zeros(chunk.n_events, np.int32), pa.int32()),
                                                       _one_string(chunk.source_file)).cast(pa.string())
                        if chunk.n_events else pa.array([], pa.string()))
        else:
            cols.append(_arrow(chunk.event[f.name], f.arrow_type()))
    for level, offsets, values in (("hit", chunk.hit_offsets, chunk.hits), ("muon", chunk.muon_offsets, chunk.muons)):
        typ = arrow_schema.field(schema.columns[level]).type
        children = [_arrow(values[f.name], f.arrow_type()) for f in schema.level(level)]
        struct = pa.StructArray.from_arrays(children, fields=list(typ.value_type))
        cols.append(pa.ListArray.from_arrays(_arrow(offsets.astype(np.int32), pa.int32()), struct, type=typ))
    return pa.Table.from_arrays(cols, schema=arrow_schema)


def chunk_stats(chunk: EventChunk, schema: Schema, lo: int = 0, hi: int | None = None) -> StatsTable:
    """Statistics of the numeric hit and muon fields of events [lo, hi) of a chunk (one row group).

    Taken per *row group*, whose boundaries depend only on the input entries, and merged in
    order, so the dataset statistics are bit-identical whatever step size, worker count or resume
    history produced the shards (and ``migrate`` reproduces them from the shards).
    """
    hi = chunk.n_events if hi is None else hi
    out: StatsTable = {}
    for level, offsets, values in (("hit", chunk.hit_offsets, chunk.hits), ("muon", chunk.muon_offsets, chunk.muons)):
        a, b = int(offsets[lo]), int(offsets[hi])
        out[schema.columns[level]] = {f.name: RunningStats.of(values[f.name][a:b]) for f in schema.level(level)}
    return out
