"""ABD — Anti-Backdoor data-free KD (Hong, Zeng, Yu, Lyu, Jia, Zhou, ICML 2023;
``illidanlab/ABD:cmi/datafree/synthesis/syn_vaccine.py``, ``illidanlab/ABD:cmi/datafree/unlearn.py``).

Two parts, each switchable (``docs/methods.md``):

**Shuffling Vaccine (SV)**, in the generator. A *suspect* model is the mean of the logits of
``n_ensemble`` teacher copies in which the input channels of the last ``n_layers`` convolutions
(kernel > 1; projection shortcuts and 1-channel inputs are left alone) are randomly permuted.
Semantic features do not survive such a shuffle; backdoor shortcuts largely do. Measured on this
project's zoo (real test images, 3 copies, LeNet-5×2 — whose only shuffle-able convolution is the
second): the suspect model keeps the teacher's prediction on 96–100 % of triggered images but on
21–34 % of clean ones, and ``−KL(p_T ‖ p_shuf)`` separates triggered from clean images with AUROC
0.95–1.00 (badnet_grid, blend, trojan_wm); on the clean teacher it carries no signal (0.42).
A synthetic sample whose teacher prediction survives the shuffle (equal argmax) is *suspicious*;
the generator gets ``L_SV = −coef · Σ_i m_i·KL(p_T ‖ p_shuf)_i / Σ_i m_i`` (m = suspicious), which
pushes suspicious samples to disagree with the suspect model, i.e. away from the backdoor shortcut
(gradients flow through both the teacher and the suspect copies, as in ABD's default). The
*activation check* (ABD's ``select_shuffle``): the term is off while the first ``check_batches``
new synthetic batches are collected (the first ``check_ignore`` ignored); then the share of
samples whose ``log10 KL`` lies below ``mean − 3·std`` (the tail of backdoor-like samples) must
exceed ``tail_ratio`` (0.02), else the shuffles are redrawn (up to ``max_trials``); if no draw
passes, SV stays off for the run (a teacher without a backdoor mostly fails the check).

**Self-Retrospection (SR)**, in the student, from ``sr_start`` (fraction of the budget; default
0.5, not ABD's final phase: with the cosine learning-rate schedule the student barely moves in the
last 10 %, measured: SR from 0.9 changed nothing). A universal perturbation δ ``(C, H, W)`` (one
for the whole batch) is synthesised on the *teacher* with ‖δ‖₂ ≤ ``sr_norm`` (pixel units) by
``sr_steps`` steps of ``sr_optimizer`` (L2 projected gradient steps of length ``sr_lr``, or Adam):

- ``sr_target="targeted"`` (default): every ``sr_rescan`` steps, one δ per class is synthesised
  to send the batch to that class; the class the teacher is sent to most easily (highest
  success rate) is the suspected backdoor target, and its δ is refined every step. Measured on
  the zoo (‖δ‖₂ ≤ 2, 20 steps): the backdoor target reaches 96–100 % success, every other class
  ≤ 53 %, and no class of the clean teacher more than 30 %.
- ``sr_target="untargeted"``: δ maximises ``KL(p_T(x + δ) ‖ p_T(x))`` (the teacher's strongest
  universal shortcut, warm-started from the previous step's δ).

The student then *unlearns* δ: ``sr_weight · KL(p_T(x) ‖ p_S(x + δ))`` is added to its loss, so
it answers on ``x + δ`` as the teacher does on ``x``. The student's BN running statistics are
frozen during that forward pass (perturbed batches would otherwise shift the statistics used at
test time — measured: that alone produced a spurious 40–60 % "ASR cut" by damaging the student).
Changes from the reference, for the CPU: this is the simpler variant the paper names instead of
ABD's I-BAU implicit hypergradient (``unlearn.py``), it targets the teacher's clean output, and δ
is synthesised once per step rather than once per student step. The latest δ and the per-class
success rates are saved with every snapshot (artifacts ``sr_trigger``, ``sr_class_success``).

Per-sample score (Decisions page): the suspicion ``−log10 KL(p_T ‖ p_shuf)`` (higher = more
backdoor-like); flag: suspicious (equal argmax). ABD distils from every sample (keep = all) unless
``filter`` is set — this project's extension that also drops suspicious samples from the student's
distillation loss.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dfkd_viz.distill.defenses.base import DEFENSES, Defense, DefenseParams, Selection
from dfkd_viz.distill.losses import kl_per_sample

if TYPE_CHECKING:
    from dfkd_viz.distill.engine import StepContext


class ABDParams(DefenseParams):
    """Parameters of :class:`ABD` (defaults: ABD's, with the SR changes of the module docstring)."""

    vaccine: bool = Field(True, description="Shuffling Vaccine in the generator loss")
    coef: float = Field(0.1, ge=0.0, le=100.0, description="weight of the vaccine term")
    n_ensemble: int = Field(3, ge=1, le=16, description="shuffled teacher copies")
    n_layers: int = Field(
        5, ge=1, le=100, description="last convolutions whose inputs are shuffled"
    )
    activation_check: bool = Field(True, description="enable SV only if the KL tail test passes")
    check_ignore: int = Field(10, ge=0, le=1000, description="first new batches not collected")
    check_batches: int = Field(40, ge=1, le=1000, description="batches collected for the check")
    tail_ratio: float = Field(0.02, ge=0.0, lt=1.0)
    max_trials: int = Field(8, ge=1, le=64, description="shuffle redraws before SV gives up")
    retrospection: bool = Field(True, description="Self-Retrospection in the student")
    sr_start: float = Field(0.5, ge=0.0, le=1.0, description="budget fraction where SR begins")
    sr_weight: float = Field(0.5, ge=0.0, le=100.0)
    sr_steps: int = Field(10, ge=1, le=200)
    sr_target: Literal["targeted", "untargeted"] = Field(
        "targeted",
        description="δ towards the class a small perturbation reaches most easily (this project's) "
        "or away from the clean prediction (ABD's)",
    )
    sr_rescan: int = Field(50, ge=1, le=1_000_000, description="steps between target-class scans")
    sr_optimizer: Literal["pgd-l2", "adam"] = "pgd-l2"
    sr_lr: float = Field(0.5, gt=0.0, le=10.0, description="step length (pgd-l2) or Adam lr")
    sr_norm: float = Field(2.0, gt=0.0, le=100.0, description="L2 bound of δ, pixel units")
    filter: bool = Field(False, description="also drop suspicious samples from distillation")
    seed: int = Field(0, ge=0, description="seed of the channel shuffles")


def shuffle_conv_inputs(
    model: nn.Module, n_layers: int, generator: torch.Generator, inplace: bool = False
) -> nn.Module:
    """A copy of ``model`` whose last ``n_layers`` convolutions with a kernel > 1 and more than one
    input channel have their input channels randomly permuted (``weight[:, perm]``), as
    ``illidanlab/ABD:syn_vaccine.py:shuffle_ckpt_layer``. Returns the copy (or ``model`` itself
    when ``inplace``), frozen in eval mode. Raises ValueError if the model has no such layer."""
    m = model if inplace else copy.deepcopy(model)
    convs = [
        mod
        for mod in m.modules()
        if isinstance(mod, nn.Conv2d) and mod.kernel_size != (1, 1) and mod.in_channels > 1
    ]
    if not convs:
        raise ValueError("channel shuffling needs a model with a multi-channel convolution")
    with torch.no_grad():
        for conv in convs[-n_layers:]:
            perm = torch.randperm(conv.in_channels, generator=generator).to(conv.weight.device)
            conv.weight.copy_(conv.weight[:, perm])
    return m.eval().requires_grad_(False)


class ShuffledEnsemble(nn.Module):
    """The suspect model: mean logits ``(B, K)`` of channel-shuffled copies of a teacher."""

    def __init__(self, teacher: nn.Module, n: int, n_layers: int, seed: int = 0) -> None:
        super().__init__()
        self.n_layers = n_layers
        self.gen = torch.Generator().manual_seed(seed)
        self.models = nn.ModuleList(
            shuffle_conv_inputs(teacher, n_layers, self.gen) for _ in range(n)
        )

    def reshuffle(self) -> None:
        """Draw new permutations (on top of the current ones, as ABD's ``remake``)."""
        for m in self.models:
            shuffle_conv_inputs(m, self.n_layers, self.gen, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.models]).mean(0)


def tail_share(log_kl: np.ndarray) -> float:
    """Share of values below ``mean − 3·std`` (ABD's activation check), in [0, 1]."""
    if log_kl.size == 0:
        return 0.0
    return float((log_kl < log_kl.mean() - 3 * log_kl.std()).mean())


def synthesize_universal_trigger(
    teacher: nn.Module,
    x: torch.Tensor,
    steps: int,
    lr: float,
    norm: float,
    init: torch.Tensor | None = None,
    optimizer: str = "pgd-l2",
) -> torch.Tensor:
    """Self-Retrospection's trigger synthesis: one perturbation δ ``(C, H, W)`` (pixel units, L2
    norm ≤ ``norm``) maximising ``KL(p_T(x + δ) ‖ p_T(x))`` over the batch ``x`` ``(B, C, H, W)``
    by ``steps`` ascent steps from ``init`` (default zeros): L2-normalised gradient steps of length
    ``lr`` (``"pgd-l2"``) or Adam with learning rate ``lr`` (``"adam"``, the reference's), each
    followed by the projection onto the L2 ball. The teacher is not changed."""
    x = x.detach()
    with torch.no_grad():
        t_clean = teacher(x)
    delta = (init.clone() if init is not None else torch.zeros_like(x[0])).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr) if optimizer == "adam" else None
    with torch.enable_grad():
        for _ in range(steps):
            loss = -kl_per_sample(teacher(x + delta), t_clean).mean()
            if opt is not None:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            else:
                (grad,) = torch.autograd.grad(loss, delta)
                with torch.no_grad():
                    delta -= lr * grad / grad.norm().clamp_min(1e-12)
            with torch.no_grad():
                delta.mul_(torch.clamp(norm / delta.norm().clamp_min(1e-12), max=1.0))
    return delta.detach()


def targeted_universal_perturbation(
    teacher: nn.Module,
    x: torch.Tensor,
    target: int,
    steps: int,
    lr: float,
    norm: float,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """A universal perturbation δ ``(C, H, W)`` (‖δ‖₂ ≤ ``norm``, pixel units) that sends the batch
    ``x`` ``(B, C, H, W)`` to class ``target``: PGD-L2 on ``CE(T(x + δ), target)``, ``steps`` steps
    of length ``lr`` from ``init`` (default zeros). Returns δ and its success rate in [0, 1] (share
    of ``x`` that ``x + δ`` sends to ``target``) — Neural-Cleanse's question (Wang et al., S&P 2019)
    with an L2 budget instead of a mask."""
    x = x.detach()
    y = torch.full((x.shape[0],), int(target), dtype=torch.long, device=x.device)
    delta = init.clone() if init is not None else torch.zeros_like(x[0])
    with torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(teacher(x + delta), y), delta)
            with torch.no_grad():
                delta = delta - lr * grad / grad.norm().clamp_min(1e-12)
                delta = delta * torch.clamp(norm / delta.norm().clamp_min(1e-12), max=1.0)
    with torch.no_grad():
        success = float((teacher(x + delta).argmax(1) == target).float().mean())
    return delta.detach(), success


def scan_targets(
    teacher: nn.Module, x: torch.Tensor, num_classes: int, steps: int, lr: float, norm: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`targeted_universal_perturbation` towards every class: success rates ``(K,)`` in
    [0, 1] and perturbations ``(K, C, H, W)``. A backdoor shows as one class that a small budget
    reaches for almost every input (measured on this project's zoo, real images, ‖δ‖₂ ≤ 2: the
    target class 96–100 % for badnet_grid, blend and trojan_wm, every other class ≤ 53 %, and no
    class above 30 % for the clean teacher). Cost: ``K·steps`` teacher forward/backward passes."""
    out = [
        targeted_universal_perturbation(teacher, x, c, steps, lr, norm) for c in range(num_classes)
    ]
    return torch.tensor([s for _, s in out]), torch.stack([d for d, _ in out])


@contextlib.contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Forward passes inside keep ``model``'s BatchNorm running statistics unchanged (momentum
    0) while still normalising with batch statistics in train mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom


@DEFENSES.register("abd")
class ABD(Defense):
    """Shuffling Vaccine + Self-Retrospection against backdoored teachers (module docstring).

    ``select(x, t_logits)``: Selection(score = suspicion ``−log10 KL(p_T ‖ p_shuf)`` ``(B,)``,
    keep = all (or not suspicious with ``filter``), flag = suspicious ``(B,)``, threshold = the
    suspicion of the activation check's tail, once known).

    Raises:
        ValueError: at setup, for a teacher without a multi-channel convolution.
    """

    name = "abd"
    Params = ABDParams
    score_name: ClassVar[str] = "suspicion: −log10 KL(teacher ‖ shuffled teacher)"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.suspect: ShuffledEnsemble | None = None
        self.sv_on = self.params.vaccine and not self.params.activation_check
        self.checked = not self.params.activation_check
        self._seen = 0
        self._pool: list[np.ndarray] = []
        self._pool_x: list[torch.Tensor] = []
        self.tail = float("nan")
        self.trials = 0
        self.flagged_frac = float("nan")
        self.delta: torch.Tensor | None = None
        self._delta_step = -1
        self.tail_threshold: float | None = None
        self._teacher: nn.Module | None = None
        self.target_class: int | None = None
        self.class_success: torch.Tensor | None = None
        self._scan_step = -1

    def setup(self, ctx: StepContext) -> None:
        self._teacher = ctx.teacher
        if self.params.vaccine and self.suspect is None:
            p = self.params
            self.suspect = ShuffledEnsemble(ctx.teacher, p.n_ensemble, p.n_layers, p.seed).to(
                ctx.device
            )

    # -- Shuffling Vaccine
    def _suspicion(self, x: torch.Tensor, t_logits: torch.Tensor):
        shuf = self.suspect(x)
        kl = kl_per_sample(t_logits, shuf)
        return kl, shuf.argmax(1) == t_logits.argmax(1)

    def _activation_check(self) -> None:
        """Redraw the shuffles until the KL tail of the collected samples is heavy enough."""
        p = self.params
        xs = torch.cat(self._pool_x).to(next(self._teacher.parameters()).device)
        with torch.no_grad():
            t = self._teacher(xs)
            for trial in range(p.max_trials):
                self.trials = trial + 1
                if trial:
                    self.suspect.reshuffle()
                log_kl = (
                    torch.log10(kl_per_sample(t, self.suspect(xs)).clamp_min(1e-12)).cpu().numpy()
                )
                self.tail = tail_share(log_kl)
                if self.tail > p.tail_ratio:
                    self.sv_on = True
                    self.tail_threshold = -float(log_kl.mean() - 3 * log_kl.std())
                    break
        self.checked = True
        self._pool_x.clear()

    @torch.no_grad()
    def select(self, x: torch.Tensor, t_logits: torch.Tensor, ctx: StepContext) -> Selection:
        n = x.shape[0]
        if self.suspect is None:
            flag = torch.zeros(n, dtype=torch.bool, device=x.device)
            return Selection(torch.zeros(n, device=x.device), torch.ones_like(flag), None, flag)
        kl, flag = self._suspicion(x, t_logits)
        score = -torch.log10(kl.clamp_min(1e-12))
        self.flagged_frac = float(flag.float().mean())
        if not self.checked:
            self._seen += 1
            if self._seen > self.params.check_ignore:
                self._pool_x.append(x.detach().cpu())
            if len(self._pool_x) >= self.params.check_batches:
                self._activation_check()
        keep = ~flag if self.params.filter else torch.ones_like(flag)
        return Selection(score, keep, self.tail_threshold, flag)

    def generator_loss_extra(self, ctx, x, t_logits):
        if not self.sv_on or self.suspect is None or self.params.coef == 0:
            return {}
        kl, flag = self._suspicion(x, t_logits)
        m = flag.float()
        if float(m.sum()) == 0:
            return {"g_vaccine": x.sum() * 0.0}
        return {"g_vaccine": -self.params.coef * (kl * m).sum() / m.sum()}

    # -- Self-Retrospection
    def _update_delta(self, ctx: StepContext, x: torch.Tensor) -> None:
        p = self.params
        if p.sr_target == "untargeted":
            self.delta = synthesize_universal_trigger(
                ctx.teacher, x, p.sr_steps, p.sr_lr, p.sr_norm, self.delta, p.sr_optimizer
            )
        elif self.target_class is None or ctx.step - self._scan_step >= p.sr_rescan:
            succ, deltas = scan_targets(
                ctx.teacher, x, ctx.num_classes, p.sr_steps, p.sr_lr, p.sr_norm
            )
            self.class_success = succ
            self.target_class = int(succ.argmax())
            self.delta = deltas[self.target_class]
            self._scan_step = ctx.step
        else:
            self.delta, _ = targeted_universal_perturbation(
                ctx.teacher, x, self.target_class, p.sr_steps, p.sr_lr, p.sr_norm, self.delta
            )

    def student_loss_extra(self, ctx, x, t_logits, s_logits, sel):
        p = self.params
        if not p.retrospection or ctx.progress < p.sr_start or p.sr_weight == 0:
            return {}
        if self._delta_step != ctx.step:  # once per step, warm-started
            self._update_delta(ctx, x)
            self._delta_step = ctx.step
        with frozen_bn_stats(ctx.student):  # x + δ must not leak into the student's BN statistics
            s_pert = ctx.student(x + self.delta)
        return {"s_retro": p.sr_weight * kl_per_sample(t_logits, s_pert).mean()}

    # -- observation and checkpoints
    def metrics(self) -> dict[str, float]:
        out = {"sv_active": float(self.sv_on), "sr_active": float(self.delta is not None)}
        if self.flagged_frac == self.flagged_frac:
            out["suspicious_frac"] = self.flagged_frac
        if self.tail == self.tail:
            out["sv_tail"] = self.tail
        if self.target_class is not None:
            out["sr_target_class"] = float(self.target_class)
            out["sr_target_success"] = float(self.class_success[self.target_class])
        return out

    def artifacts(self) -> dict[str, np.ndarray]:
        out = {}
        if self.delta is not None:
            out["sr_trigger"] = self.delta.cpu().numpy()
        if self.class_success is not None:
            out["sr_class_success"] = self.class_success.cpu().numpy()
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {
            "flags": torch.tensor([self.sv_on, self.checked], dtype=torch.bool),
            "gen_state": self.suspect.gen.get_state() if self.suspect is not None else None,
        }
        if self.suspect is not None:
            for i, m in enumerate(self.suspect.models):
                for k, v in m.state_dict().items():
                    out[f"suspect.{i}.{k}"] = v
        if self.delta is not None:
            out["delta"] = self.delta
        if self.class_success is not None:
            out["class_success"] = self.class_success
            out["scan"] = torch.tensor([self.target_class, self._scan_step])
        return {k: v for k, v in out.items() if v is not None}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "flags" in state:
            self.sv_on, self.checked = (bool(v) for v in state["flags"])
        if self.suspect is not None:
            for i, m in enumerate(self.suspect.models):
                sd = {
                    k[len(f"suspect.{i}.") :]: v
                    for k, v in state.items()
                    if k.startswith(f"suspect.{i}.")
                }
                if sd:
                    m.load_state_dict(sd)
            if "gen_state" in state:
                self.suspect.gen.set_state(state["gen_state"])
        if "delta" in state:
            self.delta = state["delta"]
        if "class_success" in state:
            self.class_success = state["class_success"]
            self.target_class, self._scan_step = (int(v) for v in state["scan"])
