"""The Ray executor: every cell of a sweep is one Ray task, on whichever node has room.

**The driver** is the sweep's runner (the detached ``python -m dfkd_viz.runs.sweep`` process). It
connects to the cluster at the sweep's address (else ``RAY_ADDRESS``, else it starts a Ray
instance on this machine for the sweep), refuses at once a request no node can meet (a GPU on a
CPU-only cluster), trains any teacher not trained here yet (so every cell of a teacher gets the
same weights), and submits the cells not finished — a window of about two per free slot, each
``.options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=3)``. Ray sets
``CUDA_VISIBLE_DEVICES`` per task; a task whose worker process or node dies is run again.

**No shared filesystem is assumed.** A task gets the teacher's weights and card (and any imported
dataset its runs name, and the driver's reference map of the teacher when the run records the
embedding) as bytes, writes its run under a private temporary ``DFKD_VIZ_HOME`` on the node's own
disk (SQLite is never opened over a network filesystem), runs the ordinary worker there as a child
process (:mod:`.child`, which ends with the task; with ``DFKD_VIZ_MAP_JOBS=0``: it never starts a
reference-map job on the node and uses the shipped map when there is one), then checkpoints the
run's WAL, closes it and returns the run directory as a tar (:mod:`.transfer`) through Ray's object
store. The driver unpacks it under a temporary name in its own run store and renames it into place:
an arriving run is an ordinary run (Live, Runs, Decisions, export), with ``executor: "ray"`` and
its ``node`` in ``runs show --json``.

**Progress and control.** Each task reports its PID, node and the run's step to a small actor
(``num_cpus=0``, pinned to the driver's node when it can be, restarted by Ray whenever it dies)
about once a second; the driver polls the actor without blocking and writes every cell's state and
step into the sweep's ``cell_progress.json``, which the Sweeps page and ``sweeps show`` read (they
never import Ray). The actor only observes: a cell that cannot reach it keeps running and takes no
answer as "do not stop", and the driver then keeps what it knew. ``sweeps stop`` (SIGTERM to the
driver) tells the running cells, through the actor, to stop their run at a checkpoint and ship it
back, and cancels the cells that have not started (``ray.cancel``); after :data:`STOP_GRACE_S` the
rest are cancelled by force. A resumed sweep (``--resume``) submits every cell not finished again
under the same run id: a run that came back stopped or failed travels to the node with its
checkpoints and continues there. When the driver dies its tasks die with it (Ray's ownership);
resuming is the driver's job.

**Failures stay in their cell.** Anything that goes wrong while one cell is prepared or submitted
(its stored run cannot be packed, its teacher cannot be trained or read, Ray refuses the options)
marks that cell ``failed`` with one sentence in ``cell_progress.json``; the other cells go on.

**Security.** Ray unpickles task results and actor replies on the driver: the cluster must be
trusted and private (docs/security.md). The driver sets ``RAY_AUTH_MODE=token`` and
``RAY_USAGE_STATS_ENABLED=0`` unless they are set (docs/security.md: what a Ray cluster exposes and
how to keep it private).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfkd_viz.errors import DfkdVizError, UnknownNameError
from dfkd_viz.jobs import pid_alive, spawn_attached
from dfkd_viz.paths import runs_dir
from dfkd_viz.runs.executors import ExecutorSpec, Progress
from dfkd_viz.runs.executors.transfer import (
    finish_run,
    new_run_dir,
    pack_run,
    run_status,
    teacher_bundle,
    unpack_run,
    write_bundle,
)
from dfkd_viz.runs.store import ACTIVE_STATES, RunWriter
from dfkd_viz.util.io import write_json

if TYPE_CHECKING:
    from dfkd_viz.runs.sweep import SweepSpec

MAP_JOBS_ENV = "DFKD_VIZ_MAP_JOBS"
"""Set to ``0`` in a cell's worker: no reference-map job on the node (the shipped map or none)."""
STOP_GRACE_S = 25.0
"""After a stop, how long running cells get to checkpoint and ship their run back."""
POLL_S = 0.5
"""How often the driver collects finished cells and the actor's progress, seconds."""
CELL_POLL_S = 1.0
"""How often a cell reads its run's step and reports it, seconds."""
MAX_RETRIES = 3
"""Attempts after the first when a cell's worker process or node dies (Ray's ``max_retries``)."""
LOCAL_OBJECT_STORE = 256 * 2**20
"""Object store of a Ray instance the driver starts itself, bytes (larger runs spill to disk)."""
BOARD_TIMEOUT_S = 10.0
"""How long the driver waits for the board's answer when it must have one (at a stop), seconds."""
PROGRESS_FILE = "cell_progress.json"


def import_ray():
    """Ray, with token authentication on and usage statistics off unless the environment says
    otherwise (set before Ray reads them, and inherited by a local instance's processes).

    Raises:
        DfkdVizError: Ray is not installed.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise DfkdVizError(
            "the ray executor needs Ray on this machine: pip install -e '.[ray]' in the dfkd-viz "
            "checkout"
        ) from None
    return ray


def _one_line(exc: BaseException) -> str:
    exc = getattr(exc, "cause", None) or exc  # a RayTaskError carries the task's own exception
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, DfkdVizError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------------------- the actor
class CellBoard:
    """What the cells in flight last reported (a Ray actor, ``num_cpus=0``, one per driver).

    ``cells[key]``: ``attempts`` (how often the cell started; 2 after one retry), ``pid`` (the Ray
    worker process running it), ``node``, ``ray_node_id``, ``state``, ``step``, ``total_steps``,
    ``progress``, ``updated``. ``started`` and ``report`` return True once the driver asked the
    cells to stop.

    The driver starts it with ``max_restarts=-1, max_task_retries=-1`` on its own node (soft
    affinity): Ray restarts it empty after a crash, the cells' next reports fill it again, and the
    driver repeats ``stop`` while it stops. Nothing depends on it answering (see
    :func:`run_cell` and :meth:`RayExecutor.run_cells`)."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[str, Any]] = {}
        self.stopping = False

    def started(self, key: str, info: dict[str, Any]) -> bool:
        e = self.cells.setdefault(key, {"attempts": 0})
        e["attempts"] += 1
        e.update(info, state="running", step=0, updated=time.time())
        return self.stopping

    def report(self, key: str, info: dict[str, Any]) -> bool:
        self.cells.setdefault(key, {"attempts": 1}).update(info, updated=time.time())
        return self.stopping

    def stop(self) -> None:
        self.stopping = True

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.cells


# ------------------------------------------------------------------------------- the task
def run_cell(
    job: dict[str, Any], bundle: dict[str, bytes], run_tar: bytes | None, board: Any
) -> dict[str, Any]:
    """One cell on a Ray node (the body of the remote task).

    ``job``: ``key``, ``run_id``, ``config`` (the validated run config's JSON). ``run_tar``: a
    stopped or failed run to continue (:func:`~.transfer.pack_run` bytes), or None for a fresh
    run. The worker runs with ``DFKD_VIZ_HOME`` = the cell's temporary home and
    ``DFKD_VIZ_MAP_JOBS=0`` (no reference-map job on the node). Returns ``{run_id, state, step,
    run: tar bytes}``.

    The board (:class:`CellBoard`) is only told and asked: when a call to it fails (the actor is
    dead or restarting), the cell keeps running and takes the missing answer as "do not stop".
    """
    import ray

    key, run_id = job["key"], job["run_id"]
    node = socket.gethostname()
    node_id = ray.get_runtime_context().get_node_id()
    # Never block on the actor: a task waiting in ray.get lends its CPUs to the next task, and the
    # node would run more cells than it has room for. Each report's answer (stop or not) is
    # picked up at the next poll, once it is there.
    answer = _tell(board.started, key, {"pid": os.getpid(), "node": node, "ray_node_id": node_id})
    _clean_stale_cells()
    tmp = Path(tempfile.mkdtemp(prefix=f"dfkd-viz-cell-{os.getpid()}-"))
    proc = None
    try:
        home = tmp / "home"
        write_bundle(home, bundle)
        runs = home / "runs"
        if run_tar is not None:
            run_dir, resume = unpack_run(run_tar, runs, run_id), True
        else:
            run_dir, resume = new_run_dir(runs, run_id, job["config"]), False
        w = RunWriter(run_dir)
        w.set_meta(executor="ray", node=node, ray_node_id=node_id, worker=None)
        w.close()
        cmd = [sys.executable, "-m", "dfkd_viz.runs.executors.child", str(os.getpid())]
        cmd += [str(run_dir), *(["--resume"] if resume else [])]
        env = {**os.environ, "DFKD_VIZ_HOME": str(home), MAP_JOBS_ENV: "0"}
        proc = spawn_attached(cmd, run_dir / "worker.log", cwd=run_dir, env=env)
        asked = False
        while proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(CELL_POLL_S)  # returns as soon as the run ends
            if answer is not None:
                if not ray.wait([answer], timeout=0)[0]:
                    continue  # the actor has not answered the last report yet
                if _answer(ray, answer) and not asked:  # the sweep stops: checkpoint, ship it
                    proc.terminate()
                    asked = True
            st = run_status(run_dir)
            info = {k: st.get(k) for k in ("state", "step", "total_steps", "progress", "phase")}
            answer = _tell(board.report, key, {k: v for k, v in info.items() if v is not None})
        st = finish_run(run_dir, proc.returncode)
        _tell(board.report, key, {"state": "shipping", "step": st.get("step")})
        data = pack_run(run_dir)
        return {"run_id": run_id, "state": st.get("state"), "step": st.get("step"), "run": data}
    finally:
        if proc is not None and proc.poll() is None:  # cancelled: end the run's worker too
            proc.terminate()
            try:
                proc.wait(10)
            except Exception:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _tell(method: Any, *args: Any) -> Any:
    """``method.remote(*args)`` on the board, or None when even submitting the call fails."""
    try:
        return method.remote(*args)
    except Exception:
        return None


def _answer(ray, ref: Any) -> bool:
    """The board's (ready) answer: True = stop. A failed call (dead or restarting actor, or any
    other error) is no answer, and no answer means "do not stop"."""
    try:
        return bool(ray.get(ref, timeout=BOARD_TIMEOUT_S))
    except Exception:
        return False


def _board_options(ray) -> dict[str, Any]:
    """The board actor's options: restarted without limit, its calls retried, and placed on the
    driver's own node when the driver has one (soft: anywhere else when that node cannot)."""
    opts: dict[str, Any] = {"max_restarts": -1, "max_task_retries": -1}
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = ray.get_runtime_context().get_node_id()
        if node_id:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=True)
    except Exception:  # e.g. a Ray Client driver without a node of its own
        pass
    return opts


def _local_cpus() -> int:
    """The CPUs this process may use (its affinity mask: taskset, cgroup cpusets), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return max(1, os.cpu_count() or 1)


def _clean_stale_cells() -> None:
    """Remove the temporary homes of cells whose Ray worker process was killed (no ``finally``
    ran there): ``dfkd-viz-cell-<pid>-*`` whose PID is gone."""
    for p in Path(tempfile.gettempdir()).glob("dfkd-viz-cell-*-*"):
        pid = p.name.split("-")[3]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


_REMOTE: dict[str, Any] = {}


def _remotes(ray) -> tuple[Any, Any]:
    if not _REMOTE:
        _REMOTE["cell"] = ray.remote(run_cell)
        _REMOTE["board"] = ray.remote(num_cpus=0)(CellBoard)
    return _REMOTE["cell"], _REMOTE["board"]


# ------------------------------------------------------------------------------- the driver
class RayExecutor:
    """Runs a sweep's cells as Ray tasks (see the module docstring)."""

    name = "ray"

    def __init__(self, spec: ExecutorSpec) -> None:
        self.spec = spec
        self.address: str | None = None

    # -- connection and resources
    def connect(self, ray) -> None:
        """``ray.init`` to the sweep's address, ``RAY_ADDRESS``, or a new local instance.

        Raises:
            DfkdVizError: one sentence when the cluster cannot be reached.
        """
        self.address = self.spec.address or os.environ.get("RAY_ADDRESS") or None
        quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
        handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if self.address:
                ray.init(address=self.address, **quiet)
            else:
                ray.init(
                    address="local",
                    num_cpus=_local_cpus(),
                    include_dashboard=False,
                    object_store_memory=LOCAL_OBJECT_STORE,
                    **quiet,
                )
        except Exception as exc:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise DfkdVizError(f"cannot connect to {where}: {_one_line(exc)}") from None
        # ray.init installs its own fatal-signal handlers (SIGTERM would end the driver at once):
        # give SIGTERM / SIGINT back to the runner, whose stop ships the running cells' runs back
        with contextlib.suppress(ValueError, TypeError):  # not the main thread / no handler
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def check_resources(self, ray) -> int:
        """Fail at once when no node can ever run a cell; returns the cells that fit at once.

        Raises:
            DfkdVizError: no node has ``gpus_per_run`` GPUs or ``cpus_per_run`` CPUs.
        """
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        cpus, gpus = self.spec.cpus_per_run, self.spec.gpus_per_run
        where = f"the Ray cluster at {self.address}" if self.address else "the local Ray instance"
        max_gpu = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
        max_cpu = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
        if gpus > max_gpu:
            have = f"its largest node has {max_gpu:g}" if max_gpu else "it has no GPU"
            raise DfkdVizError(
                f"no node of {where} can give a run {gpus:g} GPU(s) ({have}): ask for fewer "
                "with --gpus-per-run or add a GPU node"
            )
        if cpus > max_cpu:
            raise DfkdVizError(
                f"no node of {where} can give a run {cpus:g} CPUs (its largest node has "
                f"{max_cpu:g}): lower --cpus-per-run"
            )
        slots = sum(
            min(
                math.floor(n.get("CPU", 0.0) / cpus + 1e-9),
                math.floor(n.get("GPU", 0.0) / gpus + 1e-9) if gpus else 10**6,
            )
            for n in nodes
        )
        return max(1, slots)

    # -- the cells
    def run_cells(
        self,
        sweep_dir: Path,
        spec: SweepSpec,
        cells: list[dict[str, Any]],
        progress: Progress | None,
        stop: Callable[[], bool],
    ) -> str:
        """Distil the cells not finished on the cluster (the contract of
        :class:`~dfkd_viz.runs.executors.Executor`); returns ``"finished"``, ``"stopped"`` or
        ``"incomplete"``. A cell that cannot be prepared or submitted, or whose task fails, is
        ``failed`` in ``cell_progress.json`` with one sentence (``error``); the others go on.

        Raises:
            DfkdVizError: the cluster cannot be reached, no node can ever run a cell, or a run of
                the sweep is active on this machine.
        """
        ray = import_ray()
        self.connect(ray)
        try:
            return self._run(ray, Path(sweep_dir), spec, cells, progress, stop)
        finally:
            ray.shutdown()

    def _run(
        self,
        ray,
        d: Path,
        spec: SweepSpec,
        cells: list[dict[str, Any]],
        progress: Progress | None,
        stop: Callable[[], bool],
    ) -> str:
        from dfkd_viz.runs import manager
        from dfkd_viz.runs.config import validate_config
        from dfkd_viz.teachers import is_trained, train_teacher

        slots = self.check_resources(ray)
        n = len(cells)
        say = (lambda done, msg: progress(done, n, {"msg": msg})) if progress else None
        live: dict[str, dict[str, Any]] = {}
        todo: list[tuple[int, str | None]] = []  # (cell index, state of its run here or None)
        done = failed = 0
        for i, cell in enumerate(cells):
            state = None
            if cell.get("run_id"):
                try:
                    state = manager.effective_status(cell["run_id"])["state"]
                except UnknownNameError:  # never arrived (or deleted): distil it under its id
                    state = None
                except DfkdVizError:  # corrupt: distil the cell anew under a new id
                    cell["run_id"] = None
            if state == "finished":
                done += 1
                continue
            if state in ACTIVE_STATES:
                raise DfkdVizError(
                    f"run {cell['run_id']} of this sweep is running on this machine: stop it "
                    f"(dfkd-viz runs stop {cell['run_id']}) before resuming the sweep on Ray"
                )
            todo.append((i, state))
            live[str(i)] = {"cell_id": f"c{i:04d}", "run_id": cell.get("run_id")}
            live[str(i)]["state"] = "pending"
        write_json(d / PROGRESS_FILE, live)
        written = copy.deepcopy(live)
        if say:
            where = self.address or "a Ray instance of its own"
            say(done, f"on {where}: {slots} run(s) at a time, {len(todo)} to distil")

        def fail(i: int, exc: BaseException) -> None:
            nonlocal failed
            live[str(i)].update(state="failed", step=None, error=_one_line(exc))
            failed += 1

        for t in spec.teachers:  # train here once, so every cell of a teacher gets one weight set
            if not is_trained(t) and any(cells[i]["teacher"] == t for i, _ in todo):
                if say:
                    say(done, f"training teacher {t} on the driver")
                try:
                    train_teacher(t)
                except Exception as exc:  # only this teacher's cells fail
                    err = DfkdVizError(f"teacher {t} could not be trained: {_one_line(exc)}")
                    for i, _ in todo:
                        if cells[i]["teacher"] == t:
                            fail(i, err)
                    todo = [(i, st) for i, st in todo if cells[i]["teacher"] != t]
        cell_fn, board_cls = _remotes(ray)
        board = board_cls.options(**_board_options(ray)).remote()
        bundles: dict[str, Any] = {}
        threads = spec.threads or max(1, math.ceil(self.spec.cpus_per_run))
        window = 2 * slots
        queue = deque(todo)
        inflight: dict[Any, int] = {}
        assigned = {c["run_id"] for c in cells if c.get("run_id")}  # runs that may still arrive
        fresh: set[int] = set()  # cells whose run does not exist here: it must not on arrival
        stopping_since: float | None = None
        forced: set[Any] = set()
        last_msg = None
        snap_ref: Any = None  # the board's snapshot asked for and not collected yet

        def bundle(t: str) -> Any:
            """The teacher's bundle in the object store (its failure is kept: every cell of the
            teacher fails with the same sentence, the bundle is read once)."""
            if t not in bundles:
                try:
                    # every config of the teacher, once each: datasets and map domains they name
                    cfgs = list(
                        {
                            json.dumps(c, sort_keys=True, default=str): c
                            for c in (spec.run_config(c) for c in cells if c["teacher"] == t)
                        }.values()
                    )
                    bundles[t] = ray.put(teacher_bundle(t, cfgs, spec.embedding))
                except Exception as exc:
                    bundles[t] = exc
            if isinstance(bundles[t], BaseException):
                raise bundles[t]
            return bundles[t]

        def submit(i: int, state: str | None) -> None:
            cell = cells[i]
            try:
                cfg = validate_config(
                    {**spec.run_config(cell), "threads": threads}, check_teacher=False
                )
                if not cell.get("run_id"):  # unique in the store and among this sweep's cells
                    cell["run_id"] = manager.new_run_id(cfg, assigned)
                    assigned.add(cell["run_id"])
                    write_json(d / "cells.json", cells)  # the link first: a crash never loses it
                live[str(i)]["run_id"] = cell["run_id"]
                run_tar = pack_run(manager.run_dir(cell["run_id"])) if state else None
                job = {"key": str(i), "run_id": cell["run_id"], "config": cfg.to_json()}
                ref = cell_fn.options(
                    num_cpus=self.spec.cpus_per_run,
                    num_gpus=self.spec.gpus_per_run,
                    max_retries=MAX_RETRIES,
                    retry_exceptions=False,
                    name=f"dfkd-viz {d.name} cell {i}",
                ).remote(job, bundle(cell["teacher"]), run_tar, board)
            except Exception as exc:  # this cell fails with its sentence; the sweep goes on
                fail(i, exc)
                return
            inflight[ref] = i
            if not state:
                fresh.add(i)
            live[str(i)].update(run_id=cell["run_id"], state="queued", step=None, error=None)

        def receive(ref, i: int) -> None:
            nonlocal done, failed
            entry = live[str(i)]
            try:
                res = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                entry.update(state="pending")
                return
            except Exception as exc:  # the task failed (or its retries ran out)
                fail(i, exc)
                return
            if i in fresh and (runs_dir() / res["run_id"]).exists():
                # another process gave a run this id while the cell ran: never replace that run;
                # unlink the cell, so that a resume distils it again under a new id
                cells[i]["run_id"] = None
                assigned.discard(res["run_id"])
                write_json(d / "cells.json", cells)
                entry["run_id"] = None
                fail(
                    i,
                    DfkdVizError(
                        f"run id {res['run_id']} was taken in this store by another run while "
                        "the cell ran: its run was not unpacked (resume the sweep to distil it "
                        "again)"
                    ),
                )
                return
            try:
                unpack_run(res["run"], runs_dir(), res["run_id"])
            except Exception as exc:
                fail(i, exc)
                return
            entry.update(state=res["state"], step=res.get("step"), error=None)
            if res["state"] == "finished":
                done += 1
            elif res["state"] != "stopped" or stopping_since is None:
                failed += 1

        def board_snapshot(wait_s: float) -> dict[str, dict[str, Any]] | None:
            """The board's snapshot if it answers within ``wait_s`` (None: no answer yet, or the
            actor failed — what the driver knows stays as it was)."""
            nonlocal snap_ref
            if snap_ref is None:
                snap_ref = _tell(board.snapshot)
                if snap_ref is None:
                    return None
            if not ray.wait([snap_ref], timeout=wait_s)[0]:
                return None
            ref, snap_ref = snap_ref, None
            try:
                snap = ray.get(ref, timeout=BOARD_TIMEOUT_S)
            except (ray.exceptions.RayActorError, ray.exceptions.RayError):  # dead, restarting
                return None
            return snap if isinstance(snap, dict) else None

        while queue or inflight:
            if stop() and stopping_since is None:
                stopping_since = time.time()
                queue.clear()
                # stop first, then ask who has begun: a cell starting after this hears "stop"
                with contextlib.suppress(Exception):  # no answer: the cells keep going
                    ray.get(board.stop.remote(), timeout=BOARD_TIMEOUT_S)
                snap_ref = None
                begun = set(board_snapshot(BOARD_TIMEOUT_S) or {})
                begun |= {k for k, e in live.items() if e.get("state") == "running"}
                for ref, i in inflight.items():
                    if str(i) not in begun:
                        ray.cancel(ref)
            elif stopping_since is not None:
                _tell(board.stop)  # a restarted board starts empty: tell it again
            if stopping_since is not None and time.time() - stopping_since > STOP_GRACE_S:
                for ref in set(inflight) - forced:
                    ray.cancel(ref, force=True)
                    forced.add(ref)
            while queue and len(inflight) < window:
                submit(*queue.popleft())
            if snap_ref is None:
                snap_ref = _tell(board.snapshot)  # collected after the wait below
            ready = []
            if inflight:
                ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=POLL_S)
            for ref in ready:
                receive(ref, inflight.pop(ref))
            snap = board_snapshot(0) or {}
            flying = {str(i) for i in inflight.values()}
            for key, info in snap.items():
                if key in flying:  # a cell that has begun: its step, node, PID, attempts
                    entry = live[key]
                    attempts = max(entry.get("attempts") or 0, info.get("attempts") or 0)
                    entry.update({k: v for k, v in info.items() if k != "state"})
                    entry.update(state="running", attempts=attempts or None)
            if live != written:
                write_json(d / PROGRESS_FILE, live)
                written = copy.deepcopy(live)
            running = sum(1 for i in inflight.values() if live[str(i)]["state"] == "running")
            nodes = {live[str(i)].get("node") for i in inflight.values()} - {None}
            msg = f"{done}/{n} finished, {running} running on {len(nodes)} node(s)"
            msg += f", {failed} failed" if failed else ""
            if say and msg != last_msg:
                say(done, msg)
                last_msg = msg
        if live != written:
            write_json(d / PROGRESS_FILE, live)
        if stopping_since is not None:
            return "stopped"
        return "incomplete" if failed else "finished"
