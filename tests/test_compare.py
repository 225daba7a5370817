"""Runs side by side: the figure and table builders of ``dfkd_viz.viz.compare``, the Compare page
under AppTest (configuration differences first, one step slider, an unknown id in the URL, a
fork's lineage, the picker), the Runs page's way there, and ``runs compare`` / the reports (the
same side-by-side views, a fork named). Stores are written directly (no training), so these are
fast; the page in a real browser while two runs go is in test_browser.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dfkd_viz.distill.snapshot import Snapshot
from dfkd_viz.runs import export
from dfkd_viz.runs.store import RunWriter
from dfkd_viz.viz import compare as vc

ROOT = Path(__file__).resolve().parent.parent
A, B, C = "20260101-000000-dfq-aaaa", "20260101-000001-dfq-bbbb", "20260101-000002-dfq-cccc"


def _store_run(
    home: Path,
    run_id: str,
    steps: int = 8,
    every: int = 2,
    state: str = "finished",
    meta: dict | None = None,
    per_class: bool = True,
    reference: bool = True,
    **config,
) -> Path:
    """A finished run written straight into the store: metrics every step, an evaluation,
    a snapshot of 6 placed samples and per-class records every ``every`` steps, the teacher's
    reference map (20 ID + 10 OOD points); ``config`` overrides the DFQ config."""
    d = home / "runs" / run_id
    w = RunWriter(d)
    cfg = {
        "teacher": "mnist-clean",
        "method": "dfq",
        "defense": "none",
        "steps": steps,
        "seed": 0,
        "device": "cpu",
        **config,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    w.init_status(run_id, steps, None)
    rng = np.random.default_rng(len(run_id) + steps)
    k, n = 10, 6
    if per_class:
        w.add_per_class(0, {"teacher_id_acc": np.full(k, 0.98), "id_count": np.full(k, 100)})
    for s in range(1, steps + 1):
        w.add_metrics(s, s * 0.1, {"g_adv": -1.0 / s, "agreement": min(1.0, 0.4 + s / 40)})
        if s % every:
            continue
        w.add_metrics(s, s * 0.1, {"id_acc": min(1.0, 0.2 + s / 20), "ood_acc": 0.3}, commit=True)
        decided = cfg["defense"] != "none"
        w.add_snapshot(
            Snapshot(
                step=s,
                images=rng.integers(0, 256, (n, 1, 28, 28)).astype(np.uint8),
                teacher_label=rng.integers(0, 10, n),
                confidence=rng.random(n),
                student_label=rng.integers(0, 10, n),
                score=rng.random(n) if decided else None,
                keep=(np.arange(n) % 2 == 0) if decided else None,
                threshold=0.5 if decided else None,
            ),
            s * 0.1,
            "score",
        )
        w.set_embedding(s, rng.normal(size=(n, 2)))
        if per_class:
            conf = np.diag(np.full(k, 90)) + 1
            w.add_per_class(
                s,
                {
                    "id_acc": np.linspace(0, 1, k) * s / steps,
                    "id_confusion": conf,
                    "teacher_confusion": conf,
                },
            )
    if reference:
        w.set_reference(
            np.array(["id"] * 20 + ["ood"] * 10),
            rng.integers(0, 10, 30),
            rng.integers(0, 256, (30, 1, 28, 28)).astype(np.uint8),
            rng.normal(size=(30, 2)),
        )
    if meta:
        w.set_meta(**meta)
    w.flush()
    w.set_status(state=state, step=steps, wall_s=steps * 0.1, progress=1.0, device="cpu")
    w.close()
    return d


# --------------------------------------------------------------------------- viz builders


def test_config_differences_lists_only_the_fields_that_differ_flattened():
    a = {"teacher": "t1", "method": "dfq", "seed": 0, "method_params": {"lr": 0.1, "bn": 1.0}}
    b = {
        "teacher": "t1",
        "method": "dfq",
        "seed": 1,
        "method_params": {"lr": 0.1, "bn": 5.0},
        "defense_params": {"k": 3},
    }
    diff = vc.config_differences([a, b], ["A", "B"], defaults={"student": "lenet5"})
    assert list(diff.index) == ["method_params.bn", "defense_params.k", "seed"]
    assert diff.loc["method_params.bn"].tolist() == ["1", "5"]
    assert diff.loc["defense_params.k"].tolist() == ["—", "3"]
    assert list(diff.columns) == ["A", "B"]
    # a field one config lacks compares by its default: no spurious difference
    same = vc.config_differences([{"student": "lenet5"}, {}], ["A", "B"], {"student": "lenet5"})
    assert same.empty and list(same.columns) == ["A", "B"]
    with pytest.raises(ValueError, match="labels"):
        vc.config_differences([a, b], ["A"])


def test_status_rows_name_a_fork_and_only_the_metrics_some_run_has():
    infos = [
        {"status": "finished", "step": 8, "total_steps": 8, "id_acc": 0.91},
        {"status": "running", "step": 3, "total_steps": 8, "parent_run": A, "fork_step": 2},
    ]
    rows = vc.status_rows(infos, ["A", "B"])
    assert list(rows.index) == ["lineage", "state", "step", "ID accuracy"]
    assert rows.loc["lineage"].tolist() == ["—", f"fork of {A} at step 2"]
    assert rows.loc["step"].tolist() == ["8 of 8", "3 of 8"]
    assert rows.loc["ID accuracy"].tolist() == ["91.0 %", "—"]
    assert "lineage" not in vc.status_rows(infos[:1], ["A"]).index
    assert vc.lineage_text(None) is None and vc.lineage_text("p") == "fork of p"


def test_labels_steps_and_colours():
    assert vc.short_id(A) == "dfq-aaaa" and vc.short_id("my-run") == "my-run"
    assert vc.run_labels([A, B]) == ["dfq-aaaa", "dfq-bbbb"]
    assert vc.run_labels([A, A]) == ["dfq-aaaa", "dfq-aaaa (2)"]
    other = "20270101-000000-dfq-aaaa"  # same short id, another run: the full ids
    assert vc.run_labels([A, other]) == [A, other]
    assert len(set(vc.run_colors(4))) == 4
    assert vc.union_steps([[2, 4], [3, 4]]) == [2, 3, 4]
    assert vc.at_or_before([2, 4, 6], 5) == 4 and vc.at_or_before([2, 4, 6], 6) == 6
    assert vc.at_or_before([2, 4], 1) is None and vc.at_or_before([], 3) is None
    assert vc.common_step([[2, 4, 6], [2, 4]]) == 4
    assert vc.common_step([[3, 5], [2, 4]]) == 4  # none shared: the earliest last step
    assert vc.common_step([[], [2]]) == 2 and vc.common_step([[], []]) is None


def test_overlay_curves_one_colour_per_run_and_a_line_at_the_step():
    f1 = pd.DataFrame({"step": [2, 4], "wall_s": [0.1, 0.2], "id_acc": [0.5, 0.6]})
    f2 = pd.DataFrame({"step": [2, 4, 6], "wall_s": [0.1, 0.2, 0.3], "id_acc": [0.1, np.nan, 0.3]})
    f3 = pd.DataFrame({"step": [2], "wall_s": [0.1]})  # no such metric: no line
    fig = vc.overlay_curves([f1, f2, f3], ["A", "B", "C"], "id_acc", step=4)
    assert [t.name for t in fig.data] == ["A", "B"]
    assert [t.line.color for t in fig.data] == vc.run_colors(3)[:2]
    assert list(fig.data[1].x) == [2, 6] and list(fig.data[1].y) == [10.0, 30.0]
    (vline,) = fig.layout.shapes
    assert vline.x0 == vline.x1 == 4 and vline.yref == "paper"
    assert fig.layout.title.text.startswith("Student ID accuracy")
    assert not vc.overlay_curves([f1], ["A"], "id_acc").layout.shapes


def test_side_by_side_panels():
    steps, values = [2, 4, 6], np.array([[0.1] * 3, [0.5] * 3, [0.9] * 3])
    fig = vc.per_class_panel(steps, values, 5, teacher=np.ones(3))
    assert list(fig.data[0].x) == [2, 4] and fig.data[1].x == ("teacher",)
    assert fig.layout.title.text == "ID accuracy per class to step 4"
    with pytest.raises(ValueError, match="no evaluation at or before step 1"):
        vc.per_class_panel(steps, values, 1)

    rng = np.random.default_rng(0)
    ref = pd.DataFrame(
        {
            "idx": range(40),
            "source": ["id"] * 20 + ["ood"] * 20,
            "label": rng.integers(0, 10, 40),
            "emb_x": rng.normal(size=40),
            "emb_y": rng.normal(size=40),
        }
    )
    syn = pd.DataFrame(
        {
            "idx": range(4),
            "teacher_label": [1, 2, 3, 4],
            "confidence": [0.9] * 4,
            "score": [0.1] * 4,
            "keep": [1, 0, 1, None],
            "emb_x": [5.0, 0, 0, np.nan],  # one far out, one not placed
            "emb_y": [0.0, 0, 0, np.nan],
        }
    )
    thin = vc.thin_reference(ref, 10)
    assert len(thin) == 10 and set(thin["source"]) == {"id", "ood"}
    (x0, x1), _ = ranges = vc.map_ranges(thin, [syn, None])
    assert x0 < thin["emb_x"].min() and x1 > 5.0
    fig = vc.embedding_panel(thin, syn, 6, ranges)
    names = [t.name for t in fig.data]
    assert names == ["real ID", "real OOD", "synthetic kept", "synthetic rejected"]
    assert tuple(fig.layout.xaxis.range) == ranges[0] and fig.layout.dragmode == "zoom"
    assert fig.layout.title.text == "Samples of step 6"
    # view-only: typed arrays, labels for the hover, no per-point selection data
    assert fig.data[0].customdata.dtype == np.int16 and fig.data[0].text is None

    samples = syn.assign(
        image=[np.zeros((1, 4, 4), np.uint8)] * 4, student_label=[1, 2, None, 4], flag=None
    )
    page = vc.samples_grid_html(samples, img_px=30, max_samples=3)
    assert page.count("<img") == 3 and "T: 1 (90%)" in page and "S: —" in page
    assert "rejected" in page and "width:30px" in page


# --------------------------------------------------------------------------- the page


def _page(query: dict | None = None, page: str = "pages/compare.py") -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page(page)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    return at


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _titles(at: AppTest) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def test_compare_page_two_runs_side_by_side(home):
    _store_run(home, A)
    _store_run(home, B, steps=6, defense="ta-select", method_params={"lr_g": 0.01})
    at = _page({"runs": f"{A},{B}"})
    _clean(at)
    table = at.table[0].value
    # configuration differences first, only the differing fields, then state and progress
    assert list(table.index) == [
        "defense",
        "method_params.lr_g",
        "steps",
        "state",
        "step",
        "ID accuracy",
        "OOD accuracy",
    ]
    assert list(table.columns) == ["dfq-aaaa", "dfq-bbbb"]
    assert table.loc["defense"].tolist() == ["none", "ta-select"]
    assert table.loc["step"].tolist() == ["8 of 8", "6 of 6"]
    # one slider for both: the union of their snapshot steps, at the last common one
    slider = at.select_slider(key="cmp_step")
    assert list(slider.options) == ["2", "4", "6", "8"] and slider.value == 6
    titles = _titles(at)
    assert titles[:2] == ["Student ID accuracy", "Student OOD accuracy"]
    assert titles.count("Samples of step 6") == 2
    assert titles.count("ID accuracy per class to step 6") == 2
    curve = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in curve["data"]] == ["dfq-aaaa", "dfq-bbbb"]
    assert curve["layout"]["shapes"][0]["x0"] == 6
    # step 8: B has nothing later than 6 and says so
    slider.set_value(8).run()
    _clean(at)
    captions = [c.value for c in at.caption]
    assert "Snapshot at step 8: teacher label (confidence), student label" in captions
    assert any(c.startswith("Snapshot at step 6 (nearest at or before 8)") for c in captions)
    assert any("the same teacher map as dfq-bbbb" in c for c in captions)
    titles = _titles(at)
    assert "ID accuracy per class to step 8" in titles
    assert "ID accuracy per class to step 6" in titles

    # a new evaluation of A: the next poll reads just it (the curve and the slider grow); a
    # resume from an older checkpoint drops later rows: the page reads A again
    w = RunWriter(home / "runs" / A)
    w.add_metrics(10, 1.0, {"id_acc": 0.9, "ood_acc": 0.3}, commit=True)
    w.close()
    at.run()
    _clean(at)
    curve = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert curve["data"][0]["x"] == [2, 4, 6, 8, 10]
    w = RunWriter(home / "runs" / A)
    w.truncate_after(4)
    w.close()
    at.run()
    _clean(at)
    curve = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert curve["data"][0]["x"] == [2, 4] and curve["data"][1]["x"] == [2, 4, 6]


def test_compare_page_unknown_id_is_one_sentence_and_the_rest_shows(home):
    _store_run(home, A)
    _store_run(home, B)
    at = _page({"runs": f"{A},20990101-000000-dfq-nope,{B}"})
    assert not at.exception
    assert [e.value for e in at.error] == [
        "There is no run '20990101-000000-dfq-nope' in the store, so the comparison leaves it out."
    ]
    assert len(at.get("plotly_chart")) >= 6  # curves, two maps, two heatmaps
    assert at.multiselect[0].value == [A, B]
    # the same configuration twice: said, and the table keeps the state rows
    assert any("same configuration" in c.value for c in at.caption)
    assert list(at.table[0].value.index)[:2] == ["state", "step"]


def test_compare_page_picker_writes_the_url_and_names_a_fork(home):
    _store_run(home, A)
    _store_run(home, B, meta={"parent_run": A, "fork_step": "4"}, defense="ta-select")
    _store_run(home, C, per_class=False, reference=False, embedding=False)
    at = _page()
    _clean(at)
    assert not at.get("plotly_chart") and at.info  # nothing picked yet
    at.multiselect[0].set_value([A, B]).run()
    _clean(at)
    assert at.query_params["runs"] == f"{A},{B}"
    table = at.table[0].value
    assert table.loc["lineage"].tolist() == ["—", f"fork of {A} at step 4"]
    # a run without map or per-class records: captions in its column, no error
    at = _page({"runs": f"{A},{C}"})
    _clean(at)
    captions = " ".join(c.value for c in at.caption)
    assert "Started without an embedding map" in captions
    assert "This run recorded no per-class ID accuracy." in captions


def test_compare_page_with_an_empty_store(home):
    at = _page({"runs": f"{A},{B}"})
    assert not at.exception and at.info and not at.get("plotly_chart")  # the empty state


def test_compare_page_shows_at_most_four_runs(home):
    ids = [f"20260101-00000{i}-dfq-{i}{i}{i}{i}" for i in range(5)]
    for rid in ids:
        _store_run(home, rid, steps=2)
    at = _page({"runs": ",".join(ids)})
    _clean(at)
    assert any("at most 4 runs" in w.value for w in at.warning)
    assert at.multiselect[0].value == ids[:4]


def test_runs_page_links_to_compare_and_shows_lineage(home):
    _store_run(home, A)
    _store_run(home, B, meta={"parent_run": A, "fork_step": "4"})
    at = _page(page="pages/runs.py")
    _clean(at)
    df = at.dataframe[0].value
    assert df.set_index("run").loc[B, "fork of"] == f"{A} @ step 4"
    assert df.set_index("run").loc[A, "fork of"] == ""
    compare = next(b for b in at.button if b.label == "Compare")
    assert compare.disabled  # nothing selected yet
    at.multiselect(key="compare_runs").set_value([A, B]).run()
    _clean(at)
    (link,) = at.get("page_link")
    assert link.proto.label == "Open them side by side on Compare"
    assert link.proto.page == "compare" and link.proto.query_string == f"runs={A}%2C{B}"


def test_ui_compare_url():
    from pages import _ui as ui

    assert ui.compare_url([A, B]) == f"/compare?runs={A},{B}"
    assert ui.run_list_param(f" {A},,{B},{A} ") == [A, B]
    assert ui.run_list_param(None) == []


# --------------------------------------------------------------------------- reports and CLI


def _cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DFKD_VIZ_HOME=str(home))
    return subprocess.run(
        [sys.executable, "-m", "dfkd_viz.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_runs_compare_writes_the_side_by_side_views(home, tmp_path):
    _store_run(home, A)
    _store_run(home, B, steps=6, defense="ta-select", meta={"parent_run": A, "fork_step": "4"})
    out = tmp_path / "cmp.html"
    r = _cli("runs", "compare", A, B, "--out", str(out), "--step", "7", home=home)
    assert r.returncode == 0, r.stderr
    page = out.read_text()
    order = [
        "Comparison of 2 runs",
        "Configuration differences",
        "<h2>Curves</h2>",
        "<h2>At step 7</h2>",
        "<h3>Synthetic samples</h3>",
        "<h3>Embedding map</h3>",
        "<h3>Per class</h3>",
    ]
    at = [page.index(s) for s in order]
    assert at == sorted(at), dict(zip(order, at))
    assert f"fork of {A} at step 4" in page
    assert "snapshot at step 6 (nearest at or before 7)" in page
    assert "Samples of step 6" in page
    assert page.count('<img src="data:image/png;base64,') == 12  # 6 samples per run
    assert "<script src" not in page and page.count("Plotly.newPlot") == 3 + 2 + 2
    assert page.count(">defense<") == 1 and ">teacher<" not in page  # only what differs

    # the default step: the last snapshot step both runs recorded
    r = _cli("runs", "compare", A, B, "--out", str(out), home=home)
    assert r.returncode == 0 and "<h2>At step 6</h2>" in out.read_text()
    for args, message in (
        ((A,), "two to 4 runs"),
        ((A, B, A, B, A), "two to 4 runs"),
        ((A, B, "--step", "-1"), "--step must be"),
        ((A, "nope"), "nope"),
    ):
        r = _cli("runs", "compare", *args, "--out", str(out), home=home)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_reports_name_a_forks_parent(home):
    d = _store_run(home, B, meta={"parent_run": A, "fork_step": "4"})
    assert f"fork of {A} at step 4" in export.run_report_html(d)
    plain = _store_run(home, A)
    assert "fork of" not in export.run_report_html(plain)
    with pytest.raises(ValueError, match="at most 4"):
        export.compare_report_html([plain] * 5)
