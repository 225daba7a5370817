"""The defense interface and registry (DESIGN.md §2).

A defense plugs into the engine's named hooks; the engine never knows which one it has:

- :meth:`Defense.select` — per-sample ``score`` and keep/reject decision for a batch of synthetic
  samples; the student's distillation loss uses the kept samples only;
- :meth:`Defense.generator_loss_extra` / :meth:`Defense.student_loss_extra` — extra loss terms
  (named, so the run records each);
- :meth:`Defense.on_phase` — phase changes (e.g. ABD's final Self-Retrospection phase);
- :meth:`Defense.state_dict` / :meth:`Defense.load_state_dict` — tensors saved with checkpoints.

Defenses are registered by name in :data:`DEFENSES` with a pydantic ``Params`` model of their
parameters (validated at the boundary, shown in the app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
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
        threshold: the score threshold behind ``keep`` when there is one (for plots), else None.
    """

    __slots__ = ("keep", "score", "threshold")

    def __init__(
        self, score: torch.Tensor, keep: torch.Tensor, threshold: float | None = None
    ) -> None:
        self.score, self.keep, self.threshold = score, keep, threshold


class Defense:
    """Base class: the identity defense (keeps everything, adds nothing)."""

    name: ClassVar[str] = "none"
    Params: ClassVar[type[DefenseParams]] = DefenseParams
    score_name: ClassVar[str] = "score"

    def __init__(self, params: DefenseParams | dict | None = None) -> None:
        self.params = params if isinstance(params, DefenseParams) else self.Params(**(params or {}))

    def setup(self, ctx: StepContext) -> None:
        """Called once before the first step (teacher, student, generator are known)."""

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

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for the run's config and the app."""
        return {"name": self.name, **self.params.model_dump()}


DEFENSES: Registry[type[Defense]] = Registry("defense")
DEFENSES.register("none")(Defense)


def create_defense(name: str | None, params: dict | None = None) -> Defense:
    """Build the registered defense ``name`` (``None`` or ``"none"``: the identity defense).

    Raises:
        UnknownNameError: unknown defense name.
        pydantic.ValidationError: invalid parameters.
    """
    return DEFENSES.get(name or "none")(params)
