"""Exports: metrics CSV / Parquet hold every metric row of the store, the exported student reloads
and reproduces its recorded accuracy, the HTML reports are self-contained, the CLI's errors are one
sentence (the report opening in Chromium is in test_browser.py)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from dfkd_viz.analysis.metrics import accuracy
from dfkd_viz.data import load_dataset
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs import export, manager
from dfkd_viz.runs.store import RunReader, RunWriter


@pytest.fixture
def finished_run(trained_home, tiny_run):
    run_id = manager.launch(
        {
            "teacher": "mnist-clean",
            "method": "dfq",
            "defense": "atesc",
            "steps": 4,
            "embedding": False,
            **tiny_run,
        }
    )
    st = manager.wait(run_id, timeout_s=300)
    assert st["state"] == "finished", st
    return run_id, manager.run_dir(run_id)


def _cli(*args, env_home):
    import os

    env = dict(os.environ, DFKD_VIZ_HOME=str(env_home))
    return subprocess.run(
        [sys.executable, "-m", "dfkd_viz.cli", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.slow
def test_exports_round_trip(finished_run, tmp_path, trained_home):
    run_id, d = finished_run
    with RunReader(d) as r:
        rows = r.metrics()
        last_acc = r.latest(["id_acc"])["id_acc"]
    csv = pd.read_csv(export.export_metrics(d, tmp_path / "m.csv", "csv"))
    assert list(csv.columns) == ["step", "name", "value", "wall_s"] and len(csv) == len(rows)
    pq = pd.read_parquet(export.export_metrics(d, tmp_path / "m.parquet", "parquet"))
    pd.testing.assert_frame_equal(pq, rows[["step", "name", "value", "wall_s"]])

    path = export.export_student(d, tmp_path / "student.safetensors")
    model, card = export.load_student(path)
    assert json.loads((tmp_path / "student.safetensors.json").read_text()) == card
    assert card["teacher"] == "mnist-clean" and card["defense"] == "atesc" and card["seed"] == 0
    acc = accuracy(model, load_dataset("mnist", "test"))
    assert abs(acc - last_acc) < 1e-6 and abs(card["id_acc"] - last_acc) < 1e-9

    page = export.run_report_html(d)
    assert run_id in page and "Defense decisions" in page and "<script src" not in page
    assert page.count("Plotly.newPlot") >= 5  # curves, losses, agreement, histogram, counts
    assert "data:image/png;base64," in page  # samples embedded, nothing fetched

    out = tmp_path / "cmp.html"
    r = _cli("runs", "compare", run_id, run_id, "--out", str(out), env_home=trained_home)
    assert r.returncode == 0, r.stderr
    assert "Comparison of 2 runs" in out.read_text()
    r = _cli(
        "runs",
        "export",
        run_id,
        "--format",
        "csv",
        "--out",
        str(tmp_path / "c.csv"),
        env_home=trained_home,
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("c.csv")


def test_export_errors_are_clear(home, tmp_path):
    d = home / "runs" / "20260101-000000-dfq-eeee"
    w = RunWriter(d)
    (d / "config.json").write_text(json.dumps({"teacher": "mnist-clean", "method": "dfq"}))
    w.init_status("20260101-000000-dfq-eeee", 4, None)
    w.add_metrics(1, 0.1, {"id_acc": 0.5}, commit=True)
    w.close()
    with pytest.raises(DfkdVizError, match="no checkpoint"):
        export.export_student(d, tmp_path / "s.safetensors")
    assert (
        not (tmp_path / "s.safetensors").exists() and not (tmp_path / "s.safetensors.json").exists()
    )
    with pytest.raises(ValueError, match="unknown export format"):
        export.export_run(d, "xlsx", tmp_path / "x")
    with pytest.raises(ValueError, match="at least two"):
        export.compare_report_html([d])
    assert "Run 20260101-000000-dfq-eeee" in export.run_report_html(d)  # a report of a bare run
    r = _cli("runs", "export", "nope", env_home=home)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "nope" in r.stderr
    r = _cli(
        "runs",
        "export",
        d.name,
        "--format",
        "safetensors",
        "--out",
        str(tmp_path / "s"),
        env_home=home,
    )
    assert r.returncode == 2 and "no checkpoint" in r.stderr and "Traceback" not in r.stderr
    r = _cli("runs", "export", d.name, "--out", "/proc/forbidden/r.html", env_home=home)
    assert r.returncode == 2 and "could not write" in r.stderr


def test_load_student_rejects_foreign_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(DfkdVizError, match="no model card"):
        export.load_student(tmp_path / "x.safetensors")
