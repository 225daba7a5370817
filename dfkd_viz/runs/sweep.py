"""Sweeps: a grid of teachers × methods × seeds, distilled in the background (here one run after
another, or several at a time on a Ray cluster).

A sweep lives in ``DFKD_VIZ_HOME/sweeps/<sweep_id>/``:

- ``sweep.json`` — its :class:`SweepSpec` (validated; every cell's config is validated up front)
  and its :class:`~dfkd_viz.runs.executors.ExecutorSpec` (``local`` when absent);
- ``cells.json`` — one entry per cell ``{teacher, method, seed, run_id}``, rewritten atomically
  whenever a cell gets its run, so a crash never loses the link between a cell and its run;
- ``runner.json`` — PID (and start time) of the process that works through the cells;
- ``runner.log`` — that process's output;
- ``cell_progress.json`` — with the ``ray`` executor, what each cell not finished last reported
  (state, step, node, attempts, and a failed cell's ``error``), written by the runner while the
  cells run on other machines.

Each cell is an ordinary run in the run store (its own worker process, metrics, snapshots), so the
Live, Runs and Decisions pages show it like any other. The runner (``python -m
dfkd_viz.runs.sweep SWEEP_ID``) takes the cells in order — seed by seed, so a partial sweep already
compares every method on every teacher — and skips cells whose run has finished; a cell whose run
stopped or failed (killed worker, machine restart) is resumed from its last checkpoint. Running the
runner again on the same sweep therefore continues where it stopped (``dfkd-viz sweep --resume ID``).
The runner hands the cells to the sweep's executor (:mod:`dfkd_viz.runs.executors`): ``local``
works through them here as described; ``ray`` runs them as Ray tasks on a cluster and brings each
finished run back into this machine's run store.

The result of a cell is the student's final ID accuracy relative to its teacher's
(``rel_acc = id_acc / teacher_id_acc``), the figure TA-DFKD's stability claim is about.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dfkd_viz.errors import ConfigError, DfkdVizError, UnknownNameError
from dfkd_viz.jobs import JobProgress, pid_alive, read_progress, report, start_job, stop_job
from dfkd_viz.paths import home
from dfkd_viz.runs.config import MAX_SECONDS, MAX_STEPS, format_validation_error, validate_config
from dfkd_viz.runs.executors import ExecutorSpec, get_executor, parse_executor
from dfkd_viz.util.io import read_json, write_json


class SweepBusyError(DfkdVizError):
    """Another process is already running this sweep."""


SWEEP_ID_RE = re.compile(r"^sw-[A-Za-z0-9_.-]{1,120}$")
MAX_CELLS = 10_000


class SweepSpec(BaseModel):
    """What a sweep distils: every teacher × method × seed, with a shared budget.

    A ``methods`` entry is a method name, or ``METHOD+DEFENSE`` to compare a method with and
    without a defense (e.g. ``["dfq", "dfq+ta-select", "tadfkd"]``).

    ``steps``/``seconds``: the budget of every run (neither: each method's default steps).
    ``base``: further :class:`~dfkd_viz.runs.config.RunConfig` fields for every run (e.g.
    ``{"eval_every": 20}``); ``threads`` torch threads per run (default: all cores with the local
    executor; on Ray, the executor's ``cpus_per_run`` rounded up).
    """

    model_config = ConfigDict(extra="forbid")

    teachers: list[str] = Field(min_length=1)
    methods: list[str] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    seconds: float | None = Field(None, gt=0, le=MAX_SECONDS)
    threads: int | None = Field(None, ge=1, le=256)
    embedding: bool = Field(False, description="fit each run's UMAP map (off: saves ~10 s a run)")
    base: dict[str, Any] = Field(default_factory=dict)
    title: str = ""

    @field_validator("teachers", "methods", "seeds")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("values must be unique")
        return v

    def cells(self) -> list[dict[str, Any]]:
        """The grid in run order: seed-major, then teacher, then method."""
        return [
            {"teacher": t, "method": m, "seed": s}
            for s in self.seeds
            for t in self.teachers
            for m in self.methods
        ]

    def run_config(self, cell: dict[str, Any]) -> dict[str, Any]:
        """The raw run config of one cell (a method entry ``"dfq+ta-select"`` names a method
        and a defense; a bare method gets its own default defense)."""
        method, _, defense = cell["method"].partition("+")
        cfg = {
            **self.base,
            "teacher": cell["teacher"],
            "method": method,
            "seed": cell["seed"],
            "embedding": self.embedding,
        }
        if defense:
            cfg["defense"] = defense
        if self.threads is not None:
            cfg["threads"] = self.threads
        if self.steps is not None:
            cfg["steps"] = self.steps
        if self.seconds is not None:
            cfg["seconds"] = self.seconds
        return cfg


def sweeps_dir() -> Path:
    """Directory of the sweeps: one sub-directory per sweep."""
    p = home() / "sweeps"
    p.mkdir(parents=True, exist_ok=True)
    return p


def sweep_dir(sweep_id: str) -> Path:
    """The directory of ``sweep_id``. Raises UnknownNameError (malformed id or no such sweep)."""
    if not isinstance(sweep_id, str) or not SWEEP_ID_RE.match(sweep_id):
        raise UnknownNameError(f"{sweep_id!r} is not a valid sweep id")
    d = sweeps_dir() / sweep_id
    if not (d / "sweep.json").is_file():
        raise UnknownNameError(f"no sweep {sweep_id!r} in {sweeps_dir()}")
    return d


def parse_spec(data: dict[str, Any]) -> SweepSpec:
    """Validate a raw spec and every cell's run config.

    Raises:
        ConfigError: one sentence naming the field (or the cell) at fault.
    """
    if data.get("steps") is not None and data.get("seconds") is not None:
        raise ConfigError("give either steps or seconds as the budget, not both")
    try:
        spec = SweepSpec(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
    cells = spec.cells()
    if len(cells) > MAX_CELLS:
        raise ConfigError(f"a sweep has at most {MAX_CELLS} runs (got {len(cells)})")
    checked_teachers: set[str] = set()
    for cell in cells:
        first = cell["teacher"] not in checked_teachers
        checked_teachers.add(cell["teacher"])
        try:
            validate_config(spec.run_config(cell), check_teacher=first)
        except ConfigError as exc:
            raise ConfigError(f"{cell['teacher']} × {cell['method']}: {exc}") from None
    return spec


def create_sweep(
    data: dict[str, Any] | SweepSpec, executor: ExecutorSpec | dict[str, Any] | None = None
) -> str:
    """Validate and store a new sweep (no run started yet); returns its id. ``executor``: where
    its cells run (default local; see :class:`~dfkd_viz.runs.executors.ExecutorSpec`)."""
    ex = parse_executor(executor)
    spec = parse_spec(data.model_dump() if isinstance(data, SweepSpec) else data)
    sweep_id = f"sw-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    d = sweeps_dir() / sweep_id
    d.mkdir(parents=True)
    write_json(d / "cells.json", [{**c, "run_id": None} for c in spec.cells()])
    # sweep.json last: a directory without it is not a sweep (a crash here leaves no half sweep)
    meta = {"spec": spec.model_dump(), "created": time.time(), "executor": ex.model_dump()}
    write_json(d / "sweep.json", meta)
    return sweep_id


def sweep_executor(sweep_id: str) -> ExecutorSpec:
    """Where the sweep's cells run (``local`` for a sweep stored without a choice)."""
    try:
        data = json.loads((sweep_dir(sweep_id) / "sweep.json").read_text()).get("executor")
        return ExecutorSpec(**(data or {}))
    except (OSError, ValueError, TypeError, ValidationError) as exc:
        raise DfkdVizError(f"sweep {sweep_id} is corrupt: {str(exc).splitlines()[0]}") from None


def set_executor(sweep_id: str, executor: ExecutorSpec | dict[str, Any]) -> ExecutorSpec:
    """Change where a sweep's remaining cells run (e.g. resume a local sweep on Ray).

    Raises:
        ConfigError: an invalid choice. DfkdVizError: the sweep is running.
    """
    ex = parse_executor(executor)
    d = sweep_dir(sweep_id)
    if runner_alive(sweep_id):
        raise DfkdVizError(f"sweep {sweep_id} is running: stop it before changing its executor")
    meta = json.loads((d / "sweep.json").read_text())
    meta["executor"] = ex.model_dump()
    write_json(d / "sweep.json", meta)
    return ex


def cell_progress(sweep_id: str) -> dict[str, dict[str, Any]]:
    """What the cells of a sweep on another machine last reported, by cell index (as a string):
    ``{cell_id, run_id, state, step, total_steps, node, attempts, pid, error…}``; empty for a
    local sweep."""
    data = read_json(sweep_dir(sweep_id) / "cell_progress.json")
    return data if isinstance(data, dict) else {}


def load_sweep(sweep_id: str) -> tuple[SweepSpec, list[dict[str, Any]]]:
    """``(spec, cells)`` of a sweep. Raises UnknownNameError, DfkdVizError (corrupt files)."""
    d = sweep_dir(sweep_id)
    try:
        spec = SweepSpec(**json.loads((d / "sweep.json").read_text())["spec"])
        cells = json.loads((d / "cells.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise DfkdVizError(f"sweep {sweep_id} is corrupt: {str(exc).splitlines()[0]}") from None
    return spec, cells


def _record(d: Path) -> Path:
    return d / "runner.json"


def runner_progress(sweep_id: str) -> JobProgress | None:
    """The runner's progress record (:class:`~dfkd_viz.jobs.JobProgress`; ``frac`` = cells done
    / cells), liveness applied, or None before the sweep was first started."""
    return read_progress(_record(sweep_dir(sweep_id)))


def runner_alive(sweep_id: str) -> bool:
    """Whether the sweep's runner process is working through its cells."""
    rec = runner_progress(sweep_id)
    return rec is not None and rec.active and pid_alive(rec.pid, rec.pid_start)


def sweep_results(sweep_id: str) -> pd.DataFrame:
    """One row per cell: ``teacher, method, seed, run_id, status, step, id_acc, teacher_acc,
    rel_acc`` (student ID accuracy / teacher ID accuracy, fractions), ``ood_acc, asr, wall_s``,
    ``executor, node`` (where its run was distilled), ``remote`` (True while the cell runs on
    another machine: status and step are then its latest report, the run arrives when it ends)
    and ``error`` (one sentence for a failed cell: its run's error, or — for a Ray cell whose run
    never arrived, or that could not even be submitted — the error in ``cell_progress.json``;
    None otherwise). Cells without a run have status ``pending`` (``failed`` when the last
    runner recorded them failed); a run that was deleted, ``missing``."""
    from dfkd_viz.runs import manager
    from dfkd_viz.teachers import card

    _, cells = load_sweep(sweep_id)
    live = cell_progress(sweep_id)
    alive = bool(live) and runner_alive(sweep_id)
    t_acc: dict[str, float | None] = {}
    rows = []
    for i, c in enumerate(cells):
        if c["teacher"] not in t_acc:
            try:
                t_acc[c["teacher"]] = card(c["teacher"]).get("id_acc")
            except DfkdVizError:
                t_acc[c["teacher"]] = None
        row = {**c, "status": "pending", "step": None, "id_acc": None, "ood_acc": None}
        row.update(asr=None, wall_s=None, teacher_acc=t_acc[c["teacher"]])
        row.update(executor=None, node=None, remote=False, error=None)
        lv = live.get(str(i))
        lv_failed = bool(lv) and lv.get("state") == "failed"
        if alive and lv and lv.get("state") in ("queued", "running"):
            row.update(status=lv["state"], step=lv.get("step"), node=lv.get("node"))
            row.update(executor="ray", remote=True)
        elif not c.get("run_id") and lv_failed:  # failed before it had a run (e.g. submitting)
            row.update(status="failed", error=lv.get("error"), executor="ray")
        elif c.get("run_id"):
            try:
                info = manager.run_info(c["run_id"])
                row.update(
                    status=info["status"],
                    step=info.get("step"),
                    id_acc=info.get("id_acc"),
                    ood_acc=info.get("ood_acc"),
                    asr=info.get("asr"),
                    wall_s=info.get("wall_s"),
                    executor=info.get("executor"),
                    node=info.get("node"),
                )
                if info["status"] in ("failed", "corrupt"):
                    row["error"] = info.get("error") or (lv.get("error") if lv_failed else None)
                elif lv_failed and info["status"] != "finished":  # e.g. the cell failed on arrival
                    row.update(status="failed", error=lv.get("error"))
            except UnknownNameError:
                if lv is None:
                    row["status"] = "missing"
                else:  # a Ray cell whose run has not arrived (yet): it failed, or it waits
                    row["status"] = "failed" if lv_failed else "pending"
                    row["error"] = lv.get("error") if lv_failed else None
            except DfkdVizError as exc:
                row.update(status="corrupt", error=str(exc).splitlines()[0] if str(exc) else None)
        ta = row["teacher_acc"]
        row["rel_acc"] = row["id_acc"] / ta if row["id_acc"] is not None and ta else None
        rows.append(row)
    return pd.DataFrame(rows)


def sweep_status(sweep_id: str, results: pd.DataFrame | None = None) -> dict[str, Any]:
    """``{sweep_id, state, done, total, current, spec, created}``; state is ``running`` (runner
    alive), ``finished`` (every cell's run finished) or ``stopped`` (neither: resume it)."""
    d = sweep_dir(sweep_id)
    spec, _ = load_sweep(sweep_id)
    df = sweep_results(sweep_id) if results is None else results
    done = int((df["status"] == "finished").sum())
    alive = runner_alive(sweep_id)
    state = "running" if alive else ("finished" if done == len(df) else "stopped")
    current = df[df["status"].isin(["queued", "running"]) & ~df["remote"].astype(bool)]
    meta = json.loads((d / "sweep.json").read_text())
    return {
        "sweep_id": sweep_id,
        "state": state,
        "done": done,
        "total": len(df),
        "current": current.iloc[0]["run_id"] if len(current) else None,
        "spec": spec.model_dump(),
        "created": meta.get("created"),
        "executor": (meta.get("executor") or {}).get("name", "local"),
        "error": rec.error if (rec := runner_progress(sweep_id)) is not None else None,
    }


def list_sweeps() -> list[dict[str, Any]]:
    """Status of every sweep, newest first; a corrupt sweep is listed with state ``corrupt``."""
    out = []
    for d in sorted(sweeps_dir().iterdir(), key=lambda p: p.name, reverse=True):
        if not d.is_dir() or not SWEEP_ID_RE.match(d.name) or not (d / "sweep.json").exists():
            continue
        try:
            out.append(sweep_status(d.name))
        except DfkdVizError as exc:
            out.append({"sweep_id": d.name, "state": "corrupt", "error": str(exc)})
    return out


def summarize(df: pd.DataFrame) -> dict[str, Any]:
    """Stability figures of finished cells, on ``rel_acc`` in percent of the teacher's accuracy.

    Returns ``{"methods": {method: {mean, std, min, max, n, worst: {teacher, seed}}},
    "cells": [{teacher, method, mean, std, min, n}], "best_method", "worst_method"}`` — best = the
    highest minimum (the stability TA-DFKD claims), ties broken by the mean.
    """
    fin = df[(df["status"] == "finished") & df["rel_acc"].notna()].copy()
    fin["rel"] = 100.0 * fin["rel_acc"].astype(float)
    methods: dict[str, Any] = {}
    for m, g in fin.groupby("method", sort=False):
        w = g.loc[g["rel"].idxmin()]
        methods[m] = {
            "mean": float(g["rel"].mean()),
            "std": float(g["rel"].std(ddof=1)) if len(g) > 1 else 0.0,
            "min": float(g["rel"].min()),
            "max": float(g["rel"].max()),
            "n": len(g),
            "worst": {"teacher": w["teacher"], "seed": int(w["seed"])},
        }
    cells = [
        {
            "teacher": t,
            "method": m,
            "mean": float(g["rel"].mean()),
            "std": float(g["rel"].std(ddof=1)) if len(g) > 1 else 0.0,
            "min": float(g["rel"].min()),
            "n": len(g),
        }
        for (t, m), g in fin.groupby(["teacher", "method"], sort=False)
    ]
    ranked = sorted(methods, key=lambda m: (methods[m]["min"], methods[m]["mean"]))
    return {
        "methods": methods,
        "cells": cells,
        "best_method": ranked[-1] if ranked else None,
        "worst_method": ranked[0] if ranked else None,
    }


# ---------------------------------------------------------------------------------- the runner
_STOP = {"flag": False}


def _on_signal(signum, frame) -> None:
    _STOP["flag"] = True


@contextlib.contextmanager
def _exclusive(d: Path):
    with open(d / ".runner.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepBusyError(
                f"sweep {d.name} is already being run by another process"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_sweep(sweep_id: str, progress: Callable[[int, int, dict], None] | None = None) -> str:
    """Hand the sweep's cells to its executor from this process (the runner): ``local`` starts
    each run's worker here, one after another; ``ray`` submits them to a Ray cluster and receives
    the finished runs. Returns ``"finished"``, ``"stopped"`` (SIGTERM/SIGINT: the running runs —
    one here, or every cell in flight on Ray — stop at a checkpoint, and cells not started stay
    pending) or ``"incomplete"`` (some cell failed; its error is in its run's events, or in the
    ``error`` of :func:`sweep_results`).

    Raises:
        DfkdVizError: another process is already running this sweep; UnknownNameError.
    """

    d = sweep_dir(sweep_id)
    spec, cells = load_sweep(sweep_id)
    with _exclusive(d):
        rec = _record(d)
        report(rec, "sweep", sweep_id, state="running", msg="starting", error=None, result=None)

        def tell(i: int, n: int, cell: dict) -> None:
            what = _describe(cell)
            report(rec, "sweep", sweep_id, state="running", frac=min(i, n) / max(n, 1), msg=what)
            if progress:
                progress(i, len(cells), cell)

        result = "stopped"
        try:
            result = _run_cells(d, spec, cells, tell)
        except Exception as exc:  # recorded for the app and the CLI, not just the log
            report(rec, "sweep", sweep_id, state="failed", error=str(exc).splitlines()[0])
            raise
        done = {"finished": "done", "stopped": "stopped", "incomplete": "failed"}[result]
        error = "some runs failed (see their events)" if result == "incomplete" else None
        report(
            rec, "sweep", sweep_id, state=done, msg=result, error=error, result={"result": result}
        )
    return result


def _describe(cell: dict) -> str:
    """A progress line: the cell (local), the executor's own message (``msg``), or ``done``."""
    if cell.get("msg"):
        return str(cell["msg"])
    return f"{cell['teacher']} × {cell['method']} seed {cell['seed']}" if cell else "done"


def _run_cells(
    d: Path, spec: SweepSpec, cells: list[dict], progress: Callable[[int, int, dict], None] | None
) -> str:
    """Hand the cells to the sweep's executor (:mod:`dfkd_viz.runs.executors`)."""
    executor = get_executor(sweep_executor(d.name))
    (d / "cell_progress.json").unlink(missing_ok=True)  # an earlier runner's reports are stale
    return executor.run_cells(d, spec, cells, progress, stop=lambda: _STOP["flag"])


def start_runner(sweep_id: str) -> int:
    """Start the detached runner process of ``sweep_id`` (its own session: it outlives the CLI
    or the app); returns its PID. Raises DfkdVizError when a runner is already alive."""
    d = sweep_dir(sweep_id)
    if runner_alive(sweep_id):
        raise DfkdVizError(f"sweep {sweep_id} is already running")
    return start_job(
        "sweep", sweep_id, "dfkd_viz.runs.sweep", [sweep_id], _record(d), d / "runner.log"
    )


def stop_sweep(sweep_id: str, wait_s: float = 0.0) -> None:
    """Ask the runner to stop (SIGTERM) and wait up to ``wait_s`` seconds for it to record an end.
    It stops its running runs at a checkpoint (on Ray: within ``STOP_GRACE_S``, 25 s, plus
    shipping them back); resume continues. Check :func:`runner_alive` afterwards: the runner may
    still be stopping."""
    stop_job(_record(sweep_dir(sweep_id)), wait_s)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dfkd_viz.runs.sweep SWEEP_ID", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    def log(i: int, n: int, cell: dict) -> None:
        if cell.get("msg"):
            print(f"{time.strftime('%H:%M:%S')} {cell['msg']}", flush=True)
            return
        print(
            f"{time.strftime('%H:%M:%S')} cell {min(i + 1, n)}/{n}: {_describe(cell)}", flush=True
        )

    try:
        result = run_sweep(args[0], log)
    except SweepBusyError as exc:  # another runner has the sweep: leave its record alone
        print(f"sweep {args[0]}: {exc}", file=sys.stderr, flush=True)
        return 2
    except DfkdVizError as exc:  # already in the progress record: one line in the log
        print(f"sweep {args[0]}: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"sweep {args[0]}: {result}", flush=True)
    return 0 if result == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
