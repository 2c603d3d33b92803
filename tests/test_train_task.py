"""The weighted-pooling task: inverse-field loss and predict, clamping, scaling, a tiny overfit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pipeline.muon_frame import frame_field_names  # noqa: E402
from pipeline.schema import load_schema  # noqa: E402
from pipeline.train.config import config_from_dict  # noqa: E402
from pipeline.train.model import build_model  # noqa: E402
from pipeline.train.task import WeightedPoolingRegression, fit_target_scaling, masked_max  # noqa: E402

MUON_FIELDS = load_schema(2).names("muon")  # pt, eta, phi, q, qpt
PT = torch.tensor([[5.0, 20.0], [100.0, 0.0]])  # [B=2, M=2]; the last slot is padding
MASK = torch.tensor([[True, True], [True, False]])


def muons(pt=PT, eta=None, q=None):
    eta = torch.zeros_like(pt) if eta is None else eta
    q = torch.ones_like(pt) if q is None else q
    qpt = torch.where(pt > 0, q / pt.clamp_min(1e-9), 0.0)
    return torch.stack([pt, eta, torch.zeros_like(pt), q, qpt], dim=-1)  # [B, M, K] in schema order


def task(fields, inverse=(), **kw):
    return WeightedPoolingRegression(3, 8, fields, MUON_FIELDS, inverse_fields=inverse, **kw)


def test_inverse_loss_is_smooth_l1_in_inverse_space():
    t = task(["truthMuon_pt"], ["truthMuon_pt"])  # centre 0, scale 1: plain 1/pT
    out = torch.tensor([[[0.3], [0.01]], [[1.8], [7.0]]])  # [B, M, T]
    loss = t.loss(out, muons(), MASK)
    diffs = [0.3 - 1 / 5, 0.01 - 1 / 20, 1.8 - 1 / 100]  # padding excluded
    hand = sum(0.5 * d * d if abs(d) < 1 else abs(d) - 0.5 for d in diffs) / 3
    assert loss.item() == pytest.approx(hand, rel=1e-6)


def test_inverse_gradient_differs_from_direct():
    out = torch.tensor([[[0.3], [0.01]], [[1.8], [7.0]]], requires_grad=True)
    inv = task(["truthMuon_pt"], ["truthMuon_pt"]).loss(out, muons(), MASK)
    (g_inv,) = torch.autograd.grad(inv, out)
    direct = task(["truthMuon_pt"]).loss(out, muons(), MASK)
    (g_dir,) = torch.autograd.grad(direct, out)
    assert not torch.allclose(g_inv, g_dir)
    assert g_inv[1, 1].item() == 0 and g_dir[1, 1].item() == 0  # padded slot: no gradient either way
    # In inverse space the 5 GeV muon (1/pT = 0.2, output 0.3) is pulled down by (0.3 - 0.2)/3.
    assert g_inv[0, 0, 0].item() == pytest.approx((0.3 - 0.2) / 3, rel=1e-5)


def test_scaled_targets_are_order_one_and_round_trip_to_gev():
    pts = torch.tensor([5.0, 7.0, 12.0, 30.0, 80.0, 200.0])
    centres, scales = fit_target_scaling({"truthMuon_pt": pts.numpy()}, ["truthMuon_pt"], ["truthMuon_pt"])
    assert centres[0] == pytest.approx((1 / pts).mean().item(), rel=1e-6)
    t = task(["truthMuon_pt"], ["truthMuon_pt"], centres=centres, scales=scales)
    scaled = ((1 / pts - centres[0]) / scales[0]).view(1, -1, 1)  # what a perfect network outputs
    assert scaled.abs().max() < 3
    pred = t.predict(scaled)["truthMuon_pt"]
    torch.testing.assert_close(pred.view(-1), pts, rtol=1e-5, atol=0)
    assert t.loss(scaled, muons(pts.view(1, -1)), torch.ones(1, 6, dtype=torch.bool)).item() < 1e-10


def test_predict_returns_gev_and_leaves_other_fields():
    t = task(["truthMuon_eta", "truthMuon_pt"], ["truthMuon_pt"])
    out = torch.tensor([[[0.5, 1 / 40.0]]])
    pred = t.predict(out)
    assert pred["truthMuon_pt"].item() == pytest.approx(40.0, rel=1e-6)
    assert pred["truthMuon_eta"].item() == pytest.approx(0.5)


def test_clamping_bad_outputs():
    t = task(["truthMuon_pt"], ["truthMuon_pt"])
    out = torch.tensor([[[0.0], [-3.0], [1e9], [float("inf")]]])
    pt = t.predict(out)["truthMuon_pt"].view(-1)
    assert torch.isfinite(pt).all() and (pt > 0).all()
    torch.testing.assert_close(pt, torch.tensor([1e6, 1e6, 1e-6, 1e-6]), rtol=1e-5, atol=0)


def test_signed_curvature():
    t = task(["truthMuon_eta", "truthMuon_qpt"], signed_curvature=True)
    out = torch.tensor([[[0.1, -1 / 25.0], [0.2, 1 / 400.0]]])
    pred = t.predict(out)
    torch.testing.assert_close(pred["truthMuon_pt"], torch.tensor([[25.0, 400.0]]), rtol=1e-5, atol=0)
    assert pred["truthMuon_q"].tolist() == [[-1.0, 1.0]]
    # q/pT targets come straight from the data's truthMuon_qpt column.
    target = t.loss_space_targets(muons(torch.tensor([[25.0]]), q=torch.tensor([[-1.0]])))
    assert target[0, 0, 1].item() == pytest.approx(-0.04)


def test_loss_is_float32_under_bf16_autocast():
    cfg = config_from_dict({"dim": 16, "heads": 2, "inverse_fields": ["truthMuon_pt"]})
    hit_fields = load_schema(2).inputs("hit")
    model = build_model(cfg, hit_fields, MUON_FIELDS)
    batch = make_batch(len(hit_fields) + len(cfg.frame_fields))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        loss = model.task.loss(out, batch["muons"], batch["muon_mask"])
        pred = model.task.predict(out)
    assert loss.dtype == torch.float32 and pred["truthMuon_pt"].dtype == torch.float32
    assert torch.isfinite(loss)


def test_input_size_follows_hit_fields_and_frame_fields():
    for frame_fields in ([], ["frame_v"], None):
        cfg = config_from_dict({} if frame_fields is None else {"frame_fields": frame_fields})
        # default: every field of schemas/frame.yaml
        n_frame = len(frame_field_names()) if frame_fields is None else len(frame_fields)
        for version, n in ((1, 22), (2, 23)):
            model = build_model(cfg, load_schema(version).inputs("hit"), MUON_FIELDS)
            assert model.encoder.input_net.net[0].in_features == n + n_frame
            assert model.task.raw_hit_net.net[0].in_features == n + n_frame


def test_masked_max_ignores_other_hits():
    h = torch.tensor([[[1.0], [5.0], [-2.0]]])  # [B=1, L=3, D=1]
    assign = torch.tensor([[[True, False, True], [False, False, False]]])  # [B, M=2, L]
    assert masked_max(h, assign, True).view(-1).tolist() == [1.0, 0.0]
    assert masked_max(h, assign, False).view(-1).tolist() == [-2.0, 0.0]


def make_batch(n_fields, B=8, L=12, M=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    hits = torch.randn(B, L, n_fields, generator=g)
    hit_mask = torch.arange(L).expand(B, L) < torch.randint(6, L + 1, (B, 1), generator=g)
    link = torch.randint(-1, M, (B, L), generator=g).masked_fill(~hit_mask, -1)
    link[:, :2] = torch.tensor([0, 1])  # every muon has hits
    pt = torch.exp(torch.empty(B, M).uniform_(1.5, 5.0, generator=g))
    q = torch.where(torch.rand(B, M, generator=g) < 0.5, -1.0, 1.0)
    eta = torch.empty(B, M).uniform_(-2.5, 2.5, generator=g)
    mu = muons(pt, eta, q)
    return {"hits": hits, "hit_mask": hit_mask, "link": link, "muons": mu, "muon_mask": torch.ones(B, M, dtype=torch.bool)}


@pytest.mark.parametrize("weighting", ["sigmoid", "softmax"])
def test_tiny_model_overfits_a_batch(weighting):
    torch.manual_seed(0)
    cfg = config_from_dict({"dim": 32, "heads": 4, "dropout": 0.0, "inverse_fields": ["truthMuon_pt"],
                            "hit_weighting": weighting, "frame_fields": []})
    batch = make_batch(5)
    vals = {f: batch["muons"][..., i].reshape(-1).numpy() for i, f in enumerate(MUON_FIELDS)}
    centres, scales = fit_target_scaling(vals, cfg.fields, cfg.inverse_fields)
    model = build_model(cfg, [f"x{i}" for i in range(5)], MUON_FIELDS, centres, scales)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(250):
        loss = model.task.loss(model(batch), batch["muons"], batch["muon_mask"])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first
    model.eval()
    pred = model.task.predict(model(batch))["truthMuon_pt"]
    rel = (pred - batch["muons"][..., 0]) / batch["muons"][..., 0]
    assert rel.abs().median() < 0.1


def test_padding_never_makes_nan():
    t = task(["truthMuon_pt", "truthMuon_q"], ["truthMuon_pt"])
    out = torch.zeros(2, 2, 2, requires_grad=True)
    loss = t.loss(out, muons(), MASK)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(out.grad).all()
