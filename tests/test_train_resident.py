"""The device-resident path (CPU as the device) yields exactly the streaming loader's batches."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.muon_frame import frame_field_names  # noqa: E402
from pipeline.schema import load_schema  # noqa: E402
from pipeline.train.config import config_from_dict  # noqa: E402
from pipeline.train.data import (  # noqa: E402
    Chunk,
    ShardStream,
    clip_links,
    collate,
    make_loader,
    normalisation_for,
)
from pipeline.train.data import open_training_set as open_dataset  # noqa: E402
from pipeline.train.data.resident import (  # noqa: E402
    Resident,
    ResidentStream,
    collate_tensors,
    fits,
    make_resident_loader,
    split_bytes,
    use_resident,
)

HIT_FIELDS = load_schema(2).inputs("hit")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def many_groups(converted_random_5x5):
    """5 shards x 5 row groups of the random dump: the plan crosses row groups and shuffle buffers."""
    return converted_random_5x5


def make(info, split="train", **kw):
    args = dict(batch_size=16, max_muons=2, train_fraction=0.6, val_fraction=0.2, shuffle=True,
                shuffle_buffer=50, frame_fields=frame_field_names(), bucket_width=2)
    args.update(kw)
    return ShardStream(info, HIT_FIELDS, normalisation_for(info, HIT_FIELDS), split, **args)


def assert_same(streamed, resident):
    assert len(streamed) == len(resident) > 0
    for a, b in zip(streamed, resident, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("split,shuffle,buffer,width", [("train", True, 50, 2), ("train", True, 1000, 0),
                                                         ("val", False, 50, 2), ("all", True, 16, 4)])
def test_same_batches_as_streaming_for_a_seed(many_groups, split, shuffle, buffer, width):
    info = open_dataset(many_groups)
    s = make(info, split, shuffle=shuffle, shuffle_buffer=buffer, bucket_width=width)
    r = ResidentStream(s, CPU)
    for seed in (3, 4):  # two epochs: a fresh plan each, from the same seed the streaming loader uses
        s.epoch_seed = r.epoch_seed = seed
        assert_same(list(s), list(r))


def test_same_batches_under_the_global_seed_through_dataloaders(many_groups):
    """What the trainer does: no epoch_seed; both draw it from torch's RNG (``seed_everything``)."""
    info = open_dataset(many_groups)
    s = make(info, num_workers=0)
    torch.manual_seed(7)
    streamed = list(make_loader(s))
    torch.manual_seed(7)
    resident_loader = make_resident_loader(ResidentStream(s, CPU))
    assert len(resident_loader) == len(make_loader(s))
    resident = list(resident_loader)
    assert_same(streamed, resident)
    rows = torch.cat([b["row"] for b in resident]).tolist()
    assert len(rows) == len(set(rows)) == s.events


def test_links_beyond_max_muons_or_the_events_muons_are_background_in_both_paths():
    """The link rule is per event (a link at or beyond min(muons of its event, max_muons) is -1), applied
    by the streaming collate per batch and by the resident store once at load. Before, the streaming
    rule used the batch's padded muon count, so a link to a muon its event does not have survived when
    another event of the batch had more muons."""
    n_hits, n_mu = np.array([4, 4, 1]), np.array([2, 5, 0])
    link = np.array([0, 1, -1, 1, 4, 2, 3, 0, 0], np.int32)  # the last: a link in an event without muons
    chunk = Chunk(np.concatenate([[0], np.cumsum(n_hits)]), np.arange(27, dtype=np.float32).reshape(9, 3), link,
                  np.concatenate([[0], np.cumsum(n_mu)]), np.ones((7, 2), np.float32), np.arange(3), np.arange(3))
    max_muons = 3
    expected = []  # per hit, by hand from the rule
    for e in range(3):
        for h in range(n_hits[e]):
            lk = int(link[n_hits[:e].sum() + h])
            expected.append(lk if lk < min(n_mu[e], max_muons) else -1)
    assert clip_links(chunk, max_muons).tolist() == expected == [0, 1, -1, 1, -1, 2, -1, 0, -1]
    idx = np.array([2, 0, 1])
    streamed = collate(chunk, idx, max_muons)
    store = Resident.from_chunk(chunk, CPU, max_muons)
    resident = collate_tensors(store, torch.from_numpy(idx), int(n_hits.max()), max_muons, max_muons)
    for k, v in streamed.items():
        assert torch.equal(torch.from_numpy(np.asarray(v)), resident[k]), k
    flat = [int(x) for b, e in enumerate(idx) for x in streamed["link"][b, :n_hits[e]]]
    assert flat == [expected[i] for e in idx for i in range(n_hits[:e].sum(), n_hits[:e + 1].sum())]


def test_frame_inputs_are_computed_at_load_and_match(many_groups):
    """The muon-frame columns of the resident store equal the per-row-group computation of the stream."""
    info = open_dataset(many_groups)
    s = make(info, "all", shuffle=False)
    r = ResidentStream(s, CPU)
    store = r.load()
    streamed = torch.cat([torch.from_numpy(s._read(u, {}).hits) for u in s.units])
    assert torch.equal(store.hits, streamed)
    n_in = len(HIT_FIELDS)
    assert store.hits.shape[1] == n_in + len(frame_field_names()) and store.hits[:, n_in:].abs().sum() > 0


def test_size_estimate_and_the_memory_rule(many_groups, monkeypatch):
    info = open_dataset(many_groups)
    s = make(info)
    store = ResidentStream(s, CPU).load()
    # the estimate (manifest totals x the split's share of events) is close to what was loaded
    assert abs(split_bytes(s) - store.nbytes) / store.nbytes < 0.2
    ok, need, allowed = fits(s, CPU, 0.5)
    assert ok and need < allowed
    import pipeline.train.data.resident as resident

    monkeypatch.setattr(resident, "free_bytes", lambda device: need)  # room for exactly the split
    assert not use_resident("auto", s, CPU, 0.5)  # half of it is not enough: stream
    assert use_resident("auto", s, CPU, 1.0)
    assert not use_resident("off", s, CPU, 1.0)
    with pytest.raises(ConfigError, match="data.resident: on, but the train split needs"):
        use_resident("on", s, CPU, 0.5)


def test_config_keys_are_checked():
    assert config_from_dict({"data": {"resident": "on"}}).data.resident == "on"
    import yaml

    for text, mode in (("on", "on"), ("off", "off"), ("'off'", "off"), ("auto", "auto")):  # bare on/off: YAML bools
        assert config_from_dict(yaml.safe_load(f"data: {{resident: {text}}}")).data.resident == mode
    with pytest.raises(ConfigError, match="data.resident: expected auto, on or off"):
        config_from_dict({"data": {"resident": "yes"}})
    with pytest.raises(ConfigError, match="data.resident_fraction"):
        config_from_dict({"data": {"resident_fraction": 1.5}})
    assert config_from_dict({"trainer": {"compile": True}}).trainer.compile is True


def test_empty_split_yields_nothing(many_groups):
    info = open_dataset(many_groups)
    s = make(info, "val", train_fraction=0.99, val_fraction=0.0)
    r = ResidentStream(s, CPU)
    assert s.events == 0 and list(r) == [] and len(r) == 0


def test_resident_batch_is_a_slow_reference(many_groups):
    """Independent of the shared planning code: each padded event equals its flat rows in the store."""
    info = open_dataset(many_groups)
    s = make(info, "all", shuffle=False)
    r = ResidentStream(s, CPU)
    store = r.load()
    row_pos = {int(v): i for i, v in enumerate(store.row)}
    off, moff = store.hit_offsets.numpy(), store.muon_offsets.numpy()
    for batch in r:
        for b in range(len(batch["row"])):
            e = row_pos[int(batch["row"][b])]
            n = int(off[e + 1] - off[e])
            m = min(int(moff[e + 1] - moff[e]), 2)
            np.testing.assert_array_equal(batch["hits"][b, :n].numpy(), store.hits[off[e]:off[e + 1]].numpy())
            assert not batch["hits"][b, n:].any() and int(batch["hit_mask"][b].sum()) == n
            link = store.link[off[e]:off[e + 1]].long()
            assert batch["link"][b, :n].tolist() == torch.where(link >= m, -1, link).tolist()
            np.testing.assert_array_equal(batch["muons"][b, :m].numpy(), store.muons[moff[e]:moff[e] + m].numpy())


def _tiny(resident: str, **trainer) -> dict:
    return {"fields": ["truthMuon_eta", "truthMuon_phi", "truthMuon_pt", "truthMuon_q"], "dim": 16, "heads": 2,
            "encoder_layers": 1, "data": {"batch_size": 32, "num_workers": 0, "shuffle_buffer": 64,
                                          "resident": resident},
            "trainer": {"max_epochs": 1, "warmup_steps": 1, "patience": 0, "progress_every": 0, **trainer}}


def _losses(run) -> list[float]:
    import csv

    (metrics,) = run.glob("logs/version_*/metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    return [float(r[k]) for r in rows for k in ("train/loss_step", "train/loss_epoch", "val/loss") if r.get(k)]


def test_trainer_trains_identically_resident_or_streaming(many_groups, tmp_path):
    from pipeline.train.fit import train

    runs = {}
    for mode in ("on", "off"):
        cfg = config_from_dict(_tiny(mode))
        summary = train(cfg, many_groups, tmp_path / mode, quiet=True)
        runs[mode] = (summary, _losses(tmp_path / mode))
    assert runs["on"][0]["data_path"] == "resident" and runs["off"][0]["data_path"] == "streaming"
    import json

    plans = {m: json.loads((tmp_path / m / "run.json").read_text())["train_epoch_plan"] for m in runs}
    assert plans["on"] == plans["off"] and plans["on"]["workers"] == 1  # num_workers 0: one reader either way
    for mode, (summary, _) in runs.items():  # one epoch: the steps the plan gives, every train event seen once
        assert summary["steps"] == plans[mode]["batches_per_rank"]
        assert summary["events_seen"] == plans[mode]["events_per_epoch"] == summary["train_events"]
    assert runs["on"][1] and runs["on"][1] == pytest.approx(runs["off"][1], rel=1e-6)
    assert runs["on"][0]["best_val_loss"] == pytest.approx(runs["off"][0]["best_val_loss"], rel=1e-6)


def _model_and_batch(many_groups):
    from pipeline.train.model import build_model

    info = open_dataset(many_groups)
    cfg = config_from_dict(_tiny("off"))
    s = make(info, "all", shuffle=False, frame_fields=cfg.frame_fields)
    torch.manual_seed(0)
    model = build_model(cfg, HIT_FIELDS, info.muon_fields, [0.0] * 4, [1.0] * 4)
    return model, next(iter(s))


def test_compile_falls_back_to_eager_when_compilation_fails(many_groups, monkeypatch):
    from pipeline.train.module import compile_model

    model, batch = _model_and_batch(many_groups)

    def broken(m, **kw):
        def call(*a, **k):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    net = compile_model(model)
    with pytest.warns(UserWarning, match="trainer.compile: torch.compile failed .*no C\\+\\+ compiler.*running eager"):
        out = net(batch)
    assert torch.equal(out, model(batch))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # eager from then on, without a new warning
        assert torch.equal(net(batch), out)


@pytest.mark.slow
def test_compiled_model_matches_eager(many_groups):
    """Where torch.compile works (needs a C++ compiler on CPU; about a minute here), outputs match eager."""
    from pipeline.train.module import compile_model

    model, batch = _model_and_batch(many_groups)
    net = compile_model(model)
    with torch.no_grad():
        out, ref = net(batch), model(batch)
    if not net.ok:
        pytest.skip("torch.compile is unavailable here")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("world", [2, 3])
def test_each_ddp_rank_loads_its_deal_and_matches_streaming(many_groups, world):
    """Per rank (rank/world_size given, as torch.distributed would): the resident batches equal the streaming
    loader's for one reader per rank, the store holds exactly the events dealt to the rank, and over the ranks
    every train event appears once plus the recorded padding (DistributedSampler's rule)."""
    from collections import Counter

    info = open_dataset(many_groups)
    import pyarrow.parquet as pq

    from pipeline.train.data import split_codes

    codes_rows = set()  # the train split's row ids (shard << 32 | row), read with plain pyarrow: the reference
    for si, path in enumerate(info.shards):
        codes = split_codes(pq.read_table(path, columns=["eventNumber"]).column(0).to_numpy(), 0.6, 0.2)
        codes_rows |= {(si << 32) + int(i) for i in np.flatnonzero(codes == 0)}
    seen: Counter[int] = Counter()
    lengths = set()
    for rank in range(world):
        s = make(info, rank=rank, world_size=world)
        r = ResidentStream(s, CPU)
        s.epoch_seed = r.epoch_seed = 11
        streamed = list(s)
        assert_same(streamed, list(r))
        plan = r.plan()
        assert plan == s.plan(workers=1) and plan["world_size"] == world and plan["workers"] == 1
        assert len(r) == len(streamed) == plan["batches_per_rank"]
        assert len(r.load()) == plan["events_per_rank"]  # only the events dealt to this rank
        seen.update(int(x) for b in streamed for x in b["row"])
        lengths.add(len(r))
    padding = s.plan(workers=1)["padding"]
    assert set(seen) == codes_rows and len(codes_rows) == s.events
    assert sum(seen.values()) == s.events + padding and padding == -s.events % world
    assert len(lengths) == 1  # the same number of steps on every rank
