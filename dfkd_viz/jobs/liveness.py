"""Process liveness for detached jobs (Linux ``/proc``, with a POSIX fallback).

A worker is alive when its PID exists, is not a zombie, and (when known) still has the start time
recorded at launch — so a reused PID is not mistaken for the worker. Zombies of our own children are
reaped on the way (``waitpid(WNOHANG)``).
"""

from __future__ import annotations

import os
from pathlib import Path


def process_start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of ``/proc/PID/stat``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()[0]


def pid_alive(pid: int | None, start_time: str | None = None) -> bool:
    """True when ``pid`` is a live, non-zombie process (with the same start time, if given)."""
    if not pid or pid <= 0:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False  # it was our child and has just been reaped
    except ChildProcessError:
        pass
    except OSError:
        pass
    if Path("/proc").is_dir() and Path("/proc/self").exists():
        state = _state(pid)
        if state is None or state in ("Z", "X"):
            return False
        return not (start_time and process_start_time(pid) != start_time)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
