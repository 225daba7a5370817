"""The progress record every file-based background job writes (sweeps, teacher training, audits).

A record is one JSON file, replaced atomically on every update. The job writes it with
:func:`report`; the starter writes the first (``queued``) record in :func:`start_job` with the
child's PID and start time, so the job shows up before its own first report. Readers call
:func:`read_progress`, which applies liveness: a ``queued``/``running`` record whose process is gone
(killed, crashed, machine restarted) reads as ``failed`` with an explanation.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from dfkd_viz.jobs.liveness import pid_alive, process_start_time
from dfkd_viz.jobs.process import log_tail, reap, spawn_detached, terminate
from dfkd_viz.util.io import read_json, write_json

JobState = Literal["queued", "running", "done", "failed", "stopped"]
ACTIVE: tuple[str, ...] = ("queued", "running")
"""States in which a job's process is expected to be alive."""


class JobProgress(BaseModel):
    """One background job's progress.

    Attributes:
        kind: ``"sweep"``, ``"teacher-training"``, ``"audit"`` (free text, for messages).
        job_id: what the job works on (a sweep id, a teacher id).
        state: ``queued`` → ``running`` → ``done`` | ``failed`` | ``stopped``.
        frac: fraction of the work done, in [0, 1].
        msg: a short human-readable status line.
        pid, pid_start: the job's process and its start time (clock ticks since boot).
        error: one sentence when ``failed``.
        log: the job's log file (its last line explains a crash).
        started, updated: UNIX seconds.
        result: the job's own small JSON result, when it has one.
    """

    kind: str
    job_id: str
    state: JobState = "queued"
    frac: float = Field(0.0, ge=0.0, le=1.0)
    msg: str = ""
    pid: int | None = None
    pid_start: str | None = None
    error: str | None = None
    log: str | None = None
    started: float = Field(default_factory=time.time)
    updated: float = Field(default_factory=time.time)
    result: dict[str, Any] | None = None

    @property
    def active(self) -> bool:
        """True while queued or running."""
        return self.state in ACTIVE


def _load(path: Path) -> JobProgress | None:
    data = read_json(path)
    if not isinstance(data, dict):
        return None
    try:
        return JobProgress.model_validate(data)
    except ValueError:
        return None


def read_progress(path: str | os.PathLike, repair: bool = False) -> JobProgress | None:
    """The record at ``path`` with liveness applied, or None when there is none (or it is not a
    record). An active record whose process is gone reads as ``failed``; with ``repair`` that
    is also written back."""
    path = Path(path)
    reap()
    rec = _load(path)
    if rec is None or not rec.active or pid_alive(rec.pid, rec.pid_start):
        return rec
    if rec.pid is None and time.time() - rec.started < 15.0:  # the starter has not spawned yet
        return rec
    error = f"the {rec.kind} process ended unexpectedly (killed or crashed)"
    last = log_tail(Path(rec.log)) if rec.log else None
    if last and re.search(r"error|exception|could not|killed", last, re.IGNORECASE):
        error += f"; its log ends: {last}"
    rec = rec.model_copy(update={"state": "failed", "error": error, "updated": time.time()})
    if repair:
        write_json(path, rec.model_dump())
    return rec


def report(path: str | os.PathLike, kind: str, job_id: str, **fields: Any) -> JobProgress:
    """Write this process's progress (``state``, ``frac``, ``msg``, ``error``, ``result``…) to
    ``path``; PID, start time, ``started`` and ``log`` are kept from the previous record.

    Raises:
        pydantic.ValidationError: a field out of range (e.g. ``frac`` outside [0, 1]).
        OSError: the record cannot be written (a full disk).
    """
    path = Path(path)
    prev = _load(path)
    base = prev.model_dump() if prev is not None and prev.job_id == job_id else {}
    base.update(kind=kind, job_id=job_id, pid=os.getpid(), updated=time.time())
    base["pid_start"] = process_start_time(os.getpid())
    base.update(fields)
    rec = JobProgress.model_validate(base)
    write_json(path, rec.model_dump())
    return rec


def start_job(
    kind: str,
    job_ids: list[str] | str,
    module: str,
    args: list[str],
    records: list[Path] | Path,
    log_path: Path,
    cwd: Path | None = None,
) -> int:
    """Start ``python -m module *args`` detached and write a ``queued`` record for each job id
    (a process may work through several, e.g. the teachers of one training job); returns the PID.

    Raises:
        OSError: the process cannot be started or the record not written.
    """
    ids = [job_ids] if isinstance(job_ids, str) else list(job_ids)
    paths = [records] if isinstance(records, Path) else list(records)
    if len(ids) != len(paths):
        raise ValueError("one record path per job id")
    proc = spawn_detached([sys.executable, "-m", module, *args], log_path, cwd=cwd)
    start = process_start_time(proc.pid)
    for job_id, path in zip(ids, paths, strict=True):
        rec = JobProgress(
            kind=kind,
            job_id=job_id,
            msg="waiting",
            pid=proc.pid,
            pid_start=start,
            log=str(log_path),
        )
        write_json(path, rec.model_dump())
    return proc.pid


def stop_job(path: str | os.PathLike, wait_s: float = 0.0) -> JobProgress | None:
    """Ask the job behind the record at ``path`` to stop (SIGTERM) and wait up to ``wait_s``
    seconds for it to leave the active states; returns the record then."""
    rec = read_progress(path)
    if rec is None or not rec.active:
        return rec
    terminate(rec.pid, rec.pid_start)
    return wait_job(path, wait_s)


def wait_job(path: str | os.PathLike, timeout_s: float | None = None) -> JobProgress | None:
    """Block until the job behind ``path`` is no longer active (or ``timeout_s`` passed)."""
    deadline = None if timeout_s is None else time.time() + timeout_s
    while True:
        rec = read_progress(path)
        if rec is None or not rec.active or (deadline is not None and time.time() >= deadline):
            return rec
        time.sleep(0.1)
