"""Synthetic batches and the replay memory the student draws them from.

DFQ-style methods distil from each synthetic batch once; several reference codebases (CMI's and
Fast-Datafree's ``DataPool`` / memory bank, ``zju-vipa/Fast-Datafree:datafree/utils``) keep recent
synthetic samples and let the student draw from them several times, which makes each generator
step pay for more student steps. :class:`ReplayMemory` is that ring buffer, with the teacher's
logits fixed at synthesis time and — the part a defense needs — the defense's per-sample decision
travelling with each sample, so a costly probe (ATEsc's attack) is paid once per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dfkd_viz.distill.defenses.base import Selection


@dataclass
class SyntheticBatch:
    """Synthetic samples on their way to the student.

    Attributes:
        x: ``(B, C, H, W)`` pixel units (no graph).
        t_logits: ``(B, K)`` teacher logits.
        t_blocks: the teacher's block activations (attention transfer) or None.
        sel: the defense's selection for these samples, or None (keep all).
    """

    x: torch.Tensor
    t_logits: torch.Tensor
    t_blocks: list[torch.Tensor] | None = None
    sel: Selection | None = None


class ReplayMemory:
    """A ring buffer of the last ``capacity`` synthetic samples with their teacher logits and
    defense decisions (score, keep), on the samples' device.

    Args:
        capacity: number of samples kept (older ones are overwritten first).

    Raises:
        ValueError: ``capacity`` < 1.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay memory capacity must be ≥ 1, got {capacity}")
        self.capacity = int(capacity)
        self.x: torch.Tensor | None = None
        self.t: torch.Tensor | None = None
        self.score: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None
        self.has_selection = False
        self._n = 0
        self._ptr = 0

    def __len__(self) -> int:
        """Samples stored, in [0, capacity]."""
        return self._n

    def add(self, batch: SyntheticBatch) -> None:
        """Write a batch (and its selection, if any; samples without one count as kept)."""
        x, t, sel, cap = batch.x, batch.t_logits, batch.sel, self.capacity
        if self.x is None:
            self.x = x.new_empty((cap, *x.shape[1:]))
            self.t = t.new_empty((cap, t.shape[1]))
            self.score = x.new_zeros(cap)
            self.keep = torch.ones(cap, dtype=torch.bool, device=x.device)
        n = x.shape[0]
        idx = (torch.arange(n, device=x.device) + self._ptr) % cap
        self.x[idx] = x
        self.t[idx] = t
        if sel is not None:
            self.score[idx] = sel.score.to(x.dtype)
            self.keep[idx] = sel.keep
        self.has_selection = self.has_selection or sel is not None
        self._ptr = (self._ptr + n) % cap
        self._n = min(cap, self._n + n)

    def draw(self, size: int, rng: torch.Generator) -> SyntheticBatch:
        """``size`` samples drawn uniformly with replacement (no selection attached).

        Raises:
            ValueError: the memory is empty."""
        if self._n == 0:
            raise ValueError("the replay memory is empty")
        j = torch.randint(0, self._n, (size,), generator=rng).to(self.x.device)
        return SyntheticBatch(self.x[j], self.t[j], None, None)

    def draw_selected(self, size: int, n_rejected: int, rng: torch.Generator) -> SyntheticBatch:
        """A *full* batch of ``size`` kept samples (as TA-DFKD keeps drawing until a batch of
        kept samples is complete) plus ``n_rejected`` rejected ones for a defense's own term (e.g.
        ATEsc's forgetting); the returned selection's ``keep`` marks which are which. While
        nothing is kept yet, a batch of rejected samples (so the KD term is empty).

        Raises:
            ValueError: the memory is empty."""
        if self._n == 0:
            raise ValueError("the replay memory is empty")
        keep = self.keep[: self._n]
        if not bool(keep.any()):
            n_rejected = max(n_rejected, size)
        parts, flags = [], []
        for pool, n, flag in (
            (torch.nonzero(keep).flatten(), size, True),
            (torch.nonzero(~keep).flatten(), n_rejected, False),
        ):
            if len(pool) and n:
                pick = torch.randint(0, len(pool), (n,), generator=rng).to(pool.device)
                parts.append(pool[pick])
                flags.append(torch.full((n,), flag, dtype=torch.bool, device=pool.device))
        j = torch.cat(parts)
        return SyntheticBatch(
            self.x[j], self.t[j], None, Selection(self.score[j], torch.cat(flags))
        )
