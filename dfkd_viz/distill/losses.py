"""Loss terms of generator-based DFKD (``docs/methods.md``; ``zju-vipa/CMI:datafree/criterions.py``,
``zju-vipa/CMI:datafree/hooks.py``, ``VainF/Data-Free-Adversarial-Distillation``, ZSKT).

Shapes: logits ``(B, K)``; images ``(B, C, H, W)`` in [0, 1]; every function returns a scalar
tensor. ``KL(a‖b)`` is ``F.kl_div(log b, a)``, averaged over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def kd_kl(s_logits: torch.Tensor, t_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``τ² · KL(p_T^τ ‖ p_S^τ)``, batch mean (Hinton et al. 2015)."""
    return (
        F.kl_div(
            F.log_softmax(s_logits / tau, 1),
            F.log_softmax(t_logits / tau, 1),
            reduction="batchmean",
            log_target=True,
        )
        * tau
        * tau
    )


def kl_per_sample(p_logits: torch.Tensor, q_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``KL(p^τ ‖ q^τ)`` per sample, ``(B,)`` ≥ 0."""
    lp, lq = F.log_softmax(p_logits / tau, 1), F.log_softmax(q_logits / tau, 1)
    return (lp.exp() * (lp - lq)).sum(1)


def l1_logits(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """Mean absolute logit difference (DFAD's student loss and, negated, its adversarial loss)."""
    return (s_logits - t_logits).abs().mean()


def adversarial(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor,
    kind: str = "kl",
    tau: float = 1.0,
    agree_only: bool = False,
) -> torch.Tensor:
    """Adversarial generator term: the *negative* teacher–student discrepancy (lower = more
    disagreement). ``kind`` ``"kl"`` (CMI / ZSKT) or ``"l1"`` (DFAD). With ``agree_only`` only samples
    on which student and teacher agree count (CMI's DFQ), so the generator does not push samples
    that already fool the student further."""
    if kind == "l1":
        d = (s_logits - t_logits).abs().mean(1)
    else:
        d = kl_per_sample(t_logits, s_logits, tau)
    if agree_only:
        mask = (s_logits.argmax(1) == t_logits.argmax(1)).float()
        return -(d * mask).sum() / mask.sum().clamp_min(1.0)
    return -d.mean()


def one_hot(t_logits: torch.Tensor) -> torch.Tensor:
    """Class-prior term ``CE(t, argmax t)``: synthetic samples the teacher is confident about."""
    return F.cross_entropy(t_logits, t_logits.argmax(1))


def balance(t_logits: torch.Tensor) -> torch.Tensor:
    """Information-entropy term ``log K + Σ_c p̄_c log p̄_c`` ≥ 0, ``p̄`` = batch-mean teacher
    probabilities (DAFL): zero when the batch covers all K classes equally."""
    p = F.softmax(t_logits, 1).mean(0)
    return math.log(p.numel()) + (p * torch.log(p.clamp_min(1e-8))).sum()


def activation(features: torch.Tensor) -> torch.Tensor:
    """DAFL's activation term ``−mean |f|`` on the teacher's penultimate features ``(B, D)``."""
    return -features.abs().mean()


def attention_map(a: torch.Tensor) -> torch.Tensor:
    """Spatial attention of activations ``(B, C, H, W)``: L2-normalised ``mean_c a²`` ``(B, H·W)``."""
    return F.normalize(a.pow(2).mean(1).flatten(1), dim=1)


def attention_transfer(s_blocks: list[torch.Tensor], t_blocks: list[torch.Tensor]) -> torch.Tensor:
    """ZSKT's attention-transfer term ``Σ_l mean (at(s_l) − at(t_l))²`` (Zagoruyko & Komodakis
    2017; ``polo5/ZeroShotKnowledgeTransfer``). Blocks must have matching spatial sizes."""
    total = s_blocks[0].new_zeros(())
    for s, t in zip(s_blocks, t_blocks):
        if s.shape[-2:] != t.shape[-2:]:
            raise ValueError(
                f"attention transfer needs equal spatial sizes, got {s.shape} and {t.shape}"
            )
        total = total + (attention_map(s) - attention_map(t)).pow(2).mean()
    return total


def js_divergence(
    p_logits: torch.Tensor, q_logits: torch.Tensor, tau: float = 3.0, clip: float = 0.01
) -> torch.Tensor:
    """TA-DFKD's Jensen–Shannon term between two sets of logits ``(B, K)`` (Shin & Choi 2024;
    ``bigdata-inha/TA-DFKD-Official:TA-DFKD-main-CIFAR.py:JS_divergence``), scalar ≥ 0.

    ``P, Q = softmax(·/τ)``, ``M = (P + Q)/2``, all clipped to ``[clip, 1 − clip]``; the value is
    ``½·KL(M‖P) + ½·KL(M‖Q)`` averaged over *all B·K entries* (the reference's ``KLDivLoss``
    default reduction), so it is ``1/K`` of the per-sample divergence — kept as the reference has
    it, since the generator's loss weights were tuned on that scale."""
    p = F.softmax(p_logits / tau, 1)
    q = F.softmax(q_logits / tau, 1)
    m = (0.5 * (p + q)).clamp(clip, 1 - clip)
    p, q = p.clamp(clip, 1 - clip), q.clamp(clip, 1 - clip)
    return 0.5 * (m * (m.log() - p.log())).mean() + 0.5 * (m * (m.log() - q.log())).mean()


def tv_norm(x: torch.Tensor) -> torch.Tensor:
    """TA-DFKD's (DeepInversion's) image prior: the sum of the L2 norms of the horizontal,
    vertical and both diagonal pixel differences of a batch ``(B, C, H, W)`` (scalar; grows with
    √B — the reference's weights assume its batch)."""
    return (
        torch.norm(x[..., :, :-1] - x[..., :, 1:])
        + torch.norm(x[..., :-1, :] - x[..., 1:, :])
        + torch.norm(x[..., 1:, :-1] - x[..., :-1, 1:])
        + torch.norm(x[..., :-1, :-1] - x[..., 1:, 1:])
    )


class BNStatsHook:
    """DeepInversion's BN-statistics loss on a (frozen) network (Yin et al. 2020;
    ``zju-vipa/CMI:datafree/hooks.py:DeepInversionHook``).

    While :attr:`enabled`, the hook keeps the input of every ``BatchNorm2d`` layer of ``model``;
    :meth:`loss` then sums, over the layers, ``‖μ_batch − μ_running‖₂ + ‖σ²_batch − σ²_running‖₂``
    (scalar), on all samples or on a subset (TA-DFKD matches BN statistics on the samples it keeps).

    Raises:
        ValueError: ``model`` has no ``BatchNorm2d`` layer.
    """

    def __init__(self, model: nn.Module) -> None:
        self.enabled = False
        self._inputs: list[tuple[nn.BatchNorm2d, torch.Tensor]] = []
        self._handles = [
            m.register_forward_hook(self._hook)
            for m in model.modules()
            if isinstance(m, nn.BatchNorm2d)
        ]
        if not self._handles:
            raise ValueError("the BN-statistics loss needs a model with BatchNorm2d layers")

    def _hook(self, module: nn.BatchNorm2d, inputs, output) -> None:
        if self.enabled:
            self._inputs.append((module, inputs[0]))

    def loss(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the terms of the inputs kept since the last call (then forgotten).

        Args:
            mask: ``(B,)`` bool, the samples that count; None = all. Fewer than 2 selected
                samples give a zero loss (no batch statistics).
        """
        inputs, self._inputs = self._inputs, []
        terms = []
        for module, x in inputs:
            if mask is not None:
                x = x[mask]
            if x.shape[0] < 2:
                continue
            x = x.float()  # inputs kept under bf16/fp16 autocast: the statistics in fp32
            mean = x.mean((0, 2, 3))
            var = x.var((0, 2, 3), unbiased=False)
            terms.append(
                torch.norm(mean - module.running_mean, 2) + torch.norm(var - module.running_var, 2)
            )
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
