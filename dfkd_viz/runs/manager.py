"""The run manager, shared by the CLI and the app: create, start, list, stop, resume and delete
runs. A run is a detached worker process (its own session: it outlives the CLI or the Streamlit
server that started it); its state lives only in the run store, so anything that can read
``DFKD_VIZ_HOME/runs`` sees every run, whoever started it.

A run whose store says ``queued``/``running`` but whose worker process is gone (killed, crashed,
machine restarted) is reported — and recorded — as ``failed`` with an explanation; ``resume``
continues it from its last checkpoint.
"""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from dfkd_viz.errors import DfkdVizError, RunStateError, UnknownNameError
from dfkd_viz.jobs import log_tail, pid_alive, process_start_time, reap, spawn_detached, terminate
from dfkd_viz.jobs.priority import worker_nice
from dfkd_viz.paths import runs_dir
from dfkd_viz.runs import standby
from dfkd_viz.runs.config import RunConfig, validate_config
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader, RunWriter, copy_store
from dfkd_viz.util.io import write_atomic

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
QUEUED_GRACE_S = 15.0


NEW_ID_TRIES = 64
"""Random suffixes :func:`new_run_id` tries before it widens the suffix."""


def new_run_id(cfg: RunConfig, taken: Collection[str] = ()) -> str:
    """``YYYYmmdd-HHMMSS-<method>-<4 hex>``: an id that names no directory in the run store and
    is not in ``taken`` (e.g. the ids a Ray sweep has already given its cells, whose runs arrive
    later). The suffix is drawn again on a clash; after :data:`NEW_ID_TRIES` clashes it widens to
    8 hex digits.

    Nothing is reserved on disk: two processes asking in the same second can still draw the same
    id (probability 1 in 65 536 per pair with the same method), which the caller's ``mkdir`` (or
    the Ray executor's check on arrival) refuses rather than overwrite.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    method = re.sub(r"[^a-z0-9]+", "", cfg.method.lower())[:12] or "run"
    root = runs_dir()
    for attempt in range(2 * NEW_ID_TRIES):
        run_id = f"{stamp}-{method}-{secrets.token_hex(2 if attempt < NEW_ID_TRIES else 4)}"
        if run_id not in taken and not (root / run_id).exists():
            return run_id
    raise DfkdVizError(f"no free run id for {stamp}-{method}-… after {2 * NEW_ID_TRIES} tries")


def run_dir(run_id: str) -> Path:
    """The directory of ``run_id``; the id must be a plain name (no path separators).

    Raises:
        UnknownNameError: malformed id or no such run.
    """
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise UnknownNameError(f"{run_id!r} is not a valid run id")
    d = runs_dir() / run_id
    if not d.is_dir():
        raise UnknownNameError(f"no run {run_id!r} in {runs_dir()}")
    return d


def create_run(cfg: RunConfig | dict[str, Any]) -> str:
    """Validate ``cfg`` and create the run's directory, config and store (state ``queued``)."""
    cfg = validate_config(cfg)
    run_id = new_run_id(cfg)
    d = runs_dir() / run_id
    d.mkdir(parents=True)
    write_atomic(d / "config.json", cfg.to_json())
    w = RunWriter(d)
    w.init_status(run_id, cfg.steps, cfg.seconds)
    w.close()
    return run_id


def start_worker(run_id: str, resume: bool = False) -> int:
    """Start the detached worker of ``run_id`` (continuing from its last checkpoint with
    ``resume``); returns its PID.

    A ready warm standby of this home (:mod:`dfkd_viz.runs.standby`) is claimed when there is
    one (``meta.worker = "standby"``), else ``python -m dfkd_viz.runs.worker`` is spawned
    (``"spawned"``); either way the run records the worker's PID and start time. After a claim,
    a process that keeps standbys ready (the app server) starts the next one.

    Workers run at the nice value of :func:`dfkd_viz.jobs.priority.worker_nice`.

    Raises:
        UnknownNameError: no such run. ConfigError: ``DFKD_VIZ_WORKER_NICE`` is not 0–19.
        OSError: the worker cannot be started.
    """
    d = run_dir(run_id)
    worker_nice()  # a bad setting is one sentence here, not a worker that fails
    warm = standby.claim(d, resume)
    if warm is not None:
        pid, pid_start = warm
    else:
        cmd = [sys.executable, "-m", "dfkd_viz.runs.worker", str(d)]
        proc = spawn_detached(cmd + (["--resume"] if resume else []), d / "worker.log", cwd=d)
        pid, pid_start = proc.pid, process_start_time(proc.pid)
    w = RunWriter(d)
    w.mark_spawned(pid, pid_start)
    w.set_meta(
        executor="local",
        node=socket.gethostname(),
        ray_node_id=None,
        worker="standby" if warm is not None else "spawned",
    )
    w.close()
    if warm is not None:
        standby.replenish()
    return pid


def launch(cfg: RunConfig | dict[str, Any]) -> str:
    """Create a run and start its worker; returns the run id.

    Raises:
        ConfigError: a bad config or ``DFKD_VIZ_WORKER_NICE`` (nothing is created).
    """
    worker_nice()
    run_id = create_run(cfg)
    start_worker(run_id)
    return run_id


def fork(
    run_id: str,
    step: int,
    defense: str | None = None,
    method_params: dict[str, Any] | None = None,
    defense_params: dict[str, Any] | None = None,
    start: bool = True,
) -> dict[str, Any]:
    """Start a new run from ``run_id``'s checkpoint at ``step`` — "what if I had switched this
    defense on at step N?". The parent is only read (it may still be running).

    The fork starts from the nearest kept checkpoint at or before ``step`` (checkpoints are
    written every ``checkpoint_every`` steps, 20 by default, and thinned beyond
    ``keep_checkpoints``, see :func:`~dfkd_viz.runs.checkpoint.checkpoints_to_drop`), with the
    parent's config and the given changes, and the parent's remaining budget (same ``steps`` /
    ``seconds`` total; step numbers and wall seconds continue). Its store starts as a copy of the
    parent's history up to that step, so its curves show where it came from; ``parent_run``,
    ``fork_step`` and ``requested_step`` are in its meta (and :func:`run_info`). A new defense
    starts with fresh state; the same defense continues with the checkpoint's state. Generator,
    student, optimisers and the noise RNG always continue.

    Args:
        step: the step to fork at (≥ 0).
        defense: another defense (None: the parent's).
        method_params: method parameters to change (merged over the parent's).
        defense_params: defense parameters (merged over the parent's for the same defense; the
            new defense's defaults otherwise).
        start: spawn the fork's worker (False: create it queued, for tests and the Ray executor).

    Returns:
        ``{"run_id", "parent_run", "fork_step", "requested_step", "pid"}``.

    Raises:
        UnknownNameError: no such run. RunStateError: no checkpoint at or before ``step``.
        ConfigError: a change is invalid (one sentence naming the field).
    """
    import os

    parent_dir = run_dir(run_id)
    if not isinstance(step, int) or step < 0:
        raise RunStateError(f"the fork step must be a whole number ≥ 0 (got {step!r})")
    with RunReader(parent_dir) as r:
        pcfg = r.config()
        ckpts = r.checkpoints()
    changes: dict[str, Any] = {}
    if defense is not None:
        changes["defense"] = defense
    new_defense = defense is not None and defense != pcfg.get("defense")
    if method_params:
        changes["method_params"] = {**pcfg.get("method_params", {}), **method_params}
    if new_defense:
        changes["defense_params"] = dict(defense_params or {})
    elif defense_params:
        changes["defense_params"] = {**pcfg.get("defense_params", {}), **defense_params}
    cfg = validate_config({**pcfg, **changes})
    if start:
        worker_nice()
    # a checkpoint file can vanish between listing and linking (the parent's worker thins them):
    # then the next older one is taken
    for c in sorted((c for c in ckpts if c["step"] <= step), key=lambda c: -c["step"]):
        src = Path(c["path"])
        if not src.is_absolute() or not src.exists():
            src = parent_dir / "checkpoints" / src.name
        if not src.exists():
            continue
        new_id = new_run_id(cfg)
        d = runs_dir() / new_id
        (d / "checkpoints").mkdir(parents=True)
        dst = d / "checkpoints" / src.name
        try:
            try:
                os.link(src, dst)  # no copy: the parent's thinning cannot take it from the fork
            except FileNotFoundError:
                shutil.rmtree(d)
                continue
            except OSError:
                shutil.copy2(src, dst)  # another file system, or no hard links there
            write_atomic(d / "config.json", cfg.to_json())
            copy_store(parent_dir, d)
            w = RunWriter(d)
            w.start_fork(
                new_id,
                int(c["step"]),
                float(c["wall_s"] or 0.0),
                str(dst),
                cfg.steps,
                cfg.seconds,
                parent_run=run_id,
                fork_step=str(int(c["step"])),
                requested_step=str(step),
                parent_defense=str(pcfg.get("defense") or "none"),
            )
            what = [f"defense {pcfg.get('defense')} → {cfg.defense}"] if new_defense else []
            what += [f"{k}={v}" for k, v in (method_params or {}).items()]
            what += [f"{k}={v}" for k, v in (defense_params or {}).items()]
            w.add_event(
                f"forked from {run_id} at step {c['step']}"
                + (f" (asked for {step}; the nearest kept checkpoint)" if c["step"] != step else "")
                + (f": {', '.join(what)}" if what else " with no changes")
            )
            w.close()
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        pid = start_worker(new_id, resume=True) if start else None
        return {
            "run_id": new_id,
            "parent_run": run_id,
            "fork_step": int(c["step"]),
            "requested_step": step,
            "pid": pid,
        }
    have = ", ".join(str(c["step"]) for c in ckpts) or "none"
    raise RunStateError(
        f"run {run_id} has no checkpoint at or before step {step} (its checkpoints: {have})"
    )


def effective_status(
    run_id: str, reader: RunReader | None = None, repair: bool = True
) -> dict[str, Any]:
    """The run's status with liveness applied: an active state whose worker is gone becomes
    ``failed`` (and, with ``repair``, is recorded so)."""
    reap()
    own = reader is None
    r = reader or RunReader(run_dir(run_id))
    try:
        st = r.status()
    finally:
        if own:
            r.close()
    if st.get("state") not in ACTIVE_STATES:
        st["alive"] = False
        return st
    alive = pid_alive(st.get("pid"), st.get("pid_start"))
    st["alive"] = alive
    if alive:
        return st
    if (
        st.get("state") == "queued"
        and not st.get("pid")
        and time.time() - (st.get("created") or 0) < QUEUED_GRACE_S
    ):
        return st
    error = f"the worker process {st.get('pid')} ended without recording an end (killed or crashed)"
    last = log_tail(run_dir(run_id) / "worker.log")
    if last and re.search(r"error|exception|could not|killed", last, re.IGNORECASE):
        error += f"; its log ends: {last}"
    st.update(state="failed", error=error)
    if repair:
        try:
            w = RunWriter(run_dir(run_id))
            with w.transaction():
                w.con.execute(
                    "UPDATE status SET state = 'failed', error = ?, finished = ?, updated = ? "
                    "WHERE id = 1 AND state IN ('queued', 'running')",
                    (error, time.time(), time.time()),
                )
                w.con.execute(
                    "INSERT INTO events(t, level, message) SELECT ?, 'error', ? WHERE changes() > 0",
                    (time.time(), error),
                )
            w.close()
        except Exception:
            pass
        with RunReader(run_dir(run_id)) as r2:
            st = {**r2.status(), "alive": False}
    return st


def run_info(run_id: str) -> dict[str, Any]:
    """Config, effective status and latest metrics of a run, with the per-class ID accuracy
    (``per_class_id_acc``, K fractions or None) and, where the run has them, the per-class OOD
    accuracy and ASR of its last evaluation (:meth:`RunReader.latest_per_class`).

    Raises:
        UnknownNameError: no such run. DfkdVizError: the run directory is corrupt.
    """
    d = run_dir(run_id)
    with RunReader(d) as r:
        cfg = r.config()
        st = effective_status(run_id, r)
        latest = r.latest()
        meta = r.meta()
        per_class = r.latest_per_class()
    info = {
        "run_id": run_id,
        "config": cfg,
        "status": st["state"],
        "step": st.get("step"),
        **latest,
        **per_class,  # per_class_id_acc (None if not recorded), per_class_ood_acc / _asr
    }
    info.update(
        pid=st.get("pid") if st.get("alive") else None,
        wall_s=st.get("wall_s"),
        progress=st.get("progress"),
        device=st.get("device"),
        error=st.get("error"),
        created=st.get("created"),
        total_steps=st.get("total_steps"),
        budget_s=st.get("budget_s"),
        phase=st.get("phase"),
        # where the run was last distilled (a run created but never started: local, no node)
        executor=meta.get("executor", "local"),
        node=meta.get("node"),
        # a fork's lineage (None for a run that was started, not forked)
        parent_run=meta.get("parent_run"),
        fork_step=int(meta["fork_step"]) if meta.get("fork_step") else None,
    )
    if meta.get("ray_node_id"):
        info["ray_node_id"] = meta["ray_node_id"]
    return info


def list_runs() -> list[dict[str, Any]]:
    """Every run in the store, newest first. A corrupt or half-written run directory is listed
    with ``status: "corrupt"`` and its error, never raised."""
    out = []
    for d in sorted(runs_dir().iterdir(), key=lambda p: p.name, reverse=True):
        if not d.is_dir() or not RUN_ID_RE.match(d.name):
            continue
        try:
            out.append(run_info(d.name))
        except DfkdVizError as exc:
            out.append({"run_id": d.name, "status": "corrupt", "error": str(exc), "config": {}})
    return out


def stop(run_id: str, wait_s: float = 0.0) -> dict[str, Any]:
    """Ask the worker to stop (SIGTERM: it checkpoints and records ``stopped``).

    Args:
        wait_s: wait up to this many seconds for the worker to end.

    Raises:
        RunStateError: the run is not queued or running.
    """
    st = effective_status(run_id)
    if st["state"] not in ACTIVE_STATES:
        raise RunStateError(f"run {run_id} is {st['state']}, not running")
    if st.get("alive"):
        terminate(st.get("pid"), st.get("pid_start"))
    deadline = time.time() + wait_s
    while time.time() < deadline:
        st = effective_status(run_id)
        if st["state"] not in ACTIVE_STATES:
            break
        time.sleep(0.1)
    return st


def resume(run_id: str) -> int:
    """Continue a stopped or failed run from its last checkpoint (step numbers continue).

    Raises:
        RunStateError: the run is active or already finished.
    """
    st = effective_status(run_id)
    if st["state"] in ACTIVE_STATES:
        raise RunStateError(f"run {run_id} is {st['state']}; stop it before resuming")
    if st["state"] == "finished":
        raise RunStateError(f"run {run_id} has finished its budget; start a new run instead")
    return start_worker(run_id, resume=True)


def delete(run_id: str) -> None:
    """Delete a run (stopping its worker first if it is active, or if it has ended but its worker
    still waits for the teacher's reference map)."""
    d = run_dir(run_id)
    st = effective_status(run_id)
    if st["state"] in ACTIVE_STATES:
        stop(run_id, wait_s=10.0)
    elif pid_alive(st.get("pid"), st.get("pid_start")):
        # an ended run whose worker still waits for the teacher's map to place its snapshots
        terminate(st.get("pid"), st.get("pid_start"))
        deadline = time.time() + 10.0
        while time.time() < deadline and pid_alive(st.get("pid"), st.get("pid_start")):
            time.sleep(0.1)
    shutil.rmtree(d)


def wait(run_id: str, timeout_s: float | None = None, poll_s: float = 0.2) -> dict[str, Any]:
    """Block until the run leaves the active states (or ``timeout_s``); returns its status."""
    deadline = None if timeout_s is None else time.time() + timeout_s
    while True:
        st = effective_status(run_id)
        if st["state"] not in ACTIVE_STATES or (deadline is not None and time.time() > deadline):
            return st
        time.sleep(poll_s)
