"""Figure builders: data in, figure out (shapes of the traces, axes, the decisions' encoding).
Figures are built without plotly's validation in the app (``dfkd_viz.viz._base.as_figure``): the
JSON that reaches the browser is the same as with it, and validation (on in the tests) still
catches a wrong property."""

import json

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest
from plotly.tools import return_figure_from_figure_or_data

from dfkd_viz import viz
from dfkd_viz.viz._base import VALIDATE_ENV, as_figure


def test_score_histogram_stacks_on_shared_bins_and_marks_the_threshold():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 1, 200)
    keep = scores < 0.3
    fig = viz.score_histogram(scores, keep, threshold=0.3, score_name="suspicion")
    kept, rej = fig.data
    assert (
        kept.name == f"kept ({int(keep.sum())})" and rej.name == f"rejected ({int((~keep).sum())})"
    )
    assert kept.xbins.size == rej.xbins.size and kept.xbins.start == rej.xbins.start
    assert fig.layout.barmode == "stack"
    assert fig.layout.shapes[0].x0 == 0.3 and fig.layout.xaxis.title.text == "suspicion"


def test_score_histogram_uses_log10_for_scores_crowded_at_zero():
    scores = np.r_[np.full(60, 1e-4), [0.05, 0.3, 0.9]]  # ATEsc's post-attack confidences
    keep = scores < 1e-3
    fig = viz.score_histogram(scores, keep, threshold=1e-3, score_name="robustness")
    assert fig.layout.xaxis.title.text == "log10 robustness"
    assert np.isclose(fig.layout.shapes[0].x0, np.log10(1e-3 + 1e-6))
    assert max(fig.data[1].x) < 0  # log10 of values below 1
    flags = viz.score_histogram([0.1, 0.2], [True, False], names=("not flagged", "flagged"))
    assert (
        flags.data[1].name == "flagged (1)" and flags.data[1].marker.color == viz.COLORS["flagged"]
    )


def test_decision_counts_and_gallery_badges():
    df = pd.DataFrame({"step": [1, 2], "not flagged": [5, 6], "flagged": [3, 2]})
    fig = viz.decision_counts(df)
    assert [t.name for t in fig.data] == ["not flagged", "flagged"]
    html = viz.sample_grid_html(
        [np.zeros((1, 4, 4), np.uint8)] * 2,
        ["a", "b"],
        None,
        [True, False],
        badges=("ok", "flagged"),
    )
    assert ">ok<" in html and ">flagged<" in html and "kept" not in html


def test_gmm_selection_marks_the_posterior_crossing():
    from dfkd_viz.viz.decisions import gmm_posterior_crossing

    sym = np.array([[0.2, 0.6], [0.01, 0.01], [0.5, 0.5]])
    assert gmm_posterior_crossing(sym) == pytest.approx(0.4, abs=1e-3)  # the midpoint
    # a heavier clean component pushes the boundary toward the noisy one
    heavy = sym.copy()
    heavy[2] = [0.8, 0.2]
    assert gmm_posterior_crossing(heavy) > 0.4
    assert gmm_posterior_crossing(np.full((3, 2), np.nan)) is None
    fig = viz.gmm_selection(np.linspace(0, 1, 20), np.arange(20) < 12, heavy)
    names = [t.name for t in fig.data]
    assert names[:2] == ["kept (12)", "rejected (8)"]
    assert "clean component" in names and "noisy component" in names
    assert fig.layout.shapes[0].x0 == pytest.approx(gmm_posterior_crossing(heavy))


def test_sweep_figures_show_every_finished_run():
    df = pd.DataFrame(
        {
            "teacher": ["a", "a", "b", "b", "a"],
            "method": ["dfq", "tadfkd", "dfq", "tadfkd", "dfq"],
            "seed": [0, 0, 0, 0, 1],
            "status": ["finished"] * 4 + ["running"],
            "rel_acc": [0.99, 0.98, 0.6, 0.9, None],
        }
    )
    box = viz.sweep_box(df)
    points = [t for t in box.data if t.type == "scatter"]
    assert {t.name for t in points} == {"a", "b"}
    assert sorted(y for t in points for y in t.y) == [60.0, 90.0, 98.0, 99.0]
    per_teacher = viz.sweep_by_teacher(df)
    bars = [t for t in per_teacher.data if t.type == "bar"]
    assert [list(b.y) for b in bars] == [[99.0, 60.0], [98.0, 90.0]]


def test_out_of_domain_figures():
    rng = np.random.default_rng(0)
    fig = viz.energy_histograms(rng.normal(-5, 1, (3, 40)))
    assert len(fig.data) == 3 and fig.layout.barmode == "overlay"
    assert fig.data[2].name.startswith(viz.ENERGY_NAMES[2])
    with pytest.raises(ValueError):
        viz.energy_histograms(np.zeros((2, 5)))
    mask = rng.random((10, 16)) / 3
    fig = viz.anchor_masks(mask, [str(i) for i in range(10)])
    assert fig.data[0].z.shape == (10, 16) and fig.data[0].zmax == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        viz.anchor_masks(np.zeros(5))
    rows = pd.DataFrame(
        {
            "method": ["ce", "augkd"],
            "run_id": ["a", "b"],
            "student_domain_acc": [0.78, 0.74],
            "current": [False, True],
        }
    )
    fig = viz.domain_comparison(rows)
    assert [t.name for t in fig.data] == ["ce", "augkd"]
    assert fig.data[1].y[0] == pytest.approx(74.0)


def test_progression_table_has_a_row_per_sample_and_a_column_per_stage():
    prog = np.zeros((3, 7, 1, 28, 28), dtype=np.uint8)
    out = viz.progression_html(prog, np.array([5.0, 1.0, 0.0]), s_now=0.42)
    assert out.count("<img") == 21 and out.count("<tr>") == 4
    assert "y = 5<" in out and "now (s = 0.42)" in out
    for title in viz.PROGRESSION_COLUMNS:
        assert title in out
    with pytest.raises(ValueError):
        viz.progression_html(np.zeros((3, 1, 28, 28), dtype=np.uint8))


def _wide(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    steps = np.arange(1, n + 1)
    acc = np.where(steps % 5 == 0, np.linspace(0.1, 0.95, n), np.nan)
    return pd.DataFrame(
        {
            "step": steps,
            "wall_s": steps * 0.15,
            "id_acc": acc,
            "ood_acc": acc / 2,
            "agreement": rng.random(n),
            "g_adv": -rng.random(n),
            "g_bn": rng.random(n),
            "g_total": rng.random(n),
            "s_kd": rng.random(n),
            "s_total": rng.random(n),
        }
    )


def _figures() -> dict:
    wide = _wide()
    evals = wide.dropna(subset=["id_acc"])
    rng = np.random.default_rng(1)
    return {
        "accuracy": viz.accuracy_curves(evals, teacher_ref={"id_acc": 0.98}, fork_at=30),
        "agreement": viz.agreement_curve(wide, x="wall_s"),
        "g_loss": viz.loss_curves(wide, "g_"),
        "s_loss": viz.loss_curves(wide, "s_"),
        "per_class": viz.per_class_heatmap(
            list(evals["step"]), rng.random((len(evals), 10)), rng.random(10)
        ),
        "confusion": viz.confusion_heatmap(rng.integers(0, 50, (10, 10)), step=40),
    }


def _sent(fig) -> dict:
    """The figure as ``st.plotly_chart`` sends it to the browser (Streamlit converts it with
    validation, then writes its JSON)."""
    return json.loads(pio.to_json(return_figure_from_figure_or_data(fig, validate_figure=True)))


def test_the_browser_gets_the_same_figure_without_validation(monkeypatch):
    monkeypatch.setenv(VALIDATE_ENV, "1")
    checked = {k: _sent(f) for k, f in _figures().items()}
    monkeypatch.setenv(VALIDATE_ENV, "0")
    fast = {k: _sent(f) for k, f in _figures().items()}
    assert fast == checked
    # unvalidated, a figure keeps what plotly.js reads the same way: a colour scale by name
    # ("Viridis") and empty shape / annotation lists
    raw = _figures()["confusion"].to_plotly_json()
    assert raw["data"][0]["colorscale"] == "Viridis"


def test_validation_in_the_tests_catches_a_wrong_property(monkeypatch):
    spec = {"data": [{"type": "scatter", "x": [1], "y": [1], "colour": "red"}], "layout": {}}
    monkeypatch.setenv(VALIDATE_ENV, "0")
    assert as_figure(spec).data[0].type == "scatter"
    monkeypatch.setenv(VALIDATE_ENV, "1")
    with pytest.raises(ValueError, match="colour"):
        as_figure(spec)
