"""The distillation engine: one generic loop with hook points for defenses and callbacks for
observers (``docs/architecture.md``; the callback pattern of ``karpathy/minGPT:mingpt/trainer.py``).

One *step* is one outer iteration::

    generator phase: g_steps × [z → x = G(z) → teacher (BN hook) + student → L_G (+ defense extra)]
    student phase:   s_steps × [batch (G-step batch, fresh G samples, or reused) → defense.select
                                → L_S on kept samples (+ defense extra)]
    every eval_every steps:      ID accuracy, OOD accuracy, ASR → on_eval (payload key
                                 ``per_class``: the same per class, and confusion matrices)
    every snapshot_every steps:  synthetic samples with teacher label, confidence, score, keep
                                 → on_samples
    every checkpoint_every steps: → on_checkpoint (the run store saves safetensors)

The teacher is frozen (eval mode, ``requires_grad=False``); it runs under ``torch.no_grad`` /
``inference_mode`` wherever no gradient to the input is needed. The student is in eval mode during
the generator phase (its BN statistics see only student-phase batches). Callbacks
(``add_callback(event, fn)``, events in :data:`EVENTS`) receive the engine and a payload dict; the
engine never knows who listens. ``request_stop()`` ends the run cleanly at the next step boundary.

Extension points (``docs/extending.md``): a method changes *losses* through
:class:`~dfkd_viz.distill.methods.Method`; a method that changes the *loop* (AuG-KD's stages,
:mod:`dfkd_viz.distill.augkd`) subclasses :class:`Engine` and overrides the public steps
:meth:`Engine.set_lr`, :meth:`Engine.sample_z`, :meth:`Engine.generator_phase`,
:meth:`Engine.student_phase`, :meth:`Engine.snapshot`, :meth:`Engine.optimizers` and
:meth:`Engine.modules_to_save`; everything else stays the engine's.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from dfkd_viz.distill.defenses import Defense
from dfkd_viz.distill.evaluation import EvalSuite
from dfkd_viz.distill.losses import BNStatsHook
from dfkd_viz.distill.methods import Method, soft_accuracy
from dfkd_viz.distill.precision import Precision, fp32
from dfkd_viz.distill.replay import ReplayMemory, SyntheticBatch
from dfkd_viz.distill.snapshot import Snapshot
from dfkd_viz.models import Classifier, Features, Generator

EVENTS = ("on_start", "on_step", "on_eval", "on_samples", "on_checkpoint", "on_end")


@dataclass
class Budget:
    """``steps`` (outer iterations) or ``seconds`` (wall clock), exactly one set."""

    steps: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.seconds is None):
            raise ValueError("a budget is either steps or seconds")


@dataclass
class StepContext:
    """What the method's and defense's hooks may read (and nothing they should write)."""

    teacher: Classifier
    student: Classifier
    generator: Generator
    device: torch.device
    num_classes: int
    step: int = 0
    progress: float = 0.0
    phase: str = "distill"
    bn_hook: BNStatsHook | None = None
    rng: torch.Generator | None = None
    evals: EvalSuite | None = None


@dataclass
class EngineSettings:
    """Engine-level settings (a subset of :class:`~dfkd_viz.runs.config.RunConfig`)."""

    batch_size: int = 128
    nz: int = 100
    eval_every: int = 10
    snapshot_every: int = 20
    snapshot_size: int = 64
    checkpoint_every: int = 100
    seed: int = 0
    final_phase: float = 0.9
    #: ``fp32``, ``bf16`` or ``fp16`` (:mod:`dfkd_viz.distill.precision`)
    precision: str = "fp32"


class Engine:
    """Generic DFKD loop.

    Args:
        teacher: frozen classifier, images ``(B, C, H, W)`` in [0, 1] → logits ``(B, K)``.
        student: classifier with the same input shape and K.
        generator: ``z (B, nz)`` → images in [0, 1].
        method: loss terms and schedule (:mod:`dfkd_viz.distill.methods`).
        defense: hooks (:mod:`dfkd_viz.distill.defenses`); the identity defense if None.
        evals: real test data for the metrics.
        budget: steps or seconds.
        settings: batch size, intervals, seed.
        device: where the models live (already moved there by the caller).

    Raises:
        ValueError: mismatched shapes or class counts between teacher, student and generator.
    """

    def __init__(
        self,
        teacher: Classifier,
        student: Classifier,
        generator: Generator,
        method: Method,
        defense: Defense | None,
        evals: EvalSuite,
        budget: Budget,
        settings: EngineSettings | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if teacher.in_shape != student.in_shape or tuple(generator.img_shape) != teacher.in_shape:
            raise ValueError(
                f"shapes differ: teacher {teacher.in_shape}, student {student.in_shape}, generator {generator.img_shape}"
            )
        if teacher.num_classes != student.num_classes:
            raise ValueError(
                f"teacher has {teacher.num_classes} classes, student {student.num_classes}"
            )
        self.teacher, self.student, self.generator = teacher, student, generator
        self.method, self.defense = method, defense or Defense()
        self.evals, self.budget = evals, budget
        self.s = settings or EngineSettings()
        self.device = torch.device(device)
        self.p = method.params
        # autocast policy for the forward passes (raises ConfigError for fp16 off CUDA)
        self.amp = Precision(self.s.precision, self.device)
        self.teacher.eval().requires_grad_(False)
        self.opt_g = torch.optim.Adam(generator.parameters(), lr=self.p.lr_g, betas=(0.5, 0.999))
        if self.p.optimizer_s == "sgd":
            self.opt_s = torch.optim.SGD(
                student.parameters(), lr=self.p.lr_s, momentum=0.9, weight_decay=5e-4
            )
        else:
            self.opt_s = torch.optim.Adam(student.parameters(), lr=self.p.lr_s)
        # Evaluation uses an exponential moving average of the student's weights (and BN buffers)
        # when ``ema`` > 0: it damps the step-to-step noise of adversarial distillation.
        self.student_ema = None
        if self.p.ema > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.student_ema = AveragedModel(
                student, multi_avg_fn=get_ema_multi_avg_fn(self.p.ema), use_buffers=True
            )
        self.rng = torch.Generator(device="cpu").manual_seed(self.s.seed)
        self.ctx = StepContext(
            teacher, student, generator, self.device, teacher.num_classes, rng=self.rng, evals=evals
        )
        self.ctx.bn_hook = BNStatsHook(teacher) if method.needs_bn_hook else None
        # before any checkpoint is loaded into it (resume), so the defense's state has a home
        self.defense.setup(self.ctx)
        self.step = 0
        self.wall_offset = 0.0
        self.last_metrics: dict[str, Any] = {}
        self._callbacks: dict[str, list[Callable[[Engine, dict], None]]] = defaultdict(list)
        self._stop = False
        self._t0 = 0.0
        self.memory = ReplayMemory(self.p.memory) if self.p.sample_mode == "memory" else None
        self._decided = [0, 0]  # new synthetic samples kept / scored during the current step
        self._last_batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.stop_reason = ""

    # ---------------------------------------------------------------- callbacks and control
    def add_callback(self, event: str, fn: Callable[[Engine, dict], None]) -> None:
        """Call ``fn(engine, payload)`` on ``event`` (one of :data:`EVENTS`)."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events: {', '.join(EVENTS)}")
        self._callbacks[event].append(fn)

    def fire(self, event: str, payload: Any) -> None:
        """Call every callback registered for ``event`` with ``(self, payload)``."""
        for fn in self._callbacks[event]:
            fn(self, payload)

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop at the next step boundary (safe from a signal handler)."""
        self._stop = True
        self.stop_reason = reason

    @property
    def wall_s(self) -> float:
        """Seconds of distillation so far (across resumes)."""
        return self.wall_offset + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def progress(self) -> float:
        """Fraction of the budget used, in [0, 1]."""
        if self.budget.steps is not None:
            return min(1.0, self.step / self.budget.steps)
        return min(1.0, self.wall_s / float(self.budget.seconds))

    def _done(self) -> bool:
        return self.progress() >= 1.0

    # ---------------------------------------------------------------- one step
    def _lr_factor(self) -> float:
        if self.p.lr_schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * self.progress()))

    def set_lr(self) -> None:
        """Extension point, called at the start of every step: set the optimisers' learning
        rates (default: ``lr_g`` / ``lr_s`` times a cosine decay over the budget, or constant)."""
        f = self._lr_factor()
        for g in self.opt_g.param_groups:
            g["lr"] = self.p.lr_g * f
        for g in self.opt_s.param_groups:
            g["lr"] = self.p.lr_s * f

    def sample_z(self, n: int) -> torch.Tensor:
        """Extension point: ``n`` generator latents ``(n, nz)`` from the engine's seeded RNG
        (default: standard normal)."""
        return torch.randn(n, self.s.nz, generator=self.rng).to(self.device)

    def generator_phase(self) -> dict[str, float]:
        """Extension point: ``g_steps`` generator updates; returns the mean loss terms by name
        (recorded with the step). Default: synthesise a batch, run the teacher (BN hook on) and
        the student (frozen), minimise the method's generator terms plus the defense's extra
        terms, and keep the last batch for the student phase (``reuse_g_batch``)."""
        terms_out: dict[str, float] = {}
        if self.p.g_steps == 0:
            return terms_out
        self.student.eval().requires_grad_(False)
        self.generator.train()
        for _ in range(self.p.g_steps):
            z = self.sample_z(self.s.batch_size)
            hook = self.ctx.bn_hook
            with self.amp.autocast():  # forward passes only; the terms below are fp32
                x = self.generator(z)
                if hook is not None:
                    hook.enabled = True
                t = self.teacher.forward_features(x)
                if hook is not None:
                    hook.enabled = False
                s_logits = self.student(x)
            x, t, s_logits = x.float(), fp32(t), s_logits.float()
            terms = self.method.generator_terms(self.ctx, x, t, s_logits)
            terms.update(self.defense.generator_loss_extra(self.ctx, x, t.logits))
            loss = torch.stack(list(terms.values())).sum() if terms else None
            if loss is not None and loss.requires_grad:
                self.opt_g.zero_grad(set_to_none=True)
                self.amp.step("opt_g", loss, self.opt_g)
            for k, v in terms.items():
                terms_out[k] = float(v.detach())
            if loss is not None:
                terms_out["g_total"] = float(loss.detach())
            t_blocks = [b.detach() for b in t.blocks] if self.method.needs_teacher_blocks else None
            self._last_batch = (x.detach(), t.logits.detach(), t_blocks)
        self.student.requires_grad_(True)
        return terms_out

    @torch.no_grad()
    def _synthesize(self, n: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        """Fresh synthetic samples ``(n, C, H, W)`` with teacher logits (and blocks if needed),
        all float32 whatever the precision."""
        z = self.sample_z(n)
        with self.amp.autocast():
            x = self.generator(z)
            if self.method.needs_teacher_blocks:
                f = fp32(self.teacher.forward_features(x))
                return x.float(), f.logits, f.blocks
            return x.float(), self.teacher(x).float(), None

    def _new_batch(self, x: torch.Tensor, t: torch.Tensor, blocks) -> SyntheticBatch:
        """A batch of new synthetic samples, scored once by the defense (the selection then
        travels with the samples, also through the replay memory: a costly probe such as
        ATEsc's attack is paid once per sample, not once per student step)."""
        sel = self.defense.select(x, t, self.ctx)
        self._decided[0] += int(sel.keep.sum()) if sel is not None else x.shape[0]
        self._decided[1] += x.shape[0]
        return SyntheticBatch(x, t, blocks, sel)

    def _student_batch(self, k: int, prev: SyntheticBatch | None) -> SyntheticBatch:
        """The k-th student batch of a step: the generator step's own batch first (when
        ``reuse_g_batch``), then per ``sample_mode``: ``fresh`` synthesises a new batch, ``reuse``
        repeats the previous one (ZSKT), ``memory`` draws from the replay memory of recent
        synthetic samples with their (fixed) teacher logits and defense decisions."""
        p, mem, b = self.p, self.memory, self.s.batch_size
        if k == 0 and p.reuse_g_batch and self._last_batch is not None:
            batch = self._new_batch(*self._last_batch)
            if mem is not None:
                mem.add(batch)
            return batch
        if p.sample_mode == "reuse" and prev is not None:
            return prev
        if mem is not None:
            if len(mem) < b:
                mem.add(self._new_batch(*self._synthesize(b)))
            if mem.has_selection:  # a quarter batch of rejected samples for the defense's term
                return mem.draw_selected(b, b // 4 if self.defense.needs_rejected else 0, self.rng)
            return mem.draw(b, self.rng)
        return self._new_batch(*self._synthesize(b))

    def student_phase(self) -> tuple[dict[str, float], float, float]:
        """Extension point: ``s_steps`` student updates on synthetic batches (see
        :meth:`_student_batch`), the defense's selection applied. Returns ``(mean loss terms,
        teacher–student agreement on the last batch in [0, 1], share of new synthetic samples
        the defense kept in [0, 1])``."""
        sums: dict[str, float] = defaultdict(float)
        agree = 0.0
        self.student.train()
        batch = None
        for k in range(self.p.s_steps):
            batch = self._student_batch(k, batch)
            x, t_logits, t_blocks, sel = batch.x, batch.t_logits, batch.t_blocks, batch.sel
            need_blocks = self.method.needs_teacher_blocks and t_blocks is not None
            with self.amp.autocast():
                s = (
                    self.student.forward_features(x)
                    if need_blocks
                    else Features(self.student(x), [], x.new_zeros(0))
                )
            s = fp32(s)
            if sel is not None:
                keep = sel.keep
                s_kept = Features(s.logits[keep], [b[keep] for b in s.blocks], s.penultimate)
                tb = [b[keep] for b in t_blocks] if need_blocks else None
                terms = self.method.student_terms(self.ctx, x[keep], t_logits[keep], s_kept, tb)
            else:
                terms = self.method.student_terms(
                    self.ctx, x, t_logits, s, t_blocks if need_blocks else None
                )
            terms.update(self.defense.student_loss_extra(self.ctx, x, t_logits, s.logits, sel))
            if terms:
                loss = torch.stack(list(terms.values())).sum()
                self.opt_s.zero_grad(set_to_none=True)
                self.amp.step("opt_s", loss, self.opt_s)
                if self.student_ema is not None:
                    self.student_ema.update_parameters(self.student)
                sums["s_total"] += float(loss.detach())
                for name, v in terms.items():
                    sums[name] += float(v.detach())
            agree = soft_accuracy(s.logits.detach(), t_logits)
        n = self.p.s_steps
        kept, scored = self._decided
        self._decided = [0, 0]
        return {k: v / n for k, v in sums.items()}, agree, (kept / scored if scored else 1.0)

    # ---------------------------------------------------------------- observation
    @property
    def eval_student(self) -> Classifier:
        """The student that is evaluated, snapshotted and exported (the EMA copy when enabled)."""
        return self.student_ema.module if self.student_ema is not None else self.student

    def evaluate(self, per_class: bool = False) -> dict[str, Any]:
        """Student metrics on the real test data (fractions in [0, 1]); with ``per_class`` also
        ``per_class``, a :class:`~dfkd_viz.distill.evaluation.ClassBreakdown` against the true
        labels and the teacher's predictions (see :meth:`EvalSuite.evaluate
        <dfkd_viz.distill.evaluation.EvalSuite.evaluate>`)."""
        if not per_class:
            return self.evals.evaluate(self.eval_student)
        return self.evals.evaluate(self.eval_student, teacher=self.teacher, per_class=True)

    @torch.no_grad()  # not inference_mode: a defense may need gradients inside select()
    def snapshot(self) -> Snapshot:
        """Extension point: a :class:`~dfkd_viz.distill.snapshot.Snapshot` of ``snapshot_size``
        fresh synthetic samples with the teacher's and student's labels, the defense's
        decisions (score/keep None without a selecting defense) and artifacts, and the teacher's
        penultimate features."""
        n = self.s.snapshot_size
        self.generator.train()
        x = self.generator(self.sample_z(n))
        tf = self.teacher.forward_features(x)
        s = self.eval_student.eval()(x)
        self.student.train()
        sel = self.defense.select(x, tf.logits, self.ctx)
        return Snapshot.from_tensors(
            self.step, x, tf.logits, s, tf.penultimate, sel, self.defense.artifacts()
        )

    # ---------------------------------------------------------------- checkpoints
    def modules_to_save(self) -> list[tuple[str, torch.nn.Module]]:
        """Extension point: ``(key prefix, module)`` pairs a checkpoint holds (subclasses add
        theirs, e.g. AuG-KD's encoder and anchor)."""
        mods: list[tuple[str, torch.nn.Module]] = [
            ("generator.", self.generator),
            ("student.", self.student),
        ]
        if self.student_ema is not None:
            mods.append(("student_ema.", self.student_ema))
        return mods

    def optimizers(self) -> list[tuple[str, torch.optim.Optimizer]]:
        """Extension point: the optimisers a checkpoint holds, by name (subclasses add theirs)."""
        return [("opt_g", self.opt_g), ("opt_s", self.opt_s)]

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, meta)``: generator, student, both optimisers, defense state and RNG as
        tensors (for safetensors), step counters, optimiser hyper-parameters, the precision and
        (fp16) the loss scalers' state as JSON-able meta."""
        tensors: dict[str, torch.Tensor] = {}
        for prefix, mod in self.modules_to_save():
            for k, v in mod.state_dict().items():
                tensors[prefix + k] = v.detach().cpu().contiguous()
        meta: dict[str, Any] = {"step": self.step, "wall_s": self.wall_s}
        for name, opt in self.optimizers():
            sd = opt.state_dict()
            for pid, st in sd["state"].items():
                for k, v in st.items():
                    t = v if torch.is_tensor(v) else torch.tensor(v)
                    tensors[f"{name}.{pid}.{k}"] = t.detach().cpu().contiguous()
            meta[name] = sd["param_groups"]
        for k, v in self.defense.state_dict().items():
            tensors["defense." + k] = v.detach().cpu().contiguous()
        tensors["rng"] = self.rng.get_state()
        meta["defense"] = self.defense.name  # a fork with another defense leaves this state out
        meta["precision"] = self.amp.name
        amp_state = self.amp.state_dict()  # fp16's loss scalers, by optimiser name
        if amp_state:
            meta["amp"] = amp_state
        return tensors, meta

    def load_state_dict(
        self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], defense_state: bool = True
    ) -> None:
        """Restore from :meth:`state_dict` output (raises KeyError/RuntimeError on a mismatch).

        Args:
            defense_state: False leaves the defense as built (a fork that switches to another
                defense: the checkpoint's ``defense.*`` tensors belong to the old one).
        """
        for prefix, mod in self.modules_to_save():
            sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            mod.load_state_dict(sd, strict=True)
        for name, opt in self.optimizers():
            state: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
            for k, v in tensors.items():
                if k.startswith(name + "."):
                    _, pid, key = k.split(".", 2)
                    state[int(pid)][key] = v.to(self.device) if key != "step" else v
            opt.load_state_dict({"state": dict(state), "param_groups": meta[name]})
        if defense_state:
            self.defense.load_state_dict(
                {k[8:]: v for k, v in tensors.items() if k.startswith("defense.")}
            )
        if "rng" in tensors:
            self.rng.set_state(tensors["rng"])
        self.amp.load_state_dict(meta.get("amp", {}))
        self.step = int(meta["step"])
        self.wall_offset = float(meta["wall_s"])

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict[str, Any]:
        """Distil until the budget is spent or a stop is requested.

        Returns the final metrics (``id_acc``, ``ood_acc``, ``asr``, ``step``, ``wall_s``,
        ``status`` ``"finished"`` or ``"stopped"``)."""
        torch.manual_seed(self.s.seed + self.step)
        self._t0 = time.perf_counter()
        self.fire("on_start", {"step": self.step})
        phase = self.ctx.phase
        window_t, window_steps = time.perf_counter(), 0
        last_eval_step = -1
        while not self._done() and not self._stop:
            self.set_lr()
            self.ctx.step, self.ctx.progress = self.step, self.progress()
            new_phase = "final" if self.ctx.progress >= self.s.final_phase else "distill"
            if new_phase != phase:
                phase = self.ctx.phase = new_phase
                self.defense.on_phase(self.ctx, phase)
            g_terms = self.generator_phase()
            s_terms, agree, kept = self.student_phase()
            self.step += 1
            window_steps += 1
            now = time.perf_counter()
            its = window_steps / max(now - window_t, 1e-9)
            record = {**g_terms, **s_terms, **self.defense.metrics()}
            record.update(agreement=agree, kept_frac=kept)
            self.fire(
                "on_step", {"step": self.step, "wall_s": self.wall_s, "terms": record, "it_s": its}
            )
            if self.step % self.s.eval_every == 0 or self.step == 1 or self._done():
                self._eval_and_fire(record, its)
                last_eval_step = self.step
                window_t, window_steps = time.perf_counter(), 0
            if self.step % self.s.snapshot_every == 0 or self.step == 1:
                self.fire("on_samples", self.snapshot())
            if self.step % self.s.checkpoint_every == 0:
                self.fire("on_checkpoint", {"step": self.step})
        if last_eval_step != self.step:
            self._eval_and_fire({}, None)
        status = "stopped" if self._stop and not self._done() else "finished"
        final = {**self.last_metrics, "step": self.step, "wall_s": self.wall_s, "status": status}
        self.fire("on_checkpoint", {"step": self.step})
        self.fire("on_end", final)
        return final

    def _eval_and_fire(self, record: dict, its: float | None) -> None:
        m = self.evaluate(per_class=True)
        per_class = m.pop("per_class", None)
        payload = {"step": self.step, "wall_s": self.wall_s, **m}
        if per_class is not None:
            payload["per_class"] = per_class
        if its is not None:
            payload["it_s"] = its
        payload.update({k: v for k, v in record.items() if k in ("agreement", "kept_frac")})
        self.last_metrics = {k: v for k, v in m.items()}
        self.fire("on_eval", payload)
