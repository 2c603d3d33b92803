"""The network learns the charge from muon-frame inputs, and a z mirror of the hits flips it.

A short fixed-step run (a step count, not a timed assertion) on a small fixed simulated set, then
two checks against independent references: the truth charge (mis-ID far below the 50 % of a guess),
and the physics of the toroid (mirroring z mirrors the bending: the predicted charge flips).
Also: under bf16 autocast the hit inputs and the task head stay in float32.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from pipeline.train.config import config_from_dict  # noqa: E402

CONFIG = {
    "fields": ["truthMuon_eta", "truthMuon_phi", "truthMuon_pt", "truthMuon_q"],
    "inverse_fields": ["truthMuon_pt"],
    "dim": 16, "heads": 2, "encoder_layers": 1, "regression_layers": 2,
    "data": {"batch_size": 64, "num_workers": 0, "shuffle_buffer": 1024},
    "trainer": {"max_steps": 400, "lr": 3e-3, "warmup_steps": 20, "patience": 0, "accelerator": "cpu",
                "progress_every": 100, "seed": 3},
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """2,500 simulated events (seed 11, 10 background hits each), converted."""
    from pipeline import convert
    from pipeline.config import ConvertConfig
    from pipeline.simulate.generate import SimConfig
    from pipeline.simulate.writer import write_dump

    base = tmp_path_factory.mktemp("learn")
    raw = base / "sim.root"
    write_dump(raw, 2500, seed=11, config=SimConfig(background_per_event=10))
    out = base / "dataset"
    convert([str(raw)], str(out), ConvertConfig(schema_version=2), workers=1, quiet=True)
    return out


@pytest.fixture(scope="module")
def trained(simulated, tmp_path_factory):
    from pipeline.train.fit import train

    run = tmp_path_factory.mktemp("learn-run") / "run"
    summary = train(config_from_dict(CONFIG), simulated, run, quiet=True)
    assert summary["steps"] == 400
    return run


@pytest.mark.slow  # trains 400 steps (~20 s); `make test-fast` skips it, `make test` and CI run it
def test_short_run_learns_the_charge(trained, simulated):
    from pipeline.train.evaluate import predict

    cols, _ = predict(trained, simulated, split="test", device="cpu")
    assert len(cols["true_q"]) > 300
    misid = np.mean(np.sign(cols["pred_q"]) != cols["true_q"])
    assert misid < 0.1, f"charge mis-ID {misid:.1%} after 400 steps"


def mirror_z(table: pa.Table) -> pa.Table:
    """Every hit and muon mirrored in z: z → −z, θ → π − θ, η → −η, stationEta → −stationEta."""
    flips = {"spacePoint_globEdgeHighZ", "spacePoint_globEdgeLowZ", "eta", "spacePoint_stationEta"}
    hits = table.column("hits").combine_chunks()
    values = hits.values
    children, names = [], []
    for i in range(values.type.num_fields):
        name = values.type.field(i).name
        child = values.field(i)
        x = child.to_numpy(zero_copy_only=False)
        if name in flips:
            child = pa.array(-x, type=child.type)
        elif name == "theta":
            child = pa.array((np.pi - x.astype(np.float64)).astype(np.float32), type=child.type)
        children.append(child)
        names.append(name)
    mirrored = pa.ListArray.from_arrays(hits.offsets, pa.StructArray.from_arrays(children, names))
    return table.set_column(table.column_names.index("hits"), "hits", mirrored)


@pytest.mark.slow  # trains 400 steps (~20 s); `make test-fast` skips it, `make test` and CI run it
def test_mirror_in_z_flips_the_predicted_charge(trained, simulated):
    from pipeline.train.data import Normalisation, chunk_from_table, collate
    from pipeline.train.data import open_training_set as open_dataset
    from pipeline.train.module import RegressionModule

    module = RegressionModule.load_from_checkpoint(trained / "checkpoints" / "last.ckpt", map_location="cpu")
    model, cfg, hp = module.model.eval(), module.cfg, module.hparams
    info = open_dataset(simulated)
    table = pq.read_table(info.shards[0]).slice(0, 400)
    norm = Normalisation.from_dict(hp.normalisation)

    def charges(t: pa.Table) -> np.ndarray:
        chunk = chunk_from_table(t, info.schema, list(hp.hit_fields), norm, frame_fields=cfg.frame_fields)
        batch = collate(chunk, np.arange(len(chunk)), cfg.data.max_muons)
        with torch.inference_mode():
            out = model({k: torch.from_numpy(v) for k, v in batch.items()})
        q = model.task.predict(out)["truthMuon_q"].numpy()
        return np.sign(q[batch["muon_mask"]])

    q, q_mirrored = charges(table), charges(mirror_z(table))
    assert len(q) > 500
    flipped = np.mean(q_mirrored == -q)
    assert flipped > 0.9, f"only {flipped:.1%} of the predicted charges flip under z -> -z"


def test_inputs_and_head_stay_float32_under_bf16_autocast():
    from pipeline.schema import load_schema
    from pipeline.train.model import build_model

    cfg = config_from_dict({**CONFIG, "data": {"max_muons": 2}})
    hit_fields = load_schema(2).inputs("hit")
    model = build_model(cfg, hit_fields, load_schema(2).names("muon"))
    seen = {}
    model.encoder.input_net.net[0].register_forward_hook(lambda m, i, o: seen.update(input=i[0].dtype, out=o.dtype))
    model.task.raw_hit_net.net[0].register_forward_hook(lambda m, i, o: seen.update(raw=o.dtype))
    model.encoder.blocks[0].attn.qkv.register_forward_hook(lambda m, i, o: seen.update(attention=o.dtype))
    B, L, F = 3, 7, len(hit_fields) + len(cfg.frame_fields)
    batch = {"hits": torch.randn(B, L, F), "hit_mask": torch.ones(B, L, dtype=torch.bool),
             "link": torch.randint(-1, 2, (B, L)), "muon_mask": torch.ones(B, 2, dtype=torch.bool)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
    assert seen == {"input": torch.float32, "out": torch.float32, "raw": torch.float32,
                    "attention": torch.bfloat16}  # the encoder's attention does run in bf16
    assert out.dtype == torch.float32
