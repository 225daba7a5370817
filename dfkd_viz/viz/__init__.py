"""Figure and gallery builders for the app and reports: data in, figure (or HTML) out, no I/O.

One module per view: :mod:`~dfkd_viz.viz.curves`, :mod:`~dfkd_viz.viz.per_class`,
:mod:`~dfkd_viz.viz.decisions`, :mod:`~dfkd_viz.viz.embedding`, :mod:`~dfkd_viz.viz.sweeps`,
:mod:`~dfkd_viz.viz.out_of_domain`, :mod:`~dfkd_viz.viz.saliency`, :mod:`~dfkd_viz.viz.audit`,
:mod:`~dfkd_viz.viz.gallery` (HTML sample grids), :mod:`~dfkd_viz.viz.compare` (runs side by
side: configuration differences, overlaid curves, per-run panels); shared colours and figure
assembly in :mod:`~dfkd_viz.viz._base`.
"""

from dfkd_viz.viz._base import COLORS, LABELS, downsample
from dfkd_viz.viz.curves import (
    accuracy_curves,
    agreement_curve,
    compare_curves,
    loss_curves,
    ood_likeness_curves,
)
from dfkd_viz.viz.decisions import (
    DECISION_BADGES,
    DECISION_NAMES,
    decision_counts,
    decision_view,
    gmm_selection,
    label_histogram,
    score_histogram,
)
from dfkd_viz.viz.embedding import embedding_map
from dfkd_viz.viz.gallery import (
    PROGRESSION_COLUMNS,
    data_uri,
    progression_html,
    sample_grid_html,
    to_uint8,
)
from dfkd_viz.viz.out_of_domain import (
    ENERGY_NAMES,
    anchor_masks,
    domain_comparison,
    energy_histograms,
)
from dfkd_viz.viz.per_class import PER_CLASS_TITLES, confusion_heatmap, per_class_heatmap
from dfkd_viz.viz.sweeps import sweep_box, sweep_by_teacher

__all__ = [
    "COLORS",
    "DECISION_BADGES",
    "DECISION_NAMES",
    "ENERGY_NAMES",
    "LABELS",
    "PER_CLASS_TITLES",
    "PROGRESSION_COLUMNS",
    "accuracy_curves",
    "agreement_curve",
    "anchor_masks",
    "compare_curves",
    "confusion_heatmap",
    "data_uri",
    "decision_counts",
    "decision_view",
    "domain_comparison",
    "downsample",
    "embedding_map",
    "energy_histograms",
    "gmm_selection",
    "label_histogram",
    "loss_curves",
    "ood_likeness_curves",
    "per_class_heatmap",
    "progression_html",
    "sample_grid_html",
    "score_histogram",
    "sweep_box",
    "sweep_by_teacher",
    "to_uint8",
]
