"""Shared fixtures and helpers. Tests never touch the user's cache: DFKD_VIZ_HOME points at temp
dirs.

- ``wait_until(pred, timeout)``: poll a condition (background jobs, runs, sweeps).
- ``CLI`` / ``run_cli(*args)``: the installed ``dfkd-viz`` command, as a user runs it.

- ``zoo_home`` (session): a home whose zoo holds the trained ``mnist-clean`` teacher (≈7 s once).
- every figure built during the tests is validated by plotly (``DFKD_VIZ_VALIDATE_FIGURES=1``).
- ``home`` (every test, autouse): a fresh DFKD_VIZ_HOME whose ``teachers/`` is a copy-free link to
  the session zoo when the test asks for ``trained_home``; otherwise empty.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

# every figure the suite builds (views, pages, reports, servers it starts) is validated by plotly,
# which the app skips for speed (dfkd_viz.viz._base.as_figure)
os.environ["DFKD_VIZ_VALIDATE_FIGURES"] = "1"

CLI = [str(Path(sys.executable).with_name("dfkd-viz"))]


def run_cli(
    *args: str, timeout: float = 180, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``dfkd-viz ARGS`` in a subprocess (text output captured; the current environment,
    hence the test's DFKD_VIZ_HOME, unless ``env`` is given)."""
    return subprocess.run(
        CLI + list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or os.environ.copy(),
    )


def wait_until(pred: Callable[[], object], timeout: float = 60.0, poll: float = 0.1) -> bool:
    """Poll ``pred`` every ``poll`` seconds until it is truthy (True) or ``timeout`` passes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return False


@contextlib.contextmanager
def home_env(path: Path):
    """Point DFKD_VIZ_HOME at ``path`` for the ``with`` block (for fixtures wider than a test,
    which cannot use ``monkeypatch``), then restore it (or unset it)."""
    old = os.environ.get("DFKD_VIZ_HOME")
    os.environ["DFKD_VIZ_HOME"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            os.environ.pop("DFKD_VIZ_HOME", None)
        else:
            os.environ["DFKD_VIZ_HOME"] = old


@pytest.fixture(scope="session")
def zoo_home(tmp_path_factory) -> Path:
    """A DFKD_VIZ_HOME with the default ``mnist-clean`` teacher trained (once per session)."""
    with home_env(tmp_path_factory.mktemp("zoo_home")) as home:
        from dfkd_viz.teachers import train_teacher

        train_teacher("mnist-clean")
    return home


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Iterator[Path]:
    """A fresh, empty DFKD_VIZ_HOME for each test, with warm standby workers switched off
    (``DFKD_VIZ_STANDBY=0``: the app's pages would start one per test; tests of standbys and
    the browser tests' server switch them on). Reference-map jobs and unclaimed standbys
    started in it are stopped afterwards."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("DFKD_VIZ_HOME", str(h))
    monkeypatch.setenv("DFKD_VIZ_STANDBY", "0")
    yield h
    from dfkd_viz.jobs import stop_job
    from dfkd_viz.runs import standby

    # standbys nobody claimed (a claimed one is a run's worker: runs end on their own)
    with contextlib.suppress(Exception):
        standby.stop_all(wait_s=5.0)
    # reference-map jobs that runs of this test started (and workers waiting for them) end here
    for rec in (h / "maps").glob(".*.progress.json"):
        with contextlib.suppress(Exception):
            stop_job(rec, wait_s=5.0)


@pytest.fixture
def trained_home(home: Path, zoo_home: Path) -> Path:
    """The per-test home with the session's trained teachers copied in (files are small)."""
    shutil.copytree(zoo_home / "teachers", home / "teachers", dirs_exist_ok=True)
    return home


def pytest_collection_modifyitems(config, items):
    # run the slow, process-spawning tests last so quick failures show first
    items.sort(key=lambda it: ("browser" in it.keywords, "slow" in it.keywords))


@pytest.fixture
def tiny_run() -> dict:
    """Run settings for real worker runs in tests: small batches, frequent evaluations,
    snapshots and checkpoints, one torch thread (merge with teacher, method and steps)."""
    return {
        "batch_size": 32,
        "eval_every": 2,
        "snapshot_every": 2,
        "snapshot_size": 8,
        "checkpoint_every": 2,
        "threads": 1,
    }
