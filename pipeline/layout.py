"""The raw layout: where the schema's raw fields are in a dump (tree name, branch per field, constants
for fields a dump lacks) and the float precision policy. Declarative data, read from a safe YAML file
(``--layout``); no ROOT here (reading is :mod:`pipeline.source`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ConfigError, quote
from .schema import Schema

DEFAULT_TREE = "MuonHitDump"
_LAYOUT_KEYS = {"tree", "branches", "fill", "precision"}
#: How a value of another type reaches the schema's type (``--precision``, layout ``precision:``).
PRECISIONS = ("exact", "round")


@dataclass(frozen=True)
class SourceLayout:
    """Where the schema's raw fields come from: a tree (TTree or RNTuple) and, per raw field, a branch
    (``branches``; identity by default) or a constant (``fill``), plus the float precision policy.

    ``precision`` is ``"exact"`` (every stored value equals the dump's value), ``"round"`` (values
    that are not exactly representable are stored correctly rounded and counted) or a mapping
    raw field → one of those (fields not named are exact).
    """

    tree: str = DEFAULT_TREE
    branches: dict[str, str] = field(default_factory=dict)
    fill: dict[str, int | float] = field(default_factory=dict)
    precision: str | dict[str, str] = "exact"

    def branch(self, raw_name: str) -> str:
        return self.branches.get(raw_name, raw_name)

    def rounds(self, raw_name: str) -> bool:
        """True if values of ``raw_name`` may be stored correctly rounded."""
        p = self.precision
        return (p.get(raw_name, "exact") if isinstance(p, dict) else p) == "round"

    def read_fields(self, schema: Schema) -> list:
        """The schema's raw fields read from a branch (those not filled with a constant)."""
        return [f for f in schema.fields if f.source and f.source not in self.fill]

    def read_branches(self, schema: Schema) -> list[str]:
        """Distinct branch names a conversion reads (what a reader asks uproot for)."""
        return list(dict.fromkeys(self.branch(f.source) for f in self.read_fields(schema)))

    def check(self, schema: Schema, where: str = "layout") -> SourceLayout:
        """Raise ConfigError unless every name is a raw field of ``schema``, every ``fill`` constant
        fits its field (type, range, allowed values), and the hit and muon counts come from a branch.
        Returns the layout with ``fill`` constants normalised (int for integer fields)."""
        raw = {f.source: f for f in schema.fields if f.source}
        for key, names in (("branches", self.branches), ("fill", self.fill),
                           ("precision", self.precision if isinstance(self.precision, dict) else {})):
            bad = sorted(set(names) - set(raw))
            if bad:
                raise ConfigError(f"{where}: {key}: {bad} are not raw fields of the schema; known: {sorted(raw)}")
        both = sorted(set(self.branches) & set(self.fill))
        if both:
            raise ConfigError(f"{where}: {both} are both mapped to a branch and filled; give one of the two")
        values = self.precision.values() if isinstance(self.precision, dict) else [self.precision]
        if any(v not in PRECISIONS for v in values):
            raise ConfigError(f"{where}: precision must be one of {PRECISIONS} or a mapping raw field -> one "
                              f"of them, got {quote(self.precision)}")
        fill = {name: _fill_value(raw[name], value, where, self.rounds(name)) for name, value in self.fill.items()}
        for level, counted in (("hit", "hits"), ("muon", "truth muons")):
            if all(f.source in fill for f in schema.level(level) if f.source):
                raise ConfigError(f"{where}: every {level} field is filled; at least one must come from a branch "
                                  f"(it gives the number of {counted} per event)")
        return replace(self, fill=fill)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, schema: Schema) -> SourceLayout:
        """Read a layout file (``yaml.safe_load``): keys ``tree``, ``branches``, ``fill``, ``precision``."""
        import yaml

        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read layout file {path}: {err}") from err
        if not isinstance(doc, dict):
            raise ConfigError(f"layout file {path}: expected a mapping with keys {sorted(_LAYOUT_KEYS)}")
        unknown = set(doc) - _LAYOUT_KEYS
        if unknown:
            raise ConfigError(f"layout file {path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_LAYOUT_KEYS)}")
        branches = doc.get("branches") or {}
        if not isinstance(branches, dict) or not all(isinstance(v, str) for v in branches.values()):
            raise ConfigError(f"layout file {path}: 'branches' must map raw field names to branch names")
        fill = doc.get("fill") or {}
        if not isinstance(fill, dict):
            raise ConfigError(f"layout file {path}: 'fill' must map raw field names to constants")
        precision = doc.get("precision", "exact")
        if not isinstance(precision, (str, dict)):
            raise ConfigError(f"layout file {path}: 'precision' must be {' or '.join(PRECISIONS)} or a mapping "
                              "raw field -> exact|round")
        tree = doc.get("tree", DEFAULT_TREE)
        if not isinstance(tree, str):
            raise ConfigError(f"layout file {path}: 'tree' must be a string")
        return cls(tree=tree, branches=dict(branches), fill=dict(fill), precision=precision).check(
            schema, f"layout file {path}")

    @classmethod
    def from_dict(cls, d: dict) -> SourceLayout:
        """Inverse of :meth:`to_dict`; a configuration written before ``fill``/``precision`` existed
        means no constants and exact values."""
        prec = d.get("precision", "exact")
        return cls(tree=d["tree"], branches=dict(d["branches"]), fill=dict(d.get("fill") or {}),
                   precision=dict(prec) if isinstance(prec, dict) else prec)

    def to_dict(self) -> dict:
        # fill / precision only when used: the configuration (and its hash, the resume key) of a
        # conversion that uses neither is what it was before they existed
        d: dict = {"tree": self.tree, "branches": dict(self.branches)}
        if self.fill:
            d["fill"] = dict(self.fill)
        if self.precision != "exact":
            d["precision"] = dict(self.precision) if isinstance(self.precision, dict) else self.precision
        return d


def branch_candidates(name: str, names: Iterable[str]) -> list[str]:
    """The names in ``names`` (a file's branches or RNTuple fields) that spell the branch ``name`` with
    ``.`` or ``/`` where it has ``_``: a member of a collection of records (RNTuple ``spacePoint.time``,
    what RNTuple writers and uproot make of a vector of structs), a TTree branch named so, or a split
    branch listed under its parent (``spacePoint/time``, ``spacePoint/spacePoint.time``). Sorted; more
    than one is an ambiguity the caller refuses (the layout must name one)."""
    found = set()
    for n in names:
        forms = {n, n.rsplit("/", 1)[-1]}
        if n != name and any(f.replace(".", "_").replace("/", "_") == name for f in forms):
            found.add(n)
    return sorted(found)


def file_branch(name: str, names: Collection[str]) -> str:
    """The name that holds branch ``name`` in a file whose names are ``names``: ``name`` itself if there,
    else its one spelling with ``.`` or ``/`` (:func:`branch_candidates`); ``name`` when absent or
    ambiguous (the input check reports those)."""
    if name in names:
        return name
    found = branch_candidates(name, names)
    return found[0] if len(found) == 1 else name


def _fill_value(fld, value, where: str, may_round: bool = False) -> int | float:
    """A ``fill`` constant checked against its field: a number of the field's kind, within the dtype
    and the schema's range / allowed values (the same rules ``validate`` applies), and, like a branch
    value, exactly representable in the field's dtype unless the field's precision is ``round`` (then
    the rounded value is what is stored and recorded). Text is refused, with a hint where YAML 1.1 read
    a number as text (``1e39`` without a decimal point)."""
    from .rules import field_violations

    what = f"{where}: fill {fld.source}: {quote(value)}"
    if isinstance(value, str):
        hint = ""
        try:
            float(value)
            hint = (" (quoted, or YAML 1.1 read it as text: an exponent needs a decimal point and a sign, "
                    "e.g. 1.0e+39, not 1e39)")
        except ValueError:
            pass
        raise ConfigError(f"{what} is not a number{hint}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{what} is not a number")
    dtype = np.dtype(fld.dtype)
    if dtype.kind in "iu":
        if not float(value).is_integer():
            raise ConfigError(f"{what} is not an integer (the field is {fld.dtype})")
        value = int(value)
        info = np.iinfo(dtype)
        if not info.min <= value <= info.max:
            raise ConfigError(f"{what} is outside the {fld.dtype} range [{info.min}, {info.max}]")
    else:
        value = float(value)
        if not np.isfinite(value) or abs(value) > float(np.finfo(dtype).max):
            raise ConfigError(f"{what} is not a finite {fld.dtype} value")
        stored = float(dtype.type(value))
        if stored != value:
            if not may_round:
                raise ConfigError(f"{what} is not exactly a {fld.dtype} value (the nearest is {stored!r}); write "
                                  f"that, or allow rounding for this field with 'precision: {{{fld.source}: round}}'")
            value = stored
    for _kind, _bad, why in field_violations(np.array([value], dtype=dtype), fld):
        raise ConfigError(f"{what}: {why}")
    return value
