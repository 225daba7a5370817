"""Faults: a worker killed mid-run, a full disk under the writer, half-written run directories.
Real detached worker processes with tiny budgets."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
from conftest import wait_until

from dfkd_viz.jobs import process_start_time, spawn_detached
from dfkd_viz.runs import manager
from dfkd_viz.runs.store import RunReader, RunWriter

pytestmark = pytest.mark.slow


def _step(run_id: str) -> int:
    return manager.run_info(run_id).get("step") or 0


def test_sigkill_then_resume_continues_from_the_last_checkpoint(trained_home, tiny_run):
    run_id = manager.launch(
        {"teacher": "mnist-clean", "method": "dfq", "steps": 400, "embedding": False, **tiny_run}
    )
    assert wait_until(lambda: _step(run_id) >= 7, 90.0)
    pid = manager.run_info(run_id)["pid"]
    with RunReader(manager.run_dir(run_id)) as r:
        before = r.metrics(["id_acc"])
        last_ckpt = r.checkpoints()[-1]["step"]
    os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    assert wait_until(lambda: manager.effective_status(run_id)["state"] == "failed", 5.0)
    assert time.time() - t0 < 5.0
    with RunReader(manager.run_dir(run_id)) as r:
        after = r.metrics(["id_acc"])
    assert len(after) >= len(before)  # every committed metric survives the kill
    manager.resume(run_id)
    assert wait_until(lambda: _step(run_id) >= last_ckpt + 4, 90.0)
    manager.stop(run_id, wait_s=30)
    with RunReader(manager.run_dir(run_id)) as r:
        steps = sorted(set(r.metrics(["g_total"])["step"]))
        events = " ".join(r.events()["message"])
    assert steps == list(range(1, steps[-1] + 1)), "step numbers must continue across the kill"
    assert f"resumed from the checkpoint at step {last_ckpt}" in events
    assert "killed or crashed" in events


def _spawn_with_file_size_limit(run_id: str, limit_bytes: int) -> None:
    """Start the run's worker as the manager does, but in a process whose files cannot grow past
    ``limit_bytes`` (RLIMIT_FSIZE: a write beyond it fails with EFBIG, as on a full disk)."""
    d = manager.run_dir(run_id)
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))\n"
        "from dfkd_viz.runs.worker import main\n"
        f"sys.exit(main([{str(d)!r}]))\n"
    )
    proc = spawn_detached([sys.executable, "-c", code], d / "worker.log", cwd=d)
    w = RunWriter(d)
    w.mark_spawned(proc.pid, process_start_time(proc.pid))
    w.close()


@pytest.mark.parametrize(
    ("limit", "checkpoint_every", "needle"),
    [
        # a checkpoint (MBs) is the first file to hit the limit: the worker records why
        (1_000_000, 4, ("no room to write step-0000004.safetensors",)),
        # the database itself cannot grow: the failed write is rolled back, and the worker records
        # why if the status row still fits; otherwise the manager sees a dead worker and says so
        (120_000, 1000, ("the run store could not grow", "killed or crashed")),
    ],
)
def test_a_full_disk_fails_the_run_cleanly(trained_home, tiny_run, limit, checkpoint_every, needle):
    cfg = {**tiny_run, "checkpoint_every": checkpoint_every, "embedding": False}
    run_id = manager.create_run({"teacher": "mnist-clean", "method": "dfq", "steps": 40, **cfg})
    _spawn_with_file_size_limit(run_id, limit)
    st = manager.wait(run_id, timeout_s=120)
    assert st["state"] == "failed" and any(n in st["error"] for n in needle), st
    assert "\n" not in st["error"]
    # the store stays readable and consistent: listed as failed (not corrupt), metrics intact
    listed = next(r for r in manager.list_runs() if r["run_id"] == run_id)
    assert listed["status"] == "failed"
    with RunReader(manager.run_dir(run_id)) as r:
        m = r.metrics(["g_total"])
        assert len(m) >= 1 and list(m["step"]) == sorted(m["step"])
        assert r.snapshot_steps() and len(r.samples(r.snapshot_steps()[-1])) == 8
    # with room again, resume carries on to the end of the budget
    manager.resume(run_id)
    st = manager.wait(run_id, timeout_s=240)
    assert st["state"] == "finished" and st["step"] == 40, st


def test_half_written_run_directories_are_listed_as_corrupt(trained_home, tiny_run):
    good = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 2, **tiny_run})
    manager.wait(good, timeout_s=120)
    runs = trained_home / "runs"
    (runs / "20260101-000000-dfq-aaaa").mkdir()  # created, nothing written yet
    cfg_only = runs / "20260101-000000-dfq-bbbb"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text(json.dumps({"teacher": "mnist-clean"}))
    no_cfg = runs / "20260101-000000-dfq-cccc"
    no_cfg.mkdir()
    RunWriter(no_cfg).close()  # a database, no config.json
    torn = runs / "20260101-000000-dfq-dddd"
    torn.mkdir()
    (torn / "config.json").write_text('{"teacher": "mnist-')
    data = (manager.run_dir(good) / "run.db").read_bytes()
    (torn / "run.db").write_bytes(data[: len(data) // 3])  # a torn copy of a real database
    (runs / "not-a-run.txt").write_text("ignored")
    listed = {r["run_id"]: r for r in manager.list_runs()}
    assert listed[good]["status"] == "finished"
    for rid in ("aaaa", "bbbb", "cccc", "dddd"):
        r = listed[f"20260101-000000-dfq-{rid}"]
        assert r["status"] == "corrupt" and r["error"] and "\n" not in r["error"], r
    # the CLI lists them too, without a traceback
    from conftest import run_cli as run

    out = run("runs", "list", "--json")
    assert out.returncode == 0 and "Traceback" not in out.stderr
    assert sum(r["status"] == "corrupt" for r in json.loads(out.stdout)) == 4
