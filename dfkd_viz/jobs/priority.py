"""CPU priority of background work: workers (and warm standbys) run *nice*, so that the app's
server and the user's browser get the CPU first when they need it.

On a machine with few cores a run's torch threads keep every core busy. A page render that needs
60 ms of CPU then waits for a core and takes 150–350 ms (measured on this project's 2-core VM,
``docs/results/performance.md``). With the worker at a higher nice value the scheduler hands the
core to the server's short render at once; the run loses only the CPU time the server and browser
actually use. A run alone on the machine runs at full speed whatever its nice value.

``DFKD_VIZ_WORKER_NICE`` sets the value (an integer 0–19, default :data:`DEFAULT_NICE`; ``0``
keeps normal priority). Only raising is possible without privileges, so a process that already
runs nicer keeps its value.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping

from dfkd_viz.errors import ConfigError

NICE_ENV = "DFKD_VIZ_WORKER_NICE"
"""The environment variable that sets the workers' nice value."""

DEFAULT_NICE = 10
"""The workers' nice value unless :data:`NICE_ENV` says otherwise: CFS then weighs a worker
thread at about a tenth of a normal one (110 vs 1024) while something else wants the core."""


def worker_nice(env: Mapping[str, str] | None = None) -> int:
    """The nice value workers should run at, from :data:`NICE_ENV` (0–19).

    Raises:
        ConfigError: the variable is set to anything but an integer from 0 to 19.
    """
    raw = (os.environ if env is None else env).get(NICE_ENV, "").strip()
    if not raw:
        return DEFAULT_NICE
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ConfigError(f"{NICE_ENV} must be an integer from 0 to 19, not {raw!r}.")
    return value


def lower_priority(nice: int) -> int:
    """Raise this process's nice value to ``nice`` (never lower it); returns the value in
    effect. On Linux a nice value belongs to each thread, so every thread of the process is
    changed (threads started later inherit it from the one that starts them); elsewhere the
    process's. A platform without ``setpriority`` keeps its priority.

    Raises:
        nothing: a refusal by the OS leaves the priority as it is.
    """
    if not hasattr(os, "setpriority"):
        return 0
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice <= current:
        return current
    tids = [0]
    if sys.platform.startswith("linux"):
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            tids = [0]
    for tid in tids:
        # a thread that just ended, or a platform that refuses, is left as it is
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    return os.getpriority(os.PRIO_PROCESS, 0)
