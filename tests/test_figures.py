"""Figure builders: data in, figure out (shapes of the traces, axes, the decisions' encoding)."""

import numpy as np
import pandas as pd
import pytest

from dfkd_viz import viz


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
