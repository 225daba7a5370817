"""The defense interface and registry (``docs/extending.md``).

A defense plugs into the engine's named hooks; the engine never knows which one it has:

- :meth:`Defense.select` — per-sample ``score`` and keep/reject decision for a batch of synthetic
  samples; the student's distillation loss uses the kept samples only;
- :meth:`Defense.generator_loss_extra` / :meth:`Defense.student_loss_extra` — extra loss terms
  (named, so the run records each);
- :meth:`Defense.on_phase` — phase changes (e.g. ABD's final Self-Retrospection phase);
- :meth:`Defense.metrics` — scalars recorded with every step (e.g. whether a mechanism is active);
- :meth:`Defense.artifacts` — arrays saved with every snapshot (e.g. ABD's synthesised trigger);
- :meth:`Defense.state_dict` / :meth:`Defense.load_state_dict` — tensors saved with checkpoints.

Defenses are registered by name in :data:`DEFENSES` with a pydantic ``Params`` model of their
parameters (validated at the boundary, shown in the app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from dfkd_viz.registry import Registry

if TYPE_CHECKING:
    from dfkd_viz.distill.engine import StepContext


class DefenseParams(BaseModel):
    """Parameters of a defense (subclasses add fields; unknown keys are rejected)."""

    model_config = ConfigDict(extra="forbid")


class Selection:
    """The result of :meth:`Defense.select` for a batch of B samples.

    Attributes:
        score: ``(B,)`` float, the defense's per-sample score (meaning documented per defense).
        keep: ``(B,)`` bool, True = kept for distillation.
        threshold: the score threshold behind ``keep`` (or ``flag``) when there is one (for
            plots), else None.
        flag: ``(B,)`` bool or None: samples the defense flags without necessarily rejecting them
            (ABD's *suspicious* samples, which it vaccinates but still distils from).
    """

    __slots__ = ("flag", "keep", "score", "threshold")

    def __init__(
        self,
        score: torch.Tensor,
        keep: torch.Tensor,
        threshold: float | None = None,
        flag: torch.Tensor | None = None,
    ) -> None:
        self.score, self.keep, self.threshold, self.flag = score, keep, threshold, flag


class Defense:
    """Base class: the identity defense (keeps everything, adds nothing)."""

    name: ClassVar[str] = "none"
    Params: ClassVar[type[DefenseParams]] = DefenseParams
    score_name: ClassVar[str] = "score"
    #: whether the defense's own terms use the samples it rejects (ATEsc's forgetting does,
    #: TA-DFKD's selection does not): the engine then adds a quarter batch of them to each draw
    needs_rejected: ClassVar[bool] = True

    def __init__(self, params: DefenseParams | dict | None = None) -> None:
        self.params = params if isinstance(params, DefenseParams) else self.Params(**(params or {}))

    def setup(self, ctx: StepContext) -> None:
        """Called once when the engine is built, before a checkpoint is loaded (teacher, student,
        generator and the evaluation data are known)."""

    def select(self, x: torch.Tensor, t_logits: torch.Tensor, ctx: StepContext) -> Selection | None:
        """Score synthetic samples ``x`` ``(B, C, H, W)`` with teacher logits ``(B, K)``; None = keep all."""
        return None

    def generator_loss_extra(
        self, ctx: StepContext, x: torch.Tensor, t_logits: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Extra generator loss terms (scalars, already weighted) for samples ``x`` with graph."""
        return {}

    def student_loss_extra(
        self,
        ctx: StepContext,
        x: torch.Tensor,
        t_logits: torch.Tensor,
        s_logits: torch.Tensor,
        sel: Selection | None,
    ) -> dict[str, torch.Tensor]:
        """Extra student loss terms (scalars, already weighted) on the whole batch."""
        return {}

    def on_phase(self, ctx: StepContext, phase: str) -> None:
        """Called when the run enters a phase (``"distill"``, ``"final"``)."""

    def metrics(self) -> dict[str, float]:
        """Scalars recorded with every step under their names (e.g. ``sv_active``)."""
        return {}

    def artifacts(self) -> dict[str, np.ndarray]:
        """Named float32 arrays saved with every snapshot (e.g. ``sr_trigger`` ``(C, H, W)``)."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


def uniform_forgetting(
    s_logits: torch.Tensor, mask: torch.Tensor, weight: float
) -> dict[str, torch.Tensor]:
    """``{"s_forget": weight · KL(U ‖ p_S)}`` on the samples where ``mask`` ``(B,)`` is True: the
    student is taught to have no opinion on them (uniform over the K classes) instead of the
    teacher's. ``s_logits`` ``(B, K)`` with graph. A zero term (kept in the graph) when the mask
    is empty, so the run's record has the term at every step; ``{}`` when ``weight`` is 0."""
    if weight == 0:
        return {}
    if not bool(mask.any()):
        return {"s_forget": s_logits.sum() * 0.0}
    log_p = F.log_softmax(s_logits[mask], 1)
    uniform = torch.full_like(log_p, 1.0 / log_p.shape[1])
    return {"s_forget": weight * F.kl_div(log_p, uniform, reduction="batchmean")}


DEFENSES: Registry[type[Defense]] = Registry("defense")
DEFENSES.register("none")(Defense)


def create_defense(name: str | None, params: dict | None = None) -> Defense:
    """Build the registered defense ``name`` (``None`` or ``"none"``: the identity defense).

    Raises:
        UnknownNameError: unknown defense name.
        pydantic.ValidationError: invalid parameters.
    """
    return DEFENSES.get(name or "none")(params)
