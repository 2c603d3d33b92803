"""``muon-pipeline predict``: scores aligned hit by hit with the parent, atomic, resumable, and tied to
the parent dataset and the checkpoint it was made from.

References: the parent's hits read with pyarrow alone; a stub model whose score is a hit's own input
(a planted marker that must come back at the hit it was read from); the trained model run on each
event alone (no batching, no padding).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from pipeline.cli import main  # noqa: E402
from pipeline.errors import ConfigError, DatasetError  # noqa: E402
from pipeline.train.config import config_from_dict  # noqa: E402

CONFIG = {"task": "hit_filter", "frame_fields": [], "dim": 8, "heads": 2, "encoder_layers": 1,
          "attention": {"kind": "window", "window": 16, "sort_key": "phi"},
          "data": {"batch_size": 8, "num_workers": 0, "shuffle_buffer": 64},
          "trainer": {"max_steps": 3, "warmup_steps": 1, "patience": 0, "accelerator": "cpu", "progress_every": 0}}


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """240 simulated events (30 background hits each) in 3 shards of row groups of 25."""
    from pipeline import convert
    from pipeline.config import ConvertConfig
    from pipeline.simulate.generate import SimConfig
    from pipeline.simulate.writer import write_dump

    base = tmp_path_factory.mktemp("predict")
    write_dump(base / "sim.root", 240, seed=8, config=SimConfig(background_per_event=30))
    convert([str(base / "sim.root")], str(base / "ds"),
            ConvertConfig(schema_version=2, shard_events=80, row_group_size=25), workers=1, quiet=True)
    return base / "ds"


@pytest.fixture(scope="module")
def run(parent, tmp_path_factory):
    from pipeline.train.fit import train

    out = tmp_path_factory.mktemp("predict-run") / "run"
    train(config_from_dict(CONFIG), parent, out, quiet=True)
    return out


def parent_events(ds) -> dict[tuple[str, int], dict]:
    """(shard path, row) → eventNumber and the hits' spacePoint_time, read with pyarrow alone."""
    out = {}
    for shard in sorted((ds / "shards").glob("*.parquet")):
        for row, ev in enumerate(pq.read_table(shard, columns=["eventNumber", "hits"]).to_pylist()):
            out[(f"shards/{shard.name}", row)] = {"eventNumber": ev["eventNumber"],
                                                  "time": np.array([h["spacePoint_time"] for h in ev["hits"]])}
    return out


def read_parts(scores) -> list[dict]:
    m = json.loads((scores / "_scores.json").read_text())
    return [r for p in m["parts"] for r in pq.read_table(scores / p["path"]).to_pylist()]


class Marker(torch.nn.Module):
    """A stub filter whose score of a hit is its own normalised spacePoint_time input."""

    def __init__(self, column: int) -> None:
        super().__init__()
        self.column = column

    def forward(self, batch):
        return batch["hits"][..., self.column]

    def scores(self, out):
        return out.float()


def test_a_planted_marker_comes_back_at_its_hit(parent, run):
    from pipeline.train.predict import load_hit_filter, open_split, scored_row_groups

    module, _ = load_hit_filter(run)
    info, stream = open_split(module, parent, "all", batch_size=5)  # batches cut across lengths
    col = list(module.hparams.hit_fields).index("spacePoint_time")
    norm = module.hparams.normalisation["spacePoint_time"]
    want = parent_events(parent)
    n = 0
    for unit, chunk, flat in scored_row_groups(Marker(col), stream, "cpu"):
        shard = info.manifest["shards"][unit.shard_index]["path"]
        for i, row in enumerate((chunk.row & 0xFFFFFFFF).tolist()):
            got = flat[chunk.hit_offsets[i]:chunk.hit_offsets[i + 1]] * norm["std"] + norm["mean"]
            assert np.allclose(got, want[(shard, row)]["time"], rtol=1e-5, atol=1e-2), (shard, row)
            n += 1
    assert n == len(want)


def test_predict_writes_the_scores_of_each_event_alone(parent, run, tmp_path):
    from pipeline.train.predict import load_hit_filter, open_scores

    r = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", str(tmp_path / "sc"),
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    manifest = open_scores(tmp_path / "sc", parent)
    assert manifest["parent"]["dataset_id"] == json.loads((parent / "_manifest.json").read_text())["dataset_id"]
    want = parent_events(parent)
    rows = read_parts(tmp_path / "sc")
    assert len(rows) == len(want) == manifest["events"]
    module, _ = load_hit_filter(run)
    model = module.model.eval()
    from pipeline.train.data import Normalisation
    from pipeline.train.data.chunks import chunk_from_table

    norm = Normalisation.from_dict(module.hparams.normalisation)
    for shard in sorted((parent / "shards").glob("*.parquet")):
        table = pq.read_table(shard)
        from pipeline.schema import load_schema

        chunk = chunk_from_table(table, load_schema(2), list(module.hparams.hit_fields), norm)
        for rec in (x for x in rows if x["shard"] == f"shards/{shard.name}"):
            lo, hi = chunk.hit_offsets[rec["row"]], chunk.hit_offsets[rec["row"] + 1]
            assert rec["eventNumber"] == want[(rec["shard"], rec["row"])]["eventNumber"]
            hits = torch.from_numpy(chunk.hits[lo:hi][None])
            with torch.inference_mode():
                alone = model.scores(model({"hits": hits, "hit_mask": torch.ones(1, hi - lo, dtype=torch.bool)}))[0]
            assert np.allclose(rec["scores"], alone.numpy(), atol=1e-5), rec["row"]
    again = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", str(tmp_path / "sc")])
    assert again.exit_code == 0 and "complete already" in again.output


def test_a_changed_parent_is_refused_by_name(parent, run, tmp_path):
    from pipeline.train.predict import open_scores, predict

    ds = tmp_path / "ds"
    shutil.copytree(parent, ds)
    predict(run, ds, tmp_path / "sc", device="cpu")
    manifest = ds / "_manifest.json"
    manifest.write_text(manifest.read_text() + " ")  # any change of the parent's manifest
    with pytest.raises(DatasetError, match="the parent dataset changed"):
        open_scores(tmp_path / "sc", ds)
    with pytest.raises(ConfigError, match="the parent dataset changed: its manifest sha256"):
        predict(run, ds, tmp_path / "sc", device="cpu")


def test_an_interrupted_predict_shows_nothing_partial_and_resumes_to_the_same_result(parent, run, tmp_path,
                                                                                      monkeypatch):
    import pipeline.train.predict as p

    whole = p.predict(run, parent, tmp_path / "whole", device="cpu")
    real, calls = p.scores_table, []

    def killed_inside_the_second_part(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # the first part is 4 row groups: a kill after the second part's first
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(p, "scores_table", killed_inside_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        p.predict(run, parent, tmp_path / "sc", device="cpu")
    with pytest.raises(DatasetError, match="not a finished scores dataset"):
        p.open_scores(tmp_path / "sc")
    done = sorted(x.name for x in (tmp_path / "sc" / "parts").iterdir())
    assert len(done) == 1 and not done[0].startswith(".")  # the finished part only, no temporary
    first = (tmp_path / "sc" / "parts" / done[0]).stat().st_mtime_ns
    monkeypatch.setattr(p, "scores_table", real)
    resumed = p.predict(run, parent, tmp_path / "sc", device="cpu")
    assert resumed["resumed_parts"] == 1 and (tmp_path / "sc" / "parts" / done[0]).stat().st_mtime_ns == first
    assert [q["sha256"] for q in resumed["parts"]] == [q["sha256"] for q in whole["parts"]]
    assert read_parts(tmp_path / "sc") == read_parts(tmp_path / "whole")


def write_foreign_scores(parent, out, drop_one: bool = False) -> None:
    """Scores written by another tool, by the documented format only (pyarrow + json + hashlib):
    the score of a hit is its index in the event; with ``drop_one`` one event of the last part lacks one."""
    import hashlib

    import pyarrow as pa

    (out / "parts").mkdir(parents=True)
    parts = []
    shards = sorted((parent / "shards").glob("*.parquet"))
    for k, shard in enumerate(shards):
        rows = pq.read_table(shard, columns=["eventNumber", "hits"]).to_pylist()
        scores = [[float(i) for i in range(len(r["hits"]))] for r in rows]
        if drop_one and k == len(shards) - 1:
            scores[7] = scores[7][:-1]
        table = pa.table({"shard": [f"shards/{shard.name}"] * len(rows), "row": list(range(len(rows))),
                          "eventNumber": [r["eventNumber"] for r in rows],
                          "scores": pa.array(scores, pa.list_(pa.float32()))})
        pq.write_table(table, out / "parts" / shard.name)
        parts.append({"path": f"parts/{shard.name}", "shard": f"shards/{shard.name}", "rows": len(rows)})
    sha = hashlib.sha256((parent / "_manifest.json").read_bytes()).hexdigest()
    manifest = {"format": "muon-pipeline/hit-scores", "format_version": 1,
                "parent": {"path": str(parent), "dataset_id": "", "manifest_sha256": sha},
                "producer": {"tool": "another"}, "split": "all", "parts": parts}
    (out / "_scores.json").write_text(json.dumps(manifest))


def test_scores_written_by_another_tool_by_the_documented_format_are_read_and_checked(parent, tmp_path):
    from pipeline.train.predict import open_scores

    write_foreign_scores(parent, tmp_path / "good")
    assert len(open_scores(tmp_path / "good", parent)["parts"]) == 3
    write_foreign_scores(parent, tmp_path / "bad", drop_one=True)
    with pytest.raises(DatasetError, match=r"row 7 of shards/part-\w+\.parquet \(eventNumber \d+\) has \d+ scores; "
                                           r"the parent event \(eventNumber \d+\) has \d+ hits"):
        open_scores(tmp_path / "bad", parent)


def test_an_output_folder_holding_other_files_is_refused(parent, run, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", str(tmp_path / "busy")])
    assert r.exit_code == ConfigError.exit_code and "holds other files (notes.txt)" in r.output, r.output
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def test_a_split_scores_exactly_its_events(parent, run, tmp_path):
    from pipeline.train.data.split import SPLITS, split_codes
    from pipeline.train.predict import predict

    m = predict(run, parent, tmp_path / "sc", split="test", device="cpu")
    events = np.array([e["eventNumber"] for e in parent_events(parent).values()])
    d = config_from_dict(CONFIG).data
    want = set(events[split_codes(events, d.train_fraction, d.val_fraction, d.split_seed) == SPLITS["test"]].tolist())
    got = [r["eventNumber"] for r in read_parts(tmp_path / "sc")]
    assert len(got) == len(set(got)) == m["events"] and set(got) == want and 0 < len(want) < len(events)
    assert m["split"] == "test"
