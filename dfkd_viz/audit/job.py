"""The audit as a background job (the Audit page and ``dfkd-viz audit --background``).

:func:`start_audit` starts ``python -m dfkd_viz.audit.job TEACHER_ID`` through the jobs layer; the
job audits the teacher (storing the report under its weights' digest) and reports its progress in
``DFKD_VIZ_HOME/audits/.<teacher_id>.progress.json`` (a :class:`~dfkd_viz.jobs.JobProgress`),
which :func:`audit_progress` reads. A separate process keeps the app's server responsive and gives
the audit the machine's cores (inside the Streamlit server it ran ~4× slower).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dfkd_viz.audit.store import audit_teacher, audits_dir
from dfkd_viz.jobs import JobProgress, read_progress, report, start_job

KIND = "audit"


def _record(teacher_id: str) -> Path:
    return audits_dir() / f".{teacher_id}.progress.json"


def start_audit(teacher_id: str) -> int:
    """Start a background audit of ``teacher_id`` (a fresh one: a stored report is replaced);
    returns the job's PID. An audit of the same teacher that is still running is reused.

    Raises:
        UnknownNameError: unknown teacher id (checked before anything starts).
        OSError: the process cannot be started.
    """
    from dfkd_viz.teachers import card

    card(teacher_id)  # unknown ids fail here, in the caller, with one sentence
    rec = audit_progress(teacher_id)
    if rec is not None and rec.active:
        return int(rec.pid or 0)
    return start_job(
        KIND,
        teacher_id,
        "dfkd_viz.audit.job",
        [teacher_id],
        _record(teacher_id),
        audits_dir() / f".{teacher_id}.log",
    )


def audit_progress(teacher_id: str) -> JobProgress | None:
    """The progress of the latest background audit of ``teacher_id`` (liveness applied), or None
    when none was started. ``state`` ``done`` means the report is stored
    (:func:`dfkd_viz.audit.store.cached_report` reads it)."""
    return read_progress(_record(teacher_id))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the job process: ``python -m dfkd_viz.audit.job TEACHER_ID``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m dfkd_viz.audit.job TEACHER_ID", file=sys.stderr)
        return 2
    teacher_id, path = args[0], _record(args[0])
    last = [0.0]

    def progress(frac: float, msg: str) -> None:
        if time.time() - last[0] > 0.3 or frac >= 1:
            last[0] = time.time()
            frac = min(max(float(frac), 0.0), 1.0)
            report(path, KIND, teacher_id, state="running", frac=frac, msg=str(msg))

    report(path, KIND, teacher_id, state="running", frac=0.0, msg="loading the teacher")
    try:
        rep = audit_teacher(teacher_id, progress=progress, use_cache=False)
    except Exception as exc:  # the page shows the sentence; nothing is stored
        error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        report(path, KIND, teacher_id, state="failed", error=error)
        print(f"audit of {teacher_id} failed: {error}", file=sys.stderr, flush=True)
        return 1
    report(
        path,
        KIND,
        teacher_id,
        state="done",
        frac=1.0,
        msg=f"audited in {rep.seconds:.0f} s",
        result={"weights_sha256": rep.weights_sha256, "verdict": dict(rep.verdict)},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
