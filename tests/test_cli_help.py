"""The command line as a newcomer meets it: --version, short options, grouped help, a quiet train."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pipeline._version import __version__
from pipeline.cli import CONVERT_SECTIONS, main


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag):
    r = CliRunner().invoke(main, [flag])
    assert r.exit_code == 0 and r.output.strip() == f"muon-pipeline, version {__version__}"


@pytest.mark.parametrize("command", ["convert", "migrate", "train", "evaluate", "compare", "predict", "filter"])
def test_output_has_a_short_form(command):
    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0 and "-o, --output" in r.output, r.output


@pytest.mark.parametrize("command", ["simulate", "convert", "filter", "predict"])
def test_commands_with_a_progress_bar_can_be_quiet(command):
    """A batch script silences the progress of every long command the same way."""
    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0 and "-q, --quiet" in r.output, r.output


def test_convert_help_lists_its_options_in_sections():
    r = CliRunner().invoke(main, ["convert", "--help"], terminal_width=100)
    assert r.exit_code == 0
    titles = [f"{t}:" for t in CONVERT_SECTIONS]
    at = [r.output.index(t) for t in titles]
    assert at == sorted(at), "sections in their declared order"
    selection = r.output[r.output.index("Selection:"):r.output.index("Shards and sizes:")]
    assert "--min-pt" in selection and "--technologies" in selection and "--workers" not in selection
    running = r.output[r.output.index(titles[-1]):]
    assert "--scheduler" in running and "--task-index" in running and "--min-pt" not in running
    from pipeline.cli import convert

    every = {p.name for p in convert.params if isinstance(p, __import__("click").Option)} - {"help"}
    grouped = {n for names in CONVERT_SECTIONS.values() for n in names}
    assert every <= grouped, f"options in no section: {every - grouped}"


def test_tree_help_names_both_containers():
    r = CliRunner().invoke(main, ["convert", "--help"], terminal_width=200)
    line = next(ln for ln in r.output.splitlines() if "--tree" in ln)
    assert "TTree or RNTuple" in line


@pytest.mark.train
def test_train_prints_one_line_and_the_json_only_with_json(monkeypatch, converted_random, tmp_path):
    """The summary is in RUN_DIR/summary.json; the terminal gets one line unless --json asks for more."""
    pytest.importorskip("torch")
    pytest.importorskip("lightning")
    import pipeline.train.fit as fit

    summary = {"run_dir": "r", "best_val_loss": 0.0123, "epochs": 1, "steps": 3, "seconds": 4.2}
    monkeypatch.setattr(fit, "train", lambda *a, **k: summary)
    args = ["train", "--config", "inverse_pt", "--data", str(converted_random), "--device", "cpu"]
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert "{" not in r.stdout and "train: 3 steps, 1 epoch(s), best val/loss 0.0123" in r.stdout, r.stdout
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout[:r.stdout.rindex("}") + 1]) == summary
