"""Workers run nice (dfkd_viz.jobs.priority): the setting, every thread of a process, a real
worker and a warm standby."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dfkd_viz.errors import ConfigError
from dfkd_viz.jobs.priority import DEFAULT_NICE, NICE_ENV, worker_nice
from dfkd_viz.runs import manager

linux_only = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread nice")


def thread_nices(pid: int) -> set[int]:
    """The nice value of every thread of ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    out = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        out.add(int(stat.rsplit(")", 1)[1].split()[16]))
    return out


def test_the_setting():
    assert worker_nice({}) == DEFAULT_NICE == 10
    assert worker_nice({NICE_ENV: " 5 "}) == 5 and worker_nice({NICE_ENV: "0"}) == 0
    for bad in ("abc", "20", "-1", "2.5"):
        with pytest.raises(ConfigError, match=f"{NICE_ENV} must be an integer from 0 to 19"):
            worker_nice({NICE_ENV: bad})


@linux_only
def test_every_thread_of_the_process_and_never_back():
    code = (
        "import os, threading, time\n"
        "from dfkd_viz.jobs.priority import lower_priority\n"
        "ev = threading.Event()\n"
        "t = threading.Thread(target=ev.wait); t.start()\n"  # started before: changed too
        "a, b = lower_priority(7), lower_priority(3)\n"  # 3 < 7: kept at 7
        "u = threading.Thread(target=ev.wait); u.start()\n"  # started after: inherits 7
        "print(a, b, flush=True)\n"
        "input(); ev.set()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout.readline().split() == ["7", "7"]
        assert len(list(Path(f"/proc/{p.pid}/task").iterdir())) >= 3
        assert thread_nices(p.pid) == {7}
    finally:
        p.communicate("\n", timeout=30)


@linux_only
def test_a_running_worker_is_nice(trained_home, tiny_run, monkeypatch):
    monkeypatch.setenv(NICE_ENV, "6")
    run_id = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 400, **tiny_run})
    try:
        from conftest import wait_until

        assert wait_until(lambda: (manager.run_info(run_id).get("step") or 0) >= 2)
        assert thread_nices(manager.run_info(run_id)["pid"]) == {6}
    finally:
        manager.stop(run_id, wait_s=30)


def test_a_bad_setting_starts_nothing(trained_home, tiny_run, monkeypatch):
    monkeypatch.setenv(NICE_ENV, "high")
    with pytest.raises(ConfigError, match="not 'high'"):
        manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 2, **tiny_run})
    assert manager.list_runs() == []
