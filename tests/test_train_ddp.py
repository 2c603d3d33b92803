"""Every event of the train split is trained on once per epoch across DDP ranks and DataLoader workers
(plus DistributedSampler-style padding), and the trainer opens only what validate would accept."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402
from rawdump import convert_dump  # noqa: E402

from pipeline.cli import main  # noqa: E402
from pipeline.errors import DatasetError  # noqa: E402
from pipeline.schema import load_schema  # noqa: E402
from pipeline.train.data import (  # noqa: E402
    ShardStream,
    deal_events,
    make_loader,
    normalisation_for,
    split_codes,
)
from pipeline.train.data import open_training_set as open_dataset  # noqa: E402

HIT_FIELDS = load_schema(2).inputs("hit")
FRACTIONS = dict(train_fraction=0.7, val_fraction=0.15, split_seed=3)


@pytest.fixture(scope="module")
def uneven(tmp_path_factory, random_dump):
    """The random dump in 4 uneven shards (130, 130, 130, 110 entries) of uneven row groups."""
    return convert_dump(random_dump, tmp_path_factory.mktemp("uneven") / "ds", shard_events=130, row_group_size=45)


def train_rows(directory) -> set[int]:
    """The train split's row ids (shard << 32 | row), read with plain pyarrow: the reference."""
    m = json.loads((directory / "_manifest.json").read_text())
    rows = set()
    for si, s in enumerate(m["shards"]):
        ev = pq.read_table(directory / s["path"], columns=["eventNumber"]).column(0).to_numpy()
        codes = split_codes(ev, FRACTIONS["train_fraction"], FRACTIONS["val_fraction"], FRACTIONS["split_seed"])
        rows |= {(si << 32) + int(r) for r in np.flatnonzero(codes == 0)}
    return rows


def make(directory, num_workers, batch_size, rank=None, world_size=None, shuffle=True):
    info = open_dataset(directory)
    norm = normalisation_for(info, HIT_FIELDS)
    return ShardStream(info, HIT_FIELDS, norm, "train", batch_size=batch_size, max_muons=4, shuffle=shuffle,
                       shuffle_buffer=40, num_workers=num_workers, rank=rank, world_size=world_size,
                       frame_fields=(), **FRACTIONS)


def check_union(per_rank: list[list[int]], batches: list[int], expected: set[int], padding: int, world: int) -> None:
    seen = Counter(r for rows in per_rank for r in rows)
    assert set(seen) == expected  # every train event, nothing else
    assert sum(seen.values()) == len(expected) + padding  # each once, plus the recorded padding
    assert sum(c - 1 for c in seen.values()) == padding
    assert padding == -len(expected) % world
    assert len({len(rows) for rows in per_rank}) == 1  # the same number of events on every rank ...
    assert len(set(batches)) == 1  # ... and of batches (DDP needs equal counts)


def test_deal_matches_distributed_sampler():
    """The multiset of dealt positions equals torch's DistributedSampler's over all ranks (its padding)."""
    from torch.utils.data.distributed import DistributedSampler

    rng = np.random.default_rng(0)
    for _ in range(30):
        counts = rng.integers(1, 20, rng.integers(1, 8))
        world, workers = int(rng.integers(1, 5)), int(rng.integers(1, 4))
        slots, padding = deal_events(counts, world, workers)
        starts = np.concatenate([[0], np.cumsum(counts)])
        ours = Counter(int(starts[u]) + j for rank in slots for seg in rank for u, lo, hi in seg for j in range(lo, hi))
        n = int(counts.sum())
        ref = Counter()
        for r in range(world):
            ref.update(DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=False))
        assert ours == ref and padding == sum(ref.values()) - n
        sizes = [[sum(hi - lo for _, lo, hi in seg) for seg in rank] for rank in slots]
        assert all(s == sizes[0] for s in sizes) and max(sizes[0]) - min(sizes[0]) <= 1


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_and_workers_see_every_event_once(uneven, world, num_workers):
    """Ranks simulated by rank/world_size, workers real (DataLoader processes)."""
    expected = train_rows(uneven)
    per_rank, batches = [], []
    for rank in range(world):
        s = make(uneven, num_workers, batch_size=7, rank=rank, world_size=world)
        loader = make_loader(s)
        rows = [int(r) for b in loader for r in b["row"]]
        per_rank.append(rows)
        batches.append(sum(1 for _ in make_loader(s)))
        assert batches[-1] == len(s) == len(loader)
    plan = make(uneven, num_workers, 7, 0, world).plan()
    assert plan["events"] == len(expected) and plan["events_per_epoch"] == len(expected) + plan["padding"]
    check_union(per_rank, batches, expected, plan["padding"], world)


def _gloo_rank(rank: int, world: int, directory: str, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        result = {}
        for nw in (0, 2):
            s = make(directory, nw, batch_size=6)  # rank and world come from torch.distributed
            loader = make_loader(s)
            rows = [int(r) for b in loader for r in b["row"]]
            result[nw] = {"rows": rows, "batches": len(rows) and sum(1 for _ in make_loader(s)), "len": len(s),
                          "plan": s.plan()}
            dist.barrier()
        with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
            json.dump(result, fh)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_see_every_event_once(uneven, tmp_path):
    """Two CPU processes in a real gloo process group, num_workers 0 and 2, uneven shards."""
    import torch.multiprocessing as mp

    mp.spawn(_gloo_rank, args=(2, str(uneven), str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    expected = train_rows(uneven)
    for nw in ("0", "2"):
        per = [r[nw] for r in results]
        assert all(p["plan"]["world_size"] == 2 for p in per)
        assert all(p["batches"] == p["len"] for p in per)
        check_union([p["rows"] for p in per], [p["batches"] for p in per], expected, per[0]["plan"]["padding"], 2)


# --------------------------------------------------------------------------------------------------
# the trainer reads only what validate would accept

TINY = """
fields: [truthMuon_eta, truthMuon_phi, truthMuon_pt, truthMuon_q]
dim: 8
heads: 2
encoder_layers: 1
frame_fields: []
data: {batch_size: 32, num_workers: 0, shuffle_buffer: 64}
trainer: {max_steps: 1}
"""


def _plant(tmp_path, dataset, how: str):
    d = tmp_path / "ds"
    shutil.copytree(dataset, d)
    m = json.loads((d / "_manifest.json").read_text())
    shard = d / m["shards"][0]["path"]
    if how == "absolute":
        outside = tmp_path / "elsewhere.parquet"
        shutil.copy(shard, outside)
        m["shards"][0]["path"] = str(outside)
    elif how == "dotdot":
        (tmp_path / "x").mkdir()
        shutil.copy(shard, tmp_path / "x" / "evil.parquet")
        m["shards"][0]["path"] = "../../x/evil.parquet"
    elif how == "symlink":
        outside = tmp_path / "elsewhere.parquet"
        shutil.move(shard, outside)
        shard.symlink_to(outside)
    elif how == "manifest_sha256":
        m["shards"][0]["sha256"] = "0" * 64
    elif how == "checksum":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0x01  # same size, one bit changed
        shard.write_bytes(bytes(data))
    (d / "_manifest.json").write_text(json.dumps(m))
    return d, m["shards"][0]["path"]


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "checksum", "manifest_sha256"])
def test_trainer_refuses_outside_paths_and_bad_checksums(converted_random, tmp_path, how):
    d, rel = _plant(tmp_path, converted_random, how)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    r = CliRunner().invoke(main, ["train", "--config", str(cfg), "--data", str(d), "--output", str(tmp_path / "run")])
    assert r.exit_code == 1, r.output
    line = r.output.strip().splitlines()[-1]
    assert "Traceback" not in r.output and rel in line
    sums = how in ("checksum", "manifest_sha256")
    assert ("sha256" in line) if sums else ("outside" in line or "leaves the dataset" in line)
    assert not (tmp_path / "run" / "checkpoints").exists()
    if how == "manifest_sha256":  # --no-verify-checksums skips the sha256 pass (the file itself is intact)
        r = CliRunner().invoke(main, ["train", "--config", str(cfg), "--data", str(d), "--output",
                                      str(tmp_path / "run2"), "--no-verify-checksums"])
        assert r.exit_code == 0, r.output
        info = json.loads((tmp_path / "run2" / "run.json").read_text())
        assert info["dataset"]["checksums_verified"] is False and info["trained"]["steps"] == 1
    elif sums:  # skipping the sha256 pass opens it; the other checks stay
        assert open_dataset(d, verify_checksums=False).shards
    else:
        with pytest.raises(DatasetError):
            open_dataset(d, verify_checksums=False)


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_every_reader_refuses_the_same_paths(converted_random, tmp_path, how):
    """read_dataset, inspect, migrate and the trainer's/evaluate's opener: the same rule, one line."""
    from pipeline import read_dataset

    d, rel = _plant(tmp_path, converted_random, how)
    with pytest.raises(DatasetError, match="outside|leaves the dataset"):
        read_dataset(str(d))
    for args in (["inspect", str(d)], ["migrate", str(d), "--to-version", "3", "-o", str(tmp_path / "m")]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 1 and rel in r.output and "Traceback" not in r.output, r.output


def test_inspect_missing_shard_is_one_line(converted_random, tmp_path):
    d = tmp_path / "ds"
    shutil.copytree(converted_random, d)
    rel = json.loads((d / "_manifest.json").read_text())["shards"][1]["path"]
    (d / rel).unlink()
    r = CliRunner().invoke(main, ["inspect", str(d)])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and rel in r.output and "does not exist" in r.output


@pytest.mark.slow  # two `train --devices 2` runs, each spawning two gloo ranks (~8 s each)
@pytest.mark.parametrize("resident", ["off", "on"])
def test_lightning_ddp_two_cpu_ranks_trains_on_every_event(uneven, tmp_path, resident):
    """`train --devices 2` on CPU (Lightning DDP, gloo; streaming with 2 workers per rank, or the
    device-resident split read as one reader per rank), with an odd number of train events: every epoch
    runs the planned batches on each rank and sees every event plus the padding; run.json says so."""
    import subprocess
    import sys
    from pathlib import Path

    m = json.loads((uneven / "_manifest.json").read_text())
    ev = np.concatenate([pq.read_table(uneven / s["path"], columns=["eventNumber"]).column(0).to_numpy()
                         for s in m["shards"]])
    seed = next(s for s in range(100) if (split_codes(ev, 0.7, 0.15, s) == 0).sum() % 2 == 1)
    n_train = int((split_codes(ev, 0.7, 0.15, seed) == 0).sum())
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("data: {batch_size: 32, num_workers: 0, shuffle_buffer: 64}",
                                "data: {batch_size: 16, num_workers: 2, shuffle_buffer: 64, train_fraction: 0.7, "
                                f"val_fraction: 0.15, split_seed: {seed}, resident: {resident}}}")
                   .replace("trainer: {max_steps: 1}", "trainer: {max_epochs: 2, patience: 0, accelerator: cpu}"))
    run = tmp_path / "run"
    exe = Path(sys.executable).parent / "muon-pipeline"
    r = subprocess.run([str(exe), "train", "--config", str(cfg), "--data", str(uneven), "--output", str(run),
                        "--devices", "2"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    info = json.loads((run / "run.json").read_text())
    plan, trained = info["train_epoch_plan"], info["trained"]
    assert plan["world_size"] == 2 and plan["events"] == n_train and plan["padding"] == 1
    assert info["data_path"] == ("resident" if resident == "on" else "streaming")
    assert plan["workers"] == (1 if resident == "on" else 2)
    assert trained["epochs_completed_events"] == [n_train + 1, n_train + 1]
    assert trained["steps"] == 2 * plan["batches_per_rank"] and trained["batches_seen"] == 2 * trained["steps"]


class _Plant:
    """A pickled object whose unpickling would write a file (what an unsafe torch.load runs)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_checkpoints_load_with_weights_only(tmp_path, converted_random, command):
    marker = tmp_path / "code-ran"
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.ckpt", "last.ckpt"):
        torch.save({"state_dict": {}, "hyper_parameters": {"x": _Plant(str(marker))}}, run / "checkpoints" / name)
    (run / "config.yaml").write_text(TINY)
    if command == "evaluate":
        args = ["evaluate", str(run), "--data", str(converted_random)]
    else:
        args = ["train", "--data", str(converted_random), "--output", str(run), "--resume"]
    r = CliRunner().invoke(main, args)
    assert not marker.exists()
    assert r.exit_code == 2 and "weights_only" in r.output and "Traceback" not in r.output, r.output
