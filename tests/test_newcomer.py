"""A newcomer's first hour (issue 12): devices, shipped configs, early errors, no empty folders."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    return lines[0]


def test_shipped_config_loads_by_name_from_an_installed_wheel(tmp_path):
    """`pip wheel` the project, install the wheel alone into a folder, load `inverse_pt` by name from it."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True)
    wheel = next(wheels.glob("muon_pipeline-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = textwrap.dedent(f"""
        import pipeline, yaml
        from pathlib import Path
        from pipeline.train.config import load_config, shipped_configs, config_path
        assert Path(pipeline.__file__).is_relative_to({str(site)!r}), pipeline.__file__
        assert shipped_configs() == ["direct_pt", "hit_filter", "inverse_pt", "inverse_pt_sigma", "signed_curvature"], shipped_configs()
        cfg = load_config("inverse_pt")
        print(cfg.inverse_fields, config_path("inverse_pt"))
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    inverse, path = res.stdout.split("] ")
    assert inverse == "['truthMuon_pt'" and Path(path.strip()).is_relative_to(site)
    # the file shipped is the one in the source tree
    assert Path(path.strip()).read_bytes() == (REPO / "pipeline" / "configs" / "inverse_pt.yaml").read_bytes()


def test_config_by_name_and_by_path_are_the_same():
    from pipeline.train.config import load_config

    assert load_config("inverse_pt") == load_config(REPO / "pipeline" / "configs" / "inverse_pt.yaml")
    assert load_config("configs/direct_pt.yaml") == load_config("direct_pt.yaml")  # the old path still works


def test_device_vocabulary():
    from pipeline.errors import ConfigError
    from pipeline.train.device import normalise

    assert [normalise(d) for d in (None, "auto", "CPU", "gpu", "cuda")] == ["auto", "auto", "cpu", "gpu", "gpu"]
    with pytest.raises(ConfigError, match="expected one of auto, cpu, gpu"):
        normalise("mps")
    from pipeline.train.config import config_from_dict

    with pytest.raises(ConfigError, match="trainer.accelerator"):
        config_from_dict({"fields": ["truthMuon_pt"], "trainer": {"accelerator": "tpu"}})


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_device_gpu_without_a_gpu_exits_2_with_one_line_before_torch(tmp_path, converted_random, command):
    from pipeline.train.device import nvidia_device_nodes

    if nvidia_device_nodes():
        pytest.skip("this machine has an NVIDIA device")
    if command == "train":
        args = ["train", "--config", "inverse_pt", "--data", str(converted_random), "--output", str(tmp_path / "run"),
                "--device", "gpu"]
    else:
        run = tmp_path / "run"
        (run / "checkpoints").mkdir(parents=True)
        _fake_checkpoint(run / "checkpoints" / "best.ckpt")
        args = ["evaluate", str(run), "--data", str(converted_random), "--device", "cuda"]
    code = ("import sys; from pipeline.cli import main\n"
            "try:\n    main(sys.argv[1:])\nfinally:\n    assert 'torch' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert _one_line_error(res).startswith("Error: --device gpu: no CUDA GPU is available")
    assert not (tmp_path / "run" / ("eval" if command == "evaluate" else "")).exists()  # nothing written


def test_gpu_asked_where_torch_sees_none_is_one_line(monkeypatch):
    """The second check, after torch is loaded (device nodes present, driver or build without CUDA)."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is available")
    from pipeline.errors import ConfigError
    from pipeline.train.device import resolve

    with pytest.raises(ConfigError, match=r"^--device gpu: no CUDA GPU is available \(torch .* sees none\)"):
        resolve("gpu")
    assert resolve("auto") == "cpu" and resolve("cpu") == "cpu"


def _fake_checkpoint(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"")


@pytest.mark.parametrize("case", ["unknown-name", "bad-key", "no-checkpoint", "not-a-checkpoint", "not-a-dataset",
                                  "resume-nothing"])
def test_config_and_checkpoint_errors_come_before_torch(tmp_path, converted_random, case):
    """Each is one line, exit 2 (1 for a folder that is no dataset: bad input), and torch was never
    imported (it costs seconds)."""
    run, data = tmp_path / "run", str(converted_random)
    (run / "checkpoints").mkdir(parents=True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("fields: [truthMuon_pt]\ntrainer: {max_epoch: 3}\n")
    args, expect = {
        "unknown-name": (["train", "--config", "inverse", "--data", data, "--output", str(tmp_path / "r2")],
                         "shipped: direct_pt, hit_filter, inverse_pt, inverse_pt_sigma, signed_curvature"),
        "bad-key": (["train", "--config", str(bad), "--data", data, "--output", str(tmp_path / "r2")], "max_epoch"),
        "no-checkpoint": (["evaluate", str(run), "--data", data], "no checkpoints/best.ckpt"),
        "not-a-checkpoint": (["evaluate", str(run), "--data", data], "not a torch checkpoint"),
        "not-a-dataset": (["train", "--config", "inverse_pt", "--data", str(tmp_path), "--output", str(tmp_path / "r2")],
                          "not a dataset (no _manifest.json)"),
        "resume-nothing": (["train", "--resume", "--data", data, "--output", str(tmp_path / "r2")], "--resume: no "),
    }[case]
    if case == "not-a-checkpoint":
        (run / "checkpoints" / "best.ckpt").write_bytes(b"\0" * 100)
    code = ("import sys; from pipeline.cli import main\n"
            "try:\n    main(sys.argv[1:])\nfinally:\n    assert 'torch' not in sys.modules\n")
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert res.returncode == (1 if case == "not-a-dataset" else 2), res.stderr
    assert expect in _one_line_error(res)
    assert not (tmp_path / "r2").exists() and not (run / "eval").exists()


@pytest.mark.parametrize("case", ["missing", "not-root"])
def test_failed_convert_leaves_no_empty_output_folder(tmp_path, case):
    src = tmp_path / "in.root"
    if case == "not-root":
        src.write_bytes(b"not a ROOT file" * 10)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "-q"])
    assert res.exit_code == 1, res.output
    assert not out.exists()
    # an existing folder the user made is kept, as it was
    out.mkdir()
    res = CliRunner().invoke(main, ["convert", str(src), "-o", str(out), "-q"])
    assert res.exit_code == 1 and out.is_dir()


def _metrics(tmp_path: Path, name: str, **kw) -> Path:
    d = tmp_path / name
    d.mkdir()
    m = {"label": name, "data": "/d/a", "split": "test", "n_muons": 10, "dataset_id": "aa", "sample_id": "s1",
         "methods": {"model": {"overall": {"n": 10}, "pt_bins": []}}, **kw}
    (d / "metrics.json").write_text(json.dumps(m))
    return d


def test_compare_refuses_evaluations_of_different_datasets_or_splits(tmp_path):
    pytest.importorskip("matplotlib")
    a = _metrics(tmp_path, "a")
    b = _metrics(tmp_path, "b", data="/d/b", n_muons=12, dataset_id="bb", sample_id="s2")
    c = _metrics(tmp_path, "c", split="val", sample_id="s3")
    for other in (b, c):
        res = CliRunner().invoke(main, ["compare", str(a), str(other), "--output", str(tmp_path / "cmp")])
        assert res.exit_code == 2, res.output
        line = res.output.strip()
        assert "\n" not in line and "different datasets or splits" in line and str(a) in line and str(other) in line
        assert not (tmp_path / "cmp").exists()
    assert "12 muons of /d/b (test split)" in CliRunner().invoke(main, ["compare", str(a), str(b)]).output
