"""Warm standby workers: a run's worker that has already started Python, imported torch and warmed
its kernels when the run is launched (``python -m dfkd_viz.runs.standby``).

A cold worker spends its first seconds on work that does not depend on the run: starting Python,
importing torch, scikit-learn and torch's optimiser machinery (``torch._dynamo``), loading the test
sets (2–6 s on this project's 2-core VM, most of the time from **Start demo** to the first curve,
``docs/results/performance.md``), and a few tens of milliseconds creating oneDNN's kernels on the
first forward and backward pass. A *standby* does them in advance:

1. it imports everything a worker needs and, when the Start demo preset's teacher
   (:data:`WARM_PRESET`) is trained, builds that run's engine once and runs one step, one
   evaluation and one snapshot on it, then frees it (the test sets stay in the dataset cache, the
   kernels in oneDNN's cache);
2. it registers as ready: ``DFKD_VIZ_HOME/standby/<pid>.json`` with its PID, start time and
   :func:`fingerprint` (interpreter, the environment that matters to a worker, the code's files);
3. it waits, one ``stat`` every :data:`POLL_S` seconds, for a claim naming a run directory, then
   becomes that run's worker in-process (:func:`dfkd_viz.runs.worker.run_worker`) and exits when
   the run ends. Unclaimed, it exits after ``idle_s`` (default :data:`IDLE_S`), when its pool
   directory disappears, or on SIGTERM.

**Claiming** is a rename: :func:`claim` renames ``<pid>.json`` to ``<pid>.taken.json`` (only one
claimer can) and then writes the order ``<pid>.claim.json`` (run directory, resume flag). A standby
that retires renames its record away the same way, so a standby is either claimed or retired,
never both. A record whose process is gone is removed by the next claimer, and a record with
another fingerprint (other code or another environment) is never claimed.

**Who keeps one ready.** :func:`ensure` starts a standby when the home has none (at most one per
home, under a lock) and marks the calling process as a *keeper*: the app server calls it (through
the pages' ``page_setup``), and after each claim it starts the next standby, which waits
:data:`REPLENISH_DELAY_S` before warming up so that its warm-up does not compete with the run that
was just handed over. ``runs.manager.start_worker`` claims a ready standby for every launch and
resume (the CLI's too), but only keepers start new ones: the CLI never leaves one behind.
``DFKD_VIZ_STANDBY=0`` switches standbys off (nothing is claimed or started).

A claimed standby is an ordinary worker for everyone else: the run records its PID and start time,
so stop, delete, liveness and "killed worker → failed" work as for a spawned worker, and its output
goes to the run's ``worker.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from dfkd_viz.jobs import pid_alive, process_start_time, reap, spawn_detached, terminate
from dfkd_viz.jobs.priority import lower_priority, worker_nice
from dfkd_viz.paths import home
from dfkd_viz.util.io import file_lock, read_json, write_json

STANDBY_ENV = "DFKD_VIZ_STANDBY"
"""Set to ``0`` (or ``false``, ``no``, ``off``) to switch standby workers off."""

IDLE_S = 1200.0
"""Seconds an unclaimed standby waits before it exits (20 min)."""

POLL_S = 0.05
"""Seconds between a ready standby's checks for a claim (one ``stat`` each)."""

REPLENISH_DELAY_S = 15.0
"""Seconds the standby started after a claim sleeps before warming up: its imports and warm-up
step take a few CPU-seconds, which would otherwise slow the first steps of the run just handed
over (2 cores). Measured: the Start demo run's first evaluation is stored ~2 s after the claim on
a quiet machine, up to ~7.5 s under load."""

START_BACKOFF_S = 60.0
"""Seconds :func:`ensure` waits before it starts another standby after one died while warming up."""

CLAIM_WAIT_S = 30.0
"""Seconds a taken standby waits for its claimer's order before it gives up and exits."""

WARM_PRESET = "clean-dfq"
"""The preset whose engine a standby builds and steps once to warm up (the app's Start demo)."""

WARM_MODULES = (
    "torch",
    "torch._dynamo",  # imported by the first optimiser a run builds: ~1–3 s
    "sklearn.neighbors",  # the map's k-NN placement; sklearn also gives MNIST-M its photos
    "dfkd_viz.runs.worker",  # installs the worker's signal handlers (the standby reinstalls its own)
    "dfkd_viz.runs.build",
    "dfkd_viz.analysis.embedding",
    "dfkd_viz.teachers.maps",
)
"""What a standby imports before anything else (measured: 2–6 s on the shared 2-core VM)."""

_FINGERPRINT_ENV = ("DFKD_VIZ_", "OMP_", "MKL_", "KMP_", "CUDA_", "TORCH", "PYTORCH_", "ONEDNN_")
_FINGERPRINT_ENV += ("DNNL_", "PYTHON", "LD_PRELOAD", "LD_LIBRARY_PATH")
_NOT_FINGERPRINTED = {
    "DFKD_VIZ_PROFILE",
    "DFKD_VIZ_STANDBY",
    "PYTHONUNBUFFERED",
    "KMP_DUPLICATE_LIB_OK",
    "KMP_INIT_AT_FORK",
    "TORCHINDUCTOR_CACHE_DIR",
}
"""Environment variables that change nothing a worker does: a server's render log, the standby
switch itself, the unbuffered output every detached job gets, and three that importing torch
sets in its own process (so a process that has imported torch and one that has not agree)."""

_KEEPERS: set[str] = set()
"""The homes for which this process keeps a standby ready (it called :func:`ensure`)."""

# The standby process's signal handling (installed by :func:`main`; until then SIGTERM's default
# action ends it, which is right: nothing can be handed to it yet). Before it is ready, a SIGTERM
# ends it at once, also in the middle of an import; once ready, a SIGTERM only raises a flag its
# wait loop acts on (a claim may be on its way).
_STATE = {"stop": False, "ready": False, "process": False}


def _on_signal(signum, frame) -> None:
    _STATE["stop"] = True
    if not _STATE["ready"]:
        raise SystemExit(0)


def _own_signals() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def enabled() -> bool:
    """False when :data:`STANDBY_ENV` switches standbys off."""
    return os.environ.get(STANDBY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def pool_dir() -> Path:
    """``DFKD_VIZ_HOME/standby``: the standbys' records, the lock and their shared log."""
    p = home() / "standby"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _code_stamp() -> list[tuple[str, int, int]]:
    root = Path(__file__).resolve().parent.parent
    out = []
    for p in sorted(root.rglob("*.py")):
        with contextlib.suppress(OSError):
            st = p.stat()
            out.append((str(p.relative_to(root)), st.st_mtime_ns, st.st_size))
    return out


def fingerprint() -> str:
    """What a standby must share with the process that would otherwise spawn the worker: the
    interpreter, the environment variables that can change a worker (``DFKD_VIZ_*``, thread and
    oneDNN settings, ``PYTHONPATH`` …) and the package's source files (path, mtime,
    size: an edited file makes older standbys unclaimable). A hex SHA-256; ~2 ms."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(_FINGERPRINT_ENV) and k not in _NOT_FINGERPRINTED
    }
    blob = json.dumps([sys.executable, sorted(env.items()), _code_stamp()])
    return hashlib.sha256(blob.encode()).hexdigest()


def _record(path: Path) -> dict[str, Any] | None:
    rec = read_json(path)
    if not isinstance(rec, dict) or not isinstance(rec.get("pid"), int):
        return None
    return rec


def _ready_paths(pool: Path) -> list[Path]:
    return sorted(p for p in pool.glob("*.json") if p.stem.isdigit())


def ready_standbys() -> list[dict[str, Any]]:
    """The records of the live, unclaimed standbys of this home (``pid``, ``pid_start``,
    ``fingerprint``, ``ready`` UNIX seconds, ``warm_s`` seconds per warm-up part); the records
    of dead ones are removed on the way."""
    reap()
    out = []
    for path in _ready_paths(pool_dir()):
        rec = _record(path)
        if rec is None or not pid_alive(rec["pid"], rec.get("pid_start")):
            path.unlink(missing_ok=True)
            continue
        out.append(rec)
    return out


def claim(run_dir: str | os.PathLike, resume: bool = False) -> tuple[int, str | None] | None:
    """Hand ``run_dir``'s run to a ready standby of this home; returns its ``(pid, start time)``,
    or None when standbys are off or none is ready (alive, same :func:`fingerprint`).

    The claim renames the standby's record (so two launches never claim the same standby),
    then writes the order ``<pid>.claim.json`` with ``run_dir`` and ``resume``. A standby found
    dead, before or right after the rename, is skipped and its files removed.

    Raises:
        OSError: the pool directory cannot be written (a full disk).
    """
    if not enabled():
        return None
    pool = pool_dir()
    paths = _ready_paths(pool)
    if not paths:
        return None
    fp = fingerprint()
    for path in paths:
        rec = _record(path)
        if rec is None or not pid_alive(rec["pid"], rec.get("pid_start")):
            path.unlink(missing_ok=True)
            continue
        if rec.get("fingerprint") != fp:
            continue
        pid, start = rec["pid"], rec.get("pid_start")
        taken = pool / f"{pid}.taken.json"
        try:
            os.rename(path, taken)  # atomic: exactly one claimer (or the standby retiring) wins
        except FileNotFoundError:
            continue
        order = pool / f"{pid}.claim.json"
        write_json(order, {"run_dir": str(Path(run_dir).resolve()), "resume": bool(resume)})
        if pid_alive(pid, start):
            return pid, start
        taken.unlink(missing_ok=True)  # it died between the check and the claim
        order.unlink(missing_ok=True)
    return None


def start(delay_s: float = 0.0, idle_s: float = IDLE_S, warm_run: bool = True) -> int:
    """Start a standby for this home (detached, its output appended to ``standby/standby.log``)
    without checking for others (:func:`ensure` does); returns its PID. It sleeps ``delay_s``
    seconds, warms up (imports only without ``warm_run``, see :func:`warm_up`), and waits
    ``idle_s`` seconds for a claim.

    Raises:
        OSError: the process cannot be started.
    """
    pool = pool_dir()
    log = pool / "standby.log"
    with contextlib.suppress(OSError):
        if log.stat().st_size > 1_000_000:
            log.unlink()
    cmd = [sys.executable, "-m", "dfkd_viz.runs.standby", "--delay", str(delay_s)]
    cmd += ["--idle", str(idle_s), *([] if warm_run else ["--no-warm-run"])]
    proc = spawn_detached(cmd, log, cwd=pool)
    return proc.pid


def ensure(delay_s: float = 0.0, idle_s: float = IDLE_S) -> int | None:
    """Keep one standby ready for this home: returns the PID of the ready (or warming) standby,
    starting one (after ``delay_s`` seconds) when there is none; None when standbys are off, or
    when the last one died while warming up less than :data:`START_BACKOFF_S` seconds ago. A
    ready standby with another :func:`fingerprint` is retired and replaced.

    The calling process becomes a keeper of this home: after it hands a run to a standby
    (:func:`replenish`), it starts the next one. Cheap when one is ready (a directory listing,
    a JSON read, a ``/proc`` read, the fingerprint): ~3 ms.

    Raises:
        OSError: the pool directory cannot be written or the process not started.
    """
    if not enabled():
        return None
    _KEEPERS.add(str(home()))
    pool = pool_dir()
    fp = fingerprint()
    with file_lock(pool / ".lock"):
        for rec in ready_standbys():
            if rec.get("fingerprint") == fp:
                return rec["pid"]
            _retire(pool, rec)  # other code or environment: nobody here can use it
        starting = pool / "starting.json"
        rec = _record(starting)
        if rec is not None:
            if pid_alive(rec["pid"], rec.get("pid_start")):
                return rec["pid"]
            if time.time() - float(rec.get("started") or 0) < START_BACKOFF_S + delay_s:
                return None
        pid = start(delay_s, idle_s)
        write_json(
            starting, {"pid": pid, "pid_start": process_start_time(pid), "started": time.time()}
        )
        return pid


def replenish() -> int | None:
    """After a claim: in a keeper process (see :func:`ensure`), start the next standby (it waits
    :data:`REPLENISH_DELAY_S` seconds before warming up); elsewhere (the CLI, a sweep) nothing.
    Returns the standby's PID or None. Never raises: a launch does not fail for its successor."""
    if str(home()) not in _KEEPERS:
        return None
    try:
        return ensure(delay_s=REPLENISH_DELAY_S)
    except OSError:
        return None


def _retire(pool: Path, rec: dict[str, Any], wait_s: float = 0.0) -> bool:
    """Take an unclaimed standby out of the pool (rename its record, so it can no longer be
    claimed) and send it SIGTERM; False when it was claimed first."""
    pid = rec["pid"]
    gone = pool / f"{pid}.retired.json"
    try:
        os.rename(pool / f"{pid}.json", gone)
    except FileNotFoundError:
        return False
    terminate(pid, rec.get("pid_start"))
    deadline = time.time() + wait_s
    while time.time() < deadline and pid_alive(pid, rec.get("pid_start")):
        time.sleep(0.05)
    gone.unlink(missing_ok=True)
    return True


def stop_all(wait_s: float = 5.0) -> int:
    """Stop this home's unclaimed standbys (ready or warming up) and wait up to ``wait_s``
    seconds for each to end; returns how many were asked to stop. A standby that has become a
    run's worker is left alone (stop the run instead)."""
    pool = home() / "standby"
    if not pool.is_dir():
        return 0
    n = 0
    with file_lock(pool / ".lock"):
        for rec in ready_standbys():
            n += _retire(pool, rec, wait_s)
        starting = pool / "starting.json"
        rec = _record(starting)
        if rec is not None:
            if terminate(rec["pid"], rec.get("pid_start")):
                n += 1
                deadline = time.time() + wait_s
                while time.time() < deadline and pid_alive(rec["pid"], rec.get("pid_start")):
                    time.sleep(0.05)
            starting.unlink(missing_ok=True)
    return n


# ------------------------------------------------------------------ the standby process
def warm_up(warm_run: bool = True) -> dict[str, float]:
    """Import what a worker needs and warm the run-independent caches; returns the seconds each
    part took: ``imports`` (:data:`WARM_MODULES` and the engine's builders), and with
    ``warm_run``, when :data:`WARM_PRESET`'s teacher is trained, ``warm_run``: its engine built
    (loading the test sets into the dataset cache and whatever the build imports lazily), one
    step, one evaluation, one snapshot, then freed. A failure in the warm run is printed and
    skipped (the imports alone still help)."""
    t0 = time.perf_counter()
    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):  # scikit-learn is optional for a worker
            importlib.import_module(name)
    if _STATE["process"]:
        _own_signals()  # the worker's import installed its handlers: until claimed, ours
    import torch

    from dfkd_viz.runs.build import build_engine, resolve_device, set_threads
    from dfkd_viz.runs.config import validate_config
    from dfkd_viz.runs.presets import preset_config
    from dfkd_viz.teachers import is_trained

    times = {"imports": time.perf_counter() - t0}
    try:
        cfg = validate_config(preset_config(WARM_PRESET))
        if warm_run and is_trained(cfg.teacher):
            t0 = time.perf_counter()
            set_threads(cfg.threads)
            torch.manual_seed(cfg.seed)
            engine = build_engine(cfg, resolve_device(cfg.device))
            engine.set_lr()
            engine.generator_phase()
            engine.student_phase()
            engine.evaluate(per_class=True)
            engine.snapshot()
            del engine
            gc.collect()
            times["warm_run"] = time.perf_counter() - t0
    except Exception as exc:
        print(f"standby {os.getpid()}: warm run skipped ({type(exc).__name__}: {exc})", flush=True)
    return times


def _claimed(taken: Path, order: Path) -> bool:
    # a claimer renames the record to ``taken`` before it writes the order, and the standby
    # removes ``taken`` only after reading the order: one of the two exists once claimed
    return taken.exists() or order.exists()


def _wait_for_order(pool: Path, idle_s: float) -> dict[str, Any] | None:
    """The ready standby's wait loop: the claim's order, or None to exit."""
    pid = os.getpid()
    order_path = pool / f"{pid}.claim.json"
    ready, taken = pool / f"{pid}.json", pool / f"{pid}.taken.json"
    deadline = time.monotonic() + idle_s
    last_check = time.monotonic()
    claimed_at = None  # when the record was found taken but the order had not come yet
    while True:
        if order_path.exists():
            order = read_json(order_path)
            if isinstance(order, dict) and order.get("run_dir"):
                order_path.unlink(missing_ok=True)
                taken.unlink(missing_ok=True)
                return order
        now = time.monotonic()
        if claimed_at is None and (_STATE["stop"] or now >= deadline):
            why = "asked to stop" if _STATE["stop"] else f"idle for {idle_s:.0f} s"
            try:
                os.rename(ready, pool / f"{pid}.retired.json")
                (pool / f"{pid}.retired.json").unlink(missing_ok=True)
                print(f"standby {pid}: {why}, exiting", flush=True)
                return None
            except FileNotFoundError:
                if not _claimed(taken, order_path):
                    print(f"standby {pid}: retired, exiting", flush=True)
                    return None
                claimed_at = now  # claimed at the same moment: its order is on its way
        if now - last_check >= 1.0 or claimed_at is not None:
            last_check = now
            if not pool.is_dir():
                print(f"standby {pid}: its home is gone, exiting", flush=True)
                return None
            if claimed_at is None and not ready.exists():
                if not _claimed(taken, order_path):
                    print(f"standby {pid}: retired, exiting", flush=True)
                    return None
                claimed_at = now
            if claimed_at is not None and now - claimed_at > CLAIM_WAIT_S:
                taken.unlink(missing_ok=True)
                print(f"standby {pid}: claimed but no order came, exiting", flush=True)
                return None
        time.sleep(POLL_S)


def serve(delay_s: float = 0.0, idle_s: float = IDLE_S, warm_run: bool = True) -> int:
    """The standby process: sleep ``delay_s`` s, warm up (:func:`warm_up`), register as ready,
    wait up to ``idle_s`` s for a claim, then run the claimed run's worker; returns the exit code
    (the worker's, or 0 when it was never claimed)."""
    pool = pool_dir()
    pid = os.getpid()
    t_start = time.time()
    fp = fingerprint()  # of the environment and code it was started with, before any import
    time.sleep(max(0.0, delay_s))
    if not pool.is_dir():
        return 0
    times = warm_up(warm_run)
    gc.collect()
    from dfkd_viz.runs import worker

    if worker._STOP["flag"]:  # a SIGTERM in the instant between the worker's import and ours
        return 0
    rec = {
        "pid": pid,
        "pid_start": process_start_time(pid),
        "fingerprint": fp,
        "ready": time.time(),
        "warm_s": {k: round(v, 3) for k, v in times.items()},
    }
    _STATE["ready"] = True
    write_json(pool / f"{pid}.json", rec)
    with file_lock(pool / ".lock"):
        if (_record(pool / "starting.json") or {}).get("pid") == pid:
            (pool / "starting.json").unlink(missing_ok=True)
    print(
        f"standby {pid}: ready after {time.time() - t_start - delay_s:.1f} s "
        + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()),
        flush=True,
    )
    order = _wait_for_order(pool, idle_s)
    if order is None:
        return 0
    return _become_worker(Path(order["run_dir"]), bool(order.get("resume")), rec["ready"])


def _become_worker(run_dir: Path, resume: bool, ready_since: float) -> int:
    """Run ``run_dir``'s worker in this process, with its output in the run's ``worker.log``
    and the worker's own SIGTERM / SIGINT handling (a stop that arrived during the hand-over is
    passed on)."""
    from dfkd_viz.runs import worker

    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(run_dir / "worker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.chdir(run_dir)
    signal.signal(signal.SIGTERM, worker._on_signal)
    signal.signal(signal.SIGINT, worker._on_signal)
    if _STATE["stop"]:
        worker._STOP["flag"] = True
    print(
        f"worker {os.getpid()}: a warm standby (ready for {time.time() - ready_since:.0f} s) "
        f"takes {'resuming ' if resume else ''}run {run_dir.name}",
        flush=True,
    )
    return worker.run_worker(run_dir, resume)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dfkd-viz standby worker (see module docstring)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to sleep first")
    parser.add_argument("--idle", type=float, default=IDLE_S, help="seconds to wait for a claim")
    parser.add_argument("--no-warm-run", action="store_true", help="warm up by imports only")
    args = parser.parse_args(argv)
    # before any import starts a thread: the warm-up, and later the claimed run, run nice
    lower_priority(worker_nice())
    _STATE["process"] = True
    _own_signals()
    return serve(args.delay, args.idle, not args.no_warm_run)


if __name__ == "__main__":
    sys.exit(main())
