"""Warm standby workers (``dfkd_viz.runs.standby``): a launch hands its run to a ready standby,
which becomes the run's worker in-process (real detached processes, tiny budgets)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import wait_until
from test_priority import thread_nices

from dfkd_viz.jobs.liveness import pid_alive
from dfkd_viz.jobs.priority import DEFAULT_NICE
from dfkd_viz.runs import manager, standby
from dfkd_viz.runs.store import RunReader

pytestmark = pytest.mark.slow

READY_S = 180.0  # a standby imports torch (2–6 s on the shared 2-core VM; much more under load)


@pytest.fixture
def standby_on(monkeypatch, trained_home: Path) -> Path:
    """Standbys switched on in a home with the trained ``mnist-clean`` teacher."""
    monkeypatch.setenv(standby.STANDBY_ENV, "1")
    return trained_home


def _cfg(tiny_run: dict, steps: int = 4, **extra) -> dict:
    return {
        "teacher": "mnist-clean",
        "method": "dfq",
        "steps": steps,
        "seed": 3,
        "embedding": False,
        **tiny_run,
        **extra,
    }


def _ready(**kwargs) -> dict:
    """Start a standby and wait until it is ready; returns its record."""
    pid = standby.start(**kwargs)
    assert wait_until(
        lambda: any(r["pid"] == pid for r in standby.ready_standbys()), READY_S, 0.2
    ), (standby.pool_dir() / "standby.log").read_text()
    return next(r for r in standby.ready_standbys() if r["pid"] == pid)


def _meta(run_id: str) -> dict:
    with RunReader(manager.run_dir(run_id)) as r:
        return r.meta()


def _pool_files(pid: int) -> list[str]:
    return sorted(p.name for p in standby.pool_dir().glob(f"{pid}.*"))


def test_a_launch_takes_the_ready_standby_and_runs_as_a_spawned_worker_would(standby_on, tiny_run):
    rec = _ready()  # the full warm-up: the demo's engine built and stepped once
    assert set(rec["warm_s"]) == {"imports", "warm_run"}
    if Path("/proc/self/task").is_dir():  # warmed up nice, and stays so for the run it takes
        assert thread_nices(rec["pid"]) == {DEFAULT_NICE}
    run_id = manager.launch(_cfg(tiny_run))
    assert manager.run_info(run_id)["pid"] in (rec["pid"], None)  # None once it has finished
    assert _meta(run_id)["worker"] == "standby"
    st = manager.wait(run_id, timeout_s=120)
    assert st["state"] == "finished" and st["pid"] == rec["pid"], st
    assert wait_until(lambda: not pid_alive(rec["pid"], rec["pid_start"]), 30)
    assert _pool_files(rec["pid"]) == []  # claimed: its record and order are gone
    log = (manager.run_dir(run_id) / "worker.log").read_text()
    assert f"worker {rec['pid']}: a warm standby" in log
    # the same run from a freshly spawned worker records the same metrics (same seed, steps)
    again = manager.launch(_cfg(tiny_run))
    assert _meta(again)["worker"] == "spawned"
    assert manager.wait(again, timeout_s=120)["state"] == "finished"
    with RunReader(manager.run_dir(run_id)) as a, RunReader(manager.run_dir(again)) as b:
        ma, mb = a.metrics(["id_acc", "g_total"]), b.metrics(["id_acc", "g_total"])
    assert len(ma) and ma[["step", "name", "value"]].equals(mb[["step", "name", "value"]])


def test_two_concurrent_launches_never_share_a_standby(standby_on, tiny_run):
    rec = _ready(warm_run=False)
    barrier, ids = threading.Barrier(2), []

    def go() -> None:
        barrier.wait()
        ids.append(manager.launch(_cfg(tiny_run, steps=2)))

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    workers = sorted(_meta(i)["worker"] for i in ids)
    assert workers == ["spawned", "standby"], workers
    states = [manager.wait(i, timeout_s=180) for i in ids]
    assert [s["state"] for s in states] == ["finished", "finished"], states
    assert len({s["pid"] for s in states}) == 2 and rec["pid"] in {s["pid"] for s in states}


def test_only_one_of_many_claims_wins_a_standby(standby_on, tiny_run):
    rec = _ready(warm_run=False)
    dirs = [manager.run_dir(manager.create_run(_cfg(tiny_run, steps=1))) for _ in range(8)]
    barrier, won = threading.Barrier(len(dirs)), []

    def go(d: Path) -> None:
        barrier.wait()
        got = standby.claim(d)
        if got is not None:
            won.append((d, got))

    threads = [threading.Thread(target=go, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and won[0][1] == (rec["pid"], rec["pid_start"]), won
    # the winner's run is run by the standby (its state written by the worker itself)
    assert wait_until(lambda: not pid_alive(rec["pid"], rec["pid_start"]), 120)
    with RunReader(won[0][0]) as r:
        assert r.status()["state"] == "finished"


def test_a_standby_killed_before_its_claim_is_skipped(standby_on, tiny_run):
    rec = _ready(warm_run=False)
    os.kill(rec["pid"], signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(rec["pid"], rec["pid_start"]), 10)
    run_id = manager.launch(_cfg(tiny_run, steps=2))
    assert _meta(run_id)["worker"] == "spawned"
    st = manager.wait(run_id, timeout_s=120)
    assert st["state"] == "finished" and st["pid"] != rec["pid"]
    assert _pool_files(rec["pid"]) == []  # the dead standby's record was removed


def test_a_standby_killed_after_its_claim_fails_the_run(standby_on, tiny_run):
    rec = _ready(warm_run=False)
    run_id = manager.launch(_cfg(tiny_run, steps=400))
    assert wait_until(lambda: (manager.run_info(run_id).get("step") or 0) >= 2, 120)
    os.kill(rec["pid"], signal.SIGKILL)
    assert wait_until(lambda: manager.effective_status(run_id)["state"] == "failed", 10)
    info = manager.run_info(run_id)
    assert f"worker process {rec['pid']} ended" in info["error"]


def test_stop_and_resume_of_a_run_in_standbys(standby_on, tiny_run):
    first = _ready(warm_run=False)
    run_id = manager.launch(_cfg(tiny_run, steps=400))
    assert wait_until(lambda: (manager.run_info(run_id).get("step") or 0) >= 4, 120)
    st = manager.stop(run_id, wait_s=30)
    assert st["state"] == "stopped" and st["pid"] == first["pid"]
    stopped_at = manager.run_info(run_id)["step"]
    assert wait_until(lambda: not pid_alive(first["pid"], first["pid_start"]), 30)
    second = _ready(warm_run=False)
    assert manager.resume(run_id) == second["pid"]  # the resume goes through the standby too
    assert wait_until(lambda: (manager.run_info(run_id).get("step") or 0) > stopped_at + 2, 120)
    assert manager.stop(run_id, wait_s=30)["state"] == "stopped"
    with RunReader(manager.run_dir(run_id)) as r:
        steps = sorted(set(r.metrics(["g_total"])["step"]))
        assert "resumed from the checkpoint" in " ".join(r.events()["message"])
    assert steps == list(range(1, steps[-1] + 1))


def test_an_idle_standby_exits_on_its_own(standby_on):
    rec = _ready(idle_s=1.0, warm_run=False)
    assert wait_until(lambda: not pid_alive(rec["pid"], rec["pid_start"]), 30)
    assert _pool_files(rec["pid"]) == []
    assert f"standby {rec['pid']}: idle for 1 s, exiting" in (
        (standby.pool_dir() / "standby.log").read_text()
    )


def test_ensure_keeps_one_standby_and_replaces_a_claimed_one(standby_on, tiny_run):
    pid = standby.ensure()
    assert pid and standby.ensure() == pid  # at most one per home, also while it warms up
    assert wait_until(lambda: standby.ready_standbys(), READY_S, 0.2)
    assert standby.ensure() == pid
    run_id = manager.launch(_cfg(tiny_run, steps=2))
    assert _meta(run_id)["worker"] == "standby"
    # this process called ensure(): it keeps one ready, the next one waits before warming up
    nxt = standby.ensure()
    assert nxt not in (None, pid) and pid_alive(nxt)
    assert standby.stop_all(wait_s=10) == 1
    assert wait_until(lambda: not pid_alive(nxt), 10)
    assert manager.wait(run_id, timeout_s=120)["state"] == "finished"


def test_a_standby_of_other_code_or_environment_is_not_claimed(standby_on, tiny_run, monkeypatch):
    rec = _ready(warm_run=False)
    monkeypatch.setenv("DFKD_VIZ_DATA", "/nonexistent")  # a worker started now would see it
    run_id = manager.launch(_cfg(tiny_run, steps=1))
    assert _meta(run_id)["worker"] == "spawned"
    assert pid_alive(rec["pid"], rec["pid_start"])  # still ready, for a launcher like itself
    fresh = standby.ensure()  # a keeper replaces it with one that matches
    assert fresh != rec["pid"]
    assert wait_until(lambda: not pid_alive(rec["pid"], rec["pid_start"]), 10)
    assert manager.wait(run_id, timeout_s=120)["state"] == "finished"


def test_switched_off_nothing_is_started_or_claimed(standby_on, tiny_run, monkeypatch):
    rec = _ready(warm_run=False)
    monkeypatch.setenv(standby.STANDBY_ENV, "0")
    assert standby.ensure() is None and standby.claim(standby.pool_dir()) is None
    run_id = manager.launch(_cfg(tiny_run, steps=1))
    assert _meta(run_id)["worker"] == "spawned"
    assert [r["pid"] for r in standby.ready_standbys()] == [rec["pid"]]
    assert manager.wait(run_id, timeout_s=120)["state"] == "finished"


def test_stop_all_ends_a_standby_that_is_still_warming_up(standby_on):
    pid = standby.ensure(delay_s=60.0)
    assert pid and (standby.pool_dir() / "starting.json").exists()
    time.sleep(1.0)  # its signal handler is installed (before that, SIGTERM ends it anyway)
    assert standby.stop_all(wait_s=10) == 1 and not pid_alive(pid)
    assert not (standby.pool_dir() / "starting.json").exists()
