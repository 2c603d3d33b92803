"""Progress for long work: a live bar on a terminal, periodic plain lines in batch logs.

A batch system captures stderr to a file, where a redrawn bar is noise; so when stderr is not a
terminal the reporter prints one line every ``interval`` seconds instead. Both fit in 80 columns
(``WIDTH``) whatever the counts: large numbers are written compactly (``12.3M``), and when a line would
still be too long its least useful parts go first (the rate, then the unit count).
"""

from __future__ import annotations

import math
import sys
import threading
import time

#: The widest line the reporter prints (a plain log line, or the live bar).
WIDTH = 80
#: Columns the live bar's own bar takes (the rest is the label and the text beside it).
BAR = 10


def compact(n: float) -> str:
    """``n`` in at most 6 characters: as is below 100 000, else ``123.5k``, ``12.3M``, ``1.2G``, ..."""
    n = int(n)
    if abs(n) < 100_000:
        return str(n)
    for div, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        if abs(n) < 999.95 * div:
            return f"{n / div:.1f}{suffix}"
    return f"{n / 1e15:.0f}P"


def duration(seconds: float) -> str:
    """``21 s``, ``12m05s``, ``3h04m``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 100:
        return f"{s} s"
    if s < 6000:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def fit(parts: list[str], drop: list[int], width: int = WIDTH - 1) -> str:
    """``parts`` joined by ``, ``; while longer than ``width``, parts are dropped in the order of the
    indices in ``drop`` (the least useful first)."""
    keep = list(range(len(parts)))
    for i in drop:
        if len(", ".join(parts[k] for k in keep if parts[k])) <= width:
            break
        keep.remove(i)
    return ", ".join(parts[k] for k in keep if parts[k])


class Reporter:
    """Progress of ``total_entries`` units of work (input entries for ``convert``, events for ``simulate``).

    ``advance(n, hits)`` as work completes (any executor: chunks, batches or whole units),
    ``unit_done()`` per finished work unit (shown as ``units k/units``), ``log()`` for messages that
    must not break the bar. On a terminal: a live rich bar. Otherwise: a plain line at most every
    ``interval`` seconds as work advances, and a ``still working`` line when nothing advanced for
    ``interval`` seconds (a log that stops growing means a dead job). ``quiet``: nothing.
    """

    def __init__(self, total_entries: int, quiet: bool = False, interval: float = 10.0, stream=None,
                 units: int = 0, label: str = "convert", noun: str = "entries") -> None:
        self.total = max(int(total_entries), 0)
        self.units_total = units
        self.units_done = 0
        self.label, self.noun = label, noun
        self.quiet = quiet
        self.interval = interval
        self.stream = stream or sys.stderr
        self.entries = 0
        self.hits = 0
        self.t0 = time.perf_counter()
        self._last = self.t0   # when the last line was printed
        self._moved = self.t0  # when work last advanced (a chunk or a unit finished)
        self._bar = None
        self._task = None
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> Reporter:
        if not self.quiet and hasattr(self.stream, "isatty") and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            # label, bar, then one text that fit() keeps within the 80 columns left (1 space between)
            self._bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(bar_width=BAR),
                                 TextColumn("{task.fields[info]}"), console=Console(file=self.stream),
                                 transient=False, expand=False)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, info=self._bar_text(0.0))
        elif not self.quiet and self.interval > 0:
            self._stop = threading.Event()
            self._beat = threading.Thread(target=self._heartbeat, name="progress-heartbeat", daemon=True)
            self._beat.start()
        return self

    def _heartbeat(self) -> None:
        """Batch logs: a line every ``interval`` even while no chunk finishes (a slow or stalled read),
        so a log that stops growing means a dead job, not a busy one."""
        while not self._stop.wait(self.interval):
            now = time.perf_counter()
            if now - self._moved >= self.interval and now - self._last >= self.interval:
                self._last = now
                self.log(fit([f"still working: {compact(self.entries)}/{compact(self.total)} {self.noun} done",
                              self._units(), f"{duration(now - self.t0)} elapsed",
                              f"no chunk finished in the last {self.interval:g} s"], drop=[1, 2]))

    def advance(self, entries: int, hits: int = 0) -> None:
        self.entries += entries
        self.hits += hits
        now = time.perf_counter()
        self._moved = now
        rate = self.hits / max(now - self.t0, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.entries, info=self._bar_text(rate))
        elif not self.quiet and now - self._last >= self.interval:
            self._last = now
            frac = self.entries / self.total if self.total else 1.0
            verb = {"convert": "converted", "simulate": "simulated"}.get(self.label, self.label)
            self.log(fit([f"{verb} {compact(self.entries)}/{compact(self.total)} {self.noun} ({100 * frac:.1f} %)",
                          self._units(), self._rate(rate), f"ETA {self._eta(now)}"], drop=[2, 1]))

    def _eta(self, now: float) -> str:
        frac = self.entries / self.total if self.total else 1.0
        return duration((now - self.t0) * (1 - frac) / frac) if frac > 0 else "?"

    def _bar_text(self, hits_per_s: float) -> str:
        """The live bar's text beside the bar: counts, units, rate, ETA, within the 80 columns."""
        width = WIDTH - 1 - len(self.label) - 1 - BAR - 1
        return fit([f"{compact(self.entries)}/{compact(self.total)} {self.noun}", self._units(),
                    self._rate(hits_per_s), f"ETA {self._eta(time.perf_counter())}"], drop=[2, 1], width=width)

    def _rate(self, hits_per_s: float) -> str:
        if self.label == "convert":
            return f"{hits_per_s / 1e6:.{2 if hits_per_s < 1e8 else 0}f} M hits/s"
        return f"{compact(self.entries / max(time.perf_counter() - self.t0, 1e-9))} {self.noun}/s"

    def _units(self, sep: str = "") -> str:
        return f"{sep}units {compact(self.units_done)}/{compact(self.units_total)}" if self.units_total else ""

    def unit_done(self) -> None:
        """One work unit finished (its entries were reported through :meth:`advance`)."""
        self.units_done += 1
        self._moved = time.perf_counter()
        if self._bar is not None:
            self._bar.update(self._task, info=self._bar_text(self.hits / max(time.perf_counter() - self.t0, 1e-9)))

    def log(self, message: str) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.console.print(message)
        else:
            print(message, file=self.stream, flush=True)

    def __exit__(self, *exc) -> None:
        if self._beat is not None:
            self._stop.set()
            self._beat.join()
        if self._bar is not None:
            self._bar.stop()
