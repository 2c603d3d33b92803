"""The in-memory unit of work: a block of events as flat numpy columns plus list offsets.

This is the columnar layout Arrow and awkward use (``ListOffsetArray``): every hit field is one
flat array over all hits of the block, ``hit_offsets[i]:hit_offsets[i+1]`` are the hits of
event ``i``. Transforms (features, selection) work on these flat arrays with numpy, so no
Python code ever runs per event or per hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EventChunk:
    """Events ``[entry_start, entry_start + n)`` of one input file, possibly filtered."""

    source_file: str
    event: dict[str, np.ndarray]          # per event (eventNumber, source_entry)
    hit_offsets: np.ndarray               # int64, len n_events + 1, starts at 0
    hits: dict[str, np.ndarray]           # flat per hit
    muon_offsets: np.ndarray              # int64, len n_events + 1, starts at 0
    muons: dict[str, np.ndarray]          # flat per truth muon
    rounded: dict[str, int] = field(default_factory=dict)  # values stored correctly rounded, per field (as read)

    @property
    def n_events(self) -> int:
        return len(self.hit_offsets) - 1

    @property
    def n_hits(self) -> int:
        return int(self.hit_offsets[-1])

    @property
    def n_muons(self) -> int:
        return int(self.muon_offsets[-1])

    def hit_event_index(self) -> np.ndarray:
        """Event index of every hit (the ``np.repeat`` trick that replaces a per-event loop)."""
        return np.repeat(np.arange(self.n_events), np.diff(self.hit_offsets))

    def muon_event_index(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_events), np.diff(self.muon_offsets))

    def filter(self, keep_event: np.ndarray | None = None, keep_hit: np.ndarray | None = None,
               keep_muon: np.ndarray | None = None) -> EventChunk:
        """Keep a subset of events, hits and muons; offsets are rebuilt from the kept counts."""
        n = self.n_events
        keep_event = np.ones(n, bool) if keep_event is None else keep_event
        keep_hit = np.ones(self.n_hits, bool) if keep_hit is None else keep_hit
        keep_muon = np.ones(self.n_muons, bool) if keep_muon is None else keep_muon
        # A hit or muon survives only if its event does.
        keep_hit = keep_hit & np.repeat(keep_event, np.diff(self.hit_offsets))
        keep_muon = keep_muon & np.repeat(keep_event, np.diff(self.muon_offsets))
        take_hit, take_muon = _selector(keep_hit), _selector(keep_muon)
        return EventChunk(
            source_file=self.source_file,
            event={k: v[keep_event] for k, v in self.event.items()},
            hit_offsets=_offsets_after(self.hit_offsets, keep_hit)[np.r_[True, keep_event]],
            hits={k: take_hit(v) for k, v in self.hits.items()},
            muon_offsets=_offsets_after(self.muon_offsets, keep_muon)[np.r_[True, keep_event]],
            muons={k: take_muon(v) for k, v in self.muons.items()},
        )


def _selector(keep: np.ndarray):
    """A function applying the mask ``keep`` to any column of the same length.

    Selections usually drop whole events, so the kept elements form few long runs: copying runs
    is several times faster than boolean indexing, which is the fallback for scattered masks.
    """
    if keep.all():
        return lambda v: v
    edges = np.flatnonzero(np.diff(np.concatenate([[False], keep, [False]]).astype(np.int8)))
    runs = edges.reshape(-1, 2)
    if len(runs) * 64 > len(keep):
        return lambda v: v[keep]
    return lambda v: np.concatenate([v[a:b] for a, b in runs]) if len(runs) else v[:0]


def _offsets_after(offsets: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Offsets after dropping elements: the kept count up to each old boundary."""
    kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    return kept_before[offsets]
