"""The filter of a derived dataset, on one chunk of events, as columnwise numpy; its counters; and the
score threshold of a working point.

Order (upstream's tracking-dataset preparation, without its per-event loop):

1. keep the hits whose score passes: ``float64(score) >= threshold``;
2. re-apply the parent's selection (:func:`pipeline.selection.apply_selection`): a muon left with fewer than
   ``min_hits`` hits is removed (its hits become background, truthLink −1), links are renumbered 0..n−1 and
   events left without a muon are dropped (unless the parent kept empty events);
3. the caps: an event with more than ``max_muons_per_event`` muons, then one with more than
   ``max_hits_per_event`` hits, is dropped whole (counted), never truncated.

Hit features (r, s, θ, φ, η) are functions of the hit's own coordinates and q/pT of the muon's own truth,
so every stored value of a kept hit or muon is the parent's, unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from .chunk import EventChunk
from .errors import ConfigError, DatasetError
from .selection import SelectionConfig, apply_selection


@dataclass
class FilterFlow:
    """Counters of the filter; they add up across chunks and units. They reconcile (:meth:`problems`):

    * events in = out + no muon left + capped (muons) + capped (hits);
    * muons in = out + fail pT + fail |η| + fail hits + in capped events;
    * hits in = out + below threshold + in events left without a muon + in capped events.
    """

    events_in: int = 0
    muons_in: int = 0
    hits_in: int = 0
    hits_on_muons_in: int = 0
    hits_below_threshold: int = 0
    hits_on_muons_passing: int = 0  # muon hits (parent's links) whose score passes: the muon-hit efficiency
    muons_fail_pt: int = 0
    muons_fail_eta: int = 0
    muons_fail_hits: int = 0
    events_no_muon: int = 0
    hits_in_events_no_muon: int = 0
    events_capped_muons: int = 0
    events_capped_hits: int = 0
    muons_capped: int = 0
    hits_capped: int = 0
    events_out: int = 0
    muons_out: int = 0
    hits_out: int = 0
    hits_on_muons_out: int = 0

    def add(self, other: FilterFlow) -> FilterFlow:
        return FilterFlow(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def to_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> FilterFlow:
        return cls(**{f.name: int(d.get(f.name, 0)) for f in fields(cls)})

    def problems(self) -> list[str]:
        """The identities that do not hold, as text (empty: they reconcile)."""
        out = []
        capped = self.events_capped_muons + self.events_capped_hits
        if self.events_in != self.events_out + self.events_no_muon + capped:
            out.append(f"events in {self.events_in} != out {self.events_out} + no muon {self.events_no_muon} + "
                       f"capped {capped}")
        fail = self.muons_fail_pt + self.muons_fail_eta + self.muons_fail_hits
        if self.muons_in != self.muons_out + fail + self.muons_capped:
            out.append(f"muons in {self.muons_in} != out {self.muons_out} + failing the selection {fail} + in capped "
                       f"events {self.muons_capped}")
        dropped = self.hits_in_events_no_muon + self.hits_capped
        if self.hits_in != self.hits_out + self.hits_below_threshold + dropped:
            out.append(f"hits in {self.hits_in} != out {self.hits_out} + below threshold {self.hits_below_threshold} "
                       f"+ in dropped events {dropped}")
        return out

    def convert_keys(self) -> dict[str, int]:
        """The manifest's ``cutflow`` in the keys every reader knows (as ``convert`` writes them), for this
        step: entries in = the parent's events; events cut = no muon + capped (``events_capped``); muons in
        = failing + out + ``muons_capped``."""
        capped = self.events_capped_muons + self.events_capped_hits
        return {"entries_in": self.events_in, "events_out": self.events_out,
                "events_cut": self.events_no_muon + capped, "entries_skipped": 0,
                "events_no_muon": self.events_no_muon, "events_invalid": 0, "events_capped": capped,
                "muons_in": self.muons_in, "muons_fail_pt": self.muons_fail_pt,
                "muons_fail_eta": self.muons_fail_eta, "muons_fail_hits": self.muons_fail_hits,
                "muons_capped": self.muons_capped, "muons_out": self.muons_out, "hits_in": self.hits_in,
                "hits_out": self.hits_out, "hits_on_muons_out": self.hits_on_muons_out}


@dataclass(frozen=True)
class Caps:
    """Events above these are dropped (None: no cap)."""

    max_muons_per_event: int | None = None
    max_hits_per_event: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("--max-muons-per-event", self.max_muons_per_event),
                            ("--max-hits-per-event", self.max_hits_per_event)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def filter_chunk(chunk: EventChunk, scores: np.ndarray, threshold: float, selection: SelectionConfig,
                 caps: Caps) -> tuple[EventChunk, FilterFlow]:
    """Filter one chunk; ``scores``: float32 [chunk.n_hits], in the chunk's hit order. Returns the kept
    events (links renumbered) and the counters. Pure: the same inputs give the same arrays."""
    link = chunk.hits["spacePoint_truthLink"]
    keep_hit = np.asarray(scores, dtype=np.float64) >= threshold
    flow = FilterFlow(events_in=chunk.n_events, muons_in=chunk.n_muons, hits_in=chunk.n_hits,
                      hits_on_muons_in=int((link >= 0).sum()), hits_below_threshold=int((~keep_hit).sum()),
                      hits_on_muons_passing=int(((link >= 0) & keep_hit).sum()))
    passed = chunk.filter(keep_hit=keep_hit)
    selected, sel = apply_selection(passed, selection)
    flow.muons_fail_pt, flow.muons_fail_eta, flow.muons_fail_hits = sel.muons_fail_pt, sel.muons_fail_eta, \
        sel.muons_fail_hits
    flow.events_no_muon = sel.events_no_muon
    flow.hits_in_events_no_muon = passed.n_hits - selected.n_hits - sel.hits_removed_technology
    if sel.hits_removed_technology:  # the parent's shards hold only its technologies: a defect, not a cut
        raise DatasetError(f"{sel.hits_removed_technology} hit(s) of technologies the parent's selection excludes")
    muons = np.diff(selected.muon_offsets)
    hits = np.diff(selected.hit_offsets)
    over_muons = muons > caps.max_muons_per_event if caps.max_muons_per_event is not None else np.zeros_like(muons, bool)
    over_hits = ~over_muons & (hits > caps.max_hits_per_event if caps.max_hits_per_event is not None
                               else np.zeros_like(hits, bool))
    capped = over_muons | over_hits
    flow.events_capped_muons, flow.events_capped_hits = int(over_muons.sum()), int(over_hits.sum())
    flow.muons_capped, flow.hits_capped = int(muons[capped].sum()), int(hits[capped].sum())
    out = selected.filter(keep_event=~capped) if capped.any() else selected
    flow.events_out, flow.muons_out, flow.hits_out = out.n_events, out.n_muons, out.n_hits
    flow.hits_on_muons_out = int((out.hits["spacePoint_truthLink"] >= 0).sum())
    return out, flow


def working_point_threshold(muon_scores: np.ndarray, working_point: float) -> float:
    """The largest threshold ``t`` such that the fraction of muon hits with ``float64(score) >= t`` is at
    least ``working_point``: the k-th largest muon-hit score, k the smallest integer with k / N ≥ wp.

    ``muon_scores``: the scores of every hit on a muon (truthLink ≥ 0) of the whole dataset, any order.
    ConfigError for a working point outside (0, 1] or a dataset without muon hits."""
    if not (isinstance(working_point, int | float) and math.isfinite(working_point) and 0 < working_point <= 1):
        raise ConfigError(f"--working-point must be in (0, 1], got {working_point!r}")
    n = len(muon_scores)
    if n == 0:
        raise ConfigError("--working-point: the dataset has no hits on muons, so no muon efficiency to aim at; "
                          "give --threshold instead")
    k = max(1, min(n, math.ceil(working_point * n)))
    while k > 1 and (k - 1) / n >= working_point:  # ceil of a rounded product: make k exactly the smallest
        k -= 1
    while k < n and k / n < working_point:
        k += 1
    values = np.asarray(muon_scores, dtype=np.float64)
    return float(np.partition(values, n - k)[n - k])
