"""AdamW parameter groups (nanoGPT's rule, embeddings kept out) and resuming a one-group checkpoint."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pipeline.schema import load_schema  # noqa: E402
from pipeline.train.config import config_from_dict  # noqa: E402
from pipeline.train.model import build_model  # noqa: E402
from pipeline.train.module import RegressionModule  # noqa: E402

MUON_FIELDS = load_schema(2).names("muon")
HIT_FIELDS = load_schema(2).inputs("hit")
CFG = {"dim": 16, "heads": 2, "encoder_layers": 2, "inverse_fields": ["truthMuon_pt"],
       "trainer": {"weight_decay": 0.05, "lr": 1e-3}}


def test_only_weight_matrices_decay():
    model = build_model(config_from_dict(CFG), HIT_FIELDS, MUON_FIELDS)
    decay, no_decay = model.param_groups(0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    in_decay = {id(p) for p in decay["params"]}
    in_no_decay = {id(p) for p in no_decay["params"]}
    params = list(model.parameters())
    assert not in_decay & in_no_decay and in_decay | in_no_decay == {id(p) for p in params}  # a partition
    slot = model.task.slot_embedding.weight
    assert slot.dim() == 2 and id(slot) in in_no_decay  # the embedding table: 2-D, yet not decayed
    for name, p in model.named_parameters():
        if p.dim() < 2:  # biases, LayerNorm gains and shifts
            assert id(p) in in_no_decay, name
        elif p is not slot:  # every other >= 2-D tensor: a weight matrix
            assert id(p) in in_decay, name
    assert any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)} <= in_no_decay


def _module():
    torch.manual_seed(0)
    norm = {f: {"mean": 0.0, "std": 1.0} for f in HIT_FIELDS}
    cfg = config_from_dict(CFG)
    return RegressionModule(cfg.to_dict(), HIT_FIELDS, MUON_FIELDS, norm, [0.0] * 4, [1.0] * 4, total_steps=50)


def test_the_module_optimiser_uses_the_groups():
    module = _module()
    opt = module.configure_optimizers()["optimizer"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [len(g["params"]) for g in module.model.param_groups(0.05)]


def test_a_one_group_checkpoint_resumes_with_its_moments():
    """A run saved before the groups (one AdamW group over all parameters) resumes: each parameter keeps
    its AdamW moments, and the scheduler drives both groups."""
    module = _module()
    old = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(old, lambda step: 0.5)
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    old.step()
    sched.step()
    before = {id(p): old.state[p]["exp_avg"].clone() for p in module.parameters()}
    checkpoint = {"optimizer_states": [old.state_dict()], "lr_schedulers": [sched.state_dict()]}
    module.on_load_checkpoint(checkpoint)

    conf = module.configure_optimizers()
    opt, new_sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    opt.load_state_dict(checkpoint["optimizer_states"][0])
    new_sched.load_state_dict(checkpoint["lr_schedulers"][0])
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    for p in module.parameters():
        torch.testing.assert_close(opt.state[p]["exp_avg"], before[id(p)])
    assert len(new_sched.base_lrs) == 2
    new_sched.step()
    assert [g["lr"] for g in opt.param_groups] == new_sched.get_last_lr() and len(set(new_sched.get_last_lr())) == 1
