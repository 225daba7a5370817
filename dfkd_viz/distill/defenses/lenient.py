"""``ta-select`` — TA-DFKD's lenient-expert sample selection (Shin & Choi, AAAI 2024, §3.2;
``bigdata-inha/TA-DFKD-Official:Sample_Selection.py``), usable as a defense with any method.

The teacher acts as a *lenient expert*: instead of forcing every synthetic sample into a class
(DFQ's class prior), it only *verifies* them. Per batch of synthetic samples:

1. loss_i = CE(T(x_i), argmax T(x_i)) — how unsure the teacher is of its own label;
2. min-max normalise the losses to [0, 1];
3. fit a 2-component 1-D Gaussian mixture (``sklearn.mixture.GaussianMixture``, ``max_iter=10``,
   ``tol=1e-2``, ``reg_covar=5e-4`` as in the reference, after DivideMix);
4. keep the samples whose posterior of the low-mean ("clean", teacher-verified) component is
   above ``threshold`` (0.5).

Score per sample: that posterior, in [0, 1] (kept = score > threshold). The method ``tadfkd``
(:mod:`dfkd_viz.distill.methods`) uses the same selection on its generator's adversarial and
BN-statistics terms; with this defense, the student of any method distils from kept samples only
(the engine keeps drawing kept samples from its replay memory until a batch is full, as the
reference keeps synthesising until it has a full batch of kept samples).

Snapshot artifacts (for the Decisions page): ``ta_norm_loss`` ``(n,)`` the normalised losses of
the last selected batch, ``ta_gmm`` ``(3, 2)`` rows means, variances, weights of the two fitted
components (clean component first).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from dfkd_viz.distill.defenses.base import DEFENSES, Defense, DefenseParams, Selection

if TYPE_CHECKING:
    from dfkd_viz.distill.engine import StepContext


@dataclass
class GMMSplit:
    """Result of :func:`gmm_select` for B samples.

    Attributes:
        posterior: ``(B,)`` float32 in [0, 1], posterior of the clean (low-loss) component.
        keep: ``(B,)`` bool, ``posterior > threshold``.
        norm_loss: ``(B,)`` float32 in [0, 1], the min-max normalised teacher losses.
        means, variances, weights: ``(2,)`` float64 each, clean component first (all NaN when
            the mixture was not fitted: fewer than 4 samples or all losses equal).
    """

    posterior: np.ndarray
    keep: np.ndarray
    norm_loss: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray


def teacher_self_loss(t_logits: torch.Tensor) -> torch.Tensor:
    """``CE(T(x), argmax T(x))`` per sample: ``(B, K)`` logits → ``(B,)`` ≥ 0 (nats)."""
    t = t_logits.detach().float()
    return F.cross_entropy(t, t.argmax(1), reduction="none")


def gmm_select(
    t_logits: torch.Tensor,
    threshold: float = 0.5,
    max_iter: int = 10,
    tol: float = 1e-2,
    reg_covar: float = 5e-4,
    seed: int = 0,
) -> GMMSplit:
    """TA-DFKD's per-batch selection of teacher-verified samples (module docstring).

    Args:
        t_logits: ``(B, K)`` teacher logits of the synthetic samples.
        threshold: posterior of the clean component above which a sample is kept, in (0, 1).
        max_iter, tol, reg_covar: ``GaussianMixture`` settings (the reference's defaults).
        seed: the mixture's initialisation seed (deterministic selection).

    Returns:
        :class:`GMMSplit`. Degenerate batches (B < 4, or every loss equal) keep every sample with
        posterior 1 — nothing to tell apart.
    """
    from sklearn.mixture import GaussianMixture

    loss = teacher_self_loss(t_logits).cpu().numpy().astype(np.float64)
    b = loss.shape[0]
    nan2 = np.full(2, np.nan)
    span = float(loss.max() - loss.min()) if b else 0.0
    if b < 4 or span <= 1e-12:
        ones = np.ones(b, dtype=np.float32)
        return GMMSplit(ones, ones.astype(bool), np.zeros(b, np.float32), nan2, nan2, nan2)
    norm = (loss - loss.min()) / span
    gmm = GaussianMixture(
        n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=10 is by design
        gmm.fit(norm.reshape(-1, 1))
    order = np.argsort(gmm.means_.ravel())  # clean (low loss) component first
    post = gmm.predict_proba(norm.reshape(-1, 1))[:, order[0]].astype(np.float32)
    return GMMSplit(
        post,
        post > threshold,
        norm.astype(np.float32),
        gmm.means_.ravel()[order],
        gmm.covariances_.ravel()[order],
        gmm.weights_.ravel()[order],
    )


class TASelectParams(DefenseParams):
    """Parameters of :class:`TASelect` (the reference's defaults)."""

    threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="posterior of the clean component needed to keep a sample"
    )
    max_iter: int = Field(10, ge=1, le=1000, description="GMM EM iterations")
    tol: float = Field(1e-2, gt=0.0, le=1.0)
    reg_covar: float = Field(5e-4, gt=0.0, le=1.0)


@DEFENSES.register("ta-select")
class TASelect(Defense):
    """TA-DFKD's lenient-expert selection as a defense (module docstring).

    ``select(x, t_logits)``: ``(B, K)`` logits → Selection(score = clean posterior ``(B,)`` in
    [0, 1], keep = score > threshold, threshold). Rejected samples are not used at all.
    """

    name = "ta-select"
    Params = TASelectParams
    score_name: ClassVar[str] = (
        "clean posterior: posterior of the teacher-verified (low-loss) component"
    )
    needs_rejected: ClassVar[bool] = False

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self._last: GMMSplit | None = None

    def split(self, t_logits: torch.Tensor) -> GMMSplit:
        """:func:`gmm_select` with this defense's parameters (remembered for :meth:`artifacts`)."""
        p = self.params
        self._last = gmm_select(t_logits, p.threshold, p.max_iter, p.tol, p.reg_covar)
        return self._last

    @torch.no_grad()
    def select(self, x: torch.Tensor, t_logits: torch.Tensor, ctx: StepContext) -> Selection:
        sp = self.split(t_logits)
        dev = t_logits.device
        return Selection(
            torch.from_numpy(sp.posterior).to(dev),
            torch.from_numpy(sp.keep).to(dev),
            self.params.threshold,
        )

    def artifacts(self) -> dict[str, np.ndarray]:
        if self._last is None:
            return {}
        sp = self._last
        return {
            "ta_norm_loss": sp.norm_loss.astype(np.float32),
            "ta_gmm": np.stack([sp.means, sp.variances, sp.weights]).astype(np.float32),
        }
