"""Detached processes: start, reap, signal, read the end of their log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from dfkd_viz.jobs.liveness import pid_alive

_children: dict[int, subprocess.Popen] = {}


def spawn_detached(cmd: list[str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session (it outlives the CLI or the app that started it), stdout
    and stderr appended to ``log_path``, stdin closed, ``PYTHONUNBUFFERED=1``.

    The child is kept in a table and reaped by :func:`reap` (every liveness check calls it), so
    a finished job never lingers as a zombie of a long-lived process such as the app server.

    Raises:
        OSError: the log cannot be opened or the program cannot be started.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            start_new_session=True,
        )
    _children[proc.pid] = proc
    return proc


def reap() -> None:
    """Collect the exit status of finished children started by :func:`spawn_detached`."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def terminate(pid: int | None, start_time: str | None = None) -> bool:
    """Send SIGTERM to ``pid`` if it is alive (with ``start_time``, if given); True if sent."""
    if not pid_alive(pid, start_time):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid), signal.SIGTERM)
        return True
    return False


def log_tail(path: Path, max_chars: int = 200) -> str | None:
    """The last non-empty line of a log file (at most ``max_chars``), or None."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1].strip()[:max_chars] if lines else None
