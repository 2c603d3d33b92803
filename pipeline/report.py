"""The report the ``validate`` checks write into: one :class:`Problem` per breach, all of them in a
:class:`Report`, and :func:`summarize`, the report as text.

``muon-pipeline validate`` prints :func:`summarize`; ``--json`` prints :meth:`Report.to_dict`. This is a
leaf module (it imports nothing from the package). The structure checks (:mod:`pipeline.validate`), the
value checks (:mod:`pipeline.validate_values`) and the raw-input comparison
(:mod:`pipeline.validate_source`) all write problems of this one type, and none of them imports another
to get it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_ROWS_PER_PROBLEM = 5  # rows a problem names; ``Problem.count`` says how many there are in all

Where = tuple[str | int, ...]
"""Where a problem is. Either a path of keys and list indices into the manifest, ``("shards", 3,
"sha256")``, or a column of a shard, ``("hits", "spacePoint_time")`` (a list column, then its field), or
one named part, ``("metadata muon_pipeline.shard",)``. ``()``: the whole shard, or the whole dataset."""


def render_where(where: Where) -> str:
    """The text form of ``where``: names joined by ``.``, list indices in brackets.

    ``("shards", 3, "sha256")`` gives ``"shards[3].sha256"``, ``("hits", "spacePoint_time")`` gives
    ``"hits.spacePoint_time"``, and ``()`` gives ``""``.
    """
    text = ""
    for part in where:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class Problem:
    """One breach that one check found.

    ``check``: the kind of problem, set by the check that finds it. Examples: ``manifest`` (a key
    missing or mistyped), ``path``, ``missing``, ``duplicate``, ``unlisted``, ``readable``, ``size``,
    ``checksum``, ``version``, ``columns``, ``types``, ``identity``, ``counts``, ``coverage``, the value
    rules ``finite``, ``range`` and ``allowed``, ``truth-link``, ``cuts``, ``min-hits``, ``formula``,
    ``provenance``, ``order``, ``statistics``, ``source``, ``internal``. :func:`summarize` groups by it.
    ``message``: what is wrong, in words. ``shard``: the shard's path in the dataset (``shards/NAME.parquet``).
    ``None`` when the problem is in the manifest or the dataset as a whole.
    ``where``: the place inside the manifest or the shard (see :data:`Where`).
    ``rows``: the first :data:`MAX_ROWS_PER_PROBLEM` rows (events) with the problem, counted from 0 inside
    the shard. ``count``: how many such rows there are in all.
    """

    check: str
    message: str
    shard: str | None = None
    where: Where = ()
    rows: list[int] | None = None
    count: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.where, tuple):  # a bare string would render letter by letter
            raise TypeError(f"Problem.where must be a tuple such as ('shards', 3, 'sha256'), got {self.where!r}")

    @classmethod
    def with_rows(cls, check: str, message: str, shard: str | None, where: Where, rows: Sequence[int]) -> Problem:
        """A problem in ``rows`` (all of them, ascending). It keeps the first few and counts them all."""
        return cls(check, message, shard, where, [int(r) for r in rows[:MAX_ROWS_PER_PROBLEM]], int(len(rows)))

    @property
    def column(self) -> str | None:
        """``where`` as text (``"shards[3].sha256"``, ``"hits.spacePoint_time"``); ``None`` when empty."""
        return render_where(self.where) or None

    def to_dict(self) -> dict:
        """The JSON form (``validate --json``). It holds ``column``, the text of ``where``."""
        return {"check": self.check, "message": self.message, "shard": self.shard, "column": self.column,
                "rows": None if self.rows is None else list(self.rows), "count": self.count}

    def __str__(self) -> str:
        place = ", ".join(x for x in (self.shard, self.column and f"column {self.column}",
                                      self.rows and f"row(s) {self.rows}" + (" ..." if self.count > len(self.rows) else ""))
                          if x)
        return f"[{self.check}] {place + ': ' if place else ''}{self.message}"


@dataclass
class Report:
    """What ``validate_dataset`` found. ``ok`` means no problem was found.

    ``levels``: the levels that ran (``structure``, ``checksums``, ``values``, ``source N``).
    ``shards_checked``: the shards whose files were there to check. ``events_checked``: the events whose
    values were decoded. ``source_units_checked``: the units converted again from the raw inputs.
    ``schema_version``: the manifest's schema (``None`` when it is unusable).
    """

    directory: str
    problems: list[Problem]
    shards_checked: int = 0
    events_checked: int = 0
    schema_version: int | None = None
    levels: list[str] = field(default_factory=list)
    source_units_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        """The JSON form that ``validate --json`` prints."""
        return {"directory": self.directory, "ok": self.ok, "schema_version": self.schema_version,
                "levels": self.levels, "shards_checked": self.shards_checked, "events_checked": self.events_checked,
                "source_units_checked": self.source_units_checked,
                "problems": [p.to_dict() for p in self.problems]}


def summarize(report: Report) -> str:
    """The report as text: problems grouped by check, in the order found, then one verdict line."""
    lines = []
    by_check = defaultdict(list)
    for p in report.problems:
        by_check[p.check].append(p)
    for check, problems in by_check.items():
        lines.append(f"{check}: {len(problems)} problem(s)")
        lines += [f"  {p}" for p in problems]
    verdict = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
    source = f", {report.source_units_checked} unit(s) re-derived from their sources" if any(
        lv.startswith("source") for lv in report.levels) else ""
    lines.append(f"{report.directory}: schema v{report.schema_version}, {report.shards_checked} shard(s), "
                 f"{report.events_checked} events checked{source} [{', '.join(report.levels)}]: {verdict}")
    return "\n".join(lines)
