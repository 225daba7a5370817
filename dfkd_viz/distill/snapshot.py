"""The snapshot record: what the engine shows of its synthetic samples every ``snapshot_every``
steps (the Live page's sample grid, the embedding map, the Decisions page)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dfkd_viz.distill.defenses.base import Selection


def _np(t: torch.Tensor | None, dtype=None) -> np.ndarray | None:
    if t is None:
        return None
    a = t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
    return a.astype(dtype) if dtype is not None else a


@dataclass
class Snapshot:
    """``n`` synthetic (or, for out-of-domain runs, mixed student-domain) samples with their
    per-sample records, all arrays of length ``n``.

    Attributes:
        step: the engine step it was taken at.
        images: ``(n, C, H, W)`` uint8 (pixel units × 255).
        teacher_label: ``(n,)`` int, the teacher's argmax.
        confidence: ``(n,)`` float, the teacher's max softmax probability, in [1/K, 1].
        student_label: ``(n,)`` int, the evaluated student's argmax.
        score, keep: ``(n,)`` float / bool from the defense's selection, or None without one.
        flag: ``(n,)`` bool for defenses that flag without rejecting (ABD), else None.
        threshold: the score threshold behind ``keep`` / ``flag``, or None.
        features: ``(n, D)`` float32 teacher penultimate features (for the embedding map).
        artifacts: the defense's (or method's) named arrays at this step, e.g. ABD's trigger.
    """

    step: int
    images: np.ndarray
    teacher_label: np.ndarray
    confidence: np.ndarray
    student_label: np.ndarray | None = None
    score: np.ndarray | None = None
    keep: np.ndarray | None = None
    flag: np.ndarray | None = None
    threshold: float | None = None
    features: np.ndarray | None = None
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def from_tensors(
        cls,
        step: int,
        x: torch.Tensor,
        t_logits: torch.Tensor,
        s_logits: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        sel: Selection | None = None,
        artifacts: dict[str, np.ndarray] | None = None,
    ) -> Snapshot:
        """Build the record from the engine's tensors: images ``x`` ``(n, C, H, W)`` in [0, 1],
        logits ``(n, K)``, penultimate ``features`` ``(n, D)``, the defense's ``sel``."""
        return cls(
            step=int(step),
            images=(x.detach().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy(),
            teacher_label=t_logits.argmax(1).cpu().numpy(),
            confidence=F.softmax(t_logits.detach().float(), 1).amax(1).cpu().numpy(),
            student_label=None if s_logits is None else s_logits.argmax(1).cpu().numpy(),
            score=None if sel is None else _np(sel.score),
            keep=None if sel is None else _np(sel.keep, bool),
            flag=None if sel is None or sel.flag is None else _np(sel.flag, bool),
            threshold=None if sel is None else sel.threshold,
            features=_np(features),
            artifacts=dict(artifacts or {}),
        )
