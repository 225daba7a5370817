"""Per-class evaluation (issue 24, part 1): the leaf metrics, the evaluation's breakdown, the
run store's ``per_class`` table (and old stores without it), the figures, and a real backdoor run's
record and ``runs show --json``."""

import json
import sqlite3

import numpy as np
import pytest
import torch
from conftest import run_cli

from dfkd_viz import viz
from dfkd_viz.analysis.metrics import class_rates, confusion_matrix
from dfkd_viz.data import load_dataset, make_trigger
from dfkd_viz.distill.evaluation import EvalSuite
from dfkd_viz.models import create_model
from dfkd_viz.runs import export, manager
from dfkd_viz.runs.store import RunReader, RunWriter


def test_confusion_matrix_and_class_rates():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    p = torch.tensor([0, 1, 1, 2, 0, 2])
    m = confusion_matrix(y, p, 4)
    assert m.dtype == np.int64 and m.shape == (4, 4)
    assert m.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0, 0, 0, 0]]
    r = class_rates(y, p == y, 4)
    assert r[:3] == pytest.approx([0.5, 1.0, 2 / 3]) and np.isnan(r[3])  # class 3: no items
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix(y, p[:3], 4)
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        class_rates(y, p == y, 2)


@pytest.fixture(scope="module")
def breakdown():
    """One evaluation of an untrained student against an untrained 'teacher' (seeded), with a
    trigger and an OOD set (the ID set itself)."""
    torch.manual_seed(0)
    test = load_dataset("mnist", "test")
    student, teacher = create_model("lenet5"), create_model("lenet5")
    trig = make_trigger("badnet_grid")
    suite = EvalSuite(test, ood_test=test, trigger=trig, target=3, loc_images=0)
    out = suite.evaluate(student, teacher=teacher, per_class=True)
    return test, suite, student, teacher, out


def test_per_class_accuracies_weighted_by_class_counts_are_the_accuracy(breakdown):
    test, _, _, _, out = breakdown
    pc = out["per_class"]
    counts = np.bincount(test.y.numpy(), minlength=10)
    assert pc.id_count.tolist() == counts.tolist()
    assert (pc.id_acc * counts).sum() / counts.sum() == pytest.approx(out["id_acc"], abs=1e-6)
    assert (pc.ood_acc * pc.ood_count).sum() / pc.ood_count.sum() == pytest.approx(out["ood_acc"])
    # ASR per source class: NaN at the target (no such images), the rest weigh up to the ASR
    assert np.isnan(pc.asr[3]) and pc.asr_count[3] == 0
    ok = ~np.isnan(pc.asr)
    asr = (pc.asr[ok] * pc.asr_count[ok]).sum() / pc.asr_count.sum()
    assert asr == pytest.approx(out["asr"], abs=1e-6)


def test_confusion_rows_sum_to_class_counts(breakdown):
    test, suite, student, teacher, out = breakdown
    pc = out["per_class"]
    counts = np.bincount(test.y.numpy(), minlength=10)
    assert pc.id_confusion.shape == (10, 10) and pc.id_confusion.sum(1).tolist() == counts.tolist()
    assert np.diag(pc.id_confusion) / counts == pytest.approx(pc.id_acc)
    # student vs teacher: rows are the teacher's predictions, columns the student's
    t_pred = suite.teacher_labels(teacher)
    assert (
        pc.teacher_confusion.sum(1).tolist() == np.bincount(t_pred.numpy(), minlength=10).tolist()
    )
    assert pc.teacher_confusion.sum(0).tolist() == pc.id_confusion.sum(0).tolist()
    same = suite.evaluate(teacher, teacher=teacher, per_class=True)["per_class"]
    assert np.count_nonzero(same.teacher_confusion - np.diag(np.diag(same.teacher_confusion))) == 0
    assert same.id_acc == pytest.approx(same.teacher_id_acc)
    # without per_class the evaluation is what it was: scalars only
    assert "per_class" not in suite.evaluate(student)


def test_store_keeps_per_class_arrays_compactly(tmp_path, breakdown):
    pc = breakdown[4]["per_class"]
    w = RunWriter(tmp_path / "r")
    (tmp_path / "r" / "config.json").write_text('{"teacher": "t", "method": "dfq"}')
    w.init_status("r", 4, None)
    w.add_per_class(0, pc.per_run())
    for step in (1, 2, 4):
        w.add_per_class(step, pc.per_eval())
    size = sum(
        len(d) for (d,) in w.con.execute("SELECT data FROM per_class WHERE step = 4").fetchall()
    )
    assert size < 1200, size  # five arrays of one evaluation, K = 10
    w.truncate_after(2)
    w.close()
    with RunReader(tmp_path / "r") as r:
        assert r.per_class_steps() == [1, 2] and r.per_class_steps("asr") == [1, 2]
        assert r.per_class_at(1) == 1 and r.per_class_at(3) == 2 and r.per_class_at(0) == 1
        conf = r.per_class("id_confusion", 2)
        assert conf.dtype == np.int64 and (conf == pc.id_confusion).all()
        assert r.per_class("id_acc") == pytest.approx(pc.id_acc.astype(np.float32))
        assert r.per_class("teacher_id_acc") == pytest.approx(pc.teacher_id_acc, abs=1e-6)
        steps, values = r.per_class_history("asr")
        assert steps == [1, 2] and values.shape == (2, 10) and np.isnan(values[:, 3]).all()
        latest = r.latest_per_class()
    assert len(latest["per_class_id_acc"]) == 10 and latest["per_class_asr"][3] is None
    assert latest["per_class_ood_acc"] == pytest.approx(pc.ood_acc, abs=1e-6)


def test_old_store_without_the_table_reads_as_no_per_class_data(home):
    d = home / "runs" / "20250101-000000-dfq-0ld0"
    w = RunWriter(d)
    (d / "config.json").write_text('{"teacher": "mnist-clean", "method": "dfq", "steps": 2}')
    w.init_status(d.name, 2, None)
    w.add_metrics(2, 0.1, {"id_acc": 0.5}, commit=True)
    w.set_status(state="finished", step=2)
    w.close()
    con = sqlite3.connect(d / "run.db")  # what a version-2 store looks like
    con.execute("DROP TABLE per_class")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with RunReader(d) as r:
        assert r.per_class_steps() == [] and r.per_class("id_acc") is None
        assert r.per_class_at(5) is None and r.per_class_history()[0] == []
        assert r.latest_per_class() == {"per_class_id_acc": None}
    info = manager.run_info(d.name)
    assert info["id_acc"] == 0.5 and info["per_class_id_acc"] is None
    assert "per_class_asr" not in info
    RunWriter(d).close()  # a writer that opens it (a resume) adds the table
    with RunReader(d) as r:
        assert r.meta()["schema_version"] == "3" and r.per_class_steps() == []


def test_per_class_figures():
    rng = np.random.default_rng(0)
    vals = rng.random((5, 10))
    vals[:, 3] = np.nan
    fig = viz.per_class_heatmap([1, 2, 4, 6, 8], vals, teacher=rng.random(10), metric="asr")
    heat, ref = fig.data
    assert heat.type == "heatmap" and np.shape(heat.z) == (10, 5) and heat.z[3][0] is None
    assert list(ref.x) == ["teacher"] and np.shape(ref.z) == (10, 1) and ref.xaxis == "x2"
    assert "source class" in fig.layout.yaxis.title.text
    many = viz.per_class_heatmap(list(range(1, 1001)), rng.random((1000, 10)), max_columns=100)
    assert len(many.data) == 1 and len(many.data[0].x) <= 101 and many.data[0].x[-1] == 1000
    with pytest.raises(ValueError, match="values must be"):
        viz.per_class_heatmap([1, 2], vals)
    m = rng.integers(0, 50, (10, 10))
    m[7] = 0
    cm = viz.confusion_heatmap(m, "teacher prediction", step=12)
    assert "step 12" in cm.layout.title.text and cm.layout.yaxis.title.text == "teacher prediction"
    z = np.array(cm.data[0].z, dtype=float)
    assert np.nansum(z, 1)[:7] == pytest.approx(100.0, abs=0.05) and np.isnan(z[7]).all()
    with pytest.raises(ValueError, match="matrix must be"):
        viz.confusion_heatmap(np.zeros((3, 4)))


@pytest.mark.slow
def test_backdoor_run_records_per_class_accuracy_and_asr(trained_home, tiny_run):
    """A run with a trigger (the clean teacher, badnet grid, target 0): every evaluation has
    per-class ID / OOD accuracy, per-class ASR and both confusion matrices, and ``runs show
    --json`` reports the last one."""
    run_id = manager.launch(
        {
            "teacher": "mnist-clean",
            "method": "dfq",
            "steps": 4,
            "trigger": "badnet_grid",
            "target": 0,
            **tiny_run,
        }
    )
    assert manager.wait(run_id, timeout_s=180)["state"] == "finished"
    with RunReader(manager.run_dir(run_id)) as r:
        wide = r.metrics_wide(["id_acc", "ood_acc", "asr"]).set_index("step")
        evaluated = list(wide.index)
        assert evaluated == [1, 2, 4]
        for name in ("id_acc", "ood_acc", "asr", "id_confusion", "teacher_confusion"):
            assert r.per_class_steps(name) == evaluated, name
        counts = r.per_class("id_count")
        t_acc = r.per_class("teacher_id_acc")
        assert t_acc.shape == (10,) and 0.8 < (t_acc * counts).sum() / counts.sum() <= 1
        for step in evaluated:
            acc, conf = r.per_class("id_acc", step), r.per_class("id_confusion", step)
            assert conf.sum(1).tolist() == counts.tolist()
            weighted = (acc * counts).sum() / counts.sum()
            assert weighted == pytest.approx(wide.loc[step, "id_acc"], abs=1e-5)
            asr, n = r.per_class("asr", step), r.per_class("asr_count")
            assert np.isnan(asr[0]) and n[0] == 0
            ok = ~np.isnan(asr)
            assert (asr[ok] * n[ok]).sum() / n.sum() == pytest.approx(
                wide.loc[step, "asr"], abs=1e-5
            )
            assert r.per_class("teacher_confusion", step).sum() == counts.sum()
        last_acc, last_asr = r.per_class("id_acc", 4), r.per_class("asr", 4)
    res = run_cli("runs", "show", run_id, "--json")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["per_class_id_acc"] == pytest.approx(last_acc.tolist(), abs=1e-6)
    assert shown["per_class_asr"][0] is None
    assert shown["per_class_asr"][1:] == pytest.approx(last_asr[1:].tolist(), abs=1e-6)
    assert len(shown["per_class_ood_acc"]) == 10
    text = run_cli("runs", "show", run_id).stdout
    assert "per_class_id_acc" in text and "0: " in text
    page = export.run_report_html(manager.run_dir(run_id))  # the report draws both heatmaps
    assert "Student ID accuracy per class" in page
    assert "Attack success rate per source class" in page
