"""Teacher training as a background job (the Teachers page; Streamlit's script threads never
train).

:func:`start_training` starts ``python -m dfkd_viz.teachers.training ID...`` through the jobs layer
(:mod:`dfkd_viz.jobs`); the job trains the teachers one after another and reports each one's
progress in ``DFKD_VIZ_HOME/teachers/.<id>.progress.json`` (a :class:`~dfkd_viz.jobs.JobProgress`:
``state`` queued | running | done | failed, ``frac`` in [0, 1], ``msg``, ``error``), which
:func:`training_progress` reads with liveness applied (a vanished process reads as failed). Each
trained teacher's reference map is then started as a job of its own
(:func:`dfkd_viz.teachers.maps.start_map`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dfkd_viz.jobs import JobProgress, read_progress, report, start_job
from dfkd_viz.paths import teachers_dir

KIND = "teacher-training"


def _record(teacher_id: str) -> Path:
    return teachers_dir() / f".{teacher_id}.progress.json"


def start_training(ids: list[str]) -> int:
    """Start one background job that trains ``ids`` in turn; returns its PID.

    Raises:
        UnknownNameError: an unknown teacher id (checked before anything starts).
        OSError: the process cannot be started.
    """
    from dfkd_viz.teachers.zoo import get_spec

    ids = [get_spec(i).id for i in ids]
    return start_job(
        KIND,
        ids,
        "dfkd_viz.teachers.training",
        ids,
        [_record(i) for i in ids],
        teachers_dir() / ".training.log",
    )


def training_progress(teacher_id: str) -> JobProgress | None:
    """The latest progress record of a background training of ``teacher_id``, or None."""
    return read_progress(_record(teacher_id))


def main(ids: list[str]) -> int:
    """Entry point of the job process: train ``ids`` in turn; exit code 1 if any failed."""
    from dfkd_viz.teachers.maps import start_maps_quietly
    from dfkd_viz.teachers.zoo import train_teacher

    rc = 0
    for tid in ids:
        path = _record(tid)
        report(path, KIND, tid, state="running", frac=0.0, msg="starting", error=None)
        last = [0.0]

        def progress(frac: float, msg: str, tid=tid, path=path, last=last) -> None:
            if time.time() - last[0] > 0.5 or frac >= 1:
                last[0] = time.time()
                frac = min(max(float(frac), 0.0), 1.0)
                report(path, KIND, tid, state="running", frac=frac, msg=msg)

        try:
            c = train_teacher(tid, progress=progress)
            report(path, KIND, tid, state="done", frac=1.0, msg=f"ID accuracy {c['id_acc']:.1%}")
            start_maps_quietly([tid])  # its reference map, in its own low-priority job
        except Exception as exc:  # recorded for the page; the next teacher still trains
            report(path, KIND, tid, state="failed", frac=0.0, error=str(exc).splitlines()[0])
            rc = 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
