"""The hit-filter task: config checks, every hit and every muon reach the loss, and a short run learns.

The learning check is by step count on a small simulated set with background (no timing): the test
split's ROC AUC far above a constant score's 0.5, and the 0.99 working point above the purity of
keeping every hit.
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from pipeline.cli import main  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.train.config import config_from_dict  # noqa: E402

CONFIG = {"task": "hit_filter", "frame_fields": [], "dim": 16, "heads": 2, "encoder_layers": 2,
          "attention": {"kind": "window", "window": 32, "sort_key": "phi"},
          "data": {"batch_size": 16, "num_workers": 0, "shuffle_buffer": 256},
          "trainer": {"max_steps": 200, "lr": 3e-3, "warmup_steps": 20, "patience": 0, "accelerator": "cpu",
                      "progress_every": 0, "seed": 3}}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """600 simulated events (seed 5, 60 background hits each; 1 or 2 muons), 3 shards of row groups of 50."""
    from pipeline import convert
    from pipeline.config import ConvertConfig
    from pipeline.simulate.generate import SimConfig
    from pipeline.simulate.writer import write_dump

    base = tmp_path_factory.mktemp("hitfilter")
    write_dump(base / "sim.root", 600, seed=5, config=SimConfig(background_per_event=60))
    convert([str(base / "sim.root")], str(base / "ds"),
            ConvertConfig(schema_version=2, shard_events=250, row_group_size=50), workers=1, quiet=True)
    return base / "ds"


def parent_hits(ds) -> dict[int, np.ndarray]:
    """eventNumber → truthLink of each hit, in the shard's order (read with pyarrow, no pipeline code)."""
    out = {}
    for shard in sorted((ds / "shards").glob("*.parquet")):
        t = pq.read_table(shard, columns=["eventNumber", "hits"]).to_pylist()
        for row in t:
            out[row["eventNumber"]] = np.array([h["spacePoint_truthLink"] for h in row["hits"]])
    return out


def test_hit_filter_config_refuses_truth_derived_inputs():
    with pytest.raises(ConfigError, match="frame_fields: task hit_filter cannot use muon-frame inputs"):
        config_from_dict({"task": "hit_filter"})  # frame_fields default: every muon-frame input
    with pytest.raises(ConfigError, match="task: expected regression or hit_filter"):
        config_from_dict({"task": "tracking"})
    with pytest.raises(ConfigError, match="pos_weight"):
        config_from_dict({**CONFIG, "pos_weight": 0})
    with pytest.raises(ConfigError, match="uncertainty: 'laplace' is a width of the per-muon regression"):
        config_from_dict({**CONFIG, "uncertainty": "laplace"})


def test_cli_refuses_a_bad_hit_filter_config_in_one_line(tmp_path, simulated):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("task: hit_filter\n")
    r = CliRunner().invoke(main, ["train", "--config", str(cfg), "--data", str(simulated), "-o", str(tmp_path / "r")])
    assert r.exit_code == ConfigError.exit_code and "frame_fields: task hit_filter" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("resident", [False, True])
def test_loader_gives_every_hit_and_labels_every_muon(simulated, resident):
    """With data.max_muons: 1 the regression drops the second muon's hits to background; the hit filter
    must not: every hit of every event, labelled link >= 0, in the parent's order."""
    from pipeline.train.data import normalisation_for, open_training_set
    from pipeline.train.data.resident import ResidentStream
    from pipeline.train.data.stream import make_stream

    cfg = config_from_dict({**CONFIG, "data": {**CONFIG["data"], "max_muons": 1}})
    info = open_training_set(simulated)
    fields = info.schema.inputs("hit")
    stream = make_stream(info, fields, normalisation_for(info, fields), "all", cfg, shuffle=False)
    source = ResidentStream(stream, "cpu") if resident else stream
    want = parent_hits(simulated)
    assert sum(len(v) > 0 and (v.max() >= 1) for v in want.values()) > 100  # many events with 2 muons
    seen = 0
    for batch in source:
        for b, event in enumerate(batch["event"].tolist()):
            n = int(batch["hit_mask"][b].sum())
            assert n == len(want[event])
            assert np.array_equal(batch["link"][b, :n].numpy() >= 0, want[event] >= 0), event
            seen += 1
    assert seen == len(want)


@pytest.mark.slow  # 200 steps (~25 s on a busy 2-core CPU)
def test_short_hit_filter_run_learns(simulated, tmp_path):
    from pipeline.train.evaluate import evaluate
    from pipeline.train.fit import train

    summary = train(config_from_dict(CONFIG), simulated, tmp_path / "run", quiet=True)
    assert summary["steps"] == 200
    m = evaluate(tmp_path / "run", simulated, tmp_path / "eval", split="test", plots=True)
    assert m["task"] == "hit_filter" and m["auc"] > 0.85, m["auc"]
    wp = m["working_points"]["efficiency_0.99"]
    constant_purity = m["muon_hits_per_event"] / m["hits_per_event"]  # keeping every hit
    assert wp["efficiency"] >= 0.99 and wp["purity"] > constant_purity + 0.2, (wp, constant_purity)
    assert set(m["technology"]) >= {"MDT", "RPC", "TGC"} and set(m["region"]) >= {"barrel", "endcap"}
    assert {"hit_filter_roc.png", "hit_filter_purity.png", "hit_filter_technology.png"} <= set(m["written"])


@pytest.mark.slow  # three short runs (~30 s)
def test_a_stopped_hit_filter_run_resumes_to_the_uninterrupted_weights(monkeypatch, tmp_path, simulated):
    """The resume guarantee holds for the hit filter (its own model and loss, windowed attention): stopped by
    SIGTERM inside the second epoch and resumed, it ends with the uninterrupted run's weights, bit for bit."""
    from test_train_resume import run, same_weights

    cfg = {**CONFIG, "data": {**CONFIG["data"], "resident": "off"},
           "trainer": {**CONFIG["trainer"], "max_steps": 0, "max_epochs": 2, "threads": 1, "checkpoint_every": 0}}
    ref, ref_w = run(monkeypatch, cfg, simulated, tmp_path / "ref", [])
    assert isinstance(ref, dict), ref
    stop_at = ref["steps"] // 2 + 3
    stopped, _ = run(monkeypatch, cfg, simulated, tmp_path / "run", [], stop_at=stop_at)
    assert getattr(stopped, "exit_code", None) == 143, stopped
    resumed, w = run(monkeypatch, None, simulated, tmp_path / "run", [], resume=True)
    assert isinstance(resumed, dict) and resumed["steps"] == ref["steps"], resumed
    assert same_weights(ref_w, w)


def test_compare_refuses_a_hit_filter_evaluation_in_one_line(tmp_path):
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "metrics.json").write_text('{"task": "hit_filter", "auc": 0.9, "working_points": {}}')
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "ev"), "-o", str(tmp_path / "cmp")])
    assert r.exit_code == ConfigError.exit_code and "an evaluation of a hit filter" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "cmp").exists()
