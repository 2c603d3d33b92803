"""Progress that moves: executors report work as units finish, not once at the end (issue 12)."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest
from rawdump import random_events, write_dump

from pipeline import convert
from pipeline.config import ConvertConfig
from pipeline.executors import UnitJob, run_dask, run_processes, run_serial
from pipeline.format import SHARDS
from pipeline.settings import RunSettings
from pipeline.storage import OutputDir
from pipeline.units import plan_units, run_unit


@pytest.fixture(scope="module")
def four_unit_dump(tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "raw.root"
    write_dump(path, random_events(800, seed=12))
    return path


@pytest.fixture(scope="module")
def four_long_units_dump(tmp_path_factory):
    """Units long enough (~0.2 s each) that Dask's hand-back of a result (~0.1 s) does not decide the test."""
    path = tmp_path_factory.mktemp("progress-long") / "raw.root"
    write_dump(path, random_events(10000, seed=13))
    return path


def _plan(path, out, events_per_unit=200, row_group=50):
    cfg = ConvertConfig(schema_version=2, shard_events=events_per_unit, row_group_size=row_group)
    _, _, units = plan_units([str(path)], cfg, False)
    OutputDir(str(out)).makedirs(SHARDS)
    job = UnitJob(run_unit, cfg, str(out), RunSettings(step_size=50))
    return units, job


@pytest.mark.parametrize("runner", ["processes", "serial", "dask"])
def test_progress_arrives_before_the_last_unit_ends(tmp_path, request, runner):
    """2 workers, 4 units: chunk progress and unit records reach the caller while units still run.

    The reference for "the last unit ended" is the modification time of its record file, written by the
    worker as the unit's very last act."""
    if runner == "dask":
        pytest.importorskip("distributed")
        units, job = _plan(request.getfixturevalue("four_long_units_dump"), tmp_path / "ds", 2500, 250)
    else:
        units, job = _plan(request.getfixturevalue("four_unit_dump"), tmp_path / "ds")
    total = sum(u.entry_stop - u.entry_start for u in units)
    assert len(units) == 4
    events: list[tuple[float, int]] = []
    records: list[float] = []
    lock = threading.Lock()

    def progress(entries: int, hits: int) -> None:
        with lock:
            events.append((time.time(), entries))

    def on_record(rec: dict) -> None:
        records.append(time.time())

    if runner == "processes":
        run_processes(units, job, 2, on_record, progress=progress, poll=0.05)
    elif runner == "dask":  # the embedded cluster: chunk reports travel as worker events
        run_dask(units, job, "local", 2, on_record, progress=progress)
    else:
        run_serial(units, job, on_record, progress=progress)
    ends = sorted(os.stat(tmp_path / "ds" / u.record).st_mtime for u in units)
    assert sum(e for _, e in events) == total  # every entry once, no double count
    assert len(records) == 4
    early = [t for t, _ in events if t < ends[-1]]
    assert len(early) >= 3, (events, ends)  # not one burst at the end
    assert records[0] < ends[-1]  # records as each unit finishes
    if runner != "dask":  # a Dask result reaches the client ~0.1 s after its unit ended: one record is enough
        assert records[1] < ends[-1]
    assert len(events) > 4  # chunk-level, not only per unit (4 chunks of 50 per unit)


def test_convert_batch_log_moves_with_two_workers(tmp_path, four_unit_dump, monkeypatch):
    """The plain lines of a batch log show partial counts and units during a 2-worker run."""
    import pipeline.produce as conv
    from pipeline.progress import Reporter

    stream = io.StringIO()

    class Logged(Reporter):
        def __init__(self, total, quiet=False, **kw):
            super().__init__(total, quiet=quiet, interval=0.0, stream=stream, **kw)

    monkeypatch.setattr(conv, "Reporter", Logged)
    convert([str(four_unit_dump)], str(tmp_path / "ds"), ConvertConfig(schema_version=2, shard_events=200,
            row_group_size=50), workers=2, step_size=50)
    lines = [ln for ln in stream.getvalue().splitlines() if ln.startswith("converted ")]
    assert lines[-1].startswith("converted 800/800 entries (100.0 %), units ")
    partial = [ln for ln in lines if not ln.startswith("converted 800/")]
    assert len(partial) >= 3, lines
    assert any("units 0/4" in ln for ln in partial) and any("units 2/4" in ln or "units 3/4" in ln for ln in lines)


def test_simulate_reports_progress_per_batch(tmp_path, monkeypatch):
    """simulate used to be silent for a minute; now a batch log gets lines as batches are written."""
    import pipeline.simulate.generate as gen
    from pipeline.progress import Reporter
    from pipeline.simulate.writer import write_dump

    monkeypatch.setattr(gen, "BATCH_HITS", 6000)  # 100 events per batch (no background): 3 batches
    stream = io.StringIO()
    seen: list[int] = []
    with Reporter(300, interval=0.0, stream=stream, label="simulate", noun="events") as rep:
        def progress(events: int, hits: int) -> None:
            seen.append(events)
            rep.advance(events, hits)

        write_dump(tmp_path / "s.root", 300, seed=1, config=gen.SimConfig(background_per_event=0), progress=progress)
    assert seen == [100, 100, 100]
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("simulated 100/300 events (33.3 %)") and "events/s" in lines[0]
    assert lines[-1].startswith("simulated 300/300 events (100.0 %)")


class _Trainer:
    def __init__(self) -> None:
        self.global_step, self.current_epoch, self.is_global_zero, self.sanity_checking = 0, 0, True, False
        self.callback_metrics: dict = {}


def test_train_step_lines_and_live_bar():
    torch = pytest.importorskip("torch")
    pytest.importorskip("lightning")
    from pipeline.train.progress_log import LiveBar, StepLog

    out = io.StringIO()
    log, bar_stream = StepLog(every=2, total_steps=4, stream=out), io.StringIO()
    bar = LiveBar(total_steps=4, stream=bar_stream)
    trainer = _Trainer()
    for cb in (log, bar):
        cb.on_train_start(trainer, None)
    for step in range(1, 5):
        trainer.global_step = step
        for cb in (log, bar):
            cb.on_train_batch_end(trainer, None, {"loss": torch.tensor(0.5 / step)}, {"event": torch.zeros(8)}, step)
    trainer.callback_metrics["val/loss"] = torch.tensor(0.25)
    for cb in (log, bar):
        cb.on_validation_end(trainer, None)
    bar.on_train_end(trainer, None)
    lines = out.getvalue().splitlines()
    assert [" ".join(ln.split()[:3]) for ln in lines] == ["train step 2/4", "train step 4/4", "val step 4/4"]
    assert "loss 0.3750" in lines[0] and "events/s" in lines[0] and "ETA" in lines[0]  # mean of 0.5 and 0.25
    assert "val/loss 0.2500" in lines[2]
    drawn = bar_stream.getvalue()
    assert "4/4" in drawn and "steps" in drawn and "v_num" not in drawn


def test_step_log_speaks_at_least_every_max_silence():
    """Slow steps (a loaded CPU): a line after max_silence seconds even before `every` steps."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("lightning")
    from pipeline.train.progress_log import StepLog

    out = io.StringIO()
    log = StepLog(every=1000, total_steps=5000, stream=out, max_silence=0.05)
    trainer = _Trainer()
    log.on_train_start(trainer, None)
    time.sleep(0.06)
    trainer.global_step = 3
    log.on_train_batch_end(trainer, None, {"loss": torch.tensor(1.0)}, {"event": torch.zeros(4)}, 3)
    assert out.getvalue().startswith("train step 3/5000")


def test_heartbeat_says_stalled_only_when_nothing_moved():
    """A batch log said "no chunk finished in the last 10 s" while chunks were finishing steadily: the
    heartbeat looked at when a line was last printed, not at when work last advanced."""
    import io
    import time

    from pipeline.progress import Reporter

    log = io.StringIO()
    with Reporter(1000, interval=0.3, stream=log) as rep:
        for _ in range(15):  # steady progress, faster than the interval
            time.sleep(0.1)
            rep.advance(10, 100)
        steady = log.getvalue()
        time.sleep(0.9)  # then nothing moves
    assert "still working" not in steady and "converted" in steady
    assert "still working: 150/1000" in log.getvalue()


def test_progress_lines_fit_80_columns_whatever_the_counts():
    """A batch log's line and the live bar stay within 80 columns at a billion entries and 100 000
    units: counts are written compactly, and the rate goes first when a line is still too long."""
    import io

    from rich.console import Console

    from pipeline.progress import Reporter

    log = io.StringIO()
    with Reporter(1_234_567_890, interval=0.0, stream=log, units=123_456) as rep:
        rep.advance(123_456_789, 40_000_000)
        rep.unit_done()
        rep.advance(1_111_111_101, 400_000_000)
    lines = log.getvalue().splitlines()
    assert lines and all(len(ln) <= 80 for ln in lines), lines
    assert lines[-1].startswith("converted 1.2G/1.2G entries (100.0 %)")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    with Reporter(987_654_321, stream=Terminal(), units=54_321) as rep:
        rep.advance(12_345_678, 4_000_000_000)
        for _ in range(3):
            rep.unit_done()
        shown = io.StringIO()
        Console(file=shown, width=80, color_system=None).print(rep._bar.get_renderable())
    text = shown.getvalue().rstrip("\n")
    assert len(text.splitlines()) == 1 and "…" not in text, text  # one line, nothing cut by rich
    assert "12.3M/987.7M entries" in text and "units 3/54321" in text and "ETA" in text, text
