"""Background teacher training for the app (Streamlit's script threads never train).

``start_training(ids)`` spawns a detached ``python -m dfkd_viz.teachers.jobs ID...`` process; it
trains the teachers one after another and writes progress to
``DFKD_VIZ_HOME/teachers/.<id>.progress.json`` (``state`` queued|running|done|failed, ``frac`` in
[0, 1], ``msg``, ``pid``, ``error``), which :func:`training_progress` reads (a vanished process
counts as failed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dfkd_viz.paths import teachers_dir
from dfkd_viz.runs.liveness import pid_alive


def _progress_path(teacher_id: str) -> Path:
    return teachers_dir() / f".{teacher_id}.progress.json"


def _write(teacher_id: str, **fields) -> None:
    p = _progress_path(teacher_id)
    tmp = p.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**fields, "t": time.time()}))
    os.replace(tmp, p)


def start_training(ids: list[str]) -> int:
    """Spawn a detached trainer for ``ids`` (validated first); returns its PID."""
    from dfkd_viz.teachers.zoo import get_spec

    ids = [get_spec(i).id for i in ids]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dfkd_viz.teachers.jobs", *ids],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for i in ids:
        _write(i, state="queued", frac=0.0, msg="waiting", pid=proc.pid, error=None)
    return proc.pid


def training_progress(teacher_id: str) -> dict | None:
    """The latest progress record of a background training of ``teacher_id``, or None."""
    p = _progress_path(teacher_id)
    try:
        rec = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if rec.get("state") in ("queued", "running") and not pid_alive(rec.get("pid")):
        rec.update(state="failed", error="the training process ended unexpectedly")
    return rec


def main(ids: list[str]) -> int:
    from dfkd_viz.teachers.zoo import train_teacher

    rc = 0
    for tid in ids:
        _write(tid, state="running", frac=0.0, msg="starting", pid=os.getpid(), error=None)
        last = [0.0]

        def progress(frac: float, msg: str, tid=tid, last=last) -> None:
            if time.time() - last[0] > 0.5 or frac >= 1:
                last[0] = time.time()
                _write(tid, state="running", frac=frac, msg=msg, pid=os.getpid(), error=None)

        try:
            c = train_teacher(tid, progress=progress)
            _write(
                tid,
                state="done",
                frac=1.0,
                msg=f"ID accuracy {c['id_acc']:.1%}",
                pid=os.getpid(),
                error=None,
            )
        except Exception as exc:  # recorded for the page; the next teacher still trains
            _write(
                tid,
                state="failed",
                frac=0.0,
                msg="",
                pid=os.getpid(),
                error=str(exc).splitlines()[0],
            )
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
