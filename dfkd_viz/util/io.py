"""Atomic file writes and PNG encoding, shared by the run store, the teacher zoo, the jobs layer,
exports and the figure builders.

Every write goes through a temporary file in the target's directory and :func:`os.replace`, so a
reader sees the old file or the new one, never half of one; on an error (a full disk) the
temporary file is removed and the old file stays.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on a clean exit it replaces ``path`` atomically.

    For writers that want a file name (``safetensors.torch.save_file``, ``np.savez``). The
    temporary name carries the PID, so concurrent writers never share one. Creates the parent
    directory. Raises whatever the writer raises (the temporary file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically; returns ``path``.

    Raises:
        OSError: the directory is not writable or the disk is full (``path`` is unchanged).
    """
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """``json.dumps(obj)`` written atomically (see :func:`write_atomic`)."""
    return write_atomic(path, json.dumps(obj, indent=indent))


def read_json(path: str | os.PathLike) -> Any | None:
    """The JSON content of ``path``, or None when it is missing or not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def png_bytes(img: np.ndarray) -> bytes:
    """Encode one image ``(C, H, W)`` uint8 (C = 1 or 3) as PNG bytes."""
    from PIL import Image

    arr = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def png_to_array(data: bytes) -> np.ndarray:
    """Decode PNG bytes to ``(H, W)`` (grey) or ``(H, W, 3)`` (colour) uint8."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block:
    serialises writers across processes on one machine (not across NFS)."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
