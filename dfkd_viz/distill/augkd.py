"""Out-of-domain distillation with labelled student-domain data: AuG-KD and its baselines.

AuG-KD (Tang et al., "AuG-KD: Anchor-Based Mixup Generation for Out-of-Domain Knowledge
Distillation", ICLR 2024; ``IshiKura-a/AuG-KD``: ``main.py``, ``utils/trainer.py``,
``utils/criteria.py``, ``models/anchor_net.py``; ``docs/methods.md``). The teacher was trained on a source
domain; the student has a few labelled samples ``(x, y)`` of another domain (the *student domain*)
and is tested there. Three stages, one after the other inside one run's step budget:

1. **Data-free learning** (``df_steps``): a generator ``G`` is trained against the teacher with
   −KL(p_T‖p_S) + CE(t, argmax t) + class balance + BN statistics (the engine's generator phase);
   the student learns the teacher on the synthetic samples (KL); a label-conditioned encoder
   (:class:`LatentEncoder`, a CVAE encoder) learns to map ``G(z)`` back to ``z``:
   ``MSE(Enc(G(z), argmax T(G(z))), z) + 0.00025·KL(q‖N(0, I))``.
2. **Anchor** (``anchor_steps``): :class:`AnchorNet` learns a label-conditioned mask
   ``m ∈ [0, 1/3)^L`` and a mapping ``f``; with ``z = Enc(x, y)`` of student-domain data,
   ``z̃ = m⊙f(m⊙z) + (1 − m)⊙z`` minimises the teacher's uncertainty on ``G(z̃)``:
   ``energy(T(G(z̃))) + |Σm − L(1 − 0.25)| + 0.1·CE(T(G(z̃)), y)`` (:func:`anchor_terms`).
3. **Mixup** (``mix_steps``): ``s = min((1 − b)·e/(a·E) + b, 1)`` (:func:`mixup_weight`);
   ``z_mix = (1 − s)·z̃ + s·z``, ``x_mix = (1 − s)·G(z_mix) + s·x``; the student (from stage 1)
   trains on ``[x, x_mix]`` with labels ``[y, y]`` by ``u·CE + (1 − u)·τ²·KL(p_T^τ‖p_S^τ)``,
   u = 0.5, τ = 10 (:func:`mixup_distill_loss`).

The distillation term uses the **teacher's** logits, as the paper describes: the reference code's
stage 3 computes ``t_outputs = model(x)`` with the student, so its KL term is ≈ 0 there.

Baselines on the same split and step budget (:class:`StudentDataEngine`): ``ce`` (the student
trained on the student-domain samples alone) and ``kd`` (CE + KL to the teacher on them, the
reference's ``Baseline.KD``). Both start from a fresh student; AuG-KD's stage 3 starts from its
stage-1 student (as the reference does).

Changes for CPU budgets (measured, ``docs/results/out-of-domain.md``): stage budgets in steps
(reference: 1000 / 500 / 50 epochs); encoder learning rate 1e-3 instead of 1e-4 and 2 encoder
steps per generator step instead of 5; the mask term is per sample (the reference sums the mask
over the whole batch, which makes its target depend on the batch size); latent size 100 (reference
256) to share the DFKD generator.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from dfkd_viz.data.datasets import ImageDataset
from dfkd_viz.distill.engine import Engine
from dfkd_viz.distill.methods import METHODS, Method, MethodParams, soft_accuracy
from dfkd_viz.distill.snapshot import Snapshot

#: stage names as they appear in the run's phase (status) and metrics
STAGES = ("data-free", "anchor", "mixup")


# --------------------------------------------------------------------------- pure functions
def mixup_weight(progress: float, a: float = 0.6, b: float = 0.2) -> float:
    """AuG-KD's mixup schedule ``s = min((1 − b)·progress/a + b, 1)`` (``LinearScheduler`` of
    ``IshiKura-a/AuG-KD:utils/scheduler.py``, progress = e/E within stage 3).

    Args:
        progress: fraction of the mixup stage done, in [0, 1].
        a: share of the stage after which ``s`` reaches 1, in (0, 1].
        b: ``s`` at the start, in [0, 1].

    Returns:
        ``s`` in [b, 1]: the weight of the real student-domain sample in the mix (0 = all anchored
        generated sample, 1 = all real sample).

    Raises:
        ValueError: ``a`` not in (0, 1] or ``b`` not in [0, 1].
    """
    if not 0.0 < a <= 1.0:
        raise ValueError(f"a must be in (0, 1] (got {a})")
    if not 0.0 <= b <= 1.0:
        raise ValueError(f"b must be in [0, 1] (got {b})")
    return float(min((1.0 - b) * max(progress, 0.0) / a + b, 1.0))


def energy(logits: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    """Free energy ``−t·logsumexp(logits / t)`` per sample ``(B,)`` (Liu et al. 2020): lower means
    the classifier is more certain; AuG-KD's uncertainty (``utils/criteria.py:Uncertainty``)."""
    return -t * torch.logsumexp(logits.float() / t, dim=1)


def anchor_terms(
    t_logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, invariant: float = 0.25
) -> dict[str, torch.Tensor]:
    """AuG-KD's anchor loss (``utils/criteria.py:AnchorLoss``), per-sample means.

    Args:
        t_logits: ``(B, K)`` teacher logits on ``G(z̃)``.
        y: ``(B,)`` int64 true labels of the student-domain samples.
        mask: ``(B, L)`` the anchor's mask, values in [0, 1/3).
        invariant: share of latent dimensions meant to stay invariant (0.25).

    Returns:
        ``{"a_energy": mean energy, "a_mask": mean |Σ_j m_j − L(1 − invariant)|,
        "a_ce": 0.1·CE(t_logits, y)}``.
    """
    L = mask.shape[1]
    return {
        "a_energy": energy(t_logits).mean(),
        "a_mask": (mask.sum(1) - L * (1.0 - invariant)).abs().mean(),
        "a_ce": 0.1 * F.cross_entropy(t_logits, y),
    }


def encoder_loss(
    z_hat: torch.Tensor, z: torch.Tensor, mu: torch.Tensor, log_var: torch.Tensor
) -> torch.Tensor:
    """CVAE encoder loss (``utils/criteria.py:CVAELoss``), per sample:
    ``Σ (z_hat − z)² + 0.00025·KL(N(mu, σ²)‖N(0, I))``, all ``(B, L)``."""
    kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(1)
    return ((z_hat - z).pow(2).sum(1) + 0.00025 * kl).mean()


def mixup_distill_loss(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor,
    y: torch.Tensor,
    tau: float = 10.0,
    u: float = 0.5,
) -> dict[str, torch.Tensor]:
    """``u·CE(s, y) + (1 − u)·τ²·KL(p_T^τ‖p_S^τ)`` (``utils/criteria.py:DistillLoss``), batch means.

    Args:
        s_logits, t_logits: ``(B, K)`` student (with graph) and teacher logits.
        y: ``(B,)`` labels.
        tau: temperature; u: weight of the CE term in [0, 1].

    Returns:
        ``{"s_ce": u·CE, "s_kd": (1 − u)·τ²·KL}``.
    """
    out = {"s_ce": u * F.cross_entropy(s_logits, y)}
    if u < 1.0:
        kl = F.kl_div(
            F.log_softmax(s_logits / tau, 1),
            F.softmax(t_logits.float() / tau, 1),
            reduction="batchmean",
        )
        out["s_kd"] = (1.0 - u) * tau * tau * kl
    return out


# --------------------------------------------------------------------------- networks
class LatentEncoder(nn.Module):
    """Label-conditioned encoder ``q(z | x, y)`` (the CVAE encoder of ``IshiKura-a/AuG-KD:
    models/generator.py:Encoder``, sized for 28×28): the label's embedding is a 1-channel image
    concatenated to the normalised input; two stride-2 3×3 conv blocks; linear heads for ``mu`` and
    ``log_var`` (clipped to [−5, 3] as the reference does).

    Args:
        nz: latent size L.
        num_classes: K.
        img_shape: ``(C, H, W)``.
        mean, std: per-channel pixel statistics used to normalise the input.
        width: channels of the first conv block (the second has 2×).

    ``forward(x, y, sample=True)``: ``x`` ``(B, C, H, W)`` pixel units, ``y`` ``(B,)`` int64 →
    ``(z, mu, log_var)``, each ``(B, L)``; ``z = mu`` when ``sample`` is False.
    """

    def __init__(
        self, nz: int, num_classes: int, img_shape, mean=(0.1307,), std=(0.3081,), width: int = 32
    ) -> None:
        super().__init__()
        c, h, w = img_shape
        self.num_classes, self.img_shape = num_classes, tuple(img_shape)
        self.embed_class = nn.Linear(num_classes, h * w)
        self.net = nn.Sequential(
            nn.Conv2d(c + 1, width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        feat = 2 * width * math.ceil(h / 4) * math.ceil(w / 4)
        self.fc_mu = nn.Linear(feat, nz)
        self.fc_var = nn.Linear(feat, nz)
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1), False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1), False)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, h, w = self.img_shape
        lab = self.embed_class(F.one_hot(y, self.num_classes).float()).view(-1, 1, h, w)
        hid = self.net(torch.cat([(x - self.mean) / self.std, lab], 1))
        mu, log_var = self.fc_mu(hid), self.fc_var(hid).clamp(-5.0, 3.0)
        if not sample:
            return mu, mu, log_var
        return mu + torch.randn_like(mu) * torch.exp(0.5 * log_var), mu, log_var


class AnchorNet(nn.Module):
    """AuG-KD's anchor (``IshiKura-a/AuG-KD:models/anchor_net.py``): a label-conditioned mask
    ``m = relu(softsign(sigmoid(BN(MLP(embed(y)))) − 0.5)) ∈ [0, 1/3)^L`` and a mapping ``f`` (three
    1-D conv blocks and a linear layer); ``anchor(z, y) = m⊙f(m⊙z) + (1 − m)⊙z``.

    ``forward(z, y)``: ``z`` ``(B, L)``, ``y`` ``(B,)`` int64 → ``(z̃ (B, L), m (B, L))``.
    """

    def __init__(self, nz: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.embed_class = nn.Linear(num_classes, nz)
        self.mask = nn.Sequential(
            nn.Linear(nz, nz),
            nn.Linear(nz, nz),
            nn.Linear(nz, nz),
            nn.BatchNorm1d(nz),
        )
        self.mapping = nn.Sequential(
            nn.Conv1d(1, 4, 3, 1, 1),
            nn.BatchNorm1d(4),
            nn.LeakyReLU(),
            nn.Conv1d(4, 8, 3, 1, 1),
            nn.BatchNorm1d(8),
            nn.LeakyReLU(),
            nn.Conv1d(8, 4, 3, 1, 1),
            nn.BatchNorm1d(4),
            nn.LeakyReLU(),
            nn.Flatten(),
            nn.Linear(4 * nz, nz),
        )
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -0.08, 0.08)
                nn.init.zeros_(m.bias)

    def class_mask(self, y: torch.Tensor) -> torch.Tensor:
        """The mask ``(B, L)`` in [0, 1/3) for labels ``y`` ``(B,)``."""
        h = self.mask(self.embed_class(F.one_hot(y, self.num_classes).float()))
        return F.relu(F.softsign(torch.sigmoid(h) - 0.5))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.class_mask(y)
        f = self.mapping((m * z).unsqueeze(1))
        return m * f + (1.0 - m) * z, m


# --------------------------------------------------------------------------- methods
class StudentDataParams(MethodParams):
    """Parameters of the methods that train on labelled student-domain data."""

    tau_mix: float = Field(10.0, gt=0, le=100, description="temperature of the KD term")
    u: float = Field(0.5, ge=0, le=1, description="weight of the CE term (1 − u: KD term)")
    lr_mix: float = Field(1e-3, gt=0, le=10, description="student learning rate on real data")
    weight_decay: float = Field(1e-5, ge=0, le=1)


class AugKDParams(StudentDataParams):
    """:class:`StudentDataParams` plus AuG-KD's stage budgets and anchor settings.

    ``df_steps``, ``anchor_steps`` and ``mix_steps`` split the run's budget in proportion (a run
    with another step count or a wall-clock budget keeps the proportions)."""

    df_steps: int = Field(200, ge=1, le=1_000_000)
    anchor_steps: int = Field(100, ge=1, le=1_000_000)
    mix_steps: int = Field(300, ge=1, le=1_000_000)
    a: float = Field(0.6, gt=0, le=1, description="share of the mixup stage until s = 1")
    b: float = Field(0.2, ge=0, le=1, description="mixup weight s at the start of the stage")
    invariant: float = Field(0.25, ge=0, lt=1)
    lr_enc: float = Field(1e-3, gt=0, le=10)
    lr_anchor: float = Field(1e-3, gt=0, le=10)
    enc_steps: int = Field(2, ge=1, le=100, description="encoder steps per generator step")


class _StudentDataMethod(Method):
    """A method that needs labelled student-domain data (``RunConfig.student_domain``)."""

    needs_student_data: ClassVar[bool] = True
    Params: ClassVar[type[MethodParams]] = StudentDataParams

    @property
    def engine_class(self) -> type[Engine]:
        return StudentDataEngine


@METHODS.register("ce")
class CEBaseline(_StudentDataMethod):
    """Baseline: the student trained from scratch on the labelled student-domain samples alone
    (cross-entropy; the reference's ``Baseline.Finetune`` without a pretrained student). No teacher,
    no generator."""

    name = "ce"
    defaults: ClassVar[dict] = {"u": 1.0, "default_steps": 600}
    summary = "student-domain labels only (cross-entropy), no teacher"


@METHODS.register("kd")
class KDBaseline(_StudentDataMethod):
    """Baseline: KD on the student-domain samples, ``0.5·CE + 0.5·τ²·KL(p_T^τ‖p_S^τ)``, τ = 10
    (``IshiKura-a/AuG-KD`` ``Baseline.KD``)."""

    name = "kd"
    defaults: ClassVar[dict] = {"default_steps": 600}
    summary = "student-domain labels + the teacher's soft labels on them (KD)"


@METHODS.register("augkd")
class AugKD(_StudentDataMethod):
    """AuG-KD (ICLR 2024): data-free generator + encoder, uncertainty-guided anchor, mixup from
    anchored generated samples to real student-domain samples (module docstring; ``docs/methods.md``).

    Stage 1 generator weights as the reference's ``DecoderLoss``: adversarial −KL 1, one-hot 1,
    balance 20 (the reference uses log10: 20/ln 10 ≈ 8.7 in natural-log units), BN statistics 1;
    5 student steps (KL) per generator step."""

    name = "augkd"
    Params: ClassVar[type[MethodParams]] = AugKDParams
    defaults: ClassVar[dict] = {
        "w_bn": 1.0,
        "w_oh": 1.0,
        "w_bal": 20.0 / math.log(10.0),
        "s_steps": 5,
        "default_steps": 600,
    }
    summary = "data-free generator, uncertainty-guided anchor, mixup to student-domain data"

    @property
    def engine_class(self) -> type[Engine]:
        return AugKDEngine


# --------------------------------------------------------------------------- engines
def _minimise(
    opt: torch.optim.Optimizer, terms: dict[str, torch.Tensor], total_name: str
) -> dict[str, float]:
    """One optimiser step on the sum of the weighted ``terms``; returns the terms and their total
    (under ``total_name``) as floats for the run's record."""
    loss = torch.stack(list(terms.values())).sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    out = {k: float(v.detach()) for k, v in terms.items()}
    out[total_name] = float(loss.detach())
    return out


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class StudentDataEngine(Engine):
    """The engine of the ``ce`` / ``kd`` baselines: every step is one student step on a batch of
    labelled student-domain samples (drawn with replacement by the run's seeded generator); the
    generator is not used. Evaluation, snapshots (student-domain training images with the
    teacher's label), checkpoints and callbacks are the engine's.

    Args:
        student_data: the labelled student-domain training samples, ``x`` ``(N, C, H, W)`` pixel
            units, ``y`` ``(N,)``.
        (the rest as :class:`~dfkd_viz.distill.engine.Engine`)

    Raises:
        ValueError: no student-domain data, or its image shape or class count differs from the
            teacher's.
    """

    def __init__(self, *args, student_data: ImageDataset | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        if student_data is None or len(student_data) == 0:
            raise ValueError(f"method {self.method.name} needs labelled student-domain data")
        if student_data.shape != self.teacher.in_shape:
            raise ValueError(
                f"student-domain images are {student_data.shape}, the teacher takes {self.teacher.in_shape}"
            )
        if int(student_data.y.max()) >= self.teacher.num_classes:
            raise ValueError("student-domain labels exceed the teacher's class count")
        self.sd_x = student_data.x.to(self.device)
        self.sd_y = student_data.y.to(self.device)
        with torch.no_grad():  # the teacher's logits on the fixed samples, in chunks
            self.sd_t = torch.cat([self.teacher(c) for c in self.sd_x.split(1024)])
        p = self.p
        self.opt_s = torch.optim.Adam(
            self.student.parameters(), lr=p.lr_mix, weight_decay=p.weight_decay
        )

    def _sd_batch(self, n: int | None = None) -> torch.Tensor:
        return torch.randint(0, len(self.sd_y), (n or self.s.batch_size,), generator=self.rng).to(
            self.device
        )

    def set_lr(self) -> None:  # constant learning rate on real data (the reference's ConstantLR)
        for g in self.opt_s.param_groups:
            g["lr"] = self.p.lr_mix

    def generator_phase(self) -> dict[str, float]:
        return {}

    def _supervised_step(self, x, y, t_logits) -> dict[str, float]:
        self.student.train()
        s = self.student(x)
        terms = mixup_distill_loss(s, t_logits, y, self.p.tau_mix, self.p.u)
        out = _minimise(self.opt_s, terms, "s_total")
        out["train_acc"] = float((s.argmax(1) == y).float().mean())
        out["agreement"] = soft_accuracy(s.detach(), t_logits)
        return out

    def student_phase(self) -> tuple[dict[str, float], float, float]:
        j = self._sd_batch()
        terms = self._supervised_step(self.sd_x[j], self.sd_y[j], self.sd_t[j])
        return terms, terms.pop("agreement"), 1.0

    def _fixed_samples(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The same ``n`` student-domain training samples ``(x, y)`` at every snapshot."""
        g = torch.Generator().manual_seed(self.s.seed + 7)
        j = torch.randperm(len(self.sd_y), generator=g)[:n].to(self.device)
        return self.sd_x[j], self.sd_y[j]

    @torch.no_grad()
    def snapshot(self) -> Snapshot:
        """As :meth:`Engine.snapshot`, on a fixed set of student-domain training images."""
        return self._record(self._fixed_samples(self.s.snapshot_size)[0], {})

    def _record(self, x: torch.Tensor, artifacts: dict[str, np.ndarray]) -> Snapshot:
        tf = self.teacher.forward_features(x)
        s = self.eval_student.eval()(x)
        self.student.train()
        return Snapshot.from_tensors(self.step, x, tf.logits, s, tf.penultimate, None, artifacts)


class AugKDEngine(StudentDataEngine):
    """The AuG-KD engine: stage 1 is the generic engine's generator and student phases (plus the
    encoder's steps), stages 2 and 3 train the anchor and then the student on mixed samples (module
    docstring). ``ctx.phase`` names the stage (``data-free``, ``anchor``, ``mixup``); snapshots in
    stages 2–3 hold the mixed images at the current ``s`` (stage 2: ``s = 0``, the anchored
    generated images) and the artifacts the Out-of-domain page draws:

    - ``augkd_progression`` ``(n, 7, C, H, W)`` uint8: per fixed student-domain sample, ``x``,
      ``G(Enc(x, y))``, ``G(z̃)``, then the mixed image at s = 0.25, 0.5, 0.75 and the current s;
      ``augkd_s`` ``(1,)`` the current s;
    - ``augkd_mask`` ``(K, L)``: the anchor's mask per class;
    - ``augkd_energy`` ``(3, n)``: the teacher's energy on ``x``, on ``G(z)`` and on ``G(z̃)``;
    - ``augkd_labels`` ``(n,)``: the samples' labels.
    """

    PROGRESSION_S = (0.25, 0.5, 0.75)

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        p = self.p
        c = self.teacher.in_shape
        mean = tuple(self.teacher.mean.flatten().tolist())
        std = tuple(self.teacher.std.flatten().tolist())
        self.encoder = LatentEncoder(self.s.nz, self.teacher.num_classes, c, mean, std).to(
            self.device
        )
        self.anchor = AnchorNet(self.s.nz, self.teacher.num_classes).to(self.device)
        self.opt_enc = torch.optim.Adam(self.encoder.parameters(), lr=p.lr_enc)
        self.opt_anchor = torch.optim.Adam(self.anchor.parameters(), lr=p.lr_anchor)
        # stage 1 trains the student on synthetic samples with the engine's usual optimiser
        self.opt_s = torch.optim.Adam(self.student.parameters(), lr=p.lr_s)
        total = p.df_steps + p.anchor_steps + p.mix_steps
        self.bounds = (p.df_steps / total, (p.df_steps + p.anchor_steps) / total)
        self._last_z: torch.Tensor | None = None
        self._g_batch_z: torch.Tensor | None = None
        self._mix_started = False

    # ------------------------------------------------------------ stages and schedules
    def stage(self, progress: float | None = None) -> str:
        """The stage at ``progress`` (default: now): ``data-free``, ``anchor`` or ``mixup``."""
        p = self.progress() if progress is None else progress
        return STAGES[0] if p < self.bounds[0] else STAGES[1] if p < self.bounds[1] else STAGES[2]

    def stage_progress(self) -> float:
        """Fraction of the current stage done, in [0, 1]."""
        p, (b1, b2) = self.progress(), self.bounds
        lo, hi = (0.0, b1) if p < b1 else (b1, b2) if p < b2 else (b2, 1.0)
        return min(1.0, max(0.0, (p - lo) / max(hi - lo, 1e-9)))

    def mix_s(self) -> float:
        """The current mixup weight ``s`` (0 before the mixup stage)."""
        if self.stage() != "mixup":
            return 0.0
        return mixup_weight(self.stage_progress(), self.p.a, self.p.b)

    def set_lr(self) -> None:
        p, st = self.p, self.stage()
        f = 0.5 * (1.0 + math.cos(math.pi * self.stage_progress()))
        if st == "data-free":
            for opt, lr in ((self.opt_g, p.lr_g), (self.opt_s, p.lr_s), (self.opt_enc, p.lr_enc)):
                for g in opt.param_groups:
                    g["lr"] = lr * f
        elif st == "anchor":
            for g in self.opt_anchor.param_groups:
                g["lr"] = p.lr_anchor * f
        else:
            if not self._mix_started:
                # a fresh optimiser state for the real-data stage (the reference builds a new Adam)
                self.opt_s.state.clear()
                self._mix_started = True
            for g in self.opt_s.param_groups:
                g["lr"] = p.lr_mix
                g["weight_decay"] = p.weight_decay

    def sample_z(self, n: int) -> torch.Tensor:
        z = super().sample_z(n)
        self._last_z = z
        return z

    # ------------------------------------------------------------ one step
    def generator_phase(self) -> dict[str, float]:
        self.ctx.phase = self.stage()
        if self.ctx.phase != "data-free":
            return {}
        out = Engine.generator_phase(self)
        # the latents of the generator step's own batch (_last_batch); later draws (the student's
        # memory filling up, snapshots) overwrite _last_z
        self._g_batch_z = self._last_z
        return out

    def _encoder_steps(self) -> dict[str, float]:
        """``enc_steps`` CVAE steps: the first on the generator step's own batch, the others on
        fresh synthetic samples; labels are the teacher's argmax (reference ``df_train``)."""
        self.encoder.train()
        total = 0.0
        for k in range(self.p.enc_steps):
            if k == 0 and self._g_batch_z is not None and self._last_batch is not None:
                z, x, t = self._g_batch_z, self._last_batch[0], self._last_batch[1]
            else:
                with torch.no_grad():
                    z = self.sample_z(self.s.batch_size)
                    x = self.generator(z)
                    t = self.teacher(x)
            z_hat, mu, log_var = self.encoder(x.detach(), t.argmax(1))
            loss = encoder_loss(z_hat, z.detach(), mu, log_var)
            self.opt_enc.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_enc.step()
            total += float(loss.detach())
        return {"e_rec": total / self.p.enc_steps}

    def _anchor_step(self) -> dict[str, float]:
        j = self._sd_batch()
        x, y = self.sd_x[j], self.sd_y[j]
        self.encoder.eval()
        self.generator.eval()
        self.anchor.train()
        with torch.no_grad():
            z, _, _ = self.encoder(x, y)
        z_a, m = self.anchor(z, y)
        t = self.teacher(self.generator(z_a))
        out = _minimise(self.opt_anchor, anchor_terms(t, y, m, self.p.invariant), "a_total")
        out["a_mask_mean"] = float(m.detach().mean())
        out["a_teacher_acc"] = float((t.argmax(1) == y).float().mean())
        return out

    @torch.no_grad()
    def mix(
        self, x: torch.Tensor, y: torch.Tensor, s: float, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_mix, G(z), G(z̃))`` for student-domain samples ``x`` ``(B, C, H, W)`` with labels
        ``y`` at mixup weight ``s`` in [0, 1] (all pixel units; encoder, anchor and generator in
        eval mode). ``sample``: draw ``z`` from the encoder's posterior (training, as the reference
        does) or take its mean (the views: the same images at every snapshot)."""
        self.encoder.eval()
        self.anchor.eval()
        self.generator.eval()
        z, _, _ = self.encoder(x, y, sample=sample)
        z_a, _ = self.anchor(z, y)
        g_mix = self.generator((1.0 - s) * z_a + s * z)
        return (1.0 - s) * g_mix + s * x, self.generator(z), self.generator(z_a)

    def _mixup_step(self) -> dict[str, float]:
        j = self._sd_batch()
        x, y = self.sd_x[j], self.sd_y[j]
        s = self.mix_s()
        x_mix, _, _ = self.mix(x, y, s)
        xb = torch.cat([x, x_mix])
        yb = torch.cat([y, y])
        with torch.no_grad():
            t = torch.cat([self.sd_t[j], self.teacher(x_mix)])
        out = self._supervised_step(xb, yb, t)
        out["mix_s"] = s
        out["mix_teacher_acc"] = float((t[len(y) :].argmax(1) == y).float().mean())
        return out

    def student_phase(self) -> tuple[dict[str, float], float, float]:
        st = self.ctx.phase
        if st == "data-free":
            terms, agree, kept = Engine.student_phase(self)
            terms.update(self._encoder_steps())
            return terms, agree, kept
        if st == "anchor":
            terms = self._anchor_step()
            return terms, terms["a_teacher_acc"], 1.0
        terms = self._mixup_step()
        return terms, terms.pop("agreement"), 1.0

    # ------------------------------------------------------------ observation
    @torch.no_grad()
    def snapshot(self) -> Snapshot:
        """Stage 1: the engine's snapshot of synthetic samples (plus the anchor artifacts once
        they exist); stages 2–3: the mixed images of fixed student-domain samples at the current
        ``s`` with the artifacts listed in the class docstring."""
        st = self.stage() if self.step else "data-free"
        if st == "data-free":
            snap = Engine.snapshot(self)
            snap.artifacts = {**snap.artifacts, **self._artifacts(8)}
            return snap
        x, y = self._fixed_samples(self.s.snapshot_size)
        s = self.mix_s()
        x_mix, _, _ = self.mix(x, y, s, sample=False)
        return self._record(x_mix, self._artifacts(8))

    @torch.no_grad()
    def _artifacts(self, n: int) -> dict[str, np.ndarray]:
        x, y = self._fixed_samples(max(n, 64))
        s_now = self.mix_s()
        _, g_z, g_za = self.mix(x[:n], y[:n], 0.0, sample=False)
        cols = [x[:n], g_z, g_za]
        for s in (*self.PROGRESSION_S, s_now):
            cols.append(self.mix(x[:n], y[:n], s, sample=False)[0])
        _, g_all, g_a_all = self.mix(x, y, 0.0, sample=False)
        energies = torch.stack(
            [energy(self.teacher(x)), energy(self.teacher(g_all)), energy(self.teacher(g_a_all))]
        )
        self.anchor.eval()
        labels = torch.arange(self.teacher.num_classes, device=self.device)
        return {
            "augkd_progression": _uint8(torch.stack(cols, 1)),
            "augkd_s": np.array([s_now], dtype=np.float32),
            "augkd_mask": self.anchor.class_mask(labels).float().cpu().numpy(),
            "augkd_energy": energies.float().cpu().numpy(),
            "augkd_labels": y.cpu().numpy().astype(np.int64),
        }

    # ------------------------------------------------------------ checkpoints
    def modules_to_save(self) -> list[tuple[str, torch.nn.Module]]:
        return [*super().modules_to_save(), ("encoder.", self.encoder), ("anchor.", self.anchor)]

    def optimizers(self) -> list[tuple[str, torch.optim.Optimizer]]:
        return [*super().optimizers(), ("opt_enc", self.opt_enc), ("opt_anchor", self.opt_anchor)]

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state_dict()
        meta["mix_started"] = self._mix_started
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)
        self._mix_started = bool(meta.get("mix_started", False))
