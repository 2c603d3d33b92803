"""The scores format: write_scores / open_scores round trip, alignment and identity checks, scores of a
subset (the ``row`` column, ``split``) checked and refused by filter, the documented pyarrow-only writer,
and the working-point threshold against brute force."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from derived import cli, hit_score, make_scores, parent_dataset, shard_scores

from pipeline.derive_flow import working_point_threshold
from pipeline.errors import ConfigError, DatasetError
from pipeline.scores import open_scores, parent_ref, write_scores

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return parent_dataset(tmp_path_factory.mktemp("scores"), 80, 4, 60)


def test_round_trip_aligned_with_the_parent(ds, tmp_path):
    scores = make_scores(ds, tmp_path / "s", run={"checkpoint_sha256": "ab" * 32})
    ref, manifest = parent_ref(str(ds))
    sc = open_scores(str(scores), ref)
    assert sc.checkpoint_sha256 == "ab" * 32
    assert sc.scores_id == __import__("hashlib").sha256((scores / "_manifest.json").read_bytes()).hexdigest()
    assert [f["parent_shard"] for f in sc.manifest["files"]] == [s["path"] for s in manifest["shards"]]
    for rel, events, offsets, values in shard_scores(ds):
        got_offsets, got = sc.for_shard(rel, events, offsets)
        assert np.array_equal(got_offsets, offsets) and np.array_equal(got, values) and got.dtype == np.float32
        f = sc.entry(rel)
        assert (f["rows"], f["hits"]) == (len(events), int(offsets[-1]))


def _altered(ds: Path, rel_index: int, how: str):
    for k, (rel, events, offsets, values) in enumerate(shard_scores(ds)):
        if k == rel_index:
            if how == "event":
                events = events.copy()
                events[3] += 1000000
            elif how == "hits":  # one score moved from row 2 to row 1: same total, other per-event counts
                offsets = offsets.copy()
                offsets[2] += 1
            elif how == "nan":
                values = values.copy()
                values[5] = np.nan
            elif how == "skip":
                continue
        yield rel, events, offsets, values


@pytest.mark.parametrize(("how", "needle"), [("event", "row 3: eventNumber"), ("hits", "row 1 (eventNumber"),
                                             ("nan", "score nan at hit 5"), ("skip", "no scores for 1 shard")])
def test_misaligned_scores_are_refused_and_nothing_is_visible(ds, tmp_path, how, needle):
    out = tmp_path / "s"
    with pytest.raises(DatasetError, match=re.escape(needle)) as err:
        write_scores(str(out), str(ds), _altered(ds, 1, how))
    assert how == "skip" or "shards/part-" in str(err.value)
    assert not (out / "_manifest.json").exists() and not list((out / "scores").glob("part-*"))


def test_output_must_be_new(ds, tmp_path):
    out = make_scores(ds, tmp_path / "s")
    with pytest.raises(ConfigError, match="not empty"):
        write_scores(str(out), str(ds), shard_scores(ds))


def test_open_refuses_foreign_changed_and_malformed(ds, tmp_path):
    scores = make_scores(ds, tmp_path / "s")
    ref, _ = parent_ref(str(ds))
    other = ref.__class__(ref.path, "0" * 32, ref.manifest_sha256)
    with pytest.raises(DatasetError, match=f"are for dataset {ref.dataset_id} .*not for {ds} \\(dataset 0+\\)"):
        open_scores(str(scores), other)
    changed = ref.__class__(ref.path, ref.dataset_id, "f" * 64)
    with pytest.raises(DatasetError, match="manifest has changed since"):
        open_scores(str(scores), changed)
    doc = json.loads((scores / "_manifest.json").read_text())
    for edit, needle in ((lambda d: d.update(format="x"), "not a scores manifest"),
                         (lambda d: d.update(format_version=2), "format_version 2"),
                         (lambda d: d["files"][0].update(path="../x.parquet"), "is not scores/NAME.parquet"),
                         (lambda d: d["files"][1].update(parent_shard=d["files"][0]["parent_shard"]), "listed twice"),
                         (lambda d: d.update(split="test"), "key split: 'test' is neither"),
                         (lambda d: d["files"][0].update(rows=-5), "rows -5 and hits"),
                         (lambda d: d["files"][0].update(hits=True), "must be counts")):
        bad = json.loads(json.dumps(doc))
        edit(bad)
        (scores / "_manifest.json").write_text(json.dumps(bad))
        with pytest.raises(DatasetError, match=re.escape(needle)):
            open_scores(str(scores))


def test_a_file_changed_after_writing_is_caught_by_its_checksum(ds, tmp_path):
    scores = make_scores(ds, tmp_path / "s")
    sc = open_scores(str(scores))
    f = sc.manifest["files"][0]
    table = pq.read_table(scores / f["path"])
    pq.write_table(table.slice(0, table.num_rows), scores / f["path"], compression="snappy")
    with pytest.raises(DatasetError, match=re.escape(f"{f['path']}: sha256 differs from the scores manifest")):
        sc.read(f["parent_shard"])


def test_counts_in_the_manifest_must_match_the_file(ds, tmp_path):
    """A scores manifest whose rows or hits disagree with its file (sha256 recomputed or not) is refused
    when the file is read: the counts are what filter's cut flow starts from."""
    scores = make_scores(ds, tmp_path / "s")
    doc = json.loads((scores / "_manifest.json").read_text())
    doc["files"][0]["rows"] += 1
    (scores / "_manifest.json").write_text(json.dumps(doc))
    sc = open_scores(str(scores))
    with pytest.raises(DatasetError, match="rows and .* scores, the scores manifest says"):
        sc.read(doc["files"][0]["parent_shard"])


def _subset_file(ds: Path, scores: Path, rel: str, rows: list[int]) -> None:
    """Rewrite the scores file of parent shard ``rel`` to hold ``rows`` only (with the row column, the
    parent's eventNumbers and the made-up scores of those rows), its sha256 updated in the manifest."""
    import hashlib

    import pyarrow as pa

    doc = json.loads((scores / "_manifest.json").read_text())
    f = next(f for f in doc["files"] if f["parent_shard"] == rel)
    full = pq.read_table(scores / f["path"]).to_pylist()
    full = [full[r % len(full)] for r in rows]  # a row past the end: any event's values
    table = pa.table({"row": pa.array(rows, pa.int64()), "eventNumber": [r["eventNumber"] for r in full],
                      "score": pa.array([r["score"] for r in full], pa.list_(pa.float32()))})
    pq.write_table(table, scores / f["path"])
    f.update(rows=len(rows), hits=sum(len(r["score"]) for r in full),
             sha256=hashlib.sha256((scores / f["path"]).read_bytes()).hexdigest())
    doc["split"] = {"name": "test", "train_fraction": 0.8, "val_fraction": 0.1, "seed": 0}
    (scores / "_manifest.json").write_text(json.dumps(doc))


def test_subset_rows_are_checked_against_the_parent_rows(ds, tmp_path):
    scores = make_scores(ds, tmp_path / "s")
    per_shard = {rel: (events, offsets) for rel, events, offsets, _ in shard_scores(ds)}
    rel = next(iter(per_shard))
    events, offsets = per_shard[rel]
    _subset_file(ds, scores, rel, [1, 4, 6])
    sc = open_scores(str(scores), parent_ref(str(ds))[0])
    rows, got_offsets, values = sc.for_rows(rel, events, offsets)
    counts = np.diff(offsets)
    assert rows.tolist() == [1, 4, 6] and np.diff(got_offsets).tolist() == counts[[1, 4, 6]].tolist()
    assert sc.verify(str(ds)) == (sum(len(e) for e, _ in per_shard.values()) - len(events) + 3,
                                  sum(int(o[-1]) for _, o in per_shard.values()) - int(counts.sum())
                                  + int(counts[[1, 4, 6]].sum()))
    for rows, needle in (([4, 1, 6], f"the file's row 1 names parent row 1: the row column must name rows of the "
                                      f"parent shard (0 to {len(events) - 1}), increasing"),
                         ([1, 4, len(events)], f"the file's row 2 names parent row {len(events)}: ")):
        _subset_file(ds, make_scores(ds, tmp_path / f"s{rows[-1]}"), rel, rows)
        with pytest.raises(DatasetError, match=re.escape(needle)):
            open_scores(str(tmp_path / f"s{rows[-1]}")).verify(str(ds))


def test_filter_refuses_scores_of_a_split_in_one_line(ds, tmp_path):
    scores = make_scores(ds, tmp_path / "s")
    rel = json.loads((ds / "_manifest.json").read_text())["shards"][0]["path"]
    _subset_file(ds, scores, rel, [0, 2])
    out = cli("filter", ds, "--scores", scores, "--working-point", "0.9", "-o", tmp_path / "out", code=1)
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) == 1 and "cover the test split (train 0.8, val 0.1, seed 0) only, not every event of" in lines[0]
    assert f"`muon-pipeline predict RUN --data {ds} --split all` makes them" in lines[0]
    assert not (tmp_path / "out" / "_manifest.json").exists()
    sc = open_scores(str(scores))
    events, offsets = next((e, o) for r, e, o, _ in shard_scores(ds) if r == rel)
    for call in (lambda: sc.for_shard(rel, events, offsets), lambda: sc.read(rel)):
        with pytest.raises(DatasetError, match="cover the test split"):
            call()


def test_the_documented_pyarrow_writer_makes_scores_filter_accepts(ds, tmp_path, monkeypatch):
    text = (REPO / "docs" / "reference" / "scores.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw_ds").symlink_to(ds)

    def my_scores(hits):
        return hit_score({k: hits.field(k).to_numpy() for k in ("spacePoint_time", "r", "spacePoint_truthLink")})

    exec(compile(code, "scores.md", "exec"), {"my_scores": my_scores})
    ref, _ = parent_ref("raw_ds")
    sc = open_scores("raw_scores", ref)
    for rel, events, offsets, values in shard_scores(ds):
        assert np.array_equal(sc.for_shard(rel, events, offsets)[1], values)
    cli("filter", "raw_ds", "--scores", "raw_scores", "--working-point", "0.9", "-o", "out", "-q")
    lineage = json.loads((tmp_path / "out" / "_manifest.json").read_text())["lineage"]
    # recorded absolute: validate and inspect started in another folder find them
    assert lineage["scores"]["path"] == str(tmp_path / "raw_scores") and lineage["parent"]["path"] == str(tmp_path / "raw_ds")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cli("validate", "../out", "--source", "1")  # exit 0: the parent and the scores are found from here
    cli("inspect", "../out")


@pytest.mark.parametrize("seed", range(6))
def test_working_point_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    scores = rng.choice(rng.random(max(2, n // 3)), n).astype(np.float32)  # many ties
    for wp in (1.0, 0.99, 0.9, 0.5, 1 / 3, 1e-9):
        t = working_point_threshold(scores, wp)
        s64 = scores.astype(np.float64)
        # brute force: the largest candidate whose kept fraction reaches wp
        best = max(c for c in np.unique(s64) if (s64 >= c).sum() / n >= wp)
        assert t == best, (seed, wp)


def test_working_point_refusals():
    with pytest.raises(ConfigError, match="no hits on muons"):
        working_point_threshold(np.zeros(0, np.float32), 0.9)
    for wp in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="--working-point"):
            working_point_threshold(np.ones(3, np.float32), wp)
