"""Sweeps: validation, the runner over real (tiny) worker runs, stopping and resuming, the
stability summary, the CLI and the Sweeps page."""

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CLI, wait_until
from streamlit.testing.v1 import AppTest

from dfkd_viz.errors import ConfigError, DfkdVizError, UnknownNameError
from dfkd_viz.runs import manager
from dfkd_viz.runs import sweep as sw

ROOT = Path(__file__).resolve().parent.parent


def _spec(tiny_run, **over):
    base = {k: v for k, v in tiny_run.items() if k != "threads"}
    spec = {
        "teachers": ["mnist-clean"],
        "methods": ["dfq", "tadfkd"],
        "seeds": [0, 1],
        "steps": 3,
        "threads": 1,
        "base": base,
    }
    spec.update(over)
    return spec


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"methods": ["dfq", "nope"]}, "mnist-clean × nope: method must be one of"),
        ({"methods": ["dfq+nope"]}, "defense must be one of"),
        ({"teachers": ["nope"]}, "unknown teacher 'nope'"),
        ({"seeds": [0, 0]}, "seeds: values must be unique"),
        ({"teachers": []}, "teachers"),
        ({"steps": 3, "seconds": 5.0}, "either steps or seconds"),
        ({"steps": 0}, "steps must be ≥ 1"),
        ({"base": {"batch_size": 1}}, "batch_size must be ≥ 2"),
    ],
)
def test_invalid_specs_are_one_sentence(trained_home, tiny_run, over, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        sw.create_sweep(_spec(tiny_run, **over))
    assert not list(sw.sweeps_dir().iterdir())  # nothing half-created


def test_cells_are_seed_major_and_configs_complete(tiny_run):
    spec = sw.SweepSpec(**_spec(tiny_run, teachers=["a", "b"]))
    cells = spec.cells()
    assert [c["seed"] for c in cells] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert cells[:2] == [
        {"teacher": "a", "method": "dfq", "seed": 0},
        {"teacher": "a", "method": "tadfkd", "seed": 0},
    ]
    cfg = spec.run_config(cells[1])
    assert cfg["steps"] == 3 and cfg["threads"] == 1 and cfg["embedding"] is False
    assert cfg["batch_size"] == tiny_run["batch_size"] and "defense" not in cfg
    both = sw.SweepSpec(**_spec(tiny_run, methods=["dfq+ta-select"]))
    cfg = both.run_config(both.cells()[0])
    assert (cfg["method"], cfg["defense"]) == ("dfq", "ta-select")


def test_unknown_and_malformed_sweep_ids():
    with pytest.raises(UnknownNameError):
        sw.load_sweep("sw-nope")
    with pytest.raises(UnknownNameError):
        sw.load_sweep("../etc")


def test_summary_ranks_by_the_worst_case():
    df = pd.DataFrame(
        {
            "teacher": ["a", "a", "b", "b", "a", "b"],
            "method": ["m1", "m1", "m1", "m1", "m2", "m2"],
            "seed": [0, 1, 0, 1, 0, 0],
            "status": ["finished"] * 5 + ["running"],
            "rel_acc": [0.99, 0.97, 0.60, 0.90, 0.95, None],
        }
    )
    s = sw.summarize(df)
    m1 = s["methods"]["m1"]
    assert m1["n"] == 4 and m1["min"] == pytest.approx(60.0)
    assert m1["mean"] == pytest.approx(np.mean([99, 97, 60, 90]))
    assert m1["worst"] == {"teacher": "b", "seed": 0}
    assert s["methods"]["m2"]["n"] == 1  # the running cell does not count
    assert s["best_method"] == "m2" and s["worst_method"] == "m1"
    cell = next(c for c in s["cells"] if c["teacher"] == "b" and c["method"] == "m1")
    assert cell["mean"] == pytest.approx(75.0) and cell["std"] > 0


@pytest.mark.slow
def test_sweep_runs_in_background_stops_and_resumes(trained_home, tiny_run):
    # a wall-clock budget: the second run is surely still going when the stop arrives
    sweep_id = sw.create_sweep(_spec(tiny_run, seeds=[0], steps=None, seconds=4.0))
    assert sw.sweep_status(sweep_id)["state"] == "stopped"  # created, not started
    sw.start_runner(sweep_id)
    assert sw.runner_alive(sweep_id)
    with pytest.raises(DfkdVizError, match="already running"):
        sw.start_runner(sweep_id)
    # let the first cell finish, then stop the sweep while later cells are pending
    assert wait_until(lambda: sw.sweep_status(sweep_id)["done"] >= 1)
    sw.stop_sweep(sweep_id, wait_s=60)
    assert not sw.runner_alive(sweep_id)
    st = sw.sweep_status(sweep_id)
    assert st["state"] == "stopped" and st["done"] == 1 and st["total"] == 2
    _, cells = sw.load_sweep(sweep_id)
    first_run = cells[0]["run_id"]
    # resume in this process: finished cells are skipped, the rest run, step numbers continue
    assert sw.run_sweep(sweep_id) == "finished"
    df = sw.sweep_results(sweep_id)
    assert (df["status"] == "finished").all() and (df["step"] >= 2).all()
    assert df.iloc[0]["run_id"] == first_run  # not distilled again
    assert df["run_id"].nunique() == 2
    assert len(manager.list_runs()) == 2  # every cell is an ordinary run, none duplicated
    assert df["rel_acc"].between(0, 1.2).all()
    assert set(
        df[df["method"] == "tadfkd"]["run_id"].map(
            lambda r: manager.run_info(r)["config"]["defense"]
        )
    ) == {"ta-select"}
    assert sw.sweep_status(sweep_id)["state"] == "finished"
    # a deleted run makes its cell pending again: the sweep distils it anew
    manager.delete(df.iloc[-1]["run_id"])
    assert sw.sweep_results(sweep_id).iloc[-1]["status"] == "missing"
    assert sw.run_sweep(sweep_id) == "finished"
    assert (sw.sweep_results(sweep_id)["status"] == "finished").all()

    # the page shows the results: metrics per method, the box plot, the table
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/sweeps.py")
    at.query_params["sweep"] = sweep_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert {m.label for m in at.metric} == {"dfq: worst case", "tadfkd: worst case"}
    assert len(at.get("plotly_chart")) == 2

    # and the CLI reports it
    r = subprocess.run(
        [*CLI, "sweeps", "show", sweep_id, "--json"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout.strip().splitlines()[-1])
    assert rep["state"] == "finished" and rep["done"] == 2
    assert set(rep["summary"]["methods"]) == {"dfq", "tadfkd"}


def test_sweeps_page_without_sweeps_offers_the_form():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/sweeps.py")
    at.run()
    assert not at.exception and not at.error
    assert any("No sweeps yet" in i.value for i in at.info)


def test_cli_sweep_rejects_bad_input_in_one_sentence(trained_home):
    r = subprocess.run(
        [*CLI, "sweep", "--teachers", "mnist-clean", "--methods", "nope", "--steps", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert "mnist-clean × nope: method must be one of" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*CLI, "sweep", "--resume", "sw-nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "no sweep 'sw-nope'" in r.stderr


def test_a_second_runner_is_turned_away_without_touching_the_first(tiny_run):
    sweep_id = sw.create_sweep(_spec(tiny_run))  # an untrained zoo teacher validates too
    d = sw.sweep_dir(sweep_id)
    (d / "runner.json").write_text(json.dumps({"pid": 12345, "pid_start": "x"}))
    with sw._exclusive(d):  # as a live runner holds it
        with pytest.raises(sw.SweepBusyError):
            sw.run_sweep(sweep_id)
        old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        try:
            assert sw.main([sweep_id]) == 2
        finally:  # main() installs the runner's handlers: give pytest its own back
            signal.signal(signal.SIGINT, old[0])
            signal.signal(signal.SIGTERM, old[1])
    assert json.loads((d / "runner.json").read_text()) == {"pid": 12345, "pid_start": "x"}
    assert all(c["run_id"] is None for c in sw.load_sweep(sweep_id)[1])  # nothing started
