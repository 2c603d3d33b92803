"""The per-muon uncertainty head: a likelihood loss on (value, log σ) pairs, and σ in natural units.

With ``uncertainty: gaussian`` or ``laplace`` in the training config the regression head outputs
``2·T`` numbers per muon: the ``T`` values (scaled loss space, as without it) followed by ``T``
log-widths ``s`` in the same scaled space. The loss is the negative log-likelihood of the scaled
target ``y`` under the predicted distribution, per field, dropping constants:

* ``gaussian``: ``0.5·((y − μ)/σ)² + log σ`` with ``σ = exp(s)``;
* ``laplace``:  ``|y − μ|/b + log b`` with ``b = exp(s)``.

Value and width train together: a muon's value is weighted by 1/σ² (1/b), so the precisely measured
high-pT muons are fitted as tightly as their hits allow instead of as loosely as the scattering-limited
low-pT ones (a plain smooth-L1 gives every muon the same weight). The charge field (``truthMuon_q``, a
±1 label regressed as a number) has no meaningful width: it keeps the smooth-L1 loss and its width
output is unused. ``s`` is clamped to ``[LOG_SIGMA_MIN, LOG_SIGMA_MAX]`` before use.

:func:`natural_sigmas` turns the widths into what ``predict`` returns: σ(pT) in GeV and σ(q/pT) in
GeV⁻¹ (one follows from the other by ``σ(q/pT) = σ(pT)/pT²``, first order), σ(η), σ(φ) in their units.
The σ reported is the Gaussian σ, or the Laplace scale b (not its standard deviation √2·b): the
±2σ Gaussian-core width of a Laplace distribution is 0.95·b, so pulls (pred − true)/b have a core
width near 1 where ±√2·b would make it 0.67 (measured: docs/physics.md, "Per-muon uncertainty").

Torch only; imported by :mod:`.task`, imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

#: The values ``uncertainty`` may take in a training config.
KINDS = ("none", "gaussian", "laplace")
#: Clamp of the predicted log-width in the scaled space (σ from 6e-6 to 150 target spreads).
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -12.0, 5.0
#: Fields that get no width: the charge label.
NO_SIGMA = ("truthMuon_q",)


def outputs_per_field(kind: str) -> int:
    """How many head outputs each target field takes: 1 without a width, 2 with one."""
    return 1 if kind == "none" else 2


def split_output(out: Tensor, n_fields: int) -> tuple[Tensor, Tensor | None]:
    """Head output [B, M, T] or [B, M, 2T] → (values [B, M, T], clamped log-widths [B, M, T] or None)."""
    if out.shape[-1] == n_fields:
        return out, None
    return out[..., :n_fields], out[..., n_fields:].clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)


def nll(value: Tensor, log_sigma: Tensor, target: Tensor, kind: str) -> Tensor:
    """Elementwise negative log-likelihood (constants dropped) of ``target`` under (value, exp(log σ)).

    All tensors the same shape; ``kind`` ``gaussian`` or ``laplace``. Units: the scaled loss space.
    """
    if kind == "gaussian":
        return 0.5 * ((target - value) * torch.exp(-log_sigma)) ** 2 + log_sigma
    if kind == "laplace":
        return (target - value).abs() * torch.exp(-log_sigma) + log_sigma
    raise ValueError(f"uncertainty kind {kind!r}: expected one of {KINDS[1:]}")


def likelihood_loss(out: Tensor, target: Tensor, muon_mask: Tensor, kind: str, fields: Sequence[str],
                    loss_beta: float) -> Tensor:
    """Mean over real muons of the per-field loss averaged over fields; float32.

    ``out`` [B, M, 2T], ``target`` [B, M, T] (scaled loss space, padded slots already finite),
    ``muon_mask`` [B, M]. Fields in ``NO_SIGMA`` use smooth-L1 (β = ``loss_beta``) on their value.
    """
    T = len(fields)
    value, log_sigma = split_output(out.float(), T)
    assert log_sigma is not None, "likelihood_loss needs a head with width outputs"
    with_sigma = torch.tensor([f not in NO_SIGMA for f in fields], device=out.device)
    per = torch.where(with_sigma, nll(value, log_sigma, target, kind),
                      F.smooth_l1_loss(value, target, reduction="none", beta=loss_beta))  # [B, M, T]
    per = torch.where(muon_mask, per.mean(-1), 0.0)  # [B, M]
    return per.sum() / muon_mask.sum().clamp_min(1)


def natural_sigmas(log_sigma: Tensor, scale: Tensor, fields: Sequence[str], inverse_fields: Sequence[str],
                   pt: Tensor) -> dict[str, Tensor]:
    """Per-muon σ in natural units from the log-widths [B, M, T] and the target scales [T].

    ``pt`` [B, M]: the predicted pT in GeV (for the first-order conversion between σ(pT) and σ(q/pT)).
    Returns ``sigma_pt`` (GeV) and ``sigma_qpt`` (GeV⁻¹) when pT or q/pT is a target, and
    ``sigma_eta``, ``sigma_phi`` (rad) when those are; each [B, M], float32.
    """
    loss_space = torch.exp(log_sigma.float()) * scale.float()  # [B, M, T]: σ (gaussian) or b (laplace)
    pt2 = pt.float() ** 2
    out: dict[str, Tensor] = {}
    for i, name in enumerate(fields):
        s = loss_space[..., i]
        if name == "truthMuon_pt" and name in inverse_fields:  # σ(1/pT) = σ(q/pT) when q is right
            out["sigma_qpt"], out["sigma_pt"] = s, s * pt2
        elif name == "truthMuon_pt":
            out["sigma_pt"], out["sigma_qpt"] = s, s / pt2
        elif name == "truthMuon_qpt":
            out["sigma_qpt"], out["sigma_pt"] = s, s * pt2
        elif name in ("truthMuon_eta", "truthMuon_phi"):
            out["sigma_" + name.removeprefix("truthMuon_")] = s
    return out
