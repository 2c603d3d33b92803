"""The physics selection (cut flow) of the reference preparation, as columnwise numpy.

Order, as in the existing per-event script:

1. drop hits of technologies not requested (``--technologies``);
2. count each truth muon's remaining hits;
3. keep muons with pT ≥ min_pt, |η| ≤ max_abs_eta, hits ≥ min_hits (counted in that order
   for the cut flow);
4. hits of removed muons become background (truthLink −1);
5. renumber surviving links 0..n−1 per event, truth arrays keep their relative order;
6. drop events left without a muon (unless ``keep_empty_events``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .chunk import EventChunk
from .errors import ConfigError

TECHNOLOGIES = {"MDT": 0, "RPC": 2, "TGC": 3, "STGC": 4, "MM": 5}


@dataclass(frozen=True)
class SelectionConfig:
    min_pt: float = 5.0
    max_abs_eta: float = 2.7
    min_hits: int = 3
    technologies: tuple[str, ...] = tuple(TECHNOLOGIES)
    keep_empty_events: bool = False

    def __post_init__(self) -> None:
        unknown = [t for t in self.technologies if t not in TECHNOLOGIES]
        if unknown:
            raise ConfigError(f"unknown technolog(y/ies) {unknown}; choose from {', '.join(TECHNOLOGIES)}")
        if not self.technologies:
            raise ConfigError("--technologies must name at least one technology")
        if self.min_hits < 0 or self.min_pt < 0 or self.max_abs_eta < 0:
            raise ConfigError("--min-pt, --max-abs-eta and --min-hits must be non-negative")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["technologies"] = list(self.technologies)
        return d


@dataclass
class CutFlow:
    """Counters of one selection pass; they add up across chunks and units."""

    events_in: int = 0
    muons_in: int = 0
    hits_in: int = 0
    hits_removed_technology: int = 0
    muons_fail_pt: int = 0
    muons_fail_eta: int = 0
    muons_fail_hits: int = 0
    muons_out: int = 0
    events_no_muon: int = 0
    events_invalid: int = 0
    hits_invalid: int = 0
    events_out: int = 0
    hits_out: int = 0
    hits_on_muons_out: int = 0

    def add(self, other: CutFlow) -> CutFlow:
        return CutFlow(**{k: getattr(self, k) + getattr(other, k) for k in self.counters()})

    @staticmethod
    def counters() -> list[str]:
        return list(CutFlow.__dataclass_fields__)

    def to_dict(self) -> dict:
        return {k: int(getattr(self, k)) for k in self.counters()}

    @classmethod
    def from_dict(cls, d: dict) -> CutFlow:
        return cls(**{k: int(d.get(k, 0)) for k in cls.counters()})


def apply_selection(chunk: EventChunk, cfg: SelectionConfig) -> tuple[EventChunk, CutFlow]:
    """Apply the cut flow to a chunk; returns the selected chunk and its counters."""
    flow = CutFlow(events_in=chunk.n_events, muons_in=chunk.n_muons, hits_in=chunk.n_hits)
    link = chunk.hits["spacePoint_truthLink"]
    tech = chunk.hits["spacePoint_technology"]

    # 1. technologies
    allowed = np.array([TECHNOLOGIES[t] for t in cfg.technologies])
    keep_hit = np.isin(tech, allowed)
    flow.hits_removed_technology = int((~keep_hit).sum())

    # 2. hits per muon: a hit's global muon index is its event's first muon + its link
    hit_event = chunk.hit_event_index()
    on_muon = (link >= 0) & keep_hit
    gmuon = chunk.muon_offsets[hit_event] + link
    nhits = np.bincount(gmuon[on_muon], minlength=chunk.n_muons)[: chunk.n_muons]

    # 3. muon cuts, counted sequentially
    pt = chunk.muons["truthMuon_pt"]
    eta = chunk.muons["truthMuon_eta"]
    pass_pt = pt >= cfg.min_pt
    pass_eta = np.abs(eta) <= cfg.max_abs_eta
    pass_hits = nhits >= cfg.min_hits
    flow.muons_fail_pt = int((~pass_pt).sum())
    flow.muons_fail_eta = int((pass_pt & ~pass_eta).sum())
    flow.muons_fail_hits = int((pass_pt & pass_eta & ~pass_hits).sum())
    keep_muon = pass_pt & pass_eta & pass_hits

    # 5. renumber: new index = number of kept muons before it in the same event
    kept_cum = np.concatenate([[0], np.cumsum(keep_muon, dtype=np.int64)])
    new_index = kept_cum[1:] - 1 - kept_cum[chunk.muon_offsets[:-1]][chunk.muon_event_index()]

    # 4. links of removed muons -> -1, others renumbered
    new_link = np.full(link.shape, -1, dtype=link.dtype)
    linked = on_muon.copy()
    linked[on_muon] = keep_muon[gmuon[on_muon]]
    new_link[linked] = new_index[gmuon[linked]].astype(link.dtype)

    # 6. events without muons
    muons_per_event = np.diff(kept_cum[chunk.muon_offsets])
    keep_event = np.ones(chunk.n_events, bool) if cfg.keep_empty_events else muons_per_event > 0

    hits = dict(chunk.hits)
    hits["spacePoint_truthLink"] = new_link
    out = EventChunk(chunk.source_file, chunk.event, chunk.hit_offsets, hits, chunk.muon_offsets,
                     chunk.muons).filter(keep_event, keep_hit, keep_muon)
    flow.events_out = out.n_events
    flow.events_no_muon = chunk.n_events - out.n_events
    flow.muons_out = out.n_muons
    flow.hits_out = out.n_hits
    flow.hits_on_muons_out = int((out.hits["spacePoint_truthLink"] >= 0).sum())
    return out, flow
