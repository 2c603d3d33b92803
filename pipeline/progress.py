"""Progress for long work: a live bar on a terminal, periodic plain lines in batch logs.

A batch system captures stderr to a file, where a redrawn bar is noise; so when stderr is not a
terminal the reporter prints one line every ``interval`` seconds instead.
"""

from __future__ import annotations

import sys
import threading
import time


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
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn(self.noun), TextColumn("{task.fields[units]}"),
                                 TextColumn("{task.fields[rate]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=self.total, rate="", units=self._units())
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
                self.log(f"still working: {self.entries}/{self.total} {self.noun} done{self._units(', ')}, "
                         f"{time.perf_counter() - self.t0:.0f} s elapsed, no chunk finished in the last "
                         f"{self.interval:g} s")

    def advance(self, entries: int, hits: int = 0) -> None:
        self.entries += entries
        self.hits += hits
        now = time.perf_counter()
        self._moved = now
        rate = self.hits / max(now - self.t0, 1e-9)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.entries, rate=self._rate(rate), units=self._units())
        elif not self.quiet and now - self._last >= self.interval:
            self._last = now
            frac = self.entries / self.total if self.total else 1.0
            eta = (now - self.t0) * (1 - frac) / frac if frac > 0 else float("nan")
            verb = {"convert": "converted", "simulate": "simulated"}.get(self.label, self.label)
            self.log(f"{verb} {self.entries}/{self.total} {self.noun} ({100 * frac:.1f} %){self._units(', ')}, "
                     f"{self._rate(rate)}, ETA {eta:.0f} s")

    def _rate(self, hits_per_s: float) -> str:
        if self.label == "convert":
            return f"{hits_per_s / 1e6:.2f} M hits/s"
        return f"{self.entries / max(time.perf_counter() - self.t0, 1e-9):,.0f} {self.noun}/s"

    def _units(self, sep: str = "") -> str:
        return f"{sep}units {self.units_done}/{self.units_total}" if self.units_total else ""

    def unit_done(self) -> None:
        """One work unit finished (its entries were reported through :meth:`advance`)."""
        self.units_done += 1
        self._moved = time.perf_counter()
        if self._bar is not None:
            self._bar.update(self._task, units=self._units())

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
