"""The per-muon uncertainty head: its likelihood loss, σ recovery on a toy, σ in natural units, pulls."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.schema import load_schema  # noqa: E402
from pipeline.train import uncertainty as unc  # noqa: E402
from pipeline.train.config import config_from_dict  # noqa: E402
from pipeline.train.metrics import pull_stats, qpt_pulls  # noqa: E402
from pipeline.train.task import WeightedPoolingRegression  # noqa: E402

MUON_FIELDS = load_schema(2).names("muon")  # pt, eta, phi, q, qpt
FIELDS = ["truthMuon_eta", "truthMuon_pt", "truthMuon_q"]


def _muons(pt: list[list[float]], eta: list[list[float]], q: list[list[float]]) -> torch.Tensor:
    pt_t, eta_t, q_t = (torch.tensor(v, dtype=torch.float64) for v in (pt, eta, q))
    qpt = torch.where(pt_t > 0, q_t / pt_t.clamp_min(1e-9), 0.0)
    return torch.stack([pt_t, eta_t, torch.zeros_like(pt_t), q_t, qpt], dim=-1)  # [B, M, K], schema order


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_loss_equals_a_hand_computed_case(kind):
    """η and 1/pT with widths, q with smooth-L1; centre/scale applied; the padded slot excluded."""
    centres, scales = [0.1, 0.05, 0.0], [2.0, 0.04, 1.0]
    task = WeightedPoolingRegression(3, 8, FIELDS, MUON_FIELDS, inverse_fields=["truthMuon_pt"], centres=centres,
                                     scales=scales, uncertainty=kind, loss_beta=0.5)
    muons = _muons([[5.0, 40.0], [100.0, 0.0]], [[0.3, -1.2], [2.0, 0.0]], [[1, -1], [-1, 0]])
    mask = torch.tensor([[True, True], [True, False]])
    out = torch.tensor([[[0.2, 3.1, 0.9, -1.0, -2.0, 0.0], [-0.5, -0.6, -0.2, 0.5, -3.0, 0.0]],
                        [[1.1, -0.9, -1.5, 0.2, -20.0, 0.0], [9.0, 9.0, 9.0, 9.0, 9.0, 9.0]]])  # [B, M, 2T]
    loss = task.loss(out, muons, mask).item()

    def nll(mu: float, s: float, y: float) -> float:
        s = min(max(s, -12.0), 5.0)  # the documented clamp: -20 becomes -12
        return 0.5 * ((y - mu) / math.exp(s)) ** 2 + s if kind == "gaussian" else abs(y - mu) / math.exp(s) + s

    def smooth_l1(d: float, beta: float = 0.5) -> float:
        return 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta

    per_muon = []
    for b, m, eta, pt, q in ((0, 0, 0.3, 5.0, 1), (0, 1, -1.2, 40.0, -1), (1, 0, 2.0, 100.0, -1)):
        o = out[b, m].tolist()
        y_eta, y_ipt, y_q = (eta - 0.1) / 2.0, (1 / pt - 0.05) / 0.04, q
        per_muon.append((nll(o[0], o[3], y_eta) + nll(o[1], o[4], y_ipt) + smooth_l1(o[2] - y_q)) / 3)
    assert loss == pytest.approx(sum(per_muon) / 3, rel=2e-6)


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_nll_in_float64_matches_the_formula(kind):
    value = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    log_sigma = torch.tensor([-1.0, 0.5, -3.0], dtype=torch.float64)
    target = torch.tensor([0.1, 1.0, 2.001], dtype=torch.float64)
    got = unc.nll(value, log_sigma, target, kind).tolist()
    for g, mu, s, y in zip(got, value.tolist(), log_sigma.tolist(), target.tolist(), strict=True):
        ref = 0.5 * (y - mu) ** 2 / math.exp(2 * s) + s if kind == "gaussian" else abs(y - mu) / math.exp(s) + s
        assert g == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_toy_heteroscedastic_regression_recovers_the_true_sigma(kind):
    """y = x/2 + noise of standard deviation 0.05 + 0.25 x² (Gaussian or Laplace noise as the
    likelihood assumes): a small MLP trained on the NLL for 500 steps predicts the width within 10 %
    across x (Gaussian: σ; Laplace: the scale b = σ/√2)."""
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    n = 8192
    x = torch.rand(n, 1, generator=gen) * 2 - 1
    true_sigma = 0.05 + 0.25 * x**2
    if kind == "gaussian":
        noise = torch.randn(n, 1, generator=gen)
    else:  # unit-variance Laplace: difference of exponentials / √2
        e = -torch.log(torch.rand(n, 2, generator=gen))
        noise = (e[:, :1] - e[:, 1:]) / math.sqrt(2)
    y = 0.5 * x + true_sigma * noise
    net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(500):
        out = net(x)
        loss = unc.nll(out[:, :1], out[:, 1:].clamp(unc.LOG_SIGMA_MIN, unc.LOG_SIGMA_MAX), y, kind).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    grid = torch.linspace(-0.95, 0.95, 39).unsqueeze(1)
    with torch.no_grad():
        width = torch.exp(net(grid)[:, 1:])
    true_width = (0.05 + 0.25 * grid**2) / (math.sqrt(2) if kind == "laplace" else 1.0)
    ratio = (width / true_width).squeeze(1).numpy()
    assert np.all(np.abs(ratio - 1) < 0.10), ratio


def test_sigmas_in_natural_units_follow_the_first_order_propagation():
    """inverse pT head: σ(q/pT) = scale·e^s (GeV⁻¹), σ(pT) = pT²·σ(q/pT); direct pT: the other way round."""
    log_sigma = torch.tensor([[[-1.0, -2.0]]])  # [B=1, M=1, T=2]: (eta, pt)
    scale = torch.tensor([1.5, 0.04])
    pt = torch.tensor([[50.0]])
    s = unc.natural_sigmas(log_sigma, scale, ["truthMuon_eta", "truthMuon_pt"], ["truthMuon_pt"], pt)
    s_qpt = 0.04 * math.exp(-2.0)
    assert s["sigma_qpt"].item() == pytest.approx(s_qpt, rel=1e-6)
    assert s["sigma_pt"].item() == pytest.approx(s_qpt * 50.0**2, rel=1e-6)
    assert s["sigma_eta"].item() == pytest.approx(1.5 * math.exp(-1.0), rel=1e-6)
    d = unc.natural_sigmas(log_sigma, torch.tensor([1.5, 30.0]), ["truthMuon_eta", "truthMuon_pt"], [], pt)
    assert d["sigma_pt"].item() == pytest.approx(30.0 * math.exp(-2.0), rel=1e-6)
    assert d["sigma_qpt"].item() == pytest.approx(d["sigma_pt"].item() / 2500.0, rel=1e-6)


def test_predict_returns_values_and_sigmas_and_old_width_is_unchanged():
    task = WeightedPoolingRegression(3, 8, FIELDS, MUON_FIELDS, inverse_fields=["truthMuon_pt"],
                                     centres=[0.0, 0.0, 0.0], scales=[1.0, 0.02, 1.0], uncertainty="gaussian")
    out = torch.tensor([[[0.5, 2.0, 1.0, -1.0, -3.0, 0.0]]])  # 1/pT = 0.04 → pT = 25 GeV
    p = task.predict(out)
    assert p["truthMuon_pt"].item() == pytest.approx(25.0, rel=1e-6)
    assert p["sigma_qpt"].item() == pytest.approx(0.02 * math.exp(-3.0), rel=1e-6)
    assert p["sigma_pt"].item() == pytest.approx(625 * 0.02 * math.exp(-3.0), rel=1e-5)
    assert "sigma_q" not in p
    old = WeightedPoolingRegression(3, 8, FIELDS, MUON_FIELDS, inverse_fields=["truthMuon_pt"])
    assert old.head[-1].out_features == 3 and task.head[-1].out_features == 6
    assert not any(k.startswith("sigma") for k in old.predict(out[..., :3]))


def test_unknown_uncertainty_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="uncertainty: expected none, gaussian or laplace, got 'poisson'"):
        config_from_dict({"uncertainty": "poisson"})
    assert config_from_dict({}).uncertainty == "none"


def test_pulls_and_coverage_against_numpy():
    rng = np.random.default_rng(5)
    n = 20000
    true_pt = rng.uniform(5, 300, n)
    true_q = rng.choice([-1, 1], n)
    sigma = 0.03 / true_pt
    pred_qpt = true_q / true_pt + 1.3 * sigma * rng.standard_normal(n)  # σ underestimated by 1.3
    pull = qpt_pulls(true_pt, 1 / np.abs(pred_qpt), true_q, np.sign(pred_qpt), sigma)
    ref = (pred_qpt - true_q / true_pt) / sigma
    np.testing.assert_allclose(pull, ref, rtol=1e-9, atol=1e-12)
    st = pull_stats(pull, errors=True)
    assert st["core_width"] == pytest.approx(1.3, rel=0.03) and st["mad_width"] == pytest.approx(1.3, rel=0.03)
    assert st["cover68"] == pytest.approx(np.mean(np.abs(ref) < 1), abs=1e-12)
    assert st["cover68"] == pytest.approx(math.erf(1 / 1.3 / math.sqrt(2)), abs=0.01)  # ≈ 55.6 %
    assert st["cover95"] == pytest.approx(math.erf(1.959964 / 1.3 / math.sqrt(2)), abs=0.01)
    assert 0 < st["core_width_err"] < 0.03
    assert np.isnan(qpt_pulls(np.array([10.0]), np.array([10.0]), np.array([1]), np.array([1.0]), np.array([0.0])))[0]


def test_classical_fit_sigma_is_calibrated_on_an_independent_sample():
    """The fit's σ(q/pT) (covariance + material terms): pull core width within 0.85–1.15 at 10–300 GeV."""
    ak = pytest.importorskip("awkward")
    from pipeline.simulate import SimConfig, fit_tracks, simulate_events

    ev = simulate_events(1500, seed=41, config=SimConfig(background_per_event=5, pt_min=10, pt_max=300))
    fit = fit_tracks(ev, ak.num(ev["truthMuon_pt"]))
    flat = {k: ak.to_numpy(ak.flatten(fit[k])).astype(float) for k in ("pt", "q", "sigma_qpt")}
    pt, q = (ak.to_numpy(ak.flatten(ev[f"truthMuon_{k}"])).astype(float) for k in ("pt", "q"))
    assert np.all(flat["sigma_qpt"][np.isfinite(flat["pt"])] > 0)
    st = pull_stats(qpt_pulls(pt, flat["pt"], q, flat["q"], flat["sigma_qpt"]))
    assert st["n"] > 1500 and 0.85 < st["core_width"] < 1.15, st


TINY = """
fields: [truthMuon_eta, truthMuon_phi, truthMuon_pt, truthMuon_q]
inverse_fields: [truthMuon_pt]
uncertainty: gaussian
dim: 16
heads: 2
encoder_layers: 1
data: {batch_size: 32, num_workers: 0, shuffle_buffer: 256}
trainer: {max_epochs: 1, max_steps: 6, lr: 3.0e-3, warmup_steps: 2, patience: 3}
"""



def _invoke(*args):
    from click.testing import CliRunner

    from pipeline.cli import main

    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_tiny_trained_model_gives_finite_pulls_and_their_width(dataset, tmp_path):
    pytest.importorskip("lightning")
    import pyarrow.parquet as pq

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run = tmp_path / "run"
    _invoke("train", "--config", cfg, "--data", dataset, "--output", run)
    out = _invoke("evaluate", run, "--data", dataset, "--split", "all")
    ev = run / "eval"
    metrics = json.loads((ev / "metrics.json").read_text())
    pull = metrics["methods"]["model"]["overall"]["pull"]
    assert pull["n"] == metrics["n_muons"] > 0
    assert math.isfinite(pull["core_width"]) and pull["core_width"] > 0 and 0 <= pull["cover68"] <= 1
    assert "pull" in metrics["methods"]["model"]["pt_bins"][3] and "pull" in metrics["methods"]["model"]["regions"]["barrel"]["overall"]
    preds = pq.read_table(ev / "predictions.parquet").to_pydict()
    for name in ("pred_sigma_pt", "pred_sigma_qpt", "pred_sigma_eta", "pred_sigma_phi"):
        assert all(0 < v < 1e9 for v in preds[name]), name
    np.testing.assert_allclose(preds["pred_sigma_pt"], np.array(preds["pred_sigma_qpt"]) * np.array(preds["pred_pt"]) ** 2,
                               rtol=1e-4)
    assert "pull core width, q/pT" in out and "68 % interval coverage [%]" in out
    assert (ev / "pulls_vs_pt.png").stat().st_size > 1000
    if metrics["baseline_status"] == "ok":  # the classical fit's pulls beside the network's
        assert math.isfinite(metrics["methods"]["classical_fit"]["overall"]["pull"]["core_width"])


def test_old_kind_checkpoint_still_evaluates_and_resumes(dataset, tmp_path):
    """A run saved before ``uncertainty`` and ``curvature_ratio`` existed (no keys in its config) loads as
    ``none`` / false: same head width, evaluates without pulls for the network, and resumes."""
    pytest.importorskip("lightning")
    from pipeline.train.module import RegressionModule

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY.replace("uncertainty: gaussian\n", ""))
    run = tmp_path / "run"
    _invoke("train", "--config", cfg, "--data", dataset, "--output", run)
    for name in ("best.ckpt", "last.ckpt"):
        path = run / "checkpoints" / name
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        for key in ("uncertainty", "curvature_ratio"):
            ckpt["hyper_parameters"]["config"].pop(key)
        torch.save(ckpt, path)
    saved = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text("\n".join(line for line in saved.splitlines()
                                               if not line.startswith(("uncertainty", "curvature_ratio"))))
    module = RegressionModule.load_from_checkpoint(run / "checkpoints" / "best.ckpt", map_location="cpu")
    assert module.cfg.uncertainty == "none" and module.model.task.head[-1].out_features == 4
    assert not module.cfg.curvature_ratio and module.model.task.curvature_column is None
    _invoke("evaluate", run, "--data", dataset, "--no-plots")
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert "pull" not in metrics["methods"]["model"]["overall"]
    _invoke("train", "--data", dataset, "--output", run, "--resume", "--max-steps", "8")
    assert json.loads((run / "summary.json").read_text())["steps"] == 8


def test_shipped_sigma_config_is_the_signed_head_plus_the_width():
    """``inverse_pt_sigma`` regresses q/pT (the signed inverse pT): the signed head, plus the width and
    the curvature ratio, so its charge is the sign of the curvature input."""
    from dataclasses import replace

    from pipeline.train.config import load_config

    sigma, signed = load_config("inverse_pt_sigma"), load_config("signed_curvature")
    assert sigma.uncertainty != "none" and signed.uncertainty == "none"
    assert sigma.curvature_ratio and not signed.curvature_ratio
    assert replace(sigma, uncertainty="none", curvature_ratio=False) == signed


@pytest.mark.parametrize("signed", [False, True])
def test_curvature_ratio_scales_the_curvature_input(signed):
    """With ``curvature_ratio`` the 1/pT (q/pT) output is |c| (c) × CURVATURE_SCALE × exp(raw output),
    c the per-muon curvature input: checked against a float64 reference through the whole forward."""
    from pipeline.train.task import CURVATURE_SCALE

    torch.manual_seed(0)
    fields = ["truthMuon_eta", "truthMuon_qpt"] if signed else ["truthMuon_eta", "truthMuon_pt"]
    kw = {"signed_curvature": True} if signed else {"inverse_fields": ["truthMuon_pt"]}
    common = dict(centres=[0.0, 0.01], scales=[1.0, 0.05], object_inputs=[2], uncertainty="laplace", **kw)
    ratio = WeightedPoolingRegression(3, 8, fields, MUON_FIELDS, curvature_column=0, **common)
    plain = WeightedPoolingRegression(3, 8, fields, MUON_FIELDS, **common)
    plain.load_state_dict(ratio.state_dict())  # the same weights: only the parametrisation differs
    B, L, M = 2, 5, 2
    raw = torch.randn(B, L, 3)
    link = torch.tensor([[0, 0, 1, 1, -1], [0, 0, 0, 1, 1]])
    raw[..., 2] = torch.tensor([[0.8, 0.8, -0.05, -0.05, 0.0], [-1.6, -1.6, -1.6, 0.3, 0.3]])  # c per muon
    args = (raw, torch.randn(B, L, 8), torch.ones(B, L, dtype=torch.bool), link, torch.ones(B, M, dtype=torch.bool))
    with torch.no_grad():
        o, r = plain(*args), ratio(*args)
    c = torch.tensor([[0.8, -0.05], [-1.6, 0.3]], dtype=torch.float64)
    value = (c if signed else c.abs()) * CURVATURE_SCALE * torch.exp(o[..., 1].double())
    torch.testing.assert_close(r[..., 1].double(), (value - 0.01) / 0.05, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r[..., [0, 2, 3]], o[..., [0, 2, 3]])  # η and the widths untouched
    pred = ratio.predict(r)
    torch.testing.assert_close(pred["truthMuon_pt"].double(), 1 / value.abs(), rtol=1e-5, atol=0)
    if signed:
        assert torch.equal(pred["truthMuon_q"], torch.sign(c).float())


def test_curvature_ratio_needs_the_curvature_input_and_a_curvature_target():
    with pytest.raises(ConfigError, match="curvature_ratio: true needs frame_curvature"):
        config_from_dict({"curvature_ratio": True, "frame_fields": ["frame_u"], "inverse_fields": ["truthMuon_pt"]})
    with pytest.raises(ConfigError, match="curvature_ratio: true needs"):
        config_from_dict({"curvature_ratio": True})  # direct pT: nothing to scale
    assert config_from_dict({"curvature_ratio": True, "inverse_fields": ["truthMuon_pt"]}).curvature_ratio
