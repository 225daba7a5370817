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
  :func:`dfkd_viz.distill.defenses.atesc.adversarial_robustness`). A clean or backdoored teacher's
  BN-only samples spread over the classes and are fragile throughout.
- **Backdoor** (ABD, Hong et al. 2023; Neural Cleanse, Wang et al. S&P 2019): on class-prior
  synthetic samples, the smallest L2 norm of a universal perturbation that sends 80 % of them to
  class ``c`` (Self-Retrospection's trigger synthesis,
  :func:`dfkd_viz.distill.defenses.abd.targeted_universal_perturbation`), per class. A backdoor's
  target class needs a much smaller norm than the median class (:attr:`BackdoorScores.norm_ratio`
  = min ÷ median, and Neural Cleanse's anomaly index). Evidence beside it: the share of
  ``x + δ_target`` whose prediction survives channel shuffling (ABD's Shuffling Vaccine).
- **Collapse** (TA-DFKD, Liu et al. 2024): coverage (normalised entropy of the predicted classes)
  and confidence of class-prior synthesis (one-hot + information entropy + BN, as DFQ/DAFL).

Scores map to verdicts ``low | suspicious | high`` by the thresholds below, calibrated on the zoo
and the extra teachers of ``benchmarks/audit_validation.py`` (README "Teacher audit").
Everything is seeded: the same weights give the same report.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from dfkd_viz.distill.defenses.abd import ShuffledEnsemble, targeted_universal_perturbation
from dfkd_viz.distill.defenses.atesc import adversarial_robustness
from dfkd_viz.distill.losses import BNStatsHook, balance, one_hot
from dfkd_viz.models import Classifier, Generator
from dfkd_viz.paths import home

Verdict = Literal["low", "suspicious", "high"]
Progress = Callable[[float, str], None]
AUDIT_VERSION = 1

#: ``lure_share`` thresholds (share of BN-only samples in one class): suspicious, high.
NTL_THRESHOLDS = (0.4, 0.45)
#: ``norm_ratio`` thresholds (smallest ÷ median trigger norm; smaller is worse): suspicious, high.
BACKDOOR_THRESHOLDS = (0.5, 0.42)
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
    trigger_steps: int = Field(8, ge=1, le=200, description="PGD-L2 steps per norm level")
    trigger_success: float = Field(0.8, gt=0, le=1)
    shuffle_copies: int = Field(5, ge=1, le=32)
    shuffle_layers: int = Field(2, ge=1, le=16)
    seed: int = Field(0, ge=0)


#: Norm levels of the trigger search, pixel-unit L2 (0.25 … ≈ 5.7, ×√2 apart).
NORM_LEVELS = tuple(0.25 * 2 ** (i / 2) for i in range(10))


class NTLScores(BaseModel):
    lure_share: float = Field(description="share of BN-only samples in the lure class, [0, 1]")
    lure_class: int
    robust_lure: float = Field(description="share of lure-class samples unflipped at ε, [0, 1]")
    robust_other: float = Field(description="same for the other BN-only samples, [0, 1]")
    flip_rate: float = Field(description="share of all BN-only samples flipped at ε, [0, 1]")
    class_counts: list[int]
    robustness: list[float] = Field(description="p_T(y | x + δ) per BN-only sample, [0, 1]")
    predicted: list[int] = Field(description="teacher's class per BN-only sample")


class BackdoorScores(BaseModel):
    norm_ratio: float = Field(description="smallest ÷ median per-class trigger norm, (0, 1]")
    anomaly_index: float = Field(description="Neural Cleanse (median − min) ÷ (1.4826·MAD)")
    target: int = Field(description="suspected target class (smallest trigger norm)")
    trigger_norms: list[float] = Field(description="per class, pixel-unit L2")
    anomaly: list[float] = Field(description="per-class anomaly index (positive = easy class)")
    shuffle_survival: list[float] = Field(
        description="per class, share of x + δ_c the channel-shuffled teacher still sends to c"
    )
    trigger: list = Field(description="δ of the suspected target, (C, H, W) pixel units")


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
                    "lure_share": self.ntl.lure_share,
                    "lure_class": self.ntl.lure_class,
                    "robust_lure": self.ntl.robust_lure,
                    "robust_other": self.ntl.robust_other,
                    "flip_rate": self.ntl.flip_rate,
                },
                "backdoor": {
                    "norm_ratio": self.backdoor.norm_ratio,
                    "anomaly_index": self.backdoor.anomaly_index,
                    "target": self.backdoor.target,
                    "trigger_norms": self.backdoor.trigger_norms,
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
    with torch.no_grad():
        pred = teacher(x_bn).argmax(1)
    k = teacher.num_classes
    counts = torch.bincount(pred, minlength=k)
    lure = int(counts.argmax())
    conf, flipped = adversarial_robustness(teacher, x_bn, params.epsilon, params.pgd_steps)
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


def trigger_norm(
    teacher: torch.nn.Module, x: torch.Tensor, target: int, params: AuditParams
) -> tuple[float, torch.Tensor]:
    """Smallest L2 norm (pixel units) of a universal perturbation that sends a share
    ``params.trigger_success`` of ``x`` to ``target``: PGD-L2 over :data:`NORM_LEVELS`, each level
    warm-started from the last, log-linearly interpolated between the last failing and the first
    succeeding level. Returns ``(norm, δ (C, H, W))``; ``1.5 ×`` the largest level when none
    succeeds."""
    delta, prev = None, None
    for norm in NORM_LEVELS:
        delta, success = targeted_universal_perturbation(
            teacher, x, target, params.trigger_steps, norm / 4, norm, init=delta
        )
        if success >= params.trigger_success:
            if prev is None:
                return norm, delta
            n0, s0 = prev
            t = (params.trigger_success - s0) / max(success - s0, 1e-6)
            return float(math.exp(math.log(n0) + t * (math.log(norm) - math.log(n0)))), delta
        prev = (norm, success)
    return NORM_LEVELS[-1] * 1.5, delta


def backdoor_scores(
    teacher: Classifier, x: torch.Tensor, params: AuditParams, progress: Progress | None = None
) -> BackdoorScores:
    """Backdoor evidence on class-prior synthetic samples ``x`` (the first
    ``params.trigger_samples``): per-class trigger norms (:func:`trigger_norm`), min ÷ median,
    Neural Cleanse's anomaly index, and ABD's shuffle survival of each class's trigger."""
    x = x[: params.trigger_samples]
    k = teacher.num_classes
    norms, deltas = [], []
    for c in range(k):
        n, d = trigger_norm(teacher, x, c, params)
        norms.append(n)
        deltas.append(d)
        if progress:
            progress((c + 1) / k, f"trigger synthesis, class {c + 1}/{k}")
    arr = np.array(norms)
    med = float(np.median(arr))
    mad = 1.4826 * float(np.median(np.abs(arr - med))) + 1e-6
    anomaly = (med - arr) / mad
    target = int(arr.argmin())
    ens = ShuffledEnsemble(teacher, params.shuffle_copies, params.shuffle_layers, params.seed)
    with torch.no_grad():
        survival = [float((ens(x + d).argmax(1) == c).float().mean()) for c, d in enumerate(deltas)]
    return BackdoorScores(
        norm_ratio=float(arr.min() / med),
        anomaly_index=float(anomaly.max()),
        target=target,
        trigger_norms=[round(float(v), 4) for v in arr],
        anomaly=[round(float(v), 3) for v in anomaly],
        shuffle_survival=[round(v, 4) for v in survival],
        trigger=deltas[target].tolist(),
    )


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


def verdicts(
    ntl: NTLScores, backdoor: BackdoorScores, collapse: CollapseScores
) -> dict[str, Verdict]:
    """Scores → ``{ntl, backdoor, collapse}`` verdicts by the module's thresholds."""
    return {
        "ntl": _grade(ntl.lure_share, NTL_THRESHOLDS, higher_is_worse=True),
        "backdoor": _grade(backdoor.norm_ratio, BACKDOOR_THRESHOLDS, higher_is_worse=False),
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
    ``params.samples`` samples and ``K × ≤ 10 × params.trigger_steps`` passes on
    ``params.trigger_samples`` samples (~15 s for a LeNet-5 on 2 cores, ~50 s for a ResNet-14).

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
        report(0.3, "probing their adversarial robustness")
        ntl = ntl_scores(teacher, x_bn, params)
        report(0.4, "synthesising class-prior probe samples")
        x_prior = synthesize(teacher, True, params, params.seed + 100)
        collapse = collapse_scores(teacher, x_prior)
        report(0.65, "synthesising a universal trigger per class")
        bd = backdoor_scores(teacher, x_prior, params, lambda f, m: report(0.65 + 0.35 * f, m))
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


def audits_dir():
    """``DFKD_VIZ_HOME/audits``: one ``<weights sha256>.json`` report per audited weight set."""
    p = home() / "audits"
    p.mkdir(parents=True, exist_ok=True)
    return p


def cached_report(teacher_id: str) -> AuditReport | None:
    """The stored report of ``teacher_id``'s current weights, or None (never audited, or the
    weights changed since)."""
    from dfkd_viz.teachers import load_teacher

    try:
        model, _ = load_teacher(teacher_id)
    except Exception:  # an unloadable teacher simply has no report
        return None
    return _read(weights_digest(model), teacher_id)


def _read(digest: str, teacher_id: str) -> AuditReport | None:
    path = audits_dir() / f"{digest}.json"
    try:
        data = json.loads(path.read_text())
        if data.get("version") != AUDIT_VERSION:
            return None
        data["teacher"] = teacher_id
        report = AuditReport.model_validate(data)
    except (OSError, ValueError):
        return None
    # verdicts follow the current thresholds, not the ones of the day it was stored
    report.verdict = verdicts(report.ntl, report.backdoor, report.collapse)
    report.suggestions = suggestions(report.verdict, report.backdoor.target, report.ntl.lure_class)
    return report


def audit_teacher(
    teacher_id: str,
    params: AuditParams | None = None,
    progress: Progress | None = None,
    use_cache: bool = True,
) -> AuditReport:
    """Audit a cached zoo or imported teacher by id; the report is stored under its weights'
    digest, so a second audit of the same weights (also under another id) is read back.

    Raises:
        UnknownNameError: unknown teacher id. TeacherNotTrainedError: not trained yet.
        ValueError: the architecture has no BatchNorm2d layer.
    """
    from dfkd_viz.teachers import load_teacher

    model, card = load_teacher(teacher_id)
    params = params or AuditParams()
    digest = weights_digest(model)
    if use_cache and params == AuditParams():
        cached = _read(digest, teacher_id)
        if cached is not None:
            if progress:
                progress(1.0, "read the stored report")
            return cached
    report = audit_model(model, teacher_id, card.get("arch", ""), params, progress)
    if params == AuditParams():
        path = audits_dir() / f"{digest}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(report.model_dump_json())
        tmp.replace(path)
    return report
