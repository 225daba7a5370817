"""ATEsc — Adversarial Trap Escaping (Hong et al., ICML 2025), as reconstructed here.

**Premise** (the paper's, re-measured on this project's real data): a non-transferable (NTL) teacher
is *more adversarially robust* on its OOD domain than on ID data. With this module's probe (3-step
L∞ PGD, 500 test images per domain): the watermark-NTL teacher at ε = 0.05 flips 56 % of ID images
and 0 % of watermarked ones (AUROC of the robustness score for OOD vs ID: 1.00); the digits-NTL
teacher at ε = 0.06 flips 84 % vs 34 % (AUROC 0.79); the MNIST-M-NTL teacher at ε = 0.03 15 % vs 3 %
(AUROC 0.93). A clean teacher shows the reverse (AUROC 0.05–0.14: it is *less* robust off its
domain). So the robustness of the teacher's prediction on a synthetic sample tells whether the
sample is ID-like (fragile) or OOD-like (robust). ATEsc distils from the fragile group and uses the
robust group to *forget* the OOD knowledge the trap would otherwise pass on.

**No reference code exists** (the announced repository holds only a README, and the full text was
not reachable), so every mechanism below is this project's reconstruction, exposed as a parameter:

- *Attack* (``attack``, ``epsilon``, ``steps``): an untargeted L∞ PGD (``steps`` ≥ 1; FGSM when 1)
  on the frozen teacher, maximising the cross-entropy of the teacher's own label ``y = argmax T(x)``,
  from ``x`` with step size ``2.5·ε/steps``, clipped to the ε-ball (pixel units; the default 0.05 ≈
  0.16 in MNIST-normalised units, where the AUROCs above are high for every NTL teacher of the zoo). Few steps keep the cost acceptable on the CPU; the probe runs **once per
  new synthetic sample** (the engine stores the decision with the sample in the replay memory), not
  once per student step — the two naive reconstructions of the planning notes ran a probe on every
  student step and lost 60 % of their iterations.
- *Score* (``score``): ``confidence`` = the teacher's probability of ``y`` at the adversarial point,
  ``p_T(y | x + δ)`` in [0, 1] (high = robust = OOD-like); ``margin`` = logit margin of ``y`` over the
  best other class at ``x + δ`` (unbounded).
- *Split* (``split``): ``quantile`` keeps the ``keep_fraction`` most fragile samples of each new batch
  (a batch-relative rule: synthetic samples are not distributed like real ID data, so a threshold
  calibrated on real data does not transfer — early prototypes here saw 84–97 % of synthetic samples
  "fragile" at real-data thresholds); ``gmm`` fits a 2-component 1-D Gaussian mixture
  (``sklearn.mixture.GaussianMixture``) per batch and keeps the posterior of the low-robustness
  component > 0.5 (falls back to ``quantile`` when the two components are not separated);
  ``threshold`` keeps scores ≤ ``threshold``.
- *Forgetting* (``forget``, ``forget_weight``): on the robust group, ``uniform`` adds
  ``λ · KL(U ‖ p_S)`` — the student is taught to have no opinion on OOD-like inputs instead of the
  NTL teacher's deliberately wrong one; ``none`` only drops them. The weight is small (0.1) so the
  term never swamps distillation.

- *Grouping* (``group``): ``batch`` splits each new batch as a whole; ``class`` splits within each
  teacher class (a class the trap distorts is then not emptied wholesale).
- *Which side* (``keep``): ``fragile`` (ATEsc) or ``robust`` (an ablation).

Per-sample score recorded for the Decisions view: the robustness score; decision: kept = fragile.

**Measured here** (``docs/results/ntl-trap.md``; 3 seeds, 200 steps): the premise does not
carry over to synthetic samples. DFQ's are nearly all fragile and sit among real ID points in the
teacher's feature space; the robustness score predicts on which samples the NTL teacher disagrees
with the clean teacher inversely or not at all (AUROC 0.29–0.50, DFQ and DFAD); for DAFL it points
the right way (0.70–0.85) but only 1–3 % of samples are OOD-like. ATEsc recovered 0 % of the DFQ
traps and ≤ 19 % (inside the seed spread) of the DAFL ones; a perfect real-data domain filter
(the ``domain-oracle`` defense) ≤ 28 %. The NTL students lose specific ID classes (class 9), so the
trap acts through the teacher's outputs on ID-looking samples.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from dfkd_viz.distill.defenses.base import (
    DEFENSES,
    Defense,
    DefenseParams,
    Selection,
    uniform_forgetting,
)

if TYPE_CHECKING:
    from dfkd_viz.distill.engine import StepContext


class ATEscParams(DefenseParams):
    """Parameters of :class:`ATEsc` (ranges checked at the boundary)."""

    epsilon: float = Field(0.05, gt=0.0, le=1.0, description="L∞ attack budget, pixel units")
    steps: int = Field(3, ge=1, le=50, description="PGD steps (1 = FGSM)")
    score: Literal["confidence", "margin"] = "confidence"
    split: Literal["quantile", "gmm", "threshold"] = "quantile"
    keep_fraction: float = Field(0.5, gt=0.0, le=1.0)
    threshold: float = Field(
        0.5, description="robustness above which a sample is OOD-like (split=threshold)"
    )
    group: Literal["batch", "class"] = Field(
        "batch",
        description="split each new batch as a whole, or within each teacher-predicted class",
    )
    keep: Literal["fragile", "robust"] = Field(
        "fragile",
        description="which group is distilled (the paper: fragile; 'robust' is this project's ablation)",
    )
    forget: Literal["uniform", "none"] = "uniform"
    forget_weight: float = Field(0.1, ge=0.0, le=10.0)


def adversarial_robustness(
    teacher: torch.nn.Module, x: torch.Tensor, epsilon: float, steps: int, score: str = "confidence"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Robustness of the teacher's predictions under an untargeted L∞ PGD attack.

    Args:
        teacher: frozen classifier, images in pixel units → logits ``(B, K)``.
        x: ``(B, C, H, W)`` images (pixel units).
        epsilon: L∞ budget in pixel units; steps: PGD steps (step size 2.5·ε/steps).
        score: ``"confidence"`` → ``p_T(y | x + δ)`` in [0, 1]; ``"margin"`` → logit margin of ``y``.

    Returns:
        ``(score (B,), flipped (B,) bool)`` where ``y = argmax T(x)`` and ``flipped`` says the
        attack changed the prediction.
    """
    x = x.detach()
    with torch.no_grad():
        y = teacher(x).argmax(1)
    alpha = 2.5 * epsilon / steps
    delta = torch.zeros_like(x)
    with torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(teacher(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-epsilon, epsilon)
    with torch.no_grad():
        logits = teacher(x + delta)
        flipped = logits.argmax(1) != y
        if score == "margin":
            own = logits.gather(1, y[:, None]).squeeze(1)
            other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
            return own - other, flipped
        return F.softmax(logits, 1).gather(1, y[:, None]).squeeze(1), flipped


def split_fragile(
    score: torch.Tensor, rule: str, keep_fraction: float = 0.5, threshold: float = 0.5
) -> tuple[torch.Tensor, float]:
    """Keep mask (fragile = True) and the threshold used, for robustness scores ``(B,)``."""
    if rule == "threshold":
        return score <= threshold, float(threshold)
    if rule == "gmm" and score.numel() >= 4:
        from sklearn.mixture import GaussianMixture

        s = score.detach().double().cpu().numpy().reshape(-1, 1)
        if float(s.std()) > 1e-6:
            gmm = GaussianMixture(2, max_iter=20, tol=1e-3, reg_covar=1e-4, random_state=0).fit(s)
            means = gmm.means_.ravel()
            lo, hi = int(np.argmin(means)), int(np.argmax(means))
            sd = math.sqrt(float(gmm.covariances_.ravel().max()))
            if means[hi] - means[lo] > sd:  # two separated modes: use the posterior
                post = gmm.predict_proba(s)[:, lo]
                keep = torch.from_numpy(post > 0.5).to(score.device)
                kept = s[post > 0.5]
                thr = float(kept.max()) if kept.size else float(means[lo])
                return keep, thr
    q = torch.quantile(score.float(), keep_fraction)
    return score <= q, float(q)


def split_per_class(
    score: torch.Tensor, label: torch.Tensor, p: ATEscParams
) -> tuple[torch.Tensor, float | None]:
    """:func:`split_fragile` within each predicted class ``label`` ``(B,)`` (robustness differs by
    class, and an NTL teacher sends its OOD domain to one class); classes with fewer than 4 samples
    in the batch are kept whole. Returns the keep mask and the threshold when one rule-wide
    threshold exists (``split="threshold"``), else None."""
    keep = torch.ones_like(score, dtype=torch.bool)
    for c in label.unique():
        m = label == c
        if int(m.sum()) >= 4:
            keep[m] = split_fragile(score[m], p.split, p.keep_fraction, p.threshold)[0]
    return keep, (float(p.threshold) if p.split == "threshold" else None)


@DEFENSES.register("atesc")
class ATEsc(Defense):
    """Split synthetic samples by the teacher's adversarial robustness: fragile → distillation,
    robust → forgetting (module docstring: the reconstruction and its reasons).

    ``select(x, t_logits)``: x ``(B, C, H, W)`` pixel units → Selection(score = robustness ``(B,)``,
    keep = fragile ``(B,)`` bool, threshold). Cost: ``steps + 2`` teacher passes per new sample.
    """

    name = "atesc"
    Params = ATEscParams
    score_name: ClassVar[str] = "robustness: teacher confidence after attack"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        if self.params.score == "margin":
            self.score_name = "robustness: teacher logit margin after attack"

    def select(self, x: torch.Tensor, t_logits: torch.Tensor, ctx: StepContext) -> Selection:
        p = self.params
        score, _ = adversarial_robustness(ctx.teacher, x, p.epsilon, p.steps, p.score)
        if p.group == "class":
            keep, thr = split_per_class(score, t_logits.argmax(1), p)
        else:
            keep, thr = split_fragile(score, p.split, p.keep_fraction, p.threshold)
        if p.keep == "robust":  # ablation: distil the robust group, forget the fragile one
            keep = ~keep
        return Selection(score, keep, thr)

    def student_loss_extra(self, ctx, x, t_logits, s_logits, sel):
        p = self.params
        if sel is None or p.forget == "none":
            return {}
        return uniform_forgetting(s_logits, ~sel.keep, p.forget_weight)
