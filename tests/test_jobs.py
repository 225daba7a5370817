"""The jobs layer: one progress record, liveness with PID + start time, stop — for every kind of
background job (runs have their own store but share start, liveness and stop)."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import pytest
from conftest import wait_until

from dfkd_viz import jobs

JOB = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from dfkd_viz.jobs import report

    rec = Path(sys.argv[1])
    stopped = []
    signal.signal(signal.SIGTERM, lambda *a: stopped.append(1))
    for i in range(int(sys.argv[2])):
        if stopped:
            report(rec, "test", "j1", state="stopped", msg="asked to stop")
            sys.exit(0)
        report(rec, "test", "j1", state="running", frac=i / int(sys.argv[2]), msg=f"step {i}")
        time.sleep(0.05)
    report(rec, "test", "j1", state="done", frac=1.0, result={"answer": 42})
    """
)


@pytest.fixture
def job_module(tmp_path: Path) -> Path:
    (tmp_path / "tiny_job.py").write_text(JOB)
    return tmp_path


def _start(d: Path, steps: int) -> tuple[Path, int]:
    rec = d / "job.json"
    pid = jobs.start_job("test", "j1", "tiny_job", [str(rec), str(steps)], rec, d / "j.log", cwd=d)
    return rec, pid


def test_a_job_reports_queued_running_done_with_its_result(job_module):
    rec, pid = _start(job_module, 5)
    first = jobs.read_progress(rec)
    assert first is not None and first.pid == pid and first.state in ("queued", "running")
    assert first.pid_start == jobs.process_start_time(pid) or first.state == "running"
    end = jobs.wait_job(rec, timeout_s=30)
    assert end.state == "done" and end.frac == 1.0 and end.result == {"answer": 42}
    assert end.started == first.started  # kept from the starter's record


def test_stop_asks_the_job_and_waits_for_its_record(job_module):
    rec, _ = _start(job_module, 10_000)
    assert wait_until(lambda: (r := jobs.read_progress(rec)) is not None and r.state == "running")
    end = jobs.stop_job(rec, wait_s=20)
    assert end.state == "stopped" and end.msg == "asked to stop"


def test_a_killed_job_reads_as_failed_and_repair_records_it(job_module):
    rec, pid = _start(job_module, 10_000)
    assert wait_until(lambda: (r := jobs.read_progress(rec)) is not None and r.state == "running")
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: jobs.read_progress(rec).state == "failed")
    r = jobs.read_progress(rec, repair=True)
    assert "ended unexpectedly" in r.error and "test" in r.error
    assert jobs.read_progress(rec).state == "failed"  # also on disk now


def test_a_reused_pid_is_not_the_job(tmp_path):
    """A record whose PID now belongs to another process (different start time) is not alive."""
    rec = tmp_path / "job.json"
    jobs.report(rec, "test", "j1", state="running")  # this very process, its real start time
    assert jobs.read_progress(rec).state == "running"
    r = jobs.read_progress(rec)
    from dfkd_viz.util.io import write_json

    write_json(rec, {**r.model_dump(), "pid_start": "1"})  # same PID, another start time
    assert jobs.read_progress(rec).state == "failed"


def test_a_broken_record_reads_as_none(tmp_path):
    (tmp_path / "job.json").write_text("{not json")
    assert jobs.read_progress(tmp_path / "job.json") is None
    assert jobs.read_progress(tmp_path / "missing.json") is None
