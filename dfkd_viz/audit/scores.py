"""Teacher audit: a data-free trust report before distilling (``dfkd-viz audit``, page ``/audit``).

The audit reads only a teacher's weights and architecture (never its card's ``kind``), synthesises
probe samples with two short generator runs, and measures three risks with the mechanisms the
defenses already use:

- **NTL** (non-transferable teacher, Wang et al. ICLR 2022; escaped by ATEsc, Hong et al. 2025):
  an NTL teacher's BatchNorm running statistics were collected on batches of ID *and* OOD images,
  and it sends its whole OOD domain to one class with a large, robust margin. A generator that
  matches only the BN statistics — no class prior — is therefore lured into that OOD basin: one
  class takes a large share of its samples (:attr:`NTLScores.lure_share`), and those samples are
  robust to an untargeted PGD attack while the rest are fragile (ATEsc's probe,
  :func:`dfkd_viz.distill.defenses.atesc.adversarial_robustness`). The score is the *robust
  mass*: the share of all BN-only samples that are in the lure class and survive the attack
  (:attr:`NTLScores.robust_mass`). A clean teacher's BN-only samples spread over the classes and
  are fragile throughout; a backdoored teacher's may crowd into one class (its BN statistics saw
  triggered images) but stay fragile.
- **Backdoor** (ABD, Hong et al. 2023; Neural Cleanse, Wang et al. S&P 2019; the max-margin
  statistic of MM-BD, Wang et al. S&P 2024): a backdoor is a *shortcut* — a small pattern that
  sends any input to the target class with a large margin. On class-prior synthetic samples, for
  every class ``c``, a universal perturbation δ_c of fixed L2 budget (2 pixel units on a 28×28
  grey image, scaled with √(C·H·W): the same per-pixel RMS, 3.96 on a 32×32 colour image)
  maximises the mean margin ``z_c − max_{j≠c} z_j`` (PGD-L2, Self-Retrospection's trigger
  synthesis with a margin objective). Margins are measured in units of the teacher's own median
  margin on the clean samples; the per-class *shortcut gain* is ``(m_c − median) / (|median| + 1)``
  and the score is its maximum (:attr:`BackdoorScores.shortcut_gain`), at the suspected target.
  Evidence beside it: the share of ``x + δ_c`` whose prediction survives channel shuffling (ABD's
  Shuffling Vaccine). An NTL teacher's OOD basin is a shortcut too (a watermark domain acts as a
  trigger): when the NTL verdict is high, the lure class is set aside before the maximum is taken.
- **Collapse** (TA-DFKD, Shin & Choi 2024): coverage (normalised entropy of the predicted classes)
  and confidence of class-prior synthesis (one-hot + information entropy + BN, as DFQ/DAFL).

Scores map to verdicts ``low | suspicious | high`` by the thresholds below, calibrated on the zoo
and the extra teachers of ``benchmarks/audit_validation.py`` (``docs/results/audit.md``).
Everything is seeded: the same weights give the same report.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, computed_field

from dfkd_viz.distill.defenses.abd import ShuffledEnsemble
from dfkd_viz.distill.defenses.atesc import adversarial_robustness
from dfkd_viz.distill.losses import BNStatsHook, balance, one_hot
from dfkd_viz.models import Classifier, Generator, fold_bn

Verdict = Literal["low", "suspicious", "high"]
Progress = Callable[[float, str], None]
AUDIT_VERSION = 2

#: ``robust_mass`` thresholds (share of BN-only samples in the lure class that survive the
#: attack): suspicious, high.
NTL_THRESHOLDS = (0.1, 0.2)
#: ``shortcut_gain`` thresholds (relative margin gain of the easiest class): suspicious, high.
BACKDOOR_THRESHOLDS = (2.25, 3.0)
#: ``coverage`` thresholds (normalised entropy of class-prior predictions; smaller is worse).
COLLAPSE_THRESHOLDS = (0.85, 0.6)

DEFENSE_FOR = {
    "ntl": (
        "atesc",
        "ATEsc splits synthetic samples by adversarial robustness and forgets the robust ones",
    ),
    "backdoor": ("abd", "ABD's Shuffling Vaccine and Self-Retrospection suppress the backdoor"),
    "collapse": (
        "ta-select",
        "TA-DFKD drops the class prior and keeps samples the teacher verifies",
    ),
}


class AuditParams(BaseModel):
    """Budget of an audit (defaults: ~15 s for a LeNet teacher on 2 cores)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(256, ge=32, le=4096, description="synthetic samples per probe set")
    generator_steps: int = Field(150, ge=1, le=5000, description="generator steps per probe set")
    batch_size: int = Field(64, ge=8, le=1024)
    lr: float = Field(5e-3, gt=0, le=1)
    epsilon: float = Field(0.03, gt=0, le=1, description="PGD L∞ budget, pixel units")
    pgd_steps: int = Field(5, ge=1, le=100)
    trigger_samples: int = Field(64, ge=8, le=1024, description="samples for trigger synthesis")
    trigger_steps: int = Field(30, ge=1, le=500, description="PGD-L2 steps per class")
    trigger_rms: float = Field(
        2.0 / 28,
        gt=0,
        le=1,
        description="L2 budget of the universal perturbation per √(C·H·W), pixel units "
        "(2.0 on a 28×28 grey image)",
    )
    shuffle_copies: int = Field(5, ge=1, le=32)
    shuffle_layers: int = Field(2, ge=1, le=16)
    seed: int = Field(0, ge=0)


class NTLScores(BaseModel):
    lure_share: float = Field(description="share of BN-only samples in the lure class, [0, 1]")
    lure_class: int
    robust_lure: float = Field(description="share of lure-class samples unflipped at ε, [0, 1]")
    robust_other: float = Field(description="same for the other BN-only samples, [0, 1]")
    flip_rate: float = Field(description="share of all BN-only samples flipped at ε, [0, 1]")
    class_counts: list[int]
    robustness: list[float] = Field(description="p_T(y | x + δ) per BN-only sample, [0, 1]")

    @computed_field(
        description="share of all BN-only samples that are in the lure class and "
        "survive the attack (lure_share × robust_lure), [0, 1]: the NTL score"
    )
    @property
    def robust_mass(self) -> float:
        return self.lure_share * self.robust_lure

    predicted: list[int] = Field(description="teacher's class per BN-only sample")


class BackdoorScores(BaseModel):
    shortcut_gain: float = Field(
        description="largest per-class gain (the lure class set aside when the NTL verdict is high)"
    )
    target: int = Field(description="suspected target class (largest gain counted)")
    gain: list[float] = Field(description="per class, (m_c − median) / (|median| + 1)")
    margins: list[float] = Field(
        description="per class, mean margin of x + δ_c in units of the median clean margin"
    )
    radius: float = Field(description="L2 budget of δ_c, pixel units")
    lure_set_aside: bool = Field(
        False, description="the largest gain was the NTL lure class's and was set aside"
    )
    shuffle_survival: list[float] = Field(
        description="per class, share of x + δ_c the channel-shuffled teacher still sends to c"
    )
    trigger: list = Field(description="δ of the suspected target, (C, H, W) pixel units")
    triggers: list = Field(default_factory=list, description="δ_c of every class, (K, C, H, W)")


class CollapseScores(BaseModel):
    coverage: float = Field(description="normalised entropy of class-prior predictions, [0, 1]")
    classes_covered: int
    min_class_share: float
    confidence: float = Field(description="median max-probability of class-prior samples")
    class_counts: list[int]


class AuditReport(BaseModel):
    """The audit of one teacher (JSON-serialisable; ``verdict`` keys ``ntl``, ``backdoor``,
    ``collapse``)."""

    version: int = AUDIT_VERSION
    teacher: str
    arch: str
    num_classes: int
    in_shape: list[int]
    weights_sha256: str
    verdict: dict[str, Verdict]
    ntl: NTLScores
    backdoor: BackdoorScores
    collapse: CollapseScores
    suggestions: list[str]
    samples_bn: list = Field(default_factory=list, description="8 BN-only samples, (8, C, H, W)")
    samples_prior: list = Field(default_factory=list, description="8 class-prior samples")
    seconds: float
    params: AuditParams

    def summary(self) -> dict:
        """``{verdict, scores}`` without the per-sample lists (what ``--json`` prints)."""
        return {
            "teacher": self.teacher,
            "verdict": dict(self.verdict),
            "scores": {
                "ntl": {
                    "robust_mass": self.ntl.robust_mass,
                    "lure_share": self.ntl.lure_share,
                    "lure_class": self.ntl.lure_class,
                    "robust_lure": self.ntl.robust_lure,
                    "robust_other": self.ntl.robust_other,
                    "flip_rate": self.ntl.flip_rate,
                },
                "backdoor": {
                    "shortcut_gain": self.backdoor.shortcut_gain,
                    "target": self.backdoor.target,
                    "gain": self.backdoor.gain,
                    "lure_set_aside": self.backdoor.lure_set_aside,
                    "target_shuffle_survival": self.backdoor.shuffle_survival[self.backdoor.target],
                },
                "collapse": {
                    "coverage": self.collapse.coverage,
                    "classes_covered": self.collapse.classes_covered,
                    "confidence": self.collapse.confidence,
                },
            },
            "suggestions": self.suggestions,
            "weights_sha256": self.weights_sha256,
            "seconds": self.seconds,
        }


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict's names, shapes, dtypes and bytes (sorted by name): equal for
    equal weights whatever file they came from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def synthesize(
    teacher: Classifier, class_prior: bool, params: AuditParams, seed: int
) -> torch.Tensor:
    """Train a fresh generator for ``params.generator_steps`` steps against the frozen teacher and
    return ``params.samples`` synthetic samples ``(N, C, H, W)`` in pixel units.

    The loss is DeepInversion's BN-statistics term, plus (``class_prior``) DFQ's one-hot term and
    5 × DAFL's information-entropy (balance) term. Without the class prior the samples follow
    only what the BN statistics remember of the training data.

    Raises:
        ValueError: the teacher has no BatchNorm2d layer.
    """
    torch.manual_seed(seed)
    mean = tuple(teacher.mean.flatten().tolist())
    std = tuple(teacher.std.flatten().tolist())
    gen = Generator(nz=100, ngf=16, img_shape=teacher.in_shape, mean=mean, std=std)
    if not next(teacher.parameters()).is_cuda:
        # channels-last, as the engine on the CPU: ~20 % off a ResNet-14's forward + backward
        teacher = copy.deepcopy(teacher).set_memory_format(torch.channels_last)
        gen.to(memory_format=torch.channels_last)
    hook = BNStatsHook(teacher)
    opt = torch.optim.Adam(gen.parameters(), params.lr, betas=(0.5, 0.999))
    try:
        for _ in range(params.generator_steps):
            hook.enabled = True
            logits = teacher(gen(torch.randn(params.batch_size, 100)))
            loss = hook.loss()
            hook.enabled = False
            if class_prior:
                loss = loss + one_hot(logits) + 5.0 * balance(logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        hook.remove()
    gen.eval()
    with torch.no_grad():
        z = torch.randn(params.samples, 100, generator=torch.Generator().manual_seed(seed + 1))
        return gen(z)


def ntl_scores(teacher: Classifier, x_bn: torch.Tensor, params: AuditParams) -> NTLScores:
    """NTL evidence from BN-only synthetic samples ``x_bn`` ``(N, C, H, W)``: the lure class
    (most frequent prediction), its share, and the PGD robustness (ε = ``params.epsilon``, pixel
    units, ``params.pgd_steps`` steps) of its samples vs the rest."""
    fast = fold_bn(teacher)  # the same function, BN folded into the convolutions
    with torch.no_grad():
        pred = fast(x_bn).argmax(1)
    k = teacher.num_classes
    counts = torch.bincount(pred, minlength=k)
    lure = int(counts.argmax())
    conf, flipped = adversarial_robustness(fast, x_bn, params.epsilon, params.pgd_steps)
    robust = ~flipped
    in_lure = pred == lure
    return NTLScores(
        lure_share=float(in_lure.float().mean()),
        lure_class=lure,
        robust_lure=float(robust[in_lure].float().mean()),
        robust_other=float(robust[~in_lure].float().mean()) if (~in_lure).any() else 0.0,
        flip_rate=float(flipped.float().mean()),
        class_counts=counts.tolist(),
        robustness=[round(float(v), 4) for v in conf],
        predicted=pred.tolist(),
    )


def _margin(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """``z_c − max_{j≠c} z_j`` per row of ``logits`` ``(N, K)`` for classes ``cls`` ``(N,)``."""
    z_c = logits.gather(1, cls[:, None]).squeeze(1)
    other = logits.scatter(1, cls[:, None], float("-inf")).amax(1)
    return z_c - other


def shortcut_margins(
    teacher: torch.nn.Module, x: torch.Tensor, radius: float, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every class ``c``, the universal perturbation δ_c ``(C, H, W)`` with ‖δ_c‖₂ ≤ ``radius``
    (pixel units) that maximises the mean margin ``z_c − max_{j≠c} z_j`` over the samples ``x``
    ``(B, C, H, W)``: ``steps`` PGD-L2 steps of length ``radius / 6`` from zero, every class in one
    batch of ``K·B`` samples.

    Returns:
        ``(margins (K,), deltas (K, C, H, W))``: the mean margin of ``x + δ_c`` per class, in
        logits, and the perturbations.
    """
    x = x.detach()
    b = x.shape[0]
    with torch.no_grad():
        k = teacher(x[:1]).shape[1]
    cls = torch.arange(k, device=x.device).repeat_interleave(b)
    xs = x.repeat(k, 1, 1, 1)
    delta = torch.zeros(k, *x.shape[1:], device=x.device)
    dims = tuple(range(1, x.dim()))
    with torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            m = _margin(teacher(xs + delta.repeat_interleave(b, 0)), cls)
            (grad,) = torch.autograd.grad(-m.sum(), delta)
            with torch.no_grad():
                g = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * len(dims)))
                delta = delta - (radius / 6) * grad / g
                n = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(g)
                delta = delta * torch.clamp(radius / n, max=1.0)
    with torch.no_grad():
        m = _margin(teacher(xs + delta.repeat_interleave(b, 0)), cls).view(k, b).mean(1)
    return m, delta.detach()


def backdoor_scores(
    teacher: Classifier,
    x: torch.Tensor,
    params: AuditParams,
    set_aside: int | None = None,
    progress: Progress | None = None,
) -> BackdoorScores:
    """Backdoor evidence on class-prior synthetic samples ``x`` (the first
    ``params.trigger_samples``): per-class shortcut margins (:func:`shortcut_margins`, budget
    ``params.trigger_rms · √(C·H·W)``) in units of the teacher's median clean margin on ``x``,
    their gains ``(m_c − median) / (|median| + 1)``, the largest gain (class ``set_aside`` — the NTL
    lure class when that verdict is high — not counted, :func:`count_gain`) and ABD's shuffle
    survival of each δ_c."""
    x = x[: params.trigger_samples]
    if progress:
        progress(0.0, "synthesising a universal shortcut per class")
    radius = params.trigger_rms * math.sqrt(x[0].numel())
    fast = fold_bn(teacher)  # the same function, BN folded into the convolutions
    with torch.no_grad():
        top2 = fast(x).topk(2, 1).values
    scale = float((top2[:, 0] - top2[:, 1]).median().clamp_min(1e-3))
    m, deltas = shortcut_margins(fast, x, radius, params.trigger_steps)
    margins = (m / scale).numpy()
    med = float(np.median(margins))
    gain = (margins - med) / (abs(med) + 1.0)
    if progress:
        progress(0.8, "channel-shuffling the teacher (ABD's vaccine)")
    ens = ShuffledEnsemble(teacher, params.shuffle_copies, params.shuffle_layers, params.seed)
    with torch.no_grad():
        survival = [float((ens(x + d).argmax(1) == c).float().mean()) for c, d in enumerate(deltas)]
    bd = BackdoorScores(
        shortcut_gain=0.0,
        target=0,
        gain=[round(float(v), 4) for v in gain],
        margins=[round(float(v), 4) for v in margins],
        radius=radius,
        shuffle_survival=[round(v, 4) for v in survival],
        trigger=[],
        triggers=deltas.tolist(),
    )
    return count_gain(bd, set_aside)


def count_gain(bd: BackdoorScores, set_aside: int | None) -> BackdoorScores:
    """Set ``bd``'s score, target and trigger from its per-class gains, class ``set_aside`` (the
    NTL lure class, or None) not counted. Returns ``bd``."""
    counted = np.array(bd.gain, dtype=float)
    if set_aside is not None:
        counted[set_aside] = -np.inf
    bd.target = int(counted.argmax())
    bd.shortcut_gain = float(counted[bd.target])
    bd.lure_set_aside = set_aside is not None and int(np.argmax(bd.gain)) == set_aside
    bd.trigger = bd.triggers[bd.target] if bd.triggers else bd.trigger
    return bd


def collapse_scores(teacher: Classifier, x_prior: torch.Tensor) -> CollapseScores:
    """Coverage and confidence of class-prior synthetic samples ``x_prior`` ``(N, C, H, W)``."""
    with torch.no_grad():
        p = F.softmax(teacher(x_prior), 1)
    k = teacher.num_classes
    counts = torch.bincount(p.argmax(1), minlength=k)
    share = counts.float() / counts.sum()
    entropy = float(-(share * torch.log(share.clamp_min(1e-12))).sum()) / math.log(k)
    return CollapseScores(
        coverage=entropy,
        classes_covered=int((counts > 0).sum()),
        min_class_share=float(share.min()),
        confidence=float(p.max(1).values.median()),
        class_counts=counts.tolist(),
    )


def _grade(value: float, thresholds: tuple[float, float], higher_is_worse: bool) -> Verdict:
    suspicious, high = thresholds
    if higher_is_worse:
        return "high" if value >= high else "suspicious" if value >= suspicious else "low"
    return "high" if value <= high else "suspicious" if value <= suspicious else "low"


def _grade_ntl(ntl: NTLScores) -> Verdict:
    return _grade(ntl.robust_mass, NTL_THRESHOLDS, higher_is_worse=True)


def _set_aside(ntl: NTLScores) -> int | None:
    """The class the backdoor score does not count: the NTL lure class when that verdict is high
    (an NTL teacher's OOD basin is a shortcut of its own, not a trigger)."""
    return ntl.lure_class if _grade_ntl(ntl) == "high" else None


def verdicts(
    ntl: NTLScores, backdoor: BackdoorScores, collapse: CollapseScores
) -> dict[str, Verdict]:
    """Scores → ``{ntl, backdoor, collapse}`` verdicts by the module's thresholds."""
    return {
        "ntl": _grade_ntl(ntl),
        "backdoor": _grade(backdoor.shortcut_gain, BACKDOOR_THRESHOLDS, higher_is_worse=True),
        "collapse": _grade(collapse.coverage, COLLAPSE_THRESHOLDS, higher_is_worse=False),
    }


def suggestions(verdict: dict[str, Verdict], report_target: int, lure: int) -> list[str]:
    """One sentence per risk that is not ``low``, naming the matching defense."""
    out = []
    for risk in ("ntl", "backdoor", "collapse"):
        if verdict[risk] == "low":
            continue
        defense, why = DEFENSE_FOR[risk]
        detail = {
            "ntl": f" (the lure class is {lure})",
            "backdoor": f" (suspected target class {report_target})",
            "collapse": "",
        }[risk]
        out.append(f"{risk}: {verdict[risk]}{detail} → defense `{defense}`: {why}.")
    return out


def audit_model(
    teacher: Classifier,
    name: str = "teacher",
    arch: str = "",
    params: AuditParams | None = None,
    progress: Progress | None = None,
) -> AuditReport:
    """Audit a frozen classifier (eval mode; images in pixel units → logits ``(B, K)``).

    Cost: two generator runs of ``params.generator_steps`` steps, one PGD attack on
    ``params.samples`` samples and ``params.trigger_steps`` forward/backward passes on
    ``K × params.trigger_samples`` samples: ~15 s for a LeNet-5 teacher on 2 cores, ~45–55 s for
    a ResNet-14.

    Raises:
        ValueError: the teacher has no BatchNorm2d layer (the probes need BN statistics).
    """
    params = params or AuditParams()
    report = progress or (lambda f, m: None)
    t0 = time.perf_counter()
    teacher = teacher.eval().requires_grad_(False)
    with torch.random.fork_rng():
        report(0.0, "synthesising BN-only probe samples (no class prior)")
        x_bn = synthesize(teacher, False, params, params.seed)
        report(0.38, "probing their adversarial robustness")
        ntl = ntl_scores(teacher, x_bn, params)
        report(0.4, "synthesising class-prior probe samples")
        x_prior = synthesize(teacher, True, params, params.seed + 100)
        collapse = collapse_scores(teacher, x_prior)
        bd = backdoor_scores(
            teacher, x_prior, params, _set_aside(ntl), lambda f, m: report(0.72 + 0.28 * f, m)
        )
    verdict = verdicts(ntl, bd, collapse)
    out = AuditReport(
        teacher=name,
        arch=arch,
        num_classes=teacher.num_classes,
        in_shape=list(teacher.in_shape),
        weights_sha256=weights_digest(teacher),
        verdict=verdict,
        ntl=ntl,
        backdoor=bd,
        collapse=collapse,
        suggestions=suggestions(verdict, bd.target, ntl.lure_class),
        samples_bn=x_bn[:8].clamp(0, 1).tolist(),
        samples_prior=x_prior[:8].clamp(0, 1).tolist(),
        seconds=round(time.perf_counter() - t0, 2),
        params=params,
    )
    report(1.0, "done")
    return out
