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


def spawn_attached(
    cmd: list[str], log_path: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start ``cmd`` as an ordinary child of this process (same session), stdout and stderr
    appended to ``log_path``, stdin closed, ``PYTHONUNBUFFERED=1``; ``env`` replaces the
    environment (default: this process's).

    For work that must not outlive its parent, such as a sweep cell on a Ray node: the child
    calls :func:`die_with_parent` first thing, so it ends when the process that started it ends
    (killed included). The caller waits for it (``proc.wait()``).

    Raises:
        OSError: the log cannot be opened or the program cannot be started.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(os.environ if env is None else env, PYTHONUNBUFFERED="1"),
        )


def die_with_parent(parent_pid: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent ends (Linux ``PR_SET_PDEATHSIG``; a
    no-op elsewhere). With ``parent_pid`` (the parent as it was at launch), a parent that is
    already gone ends this process at once."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


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
