"""The real test data a student is evaluated on, and the evaluation itself: ID accuracy, OOD
accuracy, attack success rate (ASR), trigger localisation and student-domain accuracy, and the same
per class (:class:`ClassBreakdown`). The engine calls :meth:`EvalSuite.evaluate` every
``eval_every`` steps; the metrics are leaf functions of :mod:`dfkd_viz.analysis.metrics` and
:mod:`dfkd_viz.analysis.saliency`."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dfkd_viz.analysis.metrics import class_rates, confusion_matrix, predicted_labels
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
class ClassBreakdown:
    """One evaluation of the student, per class (K = the ID test set's classes). Rates are
    fractions in [0, 1], NaN for a class without test images; counts are int64.

    Attributes:
        id_acc: ``(K,)`` the student's accuracy per *true* class on the ID test set.
        id_confusion: ``(K, K)`` ID test images by true label (row) and student prediction
            (column); row sums are ``id_count``.
        id_count: ``(K,)`` ID test images per class.
        teacher_confusion: ``(K, K)`` ID test images by the teacher's prediction (row) and the
            student's (column), or None (no teacher given).
        teacher_id_acc: ``(K,)`` the teacher's accuracy per true class on the ID test set (the
            same at every evaluation of a run), or None.
        ood_acc, ood_count: ``(K,)`` per true class on the OOD test set, or None (no OOD set, or
            one whose labels are not the teacher's K classes).
        asr, asr_count: ``(K,)`` per *source* class: the share of triggered test images of that
            class classified as the target (NaN at the target, which has no such images), and
            how many there are; None without a trigger.
    """

    id_acc: np.ndarray
    id_confusion: np.ndarray
    id_count: np.ndarray
    teacher_confusion: np.ndarray | None = None
    teacher_id_acc: np.ndarray | None = None
    ood_acc: np.ndarray | None = None
    ood_count: np.ndarray | None = None
    asr: np.ndarray | None = None
    asr_count: np.ndarray | None = None

    PER_EVAL = ("id_acc", "id_confusion", "teacher_confusion", "ood_acc", "asr")
    """Arrays that change from one evaluation to the next."""
    PER_RUN = ("teacher_id_acc", "id_count", "ood_count", "asr_count")
    """Arrays that are the same at every evaluation of a run (the teacher and the test sets)."""

    def per_eval(self) -> dict[str, np.ndarray]:
        """The :attr:`PER_EVAL` arrays that are not None, by name."""
        return {k: getattr(self, k) for k in self.PER_EVAL if getattr(self, k) is not None}

    def per_run(self) -> dict[str, np.ndarray]:
        """The :attr:`PER_RUN` arrays that are not None, by name."""
        return {k: getattr(self, k) for k in self.PER_RUN if getattr(self, k) is not None}


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
    _asr_source: torch.Tensor | None = field(default=None, repr=False)
    _teacher_pred: torch.Tensor | None = field(default=None, repr=False)
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

    def teacher_labels(self, teacher: torch.nn.Module) -> torch.Tensor:
        """The teacher's predicted labels ``(N,)`` on the ID test set, computed on the first call
        (one pass of the teacher over the set) and kept: the teacher is frozen, so later calls
        (with the same teacher) reuse them."""
        if self._teacher_pred is None:
            self._teacher_pred = predicted_labels(teacher, self.id_test)
        return self._teacher_pred

    def evaluate(
        self,
        model: torch.nn.Module,
        teacher: torch.nn.Module | None = None,
        per_class: bool = False,
    ) -> dict[str, Any]:
        """``id_acc``, ``ood_acc``, ``asr``, ``student_domain_acc`` of ``model`` as fractions, and
        ``trigger_loc`` (share of the Integrated-Gradients mass inside the trigger on triggered test
        images, for a local trigger) — None where not applicable. With ``per_class``, also
        ``per_class``: a :class:`ClassBreakdown` (with the student-vs-teacher confusion and the
        teacher's per-class accuracy when ``teacher`` is given).

        Each test set goes through ``model`` once: the accuracy, the per-class accuracy and the
        confusion matrix all come from the same predicted labels. The breakdown adds a few
        ``bincount`` calls (measured on 2 cores: 0.09 ms for 2,000 ID images and 10 classes, 0.2 ms
        for 10,000 images and 100 classes; a whole evaluation of the LeNet-5 student on ID, OOD
        and triggered images, 138 → 140 ms, within the noise) and, on the first call only, one
        pass of ``teacher`` over the ID test set (~0.2 s for the LeNet teachers).
        On the CPU the predictions come from a channels-last copy of ``model`` (the same logits
        to ~1e-7; measured here: 4,000 images through the LeNet-5 student in ~100 ms instead of
        ~220 ms, a fifth of a run's wall time at ``eval_every=5``)."""
        if self.trigger is not None and self._asr_set is None:
            self._asr_set = triggered_test_set(self.id_test, self.trigger, self.target)
            self._asr_source = self.id_test.y[self.id_test.y != self.target]
        if next(model.parameters()).is_cuda:
            self._pin()
        fast = _inference_copy(model)
        k = self.id_test.num_classes
        y = self.id_test.y
        pred = predicted_labels(fast, self.id_test)
        out: dict[str, Any] = {
            "id_acc": _mean(pred == y),
            "ood_acc": None,
            "asr": None,
            "trigger_loc": None,
            "student_domain_acc": None,
        }
        pc: ClassBreakdown | None = None
        if per_class and _fits(pred, k) and _fits(y, k):  # never fails an evaluation
            conf = confusion_matrix(y, pred, k)
            count = conf.sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                acc = np.diag(conf) / count  # 0 / 0 = NaN: a class without test images
            pc = ClassBreakdown(id_acc=acc, id_confusion=conf, id_count=count)
            if teacher is not None:
                t_pred = self.teacher_labels(teacher)
                if _fits(t_pred, k):
                    pc.teacher_confusion = confusion_matrix(t_pred, pred, k)
                    pc.teacher_id_acc = class_rates(y, t_pred == y, k)
            out["per_class"] = pc
        if self.student_test is not None:
            out["student_domain_acc"] = _mean(
                predicted_labels(fast, self.student_test) == self.student_test.y
            )
        if self.ood_test is not None:
            ood_y = self.ood_test.y
            ood_pred = predicted_labels(fast, self.ood_test)
            out["ood_acc"] = _mean(ood_pred == ood_y)
            if pc is not None and _fits(ood_y, k):
                pc.ood_acc = class_rates(ood_y, ood_pred == ood_y, k)
                pc.ood_count = np.bincount(ood_y.numpy(), minlength=k)
        if self.trigger is not None:
            asr_pred = predicted_labels(fast, self._asr_set)
            hit = asr_pred == self.target
            out["asr"] = _mean(hit)
            if pc is not None:
                pc.asr = class_rates(self._asr_source, hit, k)
                pc.asr_count = np.bincount(self._asr_source.numpy(), minlength=k)
            if self.loc_images > 0:
                from dfkd_viz.analysis.saliency import trigger_localisation

                x = self._asr_set.x[: self.loc_images].to(next(model.parameters()).device)
                out["trigger_loc"] = trigger_localisation(model, x, self.trigger, ig_steps=8)
        return out


def _fits(labels: torch.Tensor, k: int) -> bool:
    """True when every label is in ``[0, k)`` (and there is at least one)."""
    return len(labels) > 0 and int(labels.min()) >= 0 and int(labels.max()) < k


def _mean(hits: torch.Tensor) -> float:
    """The share of true values of a bool tensor, a fraction in [0, 1] (0.0 when empty)."""
    return float(hits.float().mean()) if len(hits) else 0.0
