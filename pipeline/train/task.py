"""The weighted-pooling object-hit regression task, with the seed's ``inverse_fields``.

For each truth muon the hits assigned to it (by ``spacePoint_truthLink``) are pooled four ways
(weighted mean, weighted sum, max, min) over two views of the hits: the raw inputs through a small
net, and the encoder output through another. With learned per-hit weights on top, the head can
down-weight hits that carry little information (a strip hit's 1 cm versus a drift tube's 80 µm).
The 8 pooled vectors and the muon's own embedding (9·dim) feed an MLP that outputs the target fields.

Targets, in three spaces:

* natural: what the dataset stores and ``predict`` returns (GeV, rad, e);
* loss space: ``1/x`` for ``inverse_fields`` (curvature is Gaussian around truth, pT is not), else x;
* scaled: ``(loss_space - centre) / scale``, the network's output space. Without it 1/pT in
  0.005–0.2 GeV⁻¹ sits inside smooth-L1's quadratic zone (β = 1): tiny gradients next to η and φ.

The loss, the unscaling and the inversion run in float32 even under bf16 autocast: bf16 has 8 bits
of mantissa, i.e. 0.4 % relative steps, which is the size of the resolution being measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import uncertainty as unc
from .layers import Dense, float32_region

#: ``predict`` clamps inverse-space outputs into this range before inverting (the seed's values).
INVERSE_CLAMP = (1e-6, 1e6)
#: ``curvature_ratio``: 1/pT in GeV⁻¹ per unit of the curvature input (1e-5 mm⁻¹) at a zero output: a
#: starting point (measured pT·|c| ≈ 2 GeV·1e-5 mm⁻¹ at 10–20 GeV); exp(output) learns the rest.
CURVATURE_SCALE = 0.5


def fit_target_scaling(values: dict[str, np.ndarray], fields: Sequence[str],
                       inverse_fields: Sequence[str]) -> tuple[list[float], list[float]]:
    """Centre and scale of each target field in its loss space (from the training split)."""
    centres, scales = [], []
    for name in fields:
        x = np.asarray(values[name], dtype=np.float64)
        if name in inverse_fields:
            x = 1.0 / x[x > 0]
        x = x[np.isfinite(x)]
        c = float(x.mean()) if x.size else 0.0
        s = float(x.std()) if x.size > 1 else 1.0
        centres.append(c)
        scales.append(s if s > 0 else 1.0)
    return centres, scales


def masked_max(h: Tensor, assign: Tensor, largest: bool) -> Tensor:
    """Max (or min) of ``h`` [B, L, D] over the hits of each muon, ``assign`` [B, M, L]; 0 for no hits."""
    fill = float("-inf") if largest else float("inf")
    x = torch.where(assign.unsqueeze(-1), h.unsqueeze(1), torch.full((), fill, dtype=h.dtype, device=h.device))
    out = x.amax(dim=2) if largest else x.amin(dim=2)  # [B, M, D]
    return torch.where(torch.isinf(out), torch.zeros_like(out), out)


class WeightedPoolingRegression(nn.Module):
    """Regress ``fields`` of each truth muon from its truth-assigned hits.

    ``muon_fields`` is the order of the muon columns in a batch's ``muons`` tensor (the schema order);
    targets are picked from it by name.
    """

    def __init__(self, num_hit_fields: int, dim: int, fields: Sequence[str], muon_fields: Sequence[str], *,
                 inverse_fields: Sequence[str] = (), signed_curvature: bool = False,
                 centres: Sequence[float] | None = None, scales: Sequence[float] | None = None,
                 max_muons: int = 4, num_layers: int = 3, dropout: float = 0.1,
                 weighting: str = "sigmoid", object_inputs: Sequence[int] = (), loss_beta: float = 1.0,
                 uncertainty: str = "none", curvature_column: int | None = None) -> None:
        super().__init__()
        self.loss_beta = loss_beta
        #: ``none``, or the likelihood of a per-muon width head (:mod:`.uncertainty`): 2·T outputs then.
        self.uncertainty = uncertainty
        # Input columns that hold one value per object (muon-frame curvature, direction): their mean
        # over the object's hits (= the value) goes straight to the head, not only through the hit nets.
        self.register_buffer("object_index", torch.tensor(list(object_inputs), dtype=torch.long))
        self.fields = list(fields)
        self.inverse_fields = list(inverse_fields)
        self.signed_curvature = signed_curvature
        self.weighting = weighting
        self.inverse_indices = [i for i, f in enumerate(self.fields) if f in self.inverse_fields]
        T = len(self.fields)
        n_out = T * unc.outputs_per_field(uncertainty)
        self.register_buffer("target_index", torch.tensor([list(muon_fields).index(f) for f in self.fields]))
        self.register_buffer("inverse_mask", torch.tensor([f in self.inverse_fields for f in self.fields]))
        self.register_buffer("centre", torch.tensor(centres if centres is not None else [0.0] * T,
                                                    dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scales if scales is not None else [1.0] * T,
                                                   dtype=torch.float32))

        self.raw_hit_net = Dense(num_hit_fields, dim)
        self.encoded_hit_net = Dense(dim, dim)
        self.hit_weight = nn.Linear(dim, 1)  # learned per-hit pooling weight, from the encoded hit
        self.slot_embedding = nn.Embedding(max_muons, dim)  # the muon's own embedding ...
        self.context = nn.Linear(dim, dim)  # ... plus the pooled event state
        hidden = 9 * dim // 2
        layers: list[nn.Module] = []
        width = 9 * dim + len(object_inputs)
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.LayerNorm(hidden), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, n_out))
        self.head = nn.Sequential(*layers)
        self.object_head: nn.Module | None = None
        #: ``curvature_ratio``: the column of ``object_inputs`` holding the curvature, and the field it scales.
        self.curvature_column = curvature_column
        self.curvature_field = next((i for i, f in enumerate(self.fields) if f == "truthMuon_qpt"
                                     or (f == "truthMuon_pt" and f in self.inverse_fields)), None)
        if len(object_inputs):
            # Two paths: a small MLP on the per-object inputs alone learns the main mapping (curvature
            # and direction → targets) without the noise of the pooled hit features, and the pooled head,
            # zero-initialised, adds what the hits tell beyond it. One MLP on everything reached 5.2 %
            # core σ(pT)/pT at 10–100 GeV (12.8 % at 100–300); the two paths 4.4 % (7.0 %) (README).
            n = len(object_inputs)
            self.object_head = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                             nn.Linear(hidden, n_out))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, raw: Tensor, encoded: Tensor, hit_mask: Tensor, link: Tensor, muon_mask: Tensor) -> Tensor:
        """raw [B, L, F], encoded [B, L, D], hit_mask [B, L], link [B, L], muon_mask [B, M] → [B, M, T]
        ([B, M, 2T] with an uncertainty head: values, then log-widths).

        Runs in float32 whatever the autocast state: the pooled muon-frame inputs carry the bending
        at the 1e-3 level, which bf16 would round away; the head is small next to the encoder.
        """
        with float32_region(encoded):
            return self._forward(raw.float(), encoded.float(), hit_mask, link, muon_mask)

    def _forward(self, raw: Tensor, encoded: Tensor, hit_mask: Tensor, link: Tensor, muon_mask: Tensor) -> Tensor:
        B, L, D = encoded.shape
        M = muon_mask.shape[1]
        slots = torch.arange(M, device=link.device)
        assign = (link.unsqueeze(1) == slots.view(1, M, 1)) & hit_mask.unsqueeze(1)  # [B, M, L]
        score = self.hit_weight(encoded).squeeze(-1).float()  # [B, L]
        if self.weighting == "softmax":
            logits = score.unsqueeze(1).masked_fill(~assign, float("-inf"))  # [B, M, L]
            weights = torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)  # rows without hits: 0
            mass = weights * assign.sum(-1, keepdim=True)  # weighted sum = weighted mean × hit count
        else:  # the seed's masked sigmoid probabilities, normalised for the mean
            mass = torch.sigmoid(score).unsqueeze(1) * assign  # [B, M, L]
            weights = mass / mass.sum(-1, keepdim=True).clamp_min(1e-8)
        weights, mass = weights.to(encoded.dtype), mass.to(encoded.dtype)

        pooled = []
        for h in (self.raw_hit_net(raw), self.encoded_hit_net(encoded)):  # each [B, L, D]
            pooled += [torch.einsum("bml,bld->bmd", weights, h),  # weighted mean [B, M, D]
                       torch.einsum("bml,bld->bmd", mass, h),  # weighted sum [B, M, D]
                       masked_max(h, assign, largest=True),  # [B, M, D]
                       masked_max(h, assign, largest=False)]  # [B, M, D]
        n = hit_mask.sum(1, keepdim=True).clamp_min(1).to(encoded.dtype)  # [B, 1]
        event_state = (encoded * hit_mask.unsqueeze(-1)).sum(1) / n  # [B, D]
        embed = self.slot_embedding(slots).unsqueeze(0) + self.context(event_state).unsqueeze(1)  # [B, M, D]
        if self.object_head is None:
            return self.head(torch.cat([embed, *pooled], dim=-1))  # [B, M, T]
        counts = assign.sum(-1, keepdim=True).clamp_min(1).to(raw.dtype)  # [B, M, 1]
        per_object = torch.einsum("bml,blk->bmk", assign.to(raw.dtype), raw[..., self.object_index]) / counts
        out = self.head(torch.cat([embed, *pooled, per_object], dim=-1)) + self.object_head(per_object)  # [B, M, T]
        if self.curvature_column is None or self.curvature_field is None:
            return out
        return self._curvature_ratio(out, per_object[..., self.curvature_column])

    def _curvature_ratio(self, out: Tensor, curvature: Tensor) -> Tensor:
        """``curvature_ratio``: the curvature target (1/pT, or q/pT) in loss space is the muon's curvature
        input [B, M] (1e-5 mm⁻¹; its sign is q) times ``CURVATURE_SCALE``·exp(output): the head learns a
        relative correction (field integral, direction, energy loss), so its precision is relative at
        every pT. Returned in the scaled space, like every output; [B, M, T(·2)]."""
        i = self.curvature_field
        c = curvature if self.signed_curvature else curvature.abs()
        value = c * CURVATURE_SCALE * torch.exp(out[..., i].clamp(-10.0, 10.0))  # GeV⁻¹
        scaled = (value - self.centre[i]) / self.scale[i]
        return torch.cat([out[..., :i], scaled.unsqueeze(-1), out[..., i + 1:]], dim=-1)

    # ---------------------------------------------------------------------------------- targets

    def loss_space_targets(self, muons: Tensor) -> Tensor:
        """muons [B, M, K] (natural units) → targets [B, M, T] in loss space (1/x for inverse fields)."""
        t = muons.float().index_select(-1, self.target_index)  # [B, M, T]
        return torch.where(self.inverse_mask, 1.0 / t, t)

    def loss(self, out: Tensor, muons: Tensor, muon_mask: Tensor) -> Tensor:
        """Smooth-L1 (β = ``loss_beta``) in scaled loss space, averaged over fields and real muons; float32.

        With β well below the scaled spread the loss is L1-like: the network learns the conditional
        median, which survives the 1/x inversion unchanged and is not pulled by the noisy low-pT tail.
        """
        target = (self.loss_space_targets(muons) - self.centre) / self.scale  # [B, M, T]
        # Padded slots hold pT = 0, i.e. 1/pT = inf: select them away (inf × 0 would be NaN).
        target = torch.where(muon_mask.unsqueeze(-1), target, 0.0)
        if self.uncertainty != "none":
            return unc.likelihood_loss(out, target, muon_mask, self.uncertainty, self.fields, self.loss_beta)
        per = F.smooth_l1_loss(out.float(), target, reduction="none", beta=self.loss_beta).mean(-1)  # [B, M]
        per = torch.where(muon_mask, per, 0.0)
        return per.sum() / muon_mask.sum().clamp_min(1)

    def predict(self, out: Tensor) -> dict[str, Tensor]:
        """Network output [B, M, T] → named predictions [B, M] in natural units (pT in GeV).

        Inverse fields: ``1 / clamp(out, 1e-6, 1e6)``, so a zero, negative or huge output gives a
        finite pT (1e6 or 1e-6 GeV) rather than inf, a negative pT or a NaN. With signed curvature
        pT = 1/|q/pT| and q = sign(q/pT) are added. With an uncertainty head the per-muon widths are
        added too (:func:`.uncertainty.natural_sigmas`: ``sigma_pt`` in GeV, ``sigma_qpt`` in GeV⁻¹, ...).
        """
        lo, hi = INVERSE_CLAMP
        scaled, log_sigma = unc.split_output(out.float(), len(self.fields))  # [B, M, T] each (widths or None)
        x = scaled * self.scale + self.centre  # [B, M, T] loss space
        preds: dict[str, Tensor] = {}
        for i, name in enumerate(self.fields):
            value = x[..., i]
            if i in self.inverse_indices:
                value = 1.0 / value.clamp(min=lo, max=hi)
            preds[name] = value
        if self.signed_curvature:
            qpt = preds["truthMuon_qpt"]
            preds["truthMuon_pt"] = 1.0 / qpt.abs().clamp(min=lo, max=hi)
            preds["truthMuon_q"] = torch.where(qpt < 0, -1.0, 1.0)
        if log_sigma is not None:
            preds.update(unc.natural_sigmas(log_sigma, self.scale, self.fields, self.inverse_fields,
                                            preds.get("truthMuon_pt", torch.ones_like(x[..., 0]))))
        return preds
