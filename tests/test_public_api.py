"""The curated public API (``import pipeline``) and the optional-dependency messages."""

from __future__ import annotations

import importlib.util
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline
from pipeline import extras
from pipeline.errors import ConfigError


def test_public_names_are_the_same_object_on_every_access():
    """`pipeline.convert` was the function on first access and the submodule `pipeline.convert` after it
    (the lazy import put the module on the package), so a second call failed: 'module' is not callable."""
    code = ("import pipeline\n"
            "first = pipeline.convert\n"
            "second = pipeline.convert\n"
            "import pipeline.conversion, pipeline.dataset, pipeline.validate\n"
            "assert first is second is pipeline.convert, (first, second, pipeline.convert)\n"
            "assert callable(pipeline.convert) and pipeline.convert.__name__ == 'convert'\n"
            "for name in pipeline.__all__:\n"
            "    assert getattr(pipeline, name) is getattr(pipeline, name), name\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_import_pipeline_stays_cheap():
    r = subprocess.run([sys.executable, "-c", "import pipeline, sys; print(sorted(m for m in ('uproot', 'pyarrow', "
                        "'torch', 'awkward') if m in sys.modules))"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_help_lists_the_public_api_with_docstrings():
    text = pydoc.render_doc(pipeline, renderer=pydoc.plaintext)
    for name in pipeline.__all__:
        if name == "__version__":
            continue
        assert name in text, name
        assert (getattr(pipeline, name).__doc__ or "").strip(), f"{name} has no docstring"


@pytest.mark.parametrize("extra", sorted(extras.EXTRAS))
def test_every_missing_extra_names_an_install_command_that_works_from_a_clone(monkeypatch, extra):
    real = importlib.util.find_spec
    first = next(iter(extras.EXTRAS[extra]))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == first else real(name, *a))
    with pytest.raises(ConfigError) as err:
        extras.require(extra, "this feature")
    msg = str(err.value)
    assert f"pip install -e '.[{extra}]'" in msg and extras.EXTRAS[extra][first] in msg
    # the extra exists in pyproject.toml, so the line installs something
    pyproject = Path(pipeline.__file__).resolve().parent.parent / "pyproject.toml"
    assert f"\n{extra} = [" in pyproject.read_text()


def test_the_cli_stand_in_for_a_missing_stage_gives_the_same_install_line():
    from pipeline.cli import _unavailable

    cmd = _unavailable("train", ImportError("No module named 'torch'"))
    assert extras.install_line("train") in cmd.help


@pytest.mark.parametrize("extra", sorted(extras.EXTRAS))
def test_the_install_line_installs_every_module_the_extra_checks(extra):
    """Each distribution ``extras.EXTRAS`` names is listed under that extra in pyproject.toml, so the
    line a missing module prints really brings it."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = Path(pipeline.__file__).resolve().parent.parent / "pyproject.toml"
    listed = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"][extra]
    names = {re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0].lower() for d in listed}
    names |= {x.strip().lower() for d in listed if "[" in d for x in d[d.index("[") + 1:d.index("]")].split(",")}
    for dist in extras.EXTRAS[extra].values():
        assert dist.lower() in names, (extra, dist, listed)


def test_every_install_hint_in_the_code_works_from_a_clone():
    """Any message in pipeline/ that tells the user to `pip install` something gives the command for a
    clone (`pip install -e`, or a checkout then `pip install -e .`): the package is on no index."""
    root = Path(pipeline.__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if "pip install" in line and not line.lstrip().startswith("#"):
                assert "pip install -e" in line or "where it is published" in line, f"{path}:{lineno}: {line}"
    assert "git checkout v0.1.0 && pip install -e ." in extras.version_install_line("0.1.0")
    from pipeline.cli import _unavailable

    assert "pip install -e . in a clone" in _unavailable("simulate", ImportError("x")).help


def test_an_installed_but_broken_extra_gives_the_install_line_not_a_traceback(monkeypatch):
    """find_spec finds the package but importing it fails (a broken install): one ConfigError line."""
    monkeypatch.setitem(sys.modules, "distributed", None)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "distributed" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        extras.dask()
    assert "does not import" in str(err.value) and "pip install -e '.[dask]'" in str(err.value)


def test_a_missing_extra_is_reported_before_anything_is_written(tmp_path, monkeypatch, random_dump):
    """`convert --scheduler slurm` without dask-jobqueue wrote _work/plan.json first; the corrected command
    was then refused as another configuration."""
    from click.testing import CliRunner

    from pipeline.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dask_jobqueue" else real(name, *a))
    out = tmp_path / "ds"
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(out), "--scheduler", "slurm", "-q"])
    assert r.exit_code == 2 and "dask-jobqueue" in r.output and "pip install -e '.[grid]'" in r.output
    assert not out.exists()
    monkeypatch.undo()
    r = CliRunner().invoke(main, ["convert", str(random_dump), "-o", str(out), "--min-pt", "10", "-q"])
    assert r.exit_code == 0, r.output


def test_http_inputs_without_the_remote_extra_name_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aiohttp" else real(name, *a))
    from pipeline.layout import SourceLayout
    from pipeline.source import open_tree

    with pytest.raises(ConfigError) as err:
        open_tree("http://127.0.0.1:9/x.root", SourceLayout())
    assert "aiohttp" in str(err.value) and "pip install -e '.[remote]'" in str(err.value)


def test_convert_takes_one_path_and_checks_a_hand_made_layout(tmp_path, random_dump):
    """A single input string was iterated character by character ("input directory / holds no *.root");
    a SourceLayout made in Python was not checked (a fill of 0.5 for an integer field was stored as 0 while
    the manifest said 0.5)."""
    from pipeline import ConvertConfig, SourceLayout, convert

    res = convert(str(random_dump), str(tmp_path / "one"), ConvertConfig(schema_version=2), quiet=True)
    assert res.units_total >= 1 and res.manifest["inputs"][0]["path"] == str(random_dump)
    with pytest.raises(ConfigError, match="not an integer"):
        ConvertConfig(2, layout=SourceLayout(fill={"spacePoint_readOutSide": 0.5}))
    with pytest.raises(ConfigError, match="not raw fields"):
        ConvertConfig(2, layout=SourceLayout(branches={"bogus": "x"}))
    with pytest.raises(ConfigError, match="must be a TransformConfig"):
        ConvertConfig(2, transform=pipeline.SelectionConfig())


def test_the_default_worker_count_is_the_cpus_this_process_may_use(tmp_path, monkeypatch):
    """convert's default -j was os.cpu_count(): 2 workers under `taskset -c 0`, 64 in a 2-CPU SLURM slot on
    a 64-core node. Now the least of the affinity, the cgroup quota and SLURM_CPUS_PER_TASK."""
    import os

    from pipeline.settings import RunSettings, available_cpus

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    none = tmp_path / "none"
    assert available_cpus(none) == 8
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("250000 100000\n")  # 2.5 CPUs of quota: 3 workers
    assert available_cpus(v2) == 3
    (v2 / "cpu.max").write_text("max 100000\n")
    assert available_cpus(v2) == 8
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000")
    (v1 / "cpu.cfs_period_us").write_text("100000")
    assert available_cpus(v1.parent) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert available_cpus(none) == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})  # taskset -c 0
    assert available_cpus(none) == 1 and RunSettings().worker_count == 1 and RunSettings(workers=4).worker_count == 4
