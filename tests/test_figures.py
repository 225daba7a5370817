"""Figure builders: data in, figure out (shapes of the traces, axes, the decisions' encoding)."""

import numpy as np
import pandas as pd

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
