"""The real test data a student is evaluated on, and the evaluation itself: ID accuracy, OOD
accuracy, attack success rate (ASR), trigger localisation and student-domain accuracy. The engine
calls :meth:`EvalSuite.evaluate` every ``eval_every`` steps; the metrics are leaf functions of
:mod:`dfkd_viz.analysis.metrics` and :mod:`dfkd_viz.analysis.saliency`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from dfkd_viz.analysis.metrics import accuracy
from dfkd_viz.data.datasets import ImageDataset
from dfkd_viz.data.triggers import Trigger, triggered_test_set
from dfkd_viz.models import Classifier


def _inference_copy(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode channels-last copy of a CPU :class:`Classifier` for batched inference (about
    twice as fast on 2 cores for the LeNets); ``model`` itself on a GPU or for other modules."""
    if not isinstance(model, Classifier) or next(model.parameters()).is_cuda:
        return model
    return copy.deepcopy(model).eval().set_memory_format(torch.channels_last)


@dataclass
class EvalSuite:
    """Real test data the student is evaluated on (all pixel units).

    Attributes:
        id_test: the teacher's ID test split.
        ood_test: the OOD domain's test split, or None.
        trigger, target: the backdoor trigger and target class for ASR, or None.
        loc_images: how many triggered test images the trigger-localisation score
            (:func:`dfkd_viz.analysis.saliency.trigger_localisation`) is averaged over; 0 = off.
        dataset, ood_domain: the names behind ``id_test`` and ``ood_test`` (for analyses that
            need the *training* splits, e.g. the ``domain-oracle`` defense), or None.
        student_test: the student domain's test split (out-of-domain KD, ``student_domain_acc``),
            or None.
    """

    id_test: ImageDataset
    ood_test: ImageDataset | None = None
    trigger: Trigger | None = None
    target: int = 0
    dataset: str | None = None
    ood_domain: str | None = None
    loc_images: int = 32
    student_test: ImageDataset | None = None
    _asr_set: ImageDataset | None = field(default=None, repr=False)
    _pinned: bool = field(default=False, repr=False)

    def _pin(self) -> None:
        """Once, before the first evaluation of a GPU model: the test sets' images in pinned host
        memory, so :func:`~dfkd_viz.analysis.metrics.predict` copies them asynchronously."""
        if self._pinned:
            return
        for name in ("id_test", "ood_test", "student_test", "_asr_set"):
            ds = getattr(self, name)
            if ds is not None and not ds.x.is_pinned():
                setattr(self, name, ds.replace(x=ds.x.pin_memory()))
        self._pinned = True

    def evaluate(self, model: torch.nn.Module) -> dict[str, float | None]:
        """``id_acc``, ``ood_acc``, ``asr``, ``student_domain_acc`` of ``model`` as fractions, and
        ``trigger_loc`` (share of the Integrated-Gradients mass inside the trigger on triggered test
        images, for a local trigger) — None where not applicable.

        On the CPU the accuracies are computed on a channels-last copy of ``model`` (the same
        logits to ~1e-7; measured here: 4,000 images through the LeNet-5 student in ~100 ms
        instead of ~220 ms, a fifth of a run's wall time at ``eval_every=5``)."""
        if self.trigger is not None and self._asr_set is None:
            self._asr_set = triggered_test_set(self.id_test, self.trigger, self.target)
        if next(model.parameters()).is_cuda:
            self._pin()
        fast = _inference_copy(model)
        out: dict[str, float | None] = {
            "id_acc": accuracy(fast, self.id_test),
            "ood_acc": None,
            "asr": None,
            "trigger_loc": None,
            "student_domain_acc": None,
        }
        if self.student_test is not None:
            out["student_domain_acc"] = accuracy(fast, self.student_test)
        if self.ood_test is not None:
            out["ood_acc"] = accuracy(fast, self.ood_test)
        if self.trigger is not None:
            out["asr"] = accuracy(fast, self._asr_set)
            if self.loc_images > 0:
                from dfkd_viz.analysis.saliency import trigger_localisation

                x = self._asr_set.x[: self.loc_images].to(next(model.parameters()).device)
                out["trigger_loc"] = trigger_localisation(model, x, self.trigger, ig_steps=8)
        return out
