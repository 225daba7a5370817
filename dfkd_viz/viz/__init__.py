"""Figure and gallery builders for the app and reports: data in, figure (or HTML) out, no I/O."""

from dfkd_viz.viz.figures import (
    COLORS,
    DECISION_BADGES,
    DECISION_NAMES,
    LABELS,
    accuracy_curves,
    agreement_curve,
    compare_curves,
    decision_counts,
    decision_view,
    downsample,
    embedding_map,
    label_histogram,
    loss_curves,
    ood_likeness_curves,
    score_histogram,
)
from dfkd_viz.viz.gallery import data_uri, sample_grid_html, to_uint8

__all__ = [
    "COLORS",
    "DECISION_BADGES",
    "DECISION_NAMES",
    "LABELS",
    "accuracy_curves",
    "agreement_curve",
    "compare_curves",
    "data_uri",
    "decision_counts",
    "decision_view",
    "downsample",
    "embedding_map",
    "label_histogram",
    "loss_curves",
    "ood_likeness_curves",
    "sample_grid_html",
    "score_histogram",
    "to_uint8",
]
