"""The loader: batches equal a slow per-event reference; split, normalisation, sharding over workers."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")

from pipeline.errors import ConfigError, DatasetError  # noqa: E402
from pipeline.schema import load_schema  # noqa: E402
from pipeline.train.config import check_against_schema, config_from_dict  # noqa: E402
from pipeline.train.data import (  # noqa: E402
    Normalisation,
    ShardStream,
    make_loader,
    normalisation_for,
    split_codes,
)
from pipeline.train.data import open_training_set as open_dataset  # noqa: E402

HIT_FIELDS = load_schema(2).inputs("hit")


@pytest.fixture(scope="module")
def synthetic(converted_random_5x5):
    """Many small shards and row groups (5 shards x 5 row groups) of the hand-made random dump."""
    return converted_random_5x5


@pytest.fixture(params=["synthetic", "sample"])
def dataset(request, synthetic):
    """The loader is checked on many small row groups and on the converted shipped sample."""
    if request.param == "synthetic":
        return synthetic
    return request.getfixturevalue("converted_sample")


def stream(info, split="all", **kw):
    norm = normalisation_for(info, HIT_FIELDS)
    args = dict(batch_size=16, max_muons=4, train_fraction=0.6, val_fraction=0.2, shuffle=False,
                shuffle_buffer=50)
    args.update(kw)
    return ShardStream(info, HIT_FIELDS, norm, split, **args), norm


def reference_events(info, norm, max_muons=4):
    """Per event, in plain Python over ``to_pylist()``: the padded-free truth of what a batch must hold."""
    mean, std = dict(zip(norm.fields, norm.mean, strict=True)), dict(zip(norm.fields, norm.std, strict=True))
    muon_names = load_schema(info.schema.version).names("muon")
    out = {}
    for si, path in enumerate(info.shards):
        for row, ev in enumerate(pq.read_table(path).to_pylist()):
            hits = [[(np.float32(h[f]) - np.float32(mean[f])) / np.float32(std[f]) for f in HIT_FIELDS]
                    for h in ev["hits"]]
            n_mu = min(len(ev["truthMuons"]), max_muons)
            links = [h["spacePoint_truthLink"] if h["spacePoint_truthLink"] < n_mu else -1 for h in ev["hits"]]
            muons = [[m[k] for k in muon_names] for m in ev["truthMuons"][:n_mu]]
            out[(si << 32) + row] = (ev["eventNumber"], hits, links, muons)
    return out


def test_batches_equal_slow_reference(dataset):
    info = open_dataset(dataset)
    s, norm = stream(info)
    ref = reference_events(info, norm)
    seen = set()
    for batch in s:
        B, L, F = batch["hits"].shape
        assert F == 23 and batch["hit_mask"].shape == (B, L) and batch["muons"].shape[:2] == batch["muon_mask"].shape
        for b in range(B):
            row = int(batch["row"][b])
            assert row not in seen
            seen.add(row)
            event, hits, links, muons = ref[row]
            n, m = len(hits), len(muons)
            assert int(batch["event"][b]) == event
            assert int(batch["hit_mask"][b].sum()) == n and bool(batch["hit_mask"][b, :n].all())
            np.testing.assert_allclose(batch["hits"][b, :n].numpy(), np.array(hits, dtype=np.float32).reshape(n, F),
                                       rtol=1e-5, atol=1e-5)
            assert not batch["hits"][b, n:].any()
            assert batch["link"][b, :n].tolist() == links and (batch["link"][b, n:] == -1).all()
            assert int(batch["muon_mask"][b].sum()) == m
            np.testing.assert_allclose(batch["muons"][b, :m].numpy(), np.array(muons, dtype=np.float32), rtol=1e-6)
    assert seen == set(ref)


def test_every_event_once_with_workers_and_shuffle(synthetic):
    info = open_dataset(synthetic)
    s, _ = stream(info, "train", shuffle=True, num_workers=2, batch_size=8)
    loader = make_loader(s)
    rows = [int(r) for batch in loader for r in batch["row"]]
    assert len(rows) == len(set(rows)) == s.events
    assert len(loader) == len(s) == sum(1 for _ in make_loader(s))
    torch.manual_seed(1)
    first = [int(r) for batch in make_loader(s) for r in batch["row"]]
    torch.manual_seed(2)
    second = [int(r) for batch in make_loader(s) for r in batch["row"]]
    assert first != second and sorted(first) == sorted(second)  # a new order per epoch, same events


def test_length_bucketing_reduces_padding(synthetic):
    info = open_dataset(synthetic)
    s, _ = stream(info, shuffle=True, shuffle_buffer=240, batch_size=16)
    s.epoch_seed = 0
    padded = sum(b["hit_mask"].numel() for b in s)
    real = sum(int(b["hit_mask"].sum()) for b in s)
    n_hits = np.concatenate([np.diff(pq.read_table(p, columns=["hits"]).column(0).combine_chunks().offsets)
                             for p in info.shards])
    rng = np.random.default_rng(0)
    random_padded = sum(len(c) * int(c.max()) for c in np.array_split(rng.permutation(n_hits), len(n_hits) // 16))
    assert padded - real < 0.5 * (random_padded - real)


def test_bucket_groups_mix_batches_yet_cut_padding():
    """Whole-buffer sorting puts all short (one-muon) events together; groups of 4 batches do not."""
    from pipeline.train.data import bucket_batches

    rng = np.random.default_rng(5)
    muons = rng.choice([1, 2], size=8192, p=[0.25, 0.75])
    n_hits = muons * 30 + rng.poisson(20, size=muons.size)  # one-muon events are the short ones

    def stats(width: int) -> tuple[float, float]:
        batches = bucket_batches(n_hits, 64, np.random.default_rng(1), width)
        one_only = np.mean([np.all(muons[b] == 1) for b in batches])
        padding = sum(len(b) * n_hits[b].max() - n_hits[b].sum() for b in batches)
        return float(one_only), float(padding)

    random_pad = sum(len(c) * c.max() - c.sum() for c in np.array_split(n_hits[rng.permutation(n_hits.size)], 128))
    sorted_one, sorted_pad = stats(0)
    assert sorted_one > 0.2 and sorted_pad < 0.05 * random_pad  # a quarter of the batches: one-muon events only
    for width, most_one, most_pad in ((3, 0.02, 0.6), (4, 0.2, 0.45)):  # the default is 4
        group_one, group_pad = stats(width)
        assert group_one < most_one and group_pad < most_pad * random_pad, (width, group_one, group_pad / random_pad)


def test_split_is_deterministic_disjoint_and_complete(synthetic):
    info = open_dataset(synthetic)
    rows = {}
    for split in ("train", "val", "test"):
        s, _ = stream(info, split)
        rows[split] = {int(r) for b in s for r in b["row"]}
    assert not (rows["train"] & rows["val"]) and not (rows["train"] & rows["test"]) and not (rows["val"] & rows["test"])
    assert sum(map(len, rows.values())) == info.manifest["totals"]["events"]
    ev = np.arange(200_000)
    codes = split_codes(ev, 0.8, 0.1)
    assert abs((codes == 0).mean() - 0.8) < 0.005 and abs((codes == 1).mean() - 0.1) < 0.005
    np.testing.assert_array_equal(codes, split_codes(ev, 0.8, 0.1))
    assert (codes != split_codes(ev, 0.8, 0.1, seed=7)).any()
    # The split of an event does not depend on which other events are around it.
    np.testing.assert_array_equal(split_codes(ev[::7], 0.8, 0.1), codes[::7])


def test_normalisation_from_manifest(synthetic):
    info = open_dataset(synthetic)
    norm = normalisation_for(info, HIT_FIELDS)
    flat = pq.read_table(info.shards[0], columns=["hits"]).column(0).combine_chunks().flatten()
    allhits = [pq.read_table(p, columns=["hits"]).column(0).combine_chunks().flatten() for p in info.shards]
    for f, m, s in zip(norm.fields, norm.mean, norm.std, strict=True):
        x = np.concatenate([h.field(f).to_numpy().astype(np.float64) for h in allhits])
        assert m == pytest.approx(x.mean(), rel=1e-6, abs=1e-9)
        assert s == pytest.approx(x.std() if x.std() > 0 else 1.0, rel=1e-6)
    assert flat.field("r").to_numpy().size
    st, _ = stream(info)
    feats = torch.cat([b["hits"][b["hit_mask"]] for b in st])  # [N_hits, F]
    varying = torch.tensor([s != 1.0 for s in norm.std])
    assert feats.mean(0)[varying].abs().max() < 1e-4
    assert (feats.std(0, unbiased=False)[varying] - 1).abs().max() < 1e-3
    assert Normalisation.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm


def test_normalisation_without_manifest_statistics(synthetic, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(synthetic, copy)
    manifest = json.loads((copy / "_manifest.json").read_text())
    manifest["statistics"]["hits"] = {}  # no hit statistics (the key itself is required by the opener)
    (copy / "_manifest.json").write_text(json.dumps(manifest))
    norm = normalisation_for(open_dataset(copy), ["r", "eta"])
    assert norm.std[0] > 100 and np.isfinite(norm.mean).all()
    del manifest["statistics"]  # no statistics at all: refused in one line, as validate reports it
    (copy / "_manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="key statistics"):
        open_dataset(copy)


def test_max_muons_truncates_and_relinks(synthetic):
    info = open_dataset(synthetic)
    s, _ = stream(info, max_muons=1)
    for b in s:
        assert b["muon_mask"].shape[1] == 1 and set(b["link"].unique().tolist()) <= {-1, 0}


def test_eta_on_v1_dataset_is_a_config_error(converted_random_v1):
    info = open_dataset(converted_random_v1)
    assert info.schema.version == 1
    with pytest.raises(ConfigError, match="migrate"):
        check_against_schema(config_from_dict({"hit_fields": ["r", "eta"]}), info.schema)


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="_manifest.json"):
        open_dataset(tmp_path)
