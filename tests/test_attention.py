"""Windowed attention (``attention: {kind: window}``) against full attention and a per-event reference.

* a window that covers every event of the batch gives exactly full attention (float64), for every layer
  parity (the shifted layers roll within the event);
* a smaller window differs, and equals a slow per-event reference: sort by the key, roll by w/2 on odd
  layers, softmax attention within each block of w, written with plain loops;
* padding: a hit's output does not depend on the padding of its batch or on other events;
* a config without ``attention`` is full attention, and the windowed encoder has the same parameters
  (old checkpoints load into either).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.train.attention import AttentionSpec, block_attention, make_layout  # noqa: E402
from pipeline.train.model import HitEncoder, SelfAttention  # noqa: E402


def batch(lengths: list[int], features: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random hits [B, L, F] float64 (padding filled with noise, to catch leaks) and the mask [B, L]."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    hits = torch.randn(len(lengths), L, features, generator=g, dtype=torch.float64)
    mask = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]
    return hits, mask


def encoder(kind: str, window: int, layers: int = 3) -> HitEncoder:
    torch.manual_seed(0)
    return HitEncoder(5, 16, layers, 4, 0.0, AttentionSpec(kind, window, key_index=2)).double().eval()


def test_window_covering_every_event_is_full_attention():
    hits, mask = batch([7, 12, 3, 12])
    full, windowed = encoder("full", 0), encoder("window", 16)
    windowed.load_state_dict(full.state_dict())  # the same parameters: old checkpoints load either way
    a, b = full(hits, mask), windowed(hits, mask)
    assert torch.allclose(a[mask], b[mask], atol=1e-12, rtol=0)


def test_window_per_event_is_exact_when_it_covers_that_event_even_in_a_longer_batch():
    # event 0 (6 hits) fits one window of 8; event 1 (30 hits) does not: event 0 must still equal full
    hits, mask = batch([6, 30])
    full, windowed = encoder("full", 0), encoder("window", 8)
    windowed.load_state_dict(full.state_dict())
    a, b = full(hits[:1, :6], mask[:1, :6]), windowed(hits, mask)
    assert torch.allclose(a[0], b[0, :6], atol=1e-12, rtol=0)


def test_smaller_window_differs_from_full_attention():
    hits, mask = batch([40, 33])
    full, windowed = encoder("full", 0), encoder("window", 8)
    windowed.load_state_dict(full.state_dict())
    diff = (full(hits, mask) - windowed(hits, mask))[mask].abs().max()
    assert diff > 1e-3


def reference_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, key: np.ndarray, heads: int, window: int,
                        shift: int) -> np.ndarray:
    """One event, no padding, q/k/v [n, D]: softmax attention of each hit over its block, with loops (float64)."""
    n, D = q.shape
    order = np.argsort(key, kind="stable")
    rolled = [order[(p + shift) % n] for p in range(n)]  # hit at each windowed position
    dh = D // heads
    out = np.zeros((n, D))
    for start in range(0, n, window):
        members = rolled[start:start + window]
        for i in members:
            for h in range(heads):
                sl = slice(h * dh, (h + 1) * dh)
                logits = np.array([q[i, sl] @ k[j, sl] / math.sqrt(dh) for j in members])
                w = np.exp(logits - logits.max())
                w /= w.sum()
                out[i, sl] = sum(wj * v[j, sl] for wj, j in zip(w, members, strict=True))
    return out


@pytest.mark.parametrize("shift", [0, 4])
def test_windowed_attention_matches_a_per_event_reference(shift):
    hits, mask = batch([21, 13], features=8, seed=3)
    torch.manual_seed(1)
    attn = SelfAttention(8, 2, 0.0).double().eval()
    key = hits[..., 0]
    layout = make_layout(key, mask, 8, shift)
    qkv = attn.qkv(layout.gather(hits)).view(2, -1, 3, 2, 4)
    got = layout.scatter(block_attention(qkv, layout))  # [B, L, D] before the output projection
    W, bias = attn.qkv.weight.detach().numpy(), attn.qkv.bias.detach().numpy()
    for b, n in enumerate(mask.sum(1).tolist()):
        x = hits[b, :n].numpy()
        q, k, v = (x @ W[i * 8:(i + 1) * 8].T + bias[i * 8:(i + 1) * 8] for i in range(3))
        want = reference_attention(q, k, v, key[b, :n].numpy(), 2, 8, shift)
        assert np.allclose(got[b, :n].detach().numpy(), want, atol=1e-10), (b, shift)


def test_padding_and_other_events_do_not_change_a_hit():
    hits, mask = batch([9, 25, 4])
    windowed = encoder("window", 8)
    together = windowed(hits, mask)
    for b, n in enumerate(mask.sum(1).tolist()):
        alone = windowed(hits[b:b + 1, :n], mask[b:b + 1, :n])
        assert torch.allclose(together[b, :n], alone[0], atol=1e-12, rtol=0), b
    noisy = hits.clone()
    noisy[~mask] = 1e6  # huge values in the padding must not leak into real hits
    assert torch.allclose(windowed(noisy, mask)[mask], together[mask], atol=1e-12, rtol=0)


def test_an_event_without_hits_stays_finite():
    hits, mask = batch([0, 10])
    assert torch.isfinite(encoder("window", 4)(hits, mask)).all()


def test_config_default_is_full_attention_and_bad_values_are_named():
    from pipeline.train.config import config_from_dict
    from pipeline.train.task_config import check_task_inputs

    assert config_from_dict({}).attention.kind == "full"
    with pytest.raises(ConfigError, match="attention.kind"):
        config_from_dict({"attention": {"kind": "sparse"}})
    with pytest.raises(ConfigError, match="attention.window"):
        config_from_dict({"attention": {"kind": "window", "window": 1}})
    cfg = config_from_dict({"attention": {"kind": "window", "sort_key": "nope"}})
    with pytest.raises(ConfigError, match="attention.sort_key: 'nope' is not among the hit inputs"):
        check_task_inputs(cfg, ["phi", "r"])


@pytest.mark.train
def test_the_regression_trains_and_evaluates_with_windowed_attention(tmp_path, converted_random):
    pytest.importorskip("lightning")
    from pipeline.train.config import config_from_dict
    from pipeline.train.evaluate import predict
    from pipeline.train.fit import train

    cfg = config_from_dict({"dim": 16, "heads": 2, "encoder_layers": 2, "attention": {"kind": "window", "window": 8},
                            "data": {"batch_size": 16, "num_workers": 0},
                            "trainer": {"max_steps": 3, "warmup_steps": 1, "patience": 0, "accelerator": "cpu",
                                        "progress_every": 0}})
    assert train(cfg, converted_random, tmp_path / "run", quiet=True)["steps"] == 3
    columns, meta = predict(tmp_path / "run", converted_random, split="val", device="cpu")
    assert len(columns["pred_pt"]) > 0 and np.isfinite(columns["pred_pt"]).all()
