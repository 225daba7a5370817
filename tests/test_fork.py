"""Forks ("what if I had switched this defense on at step N?"): checkpoint thinning, the fork's
store and lineage, the defense's state, the parent left untouched, the CLI, bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import run_cli, wait_until

from dfkd_viz.errors import ConfigError, RunStateError, UnknownNameError
from dfkd_viz.runs import manager
from dfkd_viz.runs.checkpoint import checkpoints_to_drop
from dfkd_viz.runs.config import parse_param_pairs
from dfkd_viz.runs.store import RunReader


# ---------------------------------------------------------------- checkpoint thinning (pure)
def test_checkpoints_are_kept_until_the_limit_then_thinned_evenly():
    assert checkpoints_to_drop([20, 40, 60], every=20, keep=3) == []
    # 50 checkpoints every 20 steps, keep 25: every 40th step stays, the newest too
    steps = list(range(20, 1001, 20))
    drop = checkpoints_to_drop(steps, every=20, keep=25)
    kept = sorted(set(steps) - set(drop))
    assert kept == list(range(40, 1001, 40))
    # an off-grid final checkpoint (a stop at step 213) is the newest: it stays
    kept = sorted(set([*steps[:20], 413]) - set(checkpoints_to_drop([*steps[:20], 413], 20, 8)))
    assert kept[-1] == 413 and len(kept) <= 8
    assert all(s % 80 == 0 for s in kept[:-1])
    assert checkpoints_to_drop([5, 10, 15], every=5, keep=1) == [5, 10]


def test_param_pairs_from_text_and_clear_errors():
    assert parse_param_pairs("lr_s=0.05, alpha=[1, 2]\nname=abc") == {
        "lr_s": 0.05,
        "alpha": [1, 2],
        "name": "abc",
    }
    assert parse_param_pairs("") == {}
    with pytest.raises(ConfigError, match="takes KEY=VALUE"):
        parse_param_pairs("lr_s")


# ---------------------------------------------------------------- forks of real runs
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finished_run(tiny_run: dict, steps: int = 12) -> str:
    cfg = {
        **tiny_run,
        "teacher": "mnist-clean",
        "method": "dfq",
        "steps": steps,
        "embedding": False,
        "seed": 3,
    }
    run_id = manager.launch(cfg)
    st = manager.wait(run_id, timeout_s=300)
    assert st["state"] == "finished", st
    return run_id


def test_fork_with_another_defense_finishes_the_budget_and_leaves_the_parent(
    trained_home, tiny_run
):
    parent = _finished_run(tiny_run)
    pdir = manager.run_dir(parent)
    with RunReader(pdir) as r:
        before_metrics = r.metrics()
        before_ckpts = r.checkpoints()
        before_status = r.status()
    before_files = {p.name: _digest(p) for p in (pdir / "checkpoints").iterdir()}
    before_cfg = (pdir / "config.json").read_text()

    out = manager.fork(parent, 7, defense="ta-select", defense_params={"threshold": 0.6})
    assert out["fork_step"] == 6 and out["requested_step"] == 7 and out["parent_run"] == parent
    st = manager.wait(out["run_id"], timeout_s=300)
    assert st["state"] == "finished", st
    assert st["step"] == 12  # the parent's remaining budget: steps 7 … 12

    info = manager.run_info(out["run_id"])
    assert info["parent_run"] == parent and info["fork_step"] == 6
    assert info["config"]["defense"] == "ta-select"
    assert info["config"]["defense_params"] == {"threshold": 0.6}
    assert {k: v for k, v in info["config"].items() if k not in ("defense", "defense_params")} == {
        k: v for k, v in json.loads(before_cfg).items() if k not in ("defense", "defense_params")
    }
    with RunReader(manager.run_dir(out["run_id"])) as r:
        m = r.metrics()
        events = " ".join(r.events()["message"])
        snaps = r.snapshot_steps()
        decided = {s: r.samples(s)["keep"].notna().all() for s in snaps}
    # the parent's history up to the fork step, then the fork's own steps, continuous
    upto = before_metrics[before_metrics["step"] <= 6].reset_index(drop=True)
    mine = m[m["step"] <= 6].reset_index(drop=True)
    assert mine[["step", "name", "value"]].equals(upto[["step", "name", "value"]])
    assert sorted(set(m["step"])) == list(range(1, 13))
    assert snaps[-1] == 12
    assert f"forked from {parent} at step 6 (asked for 7" in events
    assert "defense ta-select starts fresh here (none before)" in events
    # the fork ran the new defense: its keep/reject decisions start after the fork step
    assert decided == {s: s > 6 for s in snaps}

    # the parent is untouched: same records, checkpoints, files and config
    with RunReader(pdir) as r:
        assert r.metrics().equals(before_metrics)
        assert r.checkpoints() == before_ckpts
        assert r.status()["state"] == before_status["state"] == "finished"
    assert {p.name: _digest(p) for p in (pdir / "checkpoints").iterdir()} == before_files
    assert (pdir / "config.json").read_text() == before_cfg
    assert manager.run_info(parent)["parent_run"] is None


def test_fork_with_the_same_defense_keeps_its_state_and_runs_via_cli(trained_home, tiny_run):
    parent = _finished_run(tiny_run, steps=8)
    res = run_cli("runs", "fork", parent, "--step", "4", "--method-param", "lr_s=0.05", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["fork_step"] == 4 and out["parent_run"] == parent
    st = manager.wait(out["run_id"], timeout_s=300)
    assert st["state"] == "finished", st
    show = json.loads(run_cli("runs", "show", out["run_id"], "--json").stdout)
    assert show["parent_run"] == parent and show["fork_step"] == 4
    assert show["config"]["method_params"]["lr_s"] == 0.05
    with RunReader(manager.run_dir(out["run_id"])) as r:
        events = " ".join(r.events()["message"])
    assert "lr_s=0.05" in events and "starts fresh" not in events


def test_fork_bad_input_gets_one_sentence_and_leaves_nothing(trained_home, tiny_run):
    parent = _finished_run(tiny_run, steps=4)
    before = sorted(p.name for p in manager.run_dir(parent).parent.iterdir())
    with pytest.raises(RunStateError, match="no checkpoint at or before step 1"):
        manager.fork(parent, 1)
    with pytest.raises(ConfigError, match="defense must be one of"):
        manager.fork(parent, 4, defense="no-such-defense")
    with pytest.raises(ConfigError, match="defense_params"):
        manager.fork(parent, 4, defense="ta-select", defense_params={"threshold": "x"})
    with pytest.raises(UnknownNameError):
        manager.fork("20990101-000000-dfq-0000", 4)
    assert sorted(p.name for p in manager.run_dir(parent).parent.iterdir()) == before
    res = run_cli("runs", "fork", parent, "--step", "2", "--defense", "nope")
    assert res.returncode == 2 and "defense must be one of" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_fork_of_a_running_parent_and_a_thinned_checkpoint(trained_home, tiny_run, monkeypatch):

    cfg = {
        **tiny_run,
        "teacher": "mnist-clean",
        "method": "dfq",
        "steps": 60,
        "embedding": False,
        "keep_checkpoints": 4,
    }
    parent = manager.launch(cfg)
    assert wait_until(
        lambda: len(RunReader(manager.run_dir(parent)).checkpoints()) >= 2, timeout=120
    )
    ck = RunReader(manager.run_dir(parent)).checkpoints()
    out = manager.fork(parent, ck[-1]["step"], start=False)  # while the parent writes
    assert out["fork_step"] == ck[-1]["step"]
    assert manager.wait(parent, timeout_s=300)["state"] == "finished"
    with RunReader(manager.run_dir(parent)) as r:
        kept = [c["step"] for c in r.checkpoints()]
    assert len(kept) <= 4 and kept[-1] == 60
    # the fork's checkpoint is its own hard link: the parent's thinning did not take it
    with RunReader(manager.run_dir(out["run_id"])) as r:
        (only,) = r.checkpoints()
    assert Path(only["path"]).exists() and only["step"] == out["fork_step"]


# ---------------------------------------------------------------- the Live page's form
def test_live_fork_from_here_starts_a_fork_at_the_slider_step(trained_home, tiny_run, home):
    from test_app import _assert_clean, _run_page

    parent = _finished_run(tiny_run, steps=8)
    at = _run_page("pages/live.py", parent)
    _assert_clean(at)
    at.select_slider(key="snap_step").set_value(4).run()
    assert any(e.label.startswith("Fork from here · step 4") for e in at.expander)
    at.selectbox(key=f"fork_defense_{parent}").set_value("ta-select")
    at.text_input(key=f"fork_dp_{parent}").set_value("threshold=0.6")
    next(b for b in at.button if b.label == "Start the fork").click().run()
    assert not at.exception, [e.value for e in at.exception]
    forks = [
        i for i in manager.list_runs() if i.get("parent_run") == parent and i["fork_step"] == 4
    ]
    assert len(forks) == 1
    assert forks[0]["config"]["defense"] == "ta-select"
    assert forks[0]["config"]["defense_params"] == {"threshold": 0.6}
    assert manager.wait(forks[0]["run_id"], timeout_s=300)["state"] == "finished"
    # the fork's own Live page names its parent and offers the comparison
    at = _run_page("pages/live.py", forks[0]["run_id"])
    _assert_clean(at)
    assert any(f"Fork of `{parent}` at step 4" in c.value for c in at.caption)
    assert any(b.label == "Compare with parent" for b in at.button)
    # a malformed parameter is one sentence on the page, and nothing starts
    at = _run_page("pages/live.py", parent)
    at.text_input(key=f"fork_mp_{parent}").set_value("lr_s")
    next(b for b in at.button if b.label == "Start the fork").click().run()
    assert any("takes KEY=VALUE" in e.value for e in at.error)
    assert len([i for i in manager.list_runs() if i.get("parent_run") == parent]) == 1
