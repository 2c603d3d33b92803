"""A stop signal is never lost: whatever library code does with the exception the handler raises.

pyarrow imports pandas lazily inside ``pq.read_table``; a SIGTERM landing in that import was swallowed
on the way (the command finished and exited 0) or surfaced as an unrelated AttributeError traceback.
The handler records the signal as it raises, and the command ends with 128 + N either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import os, signal, sys, time
    import click
    from pipeline.cli import main

    @main.command("selftest")
    @click.argument("mode")
    @click.argument("sig")
    def selftest(mode, sig):
        try:  # library code that catches everything, as a lazy import's shim may
            os.kill(os.getpid(), getattr(signal, sig))
            time.sleep(0.5)
        except BaseException:
            if mode == "other":
                raise AttributeError("partially initialized module")  # what the swallowed stop left behind
        click.echo("finished")

    sys.argv = ["muon-pipeline", "selftest", sys.argv[1], sys.argv[2]]
    main()
''')


@pytest.mark.parametrize("mode", ["swallowed", "other"])
@pytest.mark.parametrize(("sig", "code"), [("SIGTERM", 143), ("SIGINT", 130), ("SIGUSR1", 138)])
def test_a_swallowed_stop_signal_still_stops_the_command(mode, sig, code):
    res = subprocess.run([sys.executable, "-c", SCRIPT, mode, sig], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == code, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and f"stopped by {sig}" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_command_without_a_signal_ends_as_before():
    res = subprocess.run([sys.executable, "-c", SCRIPT.replace("os.kill(os.getpid(), getattr(signal, sig))",
                                                               "pass"), "swallowed", "SIGTERM"],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert res.returncode == 0 and res.stdout.strip() == "finished", res.stderr


@pytest.mark.parametrize(("command", "advice"), [("train", "with --resume"), ("convert", "the same command again")])
def test_a_stop_names_how_to_resume(capsys, command, advice):
    """A stopped ``train`` (in training or in the calibration that ends it) resumes with ``--resume``:
    the same command without it is refused because the run exists; other commands resume by re-running."""
    import signal

    import click

    from pipeline.cli_errors import _stopped

    ctx = click.Context(click.Command(command), info_name=command)
    with pytest.raises(SystemExit) as stop:
        _stopped(ctx, signal.SIGTERM)
    assert stop.value.code == 128 + signal.SIGTERM and advice in capsys.readouterr().err
