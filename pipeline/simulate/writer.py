"""Writing simulated events as an ATLAS-dumper-style ROOT file (TTree or RNTuple ``MuonHitDump``).

Why ``mktree`` + ``extend``: uproot 5.7 writes an RNTuple when a dict is assigned to a file key,
and the converter (like the real dumps) expects a TTree. Hit branches are written as one record
``spacePoint`` (uproot names the branches ``spacePoint_<field>`` and adds one shared counter
``nspacePoint``), truth branches as ``truthMuon`` (counter ``ntruthMuon``). Events are generated
and written a batch (``generate.batch_events``, ≤ 2000 events, ~1 M hits) at a time, so memory does not grow with the file size.

``format="rntuple"`` writes the same events as an RNTuple (``mkrntuple`` + ``extend``) whose fields carry
the branch names of the TTree (``spacePoint_time``: one ``std::vector`` per field, ``eventNumber``), so
the same layout reads both.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from .generate import Batch, SimConfig, iter_batches
from .hits import HIT_FIELDS

TREE_NAME = "MuonHitDump"
COMPRESSIONS = {"zlib": (uproot.ZLIB, 1, 9), "lz4": (uproot.LZ4, 1, 12), "zstd": (uproot.ZSTD, 1, 22),
                "lzma": (uproot.LZMA, 1, 9)}
DEFAULT_LEVEL = {"zlib": 6, "lz4": 4, "zstd": 5, "lzma": 6}
FORMATS = ("ttree", "rntuple")
#: The key of the file's record of what made it (a TObjString holding JSON; see :func:`simulation_stamp`).
STAMP_KEY = "muon_pipeline_simulate"


def parse_compression(spec: str):
    """``"zstd"`` or ``"zstd:5"`` → an uproot compression object; ValueError on anything else."""
    name, _, level = spec.strip().lower().partition(":")
    if name not in COMPRESSIONS:
        raise ValueError(f"unknown compression {spec!r}; choose one of {', '.join(COMPRESSIONS)} "
                         "(optionally with a level, e.g. zstd:5)")
    cls, lo, hi = COMPRESSIONS[name]
    if level:
        try:
            lvl = int(level)
        except ValueError:
            raise ValueError(f"compression level must be an integer, got {level!r}") from None
        if not lo <= lvl <= hi:
            raise ValueError(f"{name} level must be in {lo}..{hi}, got {lvl}")
    else:
        lvl = DEFAULT_LEVEL[name]
    return cls(lvl)


def simulation_stamp(n_events: int, seed: int, config: SimConfig | None = None, *, compression: str = "zstd",
                     stream: int = 0, first_event: int = 0, format: str = "ttree") -> str:
    """What decides a simulated file's content, as JSON text: the tool version, the events, seed, stream,
    first event number, format, compression (``zstd`` and ``zstd:5`` alike) and generator settings.
    :func:`write_dump` stores it in the file (key :data:`STAMP_KEY`); equal stamps mean equal events."""
    from .._version import __version__

    comp = parse_compression(compression)
    doc = {"tool_version": __version__, "events": n_events, "seed": seed, "stream": stream,
           "first_event": first_event, "format": format,
           "compression": f"{type(comp).__name__.lower()}:{comp.level}",
           "config": dataclasses.asdict(config or SimConfig())}
    return json.dumps(doc, sort_keys=True)


def read_stamp(path: str | os.PathLike) -> str | None:
    """The stamp :func:`write_dump` stored in ``path``; None for a file without one (another tool's, an
    older simulate's) or one that is not readable as ROOT."""
    try:
        with uproot.open(path) as f:
            return str(f[STAMP_KEY]) if STAMP_KEY in f else None
    except Exception:  # not ROOT, truncated, unreadable: it has no stamp
        return None


@dataclass
class WriteStats:
    """What a write produced (for the command's summary line)."""

    events: int = 0
    hits: int = 0
    muon_hits: int = 0
    muons: int = 0

    def add(self, other: WriteStats) -> None:
        self.events += other.events
        self.hits += other.hits
        self.muon_hits += other.muon_hits
        self.muons += other.muons


def _records(offsets: np.ndarray, columns: dict[str, np.ndarray], prefix: str) -> ak.Array:
    """Jagged array of records whose fields drop ``prefix`` (uproot adds it back as branch names)."""
    names = [k[len(prefix):] for k in columns]
    content = ak.contents.RecordArray([ak.contents.NumpyArray(v) for v in columns.values()], names)
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), content))


def _branches(batch: Batch) -> dict[str, ak.Array | np.ndarray]:
    return {
        "spacePoint": _records(batch.hit_offsets, {k: batch.hits[k] for k in HIT_FIELDS}, "spacePoint_"),
        "truthMuon": _records(batch.truth_offsets, batch.truth, "truthMuon_"),
        "eventNumber": batch.event_number,
    }


def _fields(batch: Batch) -> dict[str, ak.Array | np.ndarray]:
    """One jagged field per branch name (what ``format="rntuple"`` writes)."""
    out: dict[str, ak.Array | np.ndarray] = {}
    for offsets, columns in ((batch.hit_offsets, {k: batch.hits[k] for k in HIT_FIELDS}),
                             (batch.truth_offsets, batch.truth)):
        for name, values in columns.items():
            out[name] = ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets),
                                                             ak.contents.NumpyArray(values)))
    out["eventNumber"] = batch.event_number
    return out


def write_dump(path: str | os.PathLike, n_events: int, seed: int = 0, config: SimConfig | None = None, *,
               compression: str = "zstd", stream: int = 0, first_event: int = 0,
               format: str = "ttree", progress: Callable[[int, int], None] | None = None) -> WriteStats:
    """Simulate ``n_events`` events and write them to ``path`` as TTree (or RNTuple) ``MuonHitDump``.

    ``stream`` selects an independent random stream of ``seed`` (the command uses the file index),
    ``first_event`` the first ``eventNumber``. Raises ValueError for bad settings and OSError when
    the file cannot be written. ``progress(events, hits)`` is called after each written batch
    (about 1 M hits).
    """
    if n_events <= 0:
        raise ValueError(f"n_events must be positive, got {n_events}")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    cfg = config or SimConfig()
    comp = parse_compression(compression)
    stats = WriteStats()
    path = Path(path)
    # written beside the target and renamed when complete: a stopped or failed run leaves no readable
    # partial dump under the final name (a half file converts without complaint: fewer events)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    stamp = simulation_stamp(n_events, seed, cfg, compression=compression, stream=stream, first_event=first_event,
                             format=format)
    try:
        _write(tmp, n_events, seed, cfg, comp, format, stats, stream, first_event, progress, stamp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return stats


def _write(path: Path, n_events: int, seed: int, cfg: SimConfig, comp, format: str, stats: WriteStats, stream,
           first_event: int, progress, stamp: str) -> None:
    with uproot.recreate(path, compression=comp) as f:
        f[STAMP_KEY] = stamp
        tree = None
        for batch in iter_batches(n_events, seed, cfg, stream=stream, first_event=first_event):
            if format == "rntuple":
                data = _fields(batch)
                if tree is None:  # created with the first batch, which it holds
                    tree = f.mkrntuple(TREE_NAME, data, description="simulated muon-spectrometer hits "
                                                                    "(muon-pipeline simulate)")
                else:
                    tree.extend(data)
            else:
                data = _branches(batch)
                if tree is None:
                    tree = f.mktree(TREE_NAME, {"spacePoint": data["spacePoint"].type.content,
                                                "truthMuon": data["truthMuon"].type.content,
                                                "eventNumber": np.int64},
                                    title="simulated muon-spectrometer hits (muon-pipeline simulate)")
                tree.extend(data)
            n_hits = int(batch.hit_offsets[-1])
            stats.add(WriteStats(batch.n_events, n_hits, int((batch.hits["spacePoint_truthLink"] >= 0).sum()),
                                 int(batch.truth_offsets[-1])))
            if progress is not None:
                progress(batch.n_events, n_hits)
