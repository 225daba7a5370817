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
