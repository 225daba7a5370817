"""Metrics the papers report (``docs/methods.md``), as fractions in [0, 1].

- ID accuracy: the model on the teacher's test split.
- OOD accuracy: on the OOD domain's test split (an NTL teacher is near chance there).
- ASR (attack success rate): the share of *non-target* test images that, with the trigger, are
  classified as the target (``illidanlab/ABD:zskt/datasets/backdoor.py`` test split).
- Per class: :func:`confusion_matrix` of predicted labels against the true (or the teacher's)
  labels, and :func:`class_rates`, the share of hits per class (per-class accuracy, per-source-class
  ASR), both from predictions computed once (:func:`predicted_labels`).
"""

from __future__ import annotations

import numpy as np
import torch

from dfkd_viz.data.datasets import ImageDataset
from dfkd_viz.data.triggers import Trigger, triggered_test_set


@torch.inference_mode()
def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits ``(N, K)`` of ``x`` ``(N, C, H, W)`` in [0, 1], in eval mode, batched, on the
    model's device (returned on the CPU, float32). For a GPU model, ``x`` in pinned host memory
    (:meth:`torch.Tensor.pin_memory`) is copied asynchronously (``non_blocking``) and the logits
    come back in one copy at the end, so batch copies overlap the kernels; unpinned ``x`` is
    copied synchronously."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(x[i : i + batch_size].to(device, non_blocking=True)).float()
        for i in range(0, len(x), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out).cpu() if out else torch.empty(0)


def predicted_labels(
    model: torch.nn.Module, ds: ImageDataset, batch_size: int = 1024
) -> torch.Tensor:
    """Top-1 predicted labels ``(N,)`` int64 in ``[0, K)`` of ``model`` on ``ds`` (CPU; empty for
    an empty set): one forward pass, from which accuracy, per-class accuracy and confusion
    matrices are all derived."""
    if len(ds) == 0:
        return torch.empty(0, dtype=torch.long)
    return predict(model, ds.x, batch_size).argmax(1)


def confusion_matrix(
    rows: torch.Tensor | np.ndarray, cols: torch.Tensor | np.ndarray, num_classes: int
) -> np.ndarray:
    """``(K, K)`` int64 counts: entry ``[i, j]`` = how many items have ``rows == i`` and
    ``cols == j`` (e.g. rows = true labels, cols = the student's predictions; row sums = the class
    counts). ``rows`` and ``cols`` are ``(N,)`` integer labels in ``[0, K)``.

    Raises:
        ValueError: the two differ in length, or a label is outside ``[0, K)``."""
    r = torch.as_tensor(rows).long().reshape(-1)
    c = torch.as_tensor(cols).long().reshape(-1)
    if r.shape != c.shape:
        raise ValueError(f"rows and cols must have the same length ({len(r)} != {len(c)})")
    k = int(num_classes)
    if len(r) and (min(int(r.min()), int(c.min())) < 0 or max(int(r.max()), int(c.max())) >= k):
        raise ValueError(f"labels must be in [0, {k})")
    return torch.bincount(r * k + c, minlength=k * k).reshape(k, k).numpy()


def class_rates(
    groups: torch.Tensor | np.ndarray, hits: torch.Tensor | np.ndarray, num_classes: int
) -> np.ndarray:
    """``(K,)`` float64 in [0, 1]: per class ``c``, the share of items with ``groups == c`` whose
    ``hits`` is true (per-class accuracy: groups = true labels, hits = correct; per-class ASR:
    groups = source labels, hits = predicted the target); NaN for a class without items.
    ``groups``: ``(N,)`` labels in ``[0, K)``; ``hits``: ``(N,)`` bool.

    Raises:
        ValueError: the two differ in length, or a label is outside ``[0, K)``."""
    g = torch.as_tensor(groups).long().reshape(-1)
    h = torch.as_tensor(hits).reshape(-1).to(torch.float64)
    if g.shape != h.shape:
        raise ValueError(f"groups and hits must have the same length ({len(g)} != {len(h)})")
    k = int(num_classes)
    if len(g) and (int(g.min()) < 0 or int(g.max()) >= k):
        raise ValueError(f"labels must be in [0, {k})")
    n = torch.bincount(g, minlength=k).to(torch.float64)
    won = torch.bincount(g, weights=h, minlength=k)
    return (won / n).numpy()  # 0 / 0 = NaN: a class without items


def accuracy(model: torch.nn.Module, ds: ImageDataset, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``ds``, a fraction in [0, 1] (0.0 on an empty set)."""
    if len(ds) == 0:
        return 0.0
    return float((predict(model, ds.x, batch_size).argmax(1) == ds.y).float().mean())


def attack_success_rate(
    model: torch.nn.Module, ds: ImageDataset, trigger: Trigger, target: int
) -> float:
    """ASR in [0, 1]: share of non-target images of ``ds`` classified ``target`` with the trigger."""
    return accuracy(model, triggered_test_set(ds, trigger, target))
