"""Metrics the papers report (``docs/methods.md``), as fractions in [0, 1].

- ID accuracy: the model on the teacher's test split.
- OOD accuracy: on the OOD domain's test split (an NTL teacher is near chance there).
- ASR (attack success rate): the share of *non-target* test images that, with the trigger, are
  classified as the target (``illidanlab/ABD:zskt/datasets/backdoor.py`` test split).
"""

from __future__ import annotations

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
