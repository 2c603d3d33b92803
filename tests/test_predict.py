"""``muon-pipeline predict``: scores in the one scores format (the one ``filter`` reads), aligned hit by
hit with the parent, atomic, resumable, tied to the parent dataset and the checkpoint it was made from,
and the chain train (hit_filter) → predict → filter → validate.

References: the parent's hits read with pyarrow alone; a stub model whose score is a hit's own input
(a planted marker that must come back at the hit it was read from); the trained model run on each
event alone (no batching, no padding); the checkpoint's sha256 by hashlib.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from pipeline.cli import main  # noqa: E402
from pipeline.errors import ConfigError, DatasetError  # noqa: E402
from pipeline.scores import open_scores, parent_ref  # noqa: E402
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
    """Every scored row as {shard, row, eventNumber, score}, read with json + pyarrow alone: the row is the
    ``row`` column where the file has one, else the row's position (scores of every event)."""
    m = json.loads((scores / "_manifest.json").read_text())
    out = []
    for f in m["files"]:
        for i, r in enumerate(pq.read_table(scores / f["path"]).to_pylist()):
            out.append({"shard": f["parent_shard"], "row": r.get("row", i), "eventNumber": r["eventNumber"],
                        "score": r["score"]})
    return out


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


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
    from pipeline.train.predict import load_hit_filter

    r = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", str(tmp_path / "sc"),
                                  "--device", "cpu"])
    assert r.exit_code == 0, r.output
    sc = open_scores(str(tmp_path / "sc"), parent_ref(str(parent))[0])
    assert sc.parent["dataset_id"] == json.loads((parent / "_manifest.json").read_text())["dataset_id"]
    assert sc.split == "all" and sc.checkpoint_sha256 == hashlib.sha256(
        (run / "checkpoints" / "best.ckpt").read_bytes()).hexdigest()
    assert "row" not in pq.read_schema(tmp_path / "sc" / sc.manifest["files"][0]["path"]).names
    want = parent_events(parent)
    rows = read_parts(tmp_path / "sc")
    assert len(rows) == len(want) == sc.verify(str(parent))[0] == sum(f["rows"] for f in sc.manifest["files"])
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
            assert np.allclose(rec["score"], alone.numpy(), atol=1e-5), rec["row"]
    again = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", str(tmp_path / "sc")])
    assert again.exit_code == 0 and "complete already" in again.output


def test_a_changed_parent_is_refused_by_name(parent, run, tmp_path):
    from pipeline.train.predict import predict

    ds = tmp_path / "ds"
    shutil.copytree(parent, ds)
    predict(run, ds, tmp_path / "sc", device="cpu")
    manifest = ds / "_manifest.json"
    manifest.write_text(manifest.read_text() + " ")  # any change of the parent's manifest
    with pytest.raises(DatasetError, match="manifest has changed since"):
        open_scores(str(tmp_path / "sc"), parent_ref(str(ds))[0])
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
    with pytest.raises(DatasetError, match="not a finished scores folder .a predict run that has not finished"):
        open_scores(str(tmp_path / "sc"))
    done = sorted(x.name for x in (tmp_path / "sc" / "scores").iterdir())
    assert len(done) == 1 and not done[0].startswith(".")  # the finished file only, no temporary
    first = (tmp_path / "sc" / "scores" / done[0]).stat().st_mtime_ns
    monkeypatch.setattr(p, "scores_table", real)
    resumed = p.predict(run, parent, tmp_path / "sc", device="cpu")
    assert resumed["resumed_parts"] == 1 and (tmp_path / "sc" / "scores" / done[0]).stat().st_mtime_ns == first
    assert [q["sha256"] for q in resumed["files"]] == [q["sha256"] for q in whole["files"]]
    assert read_parts(tmp_path / "sc") == read_parts(tmp_path / "whole")


def write_foreign_scores(parent, out, drop_one: bool = False) -> None:
    """Scores of the even rows only, written by another tool by the documented format alone (pyarrow + json
    + hashlib, with the ``row`` column and a ``split``): the score of a hit is its index in the event; with
    ``drop_one`` the event at row 14 of the last shard lacks one."""
    import pyarrow as pa

    (out / "scores").mkdir(parents=True)
    files = []
    shards = sorted((parent / "shards").glob("*.parquet"))
    for k, shard in enumerate(shards):
        rows = pq.read_table(shard, columns=["eventNumber", "hits"]).to_pylist()
        keep = list(range(0, len(rows), 2))
        scores = {i: [float(j) for j in range(len(rows[i]["hits"]))] for i in keep}
        if drop_one and k == len(shards) - 1:
            scores[14] = scores[14][:-1]
        table = pa.table({"row": pa.array(keep, pa.int64()), "eventNumber": [rows[i]["eventNumber"] for i in keep],
                          "score": pa.array([scores[i] for i in keep], pa.list_(pa.float32()))})
        pq.write_table(table, out / "scores" / shard.name)
        files.append({"path": f"scores/{shard.name}", "parent_shard": f"shards/{shard.name}", "rows": len(keep),
                      "hits": sum(len(v) for v in scores.values()),
                      "sha256": hashlib.sha256((out / "scores" / shard.name).read_bytes()).hexdigest()})
    sha = hashlib.sha256((parent / "_manifest.json").read_bytes()).hexdigest()
    dataset_id = json.loads((parent / "_manifest.json").read_text())["dataset_id"]
    manifest = {"format": "muon-pipeline/scores", "format_version": 1,
                "parent": {"path": str(parent), "dataset_id": dataset_id, "manifest_sha256": sha},
                "run": {"tool": "another"}, "split": {"name": "even rows"}, "files": files}
    (out / "_manifest.json").write_text(json.dumps(manifest))


def test_scores_of_a_subset_written_by_another_tool_by_the_documented_format_are_read_and_checked(parent, tmp_path):
    write_foreign_scores(parent, tmp_path / "good")
    ref = parent_ref(str(parent))[0]
    want = parent_events(parent)
    assert open_scores(str(tmp_path / "good"), ref).verify(str(parent)) == (
        sum(1 for (_, row) in want if row % 2 == 0), sum(len(v["time"]) for (_, row), v in want.items() if row % 2 == 0))
    write_foreign_scores(parent, tmp_path / "bad", drop_one=True)
    last = f"shards/{sorted((parent / 'shards').glob('*.parquet'))[-1].name}"
    ev = want[(last, 14)]
    with pytest.raises(DatasetError, match=re.escape(f"for parent shard {last}: row 14 (eventNumber "
                                                     f"{ev['eventNumber']}): {len(ev['time']) - 1} scores, the event "
                                                     f"has {len(ev['time'])} hits")):
        open_scores(str(tmp_path / "bad"), ref).verify(str(parent))


def test_an_output_folder_holding_other_files_is_refused(parent, run, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    r = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", str(tmp_path / "busy")])
    assert r.exit_code == ConfigError.exit_code and "holds other files (notes.txt)" in r.output, r.output
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]


def test_a_split_scores_exactly_its_events_at_their_rows(parent, run, tmp_path):
    from pipeline.train.data.split import SPLITS, split_codes
    from pipeline.train.predict import predict

    m = predict(run, parent, tmp_path / "sc", split="test", device="cpu")
    by_row = parent_events(parent)
    events = np.array([e["eventNumber"] for e in by_row.values()])
    d = config_from_dict(CONFIG).data
    want = set(events[split_codes(events, d.train_fraction, d.val_fraction, d.split_seed) == SPLITS["test"]].tolist())
    got = read_parts(tmp_path / "sc")
    assert len(got) == len({r["eventNumber"] for r in got}) == m["events"]
    assert {r["eventNumber"] for r in got} == want and 0 < len(want) < len(events)
    assert all(by_row[(r["shard"], r["row"])]["eventNumber"] == r["eventNumber"] and
               len(r["score"]) == len(by_row[(r["shard"], r["row"])]["time"]) for r in got)
    assert m["split"] == {"name": "test", "train_fraction": d.train_fraction, "val_fraction": d.val_fraction,
                          "seed": d.split_seed}
    assert open_scores(str(tmp_path / "sc"), parent_ref(str(parent))[0]).verify(str(parent))[0] == len(want)
    with pytest.raises(ConfigError, match="the split is"):  # resuming it as another split
        predict(run, parent, tmp_path / "sc", split="val", device="cpu")


def test_predict_reads_the_parent_under_the_readers_lock(parent, run, tmp_path):
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running convert, finalize or migrate holds it
        r = cli("predict", run, "--data", parent, "-o", tmp_path / "sc", "--device", "cpu")
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert r.exit_code == ConfigError.exit_code and len(lines) == 1, r.output
        assert f"{parent} is being written by" in lines[0] and "this predict reads" in lines[0], lines
        assert not (tmp_path / "sc" / "_manifest.json").exists()
    finally:
        os.close(fd)


def test_train_predict_filter_validate_and_split_scores_refused_by_filter(parent, run, tmp_path):
    """The chain: a hit_filter run → predict --split all → filter --working-point 0.9 → the derived
    dataset's lineage names the run's checkpoint (its sha256), and validate passes; predict --split test
    scores are refused by filter in one line that says which events they cover and how to make usable ones."""
    r = cli("predict", run, "--data", parent, "-o", tmp_path / "all", "--split", "all", "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = cli("filter", parent, "--scores", tmp_path / "all", "--working-point", "0.9", "-o", tmp_path / "tracking",
            "-q")
    assert r.exit_code == 0, r.output
    lineage = json.loads((tmp_path / "tracking" / "_manifest.json").read_text())["lineage"]
    assert lineage["scores"]["checkpoint_sha256"] == hashlib.sha256(
        (run / "checkpoints" / "best.ckpt").read_bytes()).hexdigest()
    assert lineage["scores"]["scores_id"] == hashlib.sha256((tmp_path / "all" / "_manifest.json").read_bytes()).hexdigest()
    r = cli("validate", tmp_path / "tracking")
    assert r.exit_code == 0, r.output

    r = cli("predict", run, "--data", parent, "-o", tmp_path / "test", "--split", "test", "--device", "cpu")
    assert r.exit_code == 0, r.output
    r = cli("filter", parent, "--scores", tmp_path / "test", "--working-point", "0.9", "-o", tmp_path / "no", "-q")
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == DatasetError.exit_code and len(lines) == 1 and "Traceback" not in r.output, r.output
    assert "cover the test split" in lines[0] and f"predict RUN --data {parent} --split all" in lines[0], lines
    assert not (tmp_path / "no" / "_manifest.json").exists()
    sc = open_scores(str(tmp_path / "test"), parent_ref(str(parent))[0])
    f = sc.manifest["files"][0]
    with pytest.raises(DatasetError, match="cover the test split"):
        sc.for_shard(f["parent_shard"], np.zeros(0, np.int64), np.zeros(1, np.int64))


def test_a_changed_checkpoint_is_refused_by_name(parent, run, tmp_path):
    from pipeline.train.predict import predict

    mine = tmp_path / "run"
    shutil.copytree(run, mine)
    predict(mine, parent, tmp_path / "sc", device="cpu")
    ckpt = mine / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["note"] = "retrained"  # any change of the checkpoint file
    torch.save(state, ckpt)
    with pytest.raises(ConfigError, match="the run's checkpoint changed: its sha256 is "
                                          f"{hashlib.sha256(ckpt.read_bytes()).hexdigest()} now"):
        predict(mine, parent, tmp_path / "sc", device="cpu")


def test_an_output_inside_the_dataset_is_refused(parent, run, tmp_path):
    """`-o DS/sc` wrote scores inside the parent (validate still passed, a reconfigure left them behind);
    `-o DS` blamed a reader holding DS (predict's own lock)."""
    before = sorted(p.relative_to(parent).as_posix() for p in Path(parent).rglob("*"))
    for output in (f"{parent}/sc", str(parent), f"{parent}/shards/../sc"):
        r = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", output])
        assert r.exit_code == ConfigError.exit_code and "dataset folder" in r.output, (output, r.output)
    assert sorted(p.relative_to(parent).as_posix() for p in Path(parent).rglob("*")) == before


def test_a_resume_with_another_batch_size_is_refused(parent, run, tmp_path):
    """Scores differ in the last bit between batch sizes: a preempted run resumed with another one mixed
    two results that no single run gives."""
    r = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", str(tmp_path / "sc"),
                                  "--batch-size", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["predict", str(run), "--data", str(parent), "-o", str(tmp_path / "sc"),
                                  "--batch-size", "3", "--device", "cpu"])
    assert r.exit_code == ConfigError.exit_code and "the batch size is 3 now but 2" in r.output, r.output
