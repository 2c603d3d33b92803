"""train → checkpoint → resume → evaluate → compare through the CLI, on a converted dataset."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("lightning")

import pyarrow.parquet as pq  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from pipeline.cli import main  # noqa: E402

TINY = """
fields: [truthMuon_eta, truthMuon_phi, truthMuon_pt, truthMuon_q]
inverse_fields: [truthMuon_pt]
dim: 16
heads: 2
encoder_layers: 1
data: {batch_size: 32, num_workers: 0, shuffle_buffer: 256}
trainer: {max_epochs: 2, lr: 3.0e-3, warmup_steps: 2, patience: 3}
"""



def invoke(*args: str) -> str:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.slow  # three training runs + evaluate + compare (~10 s)
def test_train_resume_evaluate_compare(dataset, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run = tmp_path / "run"
    invoke("train", "--config", cfg, "--data", dataset, "--output", run)
    for name in ("config.yaml", "run.json", "summary.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert len(info["hit_fields"]) == 23 and "eta" in info["normalisation"]
    assert info["target_scaling"]["truthMuon_pt"]["space"] == "inverse"
    assert {"torch", "lightning", "muon-pipeline"} <= set(info["versions"])
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2

    # A second train into the same directory must not overwrite it silently.
    res = CliRunner().invoke(main, ["train", "--config", str(cfg), "--data", str(dataset), "--output", str(run)])
    assert res.exit_code == 2 and "--resume" in res.output

    invoke("train", "--data", dataset, "--output", run, "--resume", "--max-epochs", "3")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["best_val_loss"] is not None
    # resuming a finished run trains nothing and leaves its summary as it was (it wrote epochs 2, 0.1 s)
    before = (run / "summary.json").read_bytes()
    invoke("train", "--data", dataset, "--output", run, "--resume", "--max-epochs", "3")
    assert (run / "summary.json").read_bytes() == before

    out = invoke("evaluate", run, "--data", dataset, "--split", "all")
    assert "σ(pT)/pT core" in out
    ev = run / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    preds = pq.read_table(ev / "predictions.parquet").to_pydict()
    assert metrics["n_muons"] == len(preds["true_pt"]) > 0
    assert all(0 < p < 1e7 for p in preds["pred_pt"])  # GeV, finite, positive
    for png in ("pt_resolution_vs_pt.png", "pt_resolution_by_region.png", "pt_scale_vs_pt.png",
                "charge_misid_vs_pt.png", "eta_phi_residuals.png"):
        assert (ev / png).stat().st_size > 1000
    assert metrics["baseline_status"] == "ok" or metrics["baseline_status"].startswith(("unavailable", "failed"))

    assert f"evaluate: wrote {ev}/" in out
    table = invoke("compare", run, ev, "--output", tmp_path / "cmp")
    assert table.startswith(f"| metric | run ({run}) | run ({ev}) |") and (tmp_path / "cmp" / "compare.md").is_file()
    assert (tmp_path / "cmp" / "pt_resolution_overlay.png").is_file()
    assert f"compare: wrote {tmp_path / 'cmp' / 'compare.md'}" in table

    # issue 12: another split is other muons; compare refuses to put them in one table
    invoke("evaluate", run, "--data", dataset, "--split", "val", "--output", tmp_path / "ev_val", "--no-plots")
    val = json.loads((tmp_path / "ev_val" / "metrics.json").read_text())
    assert val["dataset_id"] == metrics["dataset_id"] and val["sample_id"] != metrics["sample_id"]
    res = CliRunner().invoke(main, ["compare", str(run), str(tmp_path / "ev_val"), "--output", str(tmp_path / "c2")])
    assert res.exit_code == 2 and "different datasets or splits" in res.output and "(val split)" in res.output
    assert not (tmp_path / "c2").exists()

    # A re-evaluation with --no-plots left the earlier evaluation's plots beside its new numbers.
    (ev / "notes.txt").write_text("mine")
    invoke("evaluate", run, "--data", dataset, "--split", "val", "--no-plots")
    assert sorted(p.name for p in ev.iterdir()) == ["metrics.json", "notes.txt", "predictions.parquet"]


def test_evaluate_v2_run_on_v1_data_is_a_config_error(dataset, tmp_path, converted_random_v1):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("max_epochs: 2", "max_epochs: 1"))
    run = tmp_path / "run"
    invoke("train", "--config", cfg, "--data", dataset, "--output", run, "--limit-train-batches", "1")
    v1 = converted_random_v1
    res = CliRunner().invoke(main, ["evaluate", str(run), "--data", str(v1), "--no-plots"])
    assert res.exit_code == 2 and "migrate" in res.output
    assert not (run / "eval").exists()  # issue 12: a failed evaluate leaves no empty folder


def test_step_budget_short_runs_resume_and_epoch_override(dataset, tmp_path):
    """A run shorter than one epoch still validates; --resume with a config extends max_steps;
    --max-epochs replaces a step budget instead of being ignored."""
    cfg = tmp_path / "steps.yaml"
    cfg.write_text(TINY.replace("trainer: {max_epochs: 2,", "trainer: {max_steps: 4, max_epochs: 50,"))
    run = tmp_path / "run"
    invoke("train", "--config", cfg, "--data", dataset, "--output", run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["best_val_loss"] is not None  # validated within the first epoch
    assert (run / "checkpoints" / "best.ckpt").is_file()

    cfg.write_text(TINY.replace("trainer: {max_epochs: 2,", "trainer: {max_steps: 7, max_epochs: 50,"))
    invoke("train", "--config", cfg, "--data", dataset, "--output", run, "--resume")
    assert json.loads((run / "summary.json").read_text())["steps"] == 7

    other = tmp_path / "epochs"
    invoke("train", "--config", cfg, "--data", dataset, "--output", other, "--max-epochs", "1")
    summary = json.loads((other / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["steps"] > 7  # one whole epoch, not the 7-step budget


def test_run_from_before_frame_fields_still_evaluates(dataset, tmp_path):
    """A checkpoint whose saved config has no frame_fields (older runs) means 'none', not 'all ten'."""
    import torch

    from pipeline.train.module import RegressionModule

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY + "frame_fields: []\nloss_beta: 1.0\n")
    run = tmp_path / "run"
    invoke("train", "--config", cfg, "--data", dataset, "--output", run, "--limit-train-batches", "2",
           "--max-epochs", "1")
    for name in ("best.ckpt", "last.ckpt"):  # rewrite the saved config as an older version wrote it
        path = run / "checkpoints" / name
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        for key in ("frame_fields", "loss_beta"):
            ckpt["hyper_parameters"]["config"].pop(key)
        torch.save(ckpt, path)
    module = RegressionModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", map_location="cpu")
    assert module.cfg.frame_fields == [] and module.cfg.loss_beta == 1.0
    assert "σ(pT)/pT core" in invoke("evaluate", run, "--data", dataset, "--no-plots")


@pytest.mark.slow  # a fresh interpreter importing torch and lightning, then a 2-step run (~8 s)
def test_training_stage_runs_without_uproot_or_awkward(dataset, tmp_path):
    """A GPU host may have torch, lightning and pyarrow but not the ROOT readers: `train`, `evaluate`'s
    imports, `validate` and the loader benchmark's modules must not need uproot or awkward (a dataset
    made elsewhere is carried there)."""
    import subprocess
    import sys

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("trainer: {max_epochs: 2,", "trainer: {max_steps: 2, max_epochs: 1,"))
    code = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("uproot", "awkward"):
            raise ImportError("not installed on this host: " + name)
sys.meta_path.insert(0, Block())
for m in [m for m in sys.modules if m.split(".")[0] in ("uproot", "awkward")]:
    del sys.modules[m]
import pipeline.train.evaluate, pipeline.train.data.resident, pipeline.train.compare
from click.testing import CliRunner
from pipeline.cli import main
for args in (["train", "--config", {str(cfg)!r}, "--data", {str(dataset)!r}, "--output", {str(tmp_path / "run")!r}],
             ["validate", {str(dataset)!r}]):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, (args, r.output)
assert not [m for m in sys.modules if m.split(".")[0] in ("uproot", "awkward")]
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
