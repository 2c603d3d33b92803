"""Training config: typed YAML that names the offending key; dataset-dependent checks with the migrate hint."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from pipeline.cli import main
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.schema import load_schema  # noqa: E402
from pipeline.train.config import (  # noqa: E402
    TrainConfig,
    check_against_schema,
    config_from_dict,
    load_config,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["direct_pt.yaml", "inverse_pt.yaml", "signed_curvature.yaml", "inverse_pt_sigma.yaml"])
def test_example_configs_load_and_resolve_on_v2(name):
    cfg = load_config(REPO / "configs" / name)
    fields = check_against_schema(cfg, load_schema(2))
    assert len(fields) == 23 and fields[-1] == "eta"


def test_inverse_config_is_the_seed():
    cfg = load_config(REPO / "configs" / "inverse_pt.yaml")
    assert cfg.inverse_fields == ["truthMuon_pt"]
    assert cfg.fields == ["truthMuon_eta", "truthMuon_phi", "truthMuon_pt", "truthMuon_q"]
    assert cfg.dim == 32


def test_defaults_have_no_inverse_fields():
    cfg = config_from_dict({})
    assert cfg.inverse_fields == [] and not cfg.signed_curvature and isinstance(cfg, TrainConfig)


@pytest.mark.parametrize("raw, key", [
    ({"dimm": 32}, "dimm"),
    ({"trainer": {"max_epoch": 3}}, "trainer.max_epoch"),
    ({"data": {"batchsize": 3}}, "data.batchsize"),
])
def test_unknown_keys_are_named(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(raw)


@pytest.mark.parametrize("raw, key", [
    ({"dim": "32"}, "dim: expected int"),
    ({"data": {"batch_size": 1.5}}, "data.batch_size: expected int"),
    ({"trainer": {"lr": "fast"}}, "trainer.lr: expected a number"),
    ({"fields": "truthMuon_pt"}, "fields: expected a list"),
    ({"signed_curvature": "yes"}, "signed_curvature: expected true/false"),
    ({"hit_fields": ["r", 3]}, r"hit_fields\[1\]: expected a string"),
])
def test_wrong_types_are_named(raw, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(raw)


@pytest.mark.parametrize("raw, match", [
    ({"fields": ["truthMuon_pT"]}, "not a regression target"),
    ({"inverse_fields": ["truthMuon_pt"], "fields": ["truthMuon_eta"]}, "not in fields"),
    ({"inverse_fields": ["truthMuon_eta"]}, "crosses zero"),
    ({"fields": ["truthMuon_qpt"]}, "signed_curvature: true"),
    ({"signed_curvature": True}, "needs truthMuon_qpt"),
    ({"dim": 30, "heads": 4}, "divisible"),
    ({"data": {"train_fraction": 0.9, "val_fraction": 0.2}}, "sum <= 1"),
])
def test_inconsistent_values(raw, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_eta_on_a_v1_dataset_points_to_migrate():
    cfg = config_from_dict({"hit_fields": ["r", "eta"]})
    with pytest.raises(ConfigError) as err:
        check_against_schema(cfg, load_schema(1))
    msg = str(err.value)
    assert "'eta'" in msg and "v2" in msg and "muon-pipeline migrate" in msg


def test_v1_default_inputs_are_22():
    assert len(check_against_schema(config_from_dict({}), load_schema(1))) == 22


def test_unknown_hit_field_and_truth_leak():
    with pytest.raises(ConfigError, match="no schema version defines"):
        check_against_schema(config_from_dict({"hit_fields": ["etaa"]}), load_schema(2))
    with pytest.raises(ConfigError, match="leak"):
        check_against_schema(config_from_dict({"hit_fields": ["spacePoint_truthLink"]}), load_schema(2))
    with pytest.raises(ConfigError, match="muon-level"):
        check_against_schema(config_from_dict({"hit_fields": ["truthMuon_pt"]}), load_schema(2))


def test_cli_bad_config_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dim: 32\ntrainer:\n  max_epochs: ten\n")
    (tmp_path / "data").mkdir()
    res = CliRunner().invoke(main, ["train", "--config", str(bad), "--data", str(tmp_path / "data"),
                                     "--output", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "trainer.max_epochs: expected int" in res.output and "Traceback" not in res.output


def test_cli_missing_dataset_is_exit_1(tmp_path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text("dim: 32\n")
    (tmp_path / "data").mkdir()
    res = CliRunner().invoke(main, ["train", "--config", str(cfg), "--data", str(tmp_path / "data"),
                                     "--output", str(tmp_path / "run")])
    assert res.exit_code == 1 and "_manifest.json" in res.output


def test_command_module_is_import_light():
    import subprocess
    import sys

    code = ("import sys, pipeline.train.command; "
            "bad = [m for m in ('torch', 'lightning', 'matplotlib', 'scipy') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_frame_fields_are_checked_by_name():
    from pipeline.muon_frame import frame_field_names

    assert config_from_dict({}).frame_fields == frame_field_names()  # the default: every documented field
    assert config_from_dict({"frame_fields": []}).frame_fields == []
    with pytest.raises(ConfigError, match="frame_fields: 'frame_w' is not a muon-frame input"):
        config_from_dict({"frame_fields": ["frame_w"]})
    with pytest.raises(ConfigError, match="frame_fields: duplicate"):
        config_from_dict({"frame_fields": ["frame_v", "frame_v"]})
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        config_from_dict({"trainer": {"max_steps": -1}})


def test_shipped_configs_feed_every_muon_frame_input():
    from pipeline.muon_frame import frame_field_names

    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")):
        cfg = load_config(path)
        # the hit filter must not see them: they are computed from the truth assignment
        assert cfg.frame_fields == ([] if cfg.task == "hit_filter" else frame_field_names()), path.name


@pytest.mark.parametrize(("raw", "message"), [
    ({"loss_beta": float("inf")}, "loss_beta: must be a finite number"),
    ({"trainer": {"threads": 1_000_000}}, "trainer.threads"),
])
def test_more_values_rejected_by_name(raw, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_assignment_field_must_be_an_integer_hit_field():
    schema = load_schema(2)
    for name, message in (("spacePoint_driftR", "is float32"), ("truthMuon_pt", "not a hit field"),
                          ("nope", "not a hit field")):
        with pytest.raises(ConfigError, match=message):
            check_against_schema(config_from_dict({"assignment_field": name}), schema)
    assert check_against_schema(config_from_dict({}), schema)


def test_an_explicit_config_path_never_falls_back_to_a_shipped_config(tmp_path, monkeypatch):
    """`train --config ./inverse_pt.yaml` (a path that does not exist) trained with the shipped inverse_pt,
    exit 0, saying nothing. A path is now a path: no such file is an error; a bare name stays a name."""
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.errors import ConfigError
    from pipeline.train.config import config_path, shipped_dir

    monkeypatch.chdir(tmp_path)
    for spec in ("./inverse_pt.yaml", "sub/inverse_pt.yaml", str(tmp_path / "inverse_pt.yaml")):
        with pytest.raises(ConfigError, match="no such file"):
            config_path(spec)
    assert config_path("inverse_pt") == config_path("inverse_pt.yaml") == shipped_dir() / "inverse_pt.yaml"
    r = CliRunner().invoke(main, ["train", "--config", "./inverse_pt.yaml", "--data", str(tmp_path), "-o",
                                  str(tmp_path / "run")])
    assert r.exit_code == 2 and "no such file" in r.output and not (tmp_path / "run").exists()


def test_yaml_1_1_text_numbers_get_the_hint_and_aliases_are_not_expanded(tmp_path):
    """`lr: 1e-3` (YAML 1.1: text) was refused without the hint the layout error gives; a YAML alias bomb
    in a training config or a layout file exhausted memory when the error message formatted the value."""
    from pipeline.errors import ConfigError
    from pipeline.layout import SourceLayout
    from pipeline.schema import load_schema
    from pipeline.train.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("trainer: {lr: 1e-3}\n")
    with pytest.raises(ConfigError, match=r"1\.0e-3, not 1e-3"):
        load_config(cfg)
    bomb = '&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    for k in range(1, 9):  # nine levels of nine shared lists: 9**9 strings once expanded
        bomb = f"&a{k} [{bomb}, " + ", ".join([f"*a{k - 1}"] * 8) + "]"
    (tmp_path / "bomb.yaml").write_text(f"trainer: {{lr: {bomb}}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "bomb.yaml")
    assert len(str(err.value)) < 400
    (tmp_path / "layout.yaml").write_text(f"fill: {{spacePoint_readOutSide: {bomb}}}\n")
    with pytest.raises(ConfigError) as err:
        SourceLayout.from_yaml(tmp_path / "layout.yaml", load_schema(2))
    assert len(str(err.value)) < 400
