"""Every page under streamlit.testing.v1.AppTest: no runs, a running run, a finished run, a failed
run, a run with defense decisions. The stores are written directly (no training), so these are fast."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from dfkd_viz.distill.snapshot import Snapshot
from dfkd_viz.runs.store import RunWriter

ROOT = Path(__file__).resolve().parent.parent

PAGES = [
    "pages/home.py",
    "pages/setup.py",
    "pages/live.py",
    "pages/runs.py",
    "pages/compare.py",
    "pages/decisions.py",
    "pages/embeddings.py",
    "pages/saliency.py",
    "pages/sweeps.py",
    "pages/out-of-domain.py",
    "pages/teachers.py",
    "pages/audit.py",
]


def _make_run(home, run_id, state="finished", defense="none", steps=6, pid=None, error=None):
    d = home / "runs" / run_id
    w = RunWriter(d)
    cfg = {
        "teacher": "mnist-clean",
        "method": "dfq",
        "defense": defense,
        "steps": steps,
        "seed": 0,
        "device": "cpu",
    }
    (d / "config.json").write_text(json.dumps(cfg))
    w.init_status(run_id, steps, None)
    rng = np.random.default_rng(0)
    for s in range(1, steps + 1):
        w.add_metrics(
            s, s * 0.2, {"g_adv": -1.0 / s, "g_bn": 0.5, "s_kd": 1.0 / s, "agreement": 0.5 + s / 20}
        )
        if s % 2 == 0:
            w.add_metrics(s, s * 0.2, {"id_acc": 0.5 + s / 20, "ood_acc": 0.3, "it_s": 5.0})
            n = 8
            snap = Snapshot(
                step=s,
                images=rng.integers(0, 256, (n, 1, 28, 28)).astype(np.uint8),
                teacher_label=rng.integers(0, 10, n),
                confidence=rng.random(n),
                student_label=rng.integers(0, 10, n),
                score=rng.random(n) if defense != "none" else None,
                keep=(rng.random(n) > 0.5) if defense != "none" else None,
                threshold=0.5 if defense != "none" else None,
            )
            if defense == "ta-select":  # TA-DFKD's selection records its mixture per snapshot
                snap.artifacts = {
                    "ta_norm_loss": rng.random(n),
                    "ta_gmm": np.array([[0.1, 0.7], [0.01, 0.04], [0.6, 0.4]]),
                }
            w.add_snapshot(snap, s * 0.2, "score")
            w.set_embedding(s, rng.normal(size=(n, 2)))
            w.add_metrics(s, s * 0.2, {"ood_likeness": 0.1 * s}, commit=True)
    n_ref = 30
    w.set_reference(
        np.array(["id"] * 20 + ["ood"] * 10),
        rng.integers(0, 10, n_ref),
        rng.integers(0, 256, (n_ref, 1, 28, 28)).astype(np.uint8),
        rng.normal(size=(n_ref, 2)),
    )
    w.flush()
    w.set_status(
        state=state,
        step=steps,
        wall_s=steps * 0.2,
        progress=1.0 if state == "finished" else 0.5,
        pid=pid,
        error=error,
        device="cpu",
    )
    w.close()
    return run_id


def _run_page(page, run_id=None, timeout=60):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.run()
    if page != "pages/home.py":
        at.switch_page(page)
    if run_id:
        at.query_params["run"] = run_id
    at.run()
    return at


def _assert_clean(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_with_no_runs(page):
    at = _run_page(page)
    _assert_clean(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_with_a_finished_run(page, home):
    rid = _make_run(home, "20260101-000000-dfq-aaaa")
    at = _run_page(page, rid)
    _assert_clean(at)
    if page == "pages/live.py":
        assert any("50.0%" in m.value or "80.0%" in m.value for m in at.metric)
        assert len(at.get("plotly_chart")) >= 4


def test_live_page_for_a_running_run(home):
    # a real live process stands in for the worker, so the run is "running" by liveness
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        rid = _make_run(home, "20260101-000000-dfq-bbbb", state="running", pid=proc.pid)
        at = _run_page("pages/live.py", rid)
        _assert_clean(at)
        assert any(b.label == "Stop" for b in at.button)
        assert at.get("progress")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def test_live_reads_a_running_run_incrementally(home):
    """Each poll reads the rows from the last step on: a step whose losses came before its
    evaluation gets the evaluation on the next poll, and a history cut back (a resume from an
    older checkpoint) is read again in full."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        rid = _make_run(home, "20260101-000000-dfq-cccc", "running", steps=10, pid=proc.pid)
        at = _run_page("pages/live.py", rid)  # steps 1-10, evaluations at the even ones

        def curves():
            _assert_clean(at)
            figs = _figures(at)
            acc = figs["Student accuracy and attack success"]["data"][0]["x"]
            gen = figs["Generator loss terms (weighted)"]["data"][0]["x"]
            return acc, gen

        acc, gen = curves()
        assert acc == [2, 4, 6, 8, 10] and gen == list(range(1, 11))
        w = RunWriter(home / "runs" / rid)
        w.add_metrics(11, 2.2, {"g_adv": -0.1, "g_bn": 0.5, "s_kd": 0.1}, commit=True)
        w.close()
        at.run()
        acc, gen = curves()
        assert acc == [2, 4, 6, 8, 10] and gen[-1] == 11
        w = RunWriter(home / "runs" / rid)  # step 11's evaluation, committed after its losses
        w.add_metrics(11, 2.2, {"id_acc": 0.99}, commit=True)
        w.add_metrics(12, 2.4, {"g_adv": -0.1, "g_bn": 0.5, "s_kd": 0.1}, commit=True)
        w.close()
        at.run()
        acc, gen = curves()
        assert acc == [2, 4, 6, 8, 10, 11] and gen[-2:] == [11, 12]
        w = RunWriter(home / "runs" / rid)
        w.truncate_after(6)
        w.close()
        at.run()
        acc, gen = curves()
        assert acc == [2, 4, 6] and gen == list(range(1, 7))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _add_per_class(run_dir, steps, k=10):
    """Per-class records as the worker writes them: the run's constants at step 0, then
    per-class ID / OOD accuracy, per-class ASR (target 0) and both confusion matrices at
    ``steps``."""
    rng = np.random.default_rng(1)
    w = RunWriter(run_dir)
    counts = rng.integers(80, 120, k)
    w.add_per_class(0, {"teacher_id_acc": rng.uniform(0.9, 1, k), "id_count": counts})
    for s in steps:
        conf = rng.integers(0, 10, (k, k)) + np.diag(counts)
        asr = rng.random(k)
        asr[0] = np.nan
        w.add_per_class(
            s,
            {
                "id_acc": np.diag(conf) / conf.sum(1),
                "ood_acc": rng.random(k),
                "asr": asr,
                "id_confusion": conf,
                "teacher_confusion": conf.T,
            },
        )
    w.close()


def _figures(at) -> dict[str, dict]:
    """The page's plotly figures by title."""
    out = {}
    for el in at.get("plotly_chart"):
        fig = json.loads(el.proto.spec)
        out[fig["layout"].get("title", {}).get("text", "")] = fig
    return out


def test_live_page_draws_per_class_heatmap_and_confusion_matrix(home):
    rid = _make_run(home, "20260101-000000-dfq-pcpc")
    _add_per_class(home / "runs" / rid, steps=(2, 6))  # evaluations at 2 and 6 (none at 4)
    at = _run_page("pages/live.py", rid)
    _assert_clean(at)
    figs = _figures(at)
    heat = figs["Student ID accuracy per class"]
    assert [t["type"] for t in heat["data"]] == ["heatmap", "heatmap"]
    assert heat["data"][0]["x"] == [2, 6] and heat["data"][1]["x"] == ["teacher"]
    assert "Student vs true label at step 6" in figs  # the latest snapshot's step
    # the slider's step 4 → the nearest evaluation at or before it, step 2; then the teacher view
    at.select_slider(key="snap_step").set_value(4).run()
    assert "Student vs true label at step 2" in _figures(at)
    at.radio(key="pc_confusion").set_value("teacher_confusion").run()
    _assert_clean(at)
    conf = _figures(at)["Student vs teacher prediction at step 2"]
    assert conf["layout"]["yaxis"]["title"]["text"] == "teacher prediction"
    at.radio(key="pc_metric").set_value("asr").run()
    _assert_clean(at)
    asr = _figures(at)["Attack success rate per source class"]
    assert len(asr["data"]) == 1 and asr["data"][0]["z"][0] == [None, None]  # the target row
    # a new evaluation: the page reads just that one and adds its column
    w = RunWriter(home / "runs" / rid)
    w.add_per_class(8, {"id_acc": np.full(10, 0.5), "asr": np.full(10, 0.25)})
    w.add_metrics(8, 1.6, {"id_acc": 0.5}, commit=True)
    w.close()
    at.run()
    _assert_clean(at)
    assert _figures(at)["Attack success rate per source class"]["data"][0]["x"] == [2, 6, 8]


def test_live_page_of_a_run_from_before_per_class_records(home):
    import sqlite3

    rid = _make_run(home, "20260101-000000-dfq-0ld0")
    con = sqlite3.connect(home / "runs" / rid / "run.db")  # a version-2 store: no such table
    con.execute("DROP TABLE per_class")
    con.commit()
    con.close()
    at = _run_page("pages/live.py", rid)
    _assert_clean(at)
    assert len(at.get("plotly_chart")) == 4 and "Per class" not in [h.value for h in at.subheader]


def test_failed_run_shows_its_error_and_resume(home):
    rid = _make_run(home, "20260101-000000-dfq-cccc", state="failed", error="RuntimeError: boom")
    at = _run_page("pages/live.py", rid)
    assert not at.exception
    assert any("boom" in e.value for e in at.error)
    assert any(b.label == "Resume" for b in at.button)


def test_dead_worker_shows_failed(home):
    rid = _make_run(home, "20260101-000000-dfq-dddd", state="running", pid=2**22 - 3)
    at = _run_page("pages/live.py", rid)
    assert not at.exception
    assert any("killed or crashed" in e.value for e in at.error)


def test_decisions_page_shows_a_defense(home):
    rid = _make_run(home, "20260101-000000-dfq-eeee", defense="test-defense")
    at = _run_page("pages/decisions.py", rid)
    _assert_clean(at)
    assert [m.label for m in at.metric][:2] == ["kept", "rejected"]
    assert len(at.get("plotly_chart")) == 2
    assert len(at.get("download_button")) == 2  # each chart's data as CSV


def test_decisions_page_shows_tadfkd_mixture(home):
    rid = _make_run(home, "20260101-000000-dfq-gggg", defense="ta-select")
    at = _run_page("pages/decisions.py", rid)
    _assert_clean(at)
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("mixture on the teacher's loss" in t and "posterior 0.5" in t for t in titles)


def test_decisions_page_without_defense_says_so(home):
    rid = _make_run(home, "20260101-000000-dfq-ffff")
    at = _run_page("pages/decisions.py", rid)
    _assert_clean(at)
    assert any("no defense" in i.value for i in at.info)


def test_setup_validates_and_lists_the_zoo(home):
    at = _run_page("pages/setup.py")
    _assert_clean(at)
    labels = [s.label for s in at.selectbox]
    assert {"Dataset", "Teacher", "Method", "Defense"} <= set(labels)
    assert any("Ready" in s.value for s in at.success)
    # choosing TA-DFKD brings its own selection as the default defense
    next(s for s in at.selectbox if s.label == "Method").set_value("tadfkd")
    at.run()
    _assert_clean(at)
    assert next(s for s in at.selectbox if s.label == "Defense").value == "ta-select"
    assert any("tadfkd · defense ta-select" in s.value for s in at.success)
    # an out-of-domain method asks for the student's domain and its labelled sample count
    assert "Student domain" not in [s.label for s in at.selectbox]
    next(s for s in at.selectbox if s.label == "Method").set_value("augkd")
    at.run()
    _assert_clean(at)
    assert next(s for s in at.selectbox if s.label == "Student domain").value == "mnist-m"
    assert any("student domain mnist-m (300 labelled)" in s.value for s in at.success)


def test_runs_page_lists_and_compares(home):
    a = _make_run(home, "20260101-000000-dfq-1111")
    b = _make_run(home, "20260101-000001-dfq-2222")
    at = _run_page("pages/runs.py")
    _assert_clean(at)
    at.multiselect(key="compare_runs").set_value([a, b]).run()
    _assert_clean(at)
    assert at.get("plotly_chart")


def test_unknown_run_in_url_is_a_warning_not_a_crash(home):
    at = _run_page("pages/live.py", "20990101-000000-dfq-zzzz")
    assert not at.exception
    assert at.warning or at.info


def test_embeddings_page_draws_the_map_and_the_ood_likeness(home):
    rid = _make_run(home, "20260101-000000-dfq-9999", defense="test-defense")
    at = _run_page("pages/embeddings.py", rid)
    _assert_clean(at)
    assert len(at.get("plotly_chart")) == 2  # the map and the OOD-likeness curve
    at.radio(key="emb_color").set_value("score").run()
    _assert_clean(at)
