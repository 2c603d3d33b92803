"""The physics selection (cut flow) of the reference preparation, as columnwise numpy.

Order, as in the existing per-event script:

1. drop hits of technologies not requested (``--technologies``; by default none is dropped, whatever
   its code, and hits of codes no technology name covers are counted per code);
2. count each truth muon's remaining hits;
3. keep muons with pT ≥ min_pt, |η| ≤ max_abs_eta, hits ≥ min_hits (counted in that order
   for the cut flow). A muon no remaining hit points to is never kept, even with ``min_hits`` 0:
   the reference script builds its tracks from the hits' truth links, so such a muon does not exist
   there (``keep_muons_without_hits`` keeps them);
4. hits of removed muons become background (truthLink −1);
5. renumber surviving links 0..n−1 per event, truth arrays keep their relative order;
6. drop events left without a muon (unless ``keep_empty_events``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .chunk import EventChunk
from .errors import ConfigError

#: ATLAS MuonStationIndex technology codes (``spacePoint_technology``); CSC hits are in Run 2 dumps.
TECHNOLOGIES = {"MDT": 0, "CSC": 1, "RPC": 2, "TGC": 3, "STGC": 4, "MM": 5}
_CODE_NAMES = {v: k for k, v in TECHNOLOGIES.items()}


def technology_name(code: int) -> str:
    """``"MDT"`` for 0 ...; a code no technology name covers is shown as ``"code 7"``."""
    return _CODE_NAMES.get(int(code), f"code {int(code)}")


def parse_technologies(text: str) -> tuple[str, ...] | None:
    """``--technologies``: ``all`` (None: every hit, whatever its code) or comma-separated names
    (``MDT,CSC``, any case) and integer codes (``7``, ``-1``); names are checked by SelectionConfig."""
    items = [t.strip().upper() for t in text.split(",") if t.strip()]
    if items == ["ALL"]:
        return None
    if "ALL" in items:
        raise ConfigError(f"--technologies {text!r}: 'all' stands alone (it already keeps every code)")
    return tuple(items)


@dataclass(frozen=True)
class SelectionConfig:
    min_pt: float = 5.0
    max_abs_eta: float = 2.7
    min_hits: int = 3
    technologies: tuple[str, ...] | None = None  # None: keep every hit, whatever its technology code
    keep_empty_events: bool = False
    keep_muons_without_hits: bool = False

    def __post_init__(self) -> None:
        if self.technologies is not None:
            unknown = [t for t in self.technologies if t not in TECHNOLOGIES and not _is_code(t)]
            if unknown:
                raise ConfigError(f"unknown technolog(y/ies) {unknown}; choose from {', '.join(TECHNOLOGIES)}, "
                                  "integer codes, or 'all'")
            if not self.technologies:
                raise ConfigError("--technologies must name at least one technology (or 'all')")
        if not (math.isfinite(self.min_pt) and math.isfinite(self.max_abs_eta)):
            raise ConfigError("--min-pt and --max-abs-eta must be finite numbers")
        if self.technologies is not None:
            bad = [t for t in self.technologies if _is_code(t) and not -1 <= int(t) <= 255]
            if bad:
                raise ConfigError(f"--technologies: code(s) {bad} outside -1..255, the range the schema stores")
        if self.min_hits < 0 or self.min_pt < 0 or self.max_abs_eta < 0:
            raise ConfigError("--min-pt, --max-abs-eta and --min-hits must be non-negative")

    def codes(self) -> np.ndarray | None:
        """The technology codes kept (None: all)."""
        if self.technologies is None:
            return None
        return np.array([TECHNOLOGIES[t] if t in TECHNOLOGIES else int(t) for t in self.technologies], dtype=np.int64)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["technologies"] = "all" if self.technologies is None else list(self.technologies)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SelectionConfig:
        """Inverse of :meth:`to_dict`. A configuration written before ``keep_muons_without_hits``
        existed kept such muons (its ``min_hits`` 0 did), so its absence means True."""
        d = dict(d)
        tech = d.get("technologies", "all")
        d["technologies"] = None if tech == "all" else tuple(tech)
        d.setdefault("keep_muons_without_hits", True)
        return cls(**d)


def _is_code(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


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
    #: hits entering the selection whose technology code no name covers, per code (as a string)
    hits_unknown_technology: dict[str, int] = field(default_factory=dict)
    #: values stored correctly rounded (``--precision round``), per field; the manifest moves it to "reading"
    values_rounded: dict[str, int] = field(default_factory=dict)

    def add(self, other: CutFlow) -> CutFlow:
        out = CutFlow(**{k: getattr(self, k) + getattr(other, k) for k in self.counters()})
        for k in self.tallies():
            setattr(out, k, _add_tally(getattr(self, k), getattr(other, k)))
        return out

    @staticmethod
    def counters() -> list[str]:
        """The integer counters (the tallies per code / field are :meth:`tallies`)."""
        return [k for k, f in CutFlow.__dataclass_fields__.items() if f.type in ("int", int)]

    @staticmethod
    def tallies() -> list[str]:
        return [k for k in CutFlow.__dataclass_fields__ if k not in CutFlow.counters()]

    def to_dict(self) -> dict:
        d: dict = {k: int(getattr(self, k)) for k in self.counters()}
        d.update({k: _add_tally(getattr(self, k), {}) for k in self.tallies()})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> CutFlow:
        """Tolerant of records written before a counter existed (absent means 0 / empty)."""
        return cls(**{k: int(d.get(k, 0)) for k in cls.counters()},
                   **{k: _add_tally(d.get(k) or {}, {}) for k in cls.tallies()})


def _add_tally(a: dict, b: dict) -> dict[str, int]:
    """Sum of two {key: count} tallies, keys sorted (numerically when they are codes)."""
    out = {str(k): int(v) for k, v in a.items()}
    for k, v in b.items():
        out[str(k)] = out.get(str(k), 0) + int(v)

    def order(k: str):
        return (0, int(k), "") if _is_code(k) else (1, 0, k)

    return {k: out[k] for k in sorted(out, key=order)}


def apply_selection(chunk: EventChunk, cfg: SelectionConfig) -> tuple[EventChunk, CutFlow]:
    """Apply the cut flow to a chunk; returns the selected chunk and its counters."""
    flow = CutFlow(events_in=chunk.n_events, muons_in=chunk.n_muons, hits_in=chunk.n_hits)
    link = chunk.hits["spacePoint_truthLink"]
    tech = chunk.hits["spacePoint_technology"]

    # 1. technologies; codes no name covers are counted per code
    unknown = ~np.isin(tech, list(TECHNOLOGIES.values()))
    if unknown.any():
        codes, counts = np.unique(tech[unknown], return_counts=True)
        flow.hits_unknown_technology = _add_tally(dict(zip(codes.tolist(), counts.tolist())), {})
    allowed = cfg.codes()
    keep_hit = np.ones(len(tech), bool) if allowed is None else np.isin(tech, allowed)
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
    pass_hits = nhits >= (cfg.min_hits if cfg.keep_muons_without_hits else max(cfg.min_hits, 1))
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
