"""``domain-oracle`` — an analysis tool, **not a data-free defense**: the upper bound of any defense
that selects synthetic samples by how OOD-like they look.

It trains a small domain classifier (the student architecture, 2 classes) on the *real* training
splits of the run's ID dataset (label 0) and its OOD domain (label 1) — data a data-free method
never has — and rejects the synthetic samples it judges OOD (``p_OOD > threshold``). Comparing a
run with this defense to one without tells how much of an NTL teacher's trap comes from
OOD-like synthetic samples at all, i.e. how much *any* per-sample split (such as ATEsc's
robustness split, :mod:`dfkd_viz.distill.defenses.atesc`) could recover at best. On this project's
NTL teachers the answer is "a minority" (``docs/results/ntl-trap.md``).

Per-sample score: ``p_OOD`` in [0, 1] from the domain classifier; decision: kept = ``p_OOD ≤
threshold``. Cost: ~2–4 s of training at setup (16,000 real 28×28 images, ``epochs`` = 2), then one
small forward pass per new synthetic sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from dfkd_viz.distill.defenses.base import (
    DEFENSES,
    Defense,
    DefenseParams,
    Selection,
    uniform_forgetting,
)
from dfkd_viz.errors import DfkdVizError

if TYPE_CHECKING:
    from dfkd_viz.distill.engine import StepContext


class DomainOracleParams(DefenseParams):
    """Parameters of :class:`DomainOracle`."""

    threshold: float = Field(
        0.5, gt=0.0, lt=1.0, description="p(OOD) above which a sample is rejected"
    )
    epochs: int = Field(2, ge=1, le=20, description="domain-classifier training epochs")
    forget: Literal["uniform", "none"] = "none"
    forget_weight: float = Field(0.1, ge=0.0, le=10.0)


def train_domain_classifier(
    dataset: str, ood_domain: str, arch: str = "lenet5", epochs: int = 2, seed: int = 0
) -> torch.nn.Module:
    """A classifier of real ID (0) vs real OOD (1) images, trained on the two training splits.

    Args:
        dataset: the ID dataset name (e.g. ``"mnist"``); ood_domain: a domain name
            (:func:`dfkd_viz.data.load_domain`).
        arch: classifier architecture (:func:`dfkd_viz.models.create_model`).
        epochs: passes over the concatenated splits (Adam 2e-3, batch 128).
        seed: seeds initialisation and shuffling (the global torch RNG is left untouched).

    Returns:
        The classifier in eval mode, frozen; images ``(B, C, H, W)`` in [0, 1] → logits ``(B, 2)``.

    Raises:
        UnknownNameError, DataUnavailableError: unknown or missing dataset / domain.
    """
    from dfkd_viz.data import load_dataset, load_domain
    from dfkd_viz.models import create_model

    id_tr = load_dataset(dataset, "train")
    ood_tr = load_domain(ood_domain, dataset, "train")
    x = torch.cat([id_tr.x, ood_tr.x])
    y = torch.cat([torch.zeros(len(id_tr)), torch.ones(len(ood_tr))]).long()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        clf = create_model(
            arch, num_classes=2, in_shape=id_tr.shape, mean=id_tr.mean, std=id_tr.std
        )
        opt = torch.optim.Adam(clf.parameters(), 2e-3)
        gen = torch.Generator().manual_seed(seed)
        clf.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x) - 127, 128):
                j = perm[i : i + 128]
                loss = F.cross_entropy(clf(x[j]), y[j])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return clf.eval().requires_grad_(False)


@DEFENSES.register("domain-oracle")
class DomainOracle(Defense):
    """Reject synthetic samples that a real-data domain classifier calls OOD (analysis only: uses
    real ID and OOD training data; module docstring).

    ``select(x)``: x ``(B, C, H, W)`` in [0, 1] → Selection(score = p_OOD ``(B,)`` in [0, 1],
    keep = p_OOD ≤ threshold, threshold).

    Raises:
        DfkdVizError: at setup, when the run has no OOD domain to train the classifier on.
    """

    name = "domain-oracle"
    Params = DomainOracleParams
    score_name: ClassVar[str] = "p(OOD) from a real-data domain classifier"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.clf: torch.nn.Module | None = None

    def setup(self, ctx: StepContext) -> None:
        ev = ctx.evals
        if ev is None or not ev.dataset or not ev.ood_domain:
            raise DfkdVizError(
                "the domain-oracle defense needs an OOD domain: choose one (ood_domain) or a teacher that has one"
            )
        self.clf = train_domain_classifier(
            ev.dataset, ev.ood_domain, epochs=self.params.epochs, seed=0
        ).to(ctx.device)

    @torch.no_grad()
    def select(self, x: torch.Tensor, t_logits: torch.Tensor, ctx: StepContext) -> Selection:
        if self.clf is None:
            self.setup(ctx)
        p_ood = F.softmax(self.clf(x), 1)[:, 1]
        thr = self.params.threshold
        return Selection(p_ood, p_ood <= thr, thr)

    def student_loss_extra(self, ctx, x, t_logits, s_logits, sel):
        p = self.params
        if sel is None or p.forget == "none":
            return {}
        return uniform_forgetting(s_logits, ~sel.keep, p.forget_weight)
