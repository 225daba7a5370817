"""Engine checkpoints as safetensors (never pickles): tensors in the file, the JSON meta (step,
wall seconds, optimiser hyper-parameters) in the safetensors header's ``__metadata__``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dfkd_viz.util.io import atomic_path


def save_checkpoint(
    path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write atomically (temporary file + rename).

    Raises:
        OSError: the file cannot be written (e.g. ``ENOSPC``, a full disk), with its errno (the
            safetensors library reports I/O failures as text; they are turned back into OSError).
    """
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
        except Exception as exc:
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(path)) from None


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(tensors, meta)``."""
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        for k in f.keys():  # noqa: SIM118  (safe_open is not iterable)
            tensors[k] = f.get_tensor(k)
    return tensors, meta


def checkpoints_to_drop(steps: list[int], every: int, keep: int) -> list[int]:
    """Which checkpoints to delete so that at most ``keep`` remain, evenly spaced.

    While more than ``keep`` are stored, only those on a grid of ``every`` steps are kept, then of
    ``2·every``, ``4·every``… — the newest checkpoint always stays (a resume continues from it).
    A run of 1000 steps with ``every=20, keep=25`` keeps steps 40, 80, …, 1000.

    Args:
        steps: the stored checkpoints' steps (any order, ≥ 0).
        every: the run's ``checkpoint_every`` (≥ 1).
        keep: the run's ``keep_checkpoints`` (≥ 1).

    Returns:
        The steps to delete, ascending (empty while ``len(steps) <= keep``).
    """
    steps = sorted(set(steps))
    if len(steps) <= keep:
        return []
    newest = steps[-1]
    spacing = max(1, every)
    while True:
        kept = {s for s in steps if s % spacing == 0} | {newest}
        if len(kept) <= keep:
            return [s for s in steps if s not in kept]
        spacing *= 2
