"""One layer for every background job: distillation runs, sweeps, teacher training and audits.

A job is a detached OS process (its own session, so it outlives the CLI or the Streamlit server
that started it). This package gives every kind of job the same four things:

- **start**: :func:`spawn_detached` (output appended to a log file; the child is reaped later, so
  it never lingers as a zombie of a long-lived server);
  :func:`spawn_attached` for a child that must end with its parent (:func:`die_with_parent`);
- **liveness**: :func:`pid_alive` with the process's start time recorded at launch, so a reused
  PID is never mistaken for the job;
- **one progress record**: :class:`JobProgress`, written atomically by the job
  (:func:`report`) and read by anyone (:func:`read_progress`, which turns a record whose process
  vanished into ``failed`` with the last line of its log);
- **stop**: :func:`stop_job` (SIGTERM; each job checkpoints or records ``stopped`` on it);
- **priority**: :mod:`dfkd_viz.jobs.priority` (run workers raise their nice value, so the
  app's pages get the CPU first).

Runs keep their status in the run store's SQLite database (:mod:`dfkd_viz.runs.store`, which
holds more than a progress record), but start, liveness and stop go through this layer too.
Pages never start processes: they call the library (``runs.manager``, ``runs.sweep``,
``teachers.training``, ``audit.job``), which calls this layer, and poll the record.
"""

from dfkd_viz.jobs.liveness import pid_alive, process_start_time
from dfkd_viz.jobs.process import (
    die_with_parent,
    log_tail,
    reap,
    spawn_attached,
    spawn_detached,
    terminate,
)
from dfkd_viz.jobs.progress import (
    ACTIVE,
    JobProgress,
    JobState,
    read_progress,
    report,
    start_job,
    stop_job,
    wait_job,
)

__all__ = [
    "ACTIVE",
    "JobProgress",
    "JobState",
    "die_with_parent",
    "log_tail",
    "pid_alive",
    "process_start_time",
    "read_progress",
    "reap",
    "report",
    "spawn_attached",
    "spawn_detached",
    "start_job",
    "stop_job",
    "terminate",
    "wait_job",
]
