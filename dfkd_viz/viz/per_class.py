"""Per-class views of a run: the student's per-class accuracy (or per-source-class ASR) over the
evaluated steps as a class × step heatmap with the teacher's per-class accuracy as a reference
column, and a confusion matrix at one evaluated step.

Plain-dict figures like :mod:`~dfkd_viz.viz.curves` (data in, figure out, no I/O); fractions arrive
in [0, 1] and are drawn in percent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from dfkd_viz.viz._base import AXIS, as_figure

SCALE = "Viridis"
"""The colour scale of every per-class view (0 % dark, 100 % yellow: lost classes stand out)."""

PER_CLASS_TITLES = {
    "id_acc": "Student ID accuracy per class",
    "ood_acc": "Student OOD accuracy per class",
    "asr": "Attack success rate per source class",
}


def _heat_layout(title: str, xaxis: dict[str, Any], ytitle: str, height: int) -> dict[str, Any]:
    """The layout shared by the per-class heatmap and the confusion matrix: categorical classes
    on the y axis, top to bottom."""
    return {
        "title": {"text": title, "x": 0.01, "font": {"size": 18}},
        "xaxis": xaxis,
        "yaxis": {"title": {"text": ytitle}, "type": "category", "autorange": "reversed", **AXIS},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
        "font": {"size": 15},
        "hovermode": "closest",
        "uirevision": "keep",
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
    }


def _class_names(k: int, classes: Sequence[str] | None) -> list[str]:
    if classes is not None and len(classes) == k:
        return [str(c) for c in classes]
    return [str(i) for i in range(k)]


def _pct(a: np.ndarray) -> list:
    """Percent values as nested lists with None for NaN (plotly draws a gap)."""
    a = np.asarray(a, dtype=np.float64) * 100
    return np.where(np.isnan(a), None, np.round(a, 2)).tolist()


def _thin(steps: list[int], values: np.ndarray, max_columns: int) -> tuple[list[int], np.ndarray]:
    """At most about ``max_columns`` evenly spaced evaluations, always keeping the last."""
    if len(steps) <= max_columns:
        return steps, values
    stride = -(-len(steps) // max_columns)
    keep = np.arange(len(steps)) % stride == 0
    keep[-1] = True
    return [s for s, k in zip(steps, keep) if k], values[keep]


def per_class_heatmap(
    steps: Sequence[int],
    values: np.ndarray,
    teacher: np.ndarray | None = None,
    classes: Sequence[str] | None = None,
    metric: str = "id_acc",
    max_columns: int = 300,
    height: int = 380,
) -> go.Figure:
    """Class (rows, class 0 at the top) × evaluated step (columns) heatmap of per-class fractions.

    Args:
        steps: the ``S`` evaluated steps, ascending.
        values: ``(S, K)`` fractions in [0, 1]; NaN (a class without test images, or ASR at the
            target) is left blank.
        teacher: ``(K,)`` the teacher's per-class fractions, drawn as a separate reference column
            at the right, or None.
        classes: K class names (default ``0 … K-1``).
        metric: ``id_acc``, ``ood_acc`` or ``asr`` (the title).
        max_columns: at most about this many steps are drawn (evenly spaced, the last kept).
        height: pixels.

    Raises:
        ValueError: ``values`` is not ``(len(steps), K)`` or ``teacher`` not ``(K,)``.
    """
    values = np.asarray(values, dtype=np.float64)
    steps = [int(s) for s in steps]
    if values.ndim != 2 or values.shape[0] != len(steps):
        raise ValueError(f"values must be (len(steps), K), got {values.shape} for {len(steps)}")
    k = values.shape[1]
    if teacher is not None and np.shape(teacher) != (k,):
        raise ValueError(f"teacher must be ({k},), got {np.shape(teacher)}")
    steps, values = _thin(steps, values, max_columns)
    names = _class_names(k, classes)
    title = PER_CLASS_TITLES.get(metric, metric)
    unit = "ASR" if metric == "asr" else "accuracy"
    heat = {
        "type": "heatmap",
        "x": steps,
        "y": names,
        "z": _pct(values.T),
        "zmin": 0,
        "zmax": 100,
        "colorscale": SCALE,
        "colorbar": {"title": {"text": "%"}, "ticksuffix": " %", "len": 0.9},
        "hovertemplate": f"class %{{y}} · step %{{x}}: {unit} %{{z:.1f}} %<extra></extra>",
        "xgap": 0 if len(steps) > 60 else 1,
        "ygap": 1,
        "name": "student",
    }
    data: list[dict[str, Any]] = [heat]
    lay = _heat_layout(
        title,
        {"title": {"text": "evaluated step"}, **AXIS, "domain": [0, 1.0]},
        "true class" if metric != "asr" else "source class",
        height,
    )
    if teacher is not None:
        lay["xaxis"]["domain"] = [0, 0.86]
        lay["xaxis2"] = {
            "domain": [0.9, 1.0],
            "type": "category",
            "tickangle": 0,
            **AXIS,
        }
        data.append(
            {
                "type": "heatmap",
                "x": ["teacher"],
                "y": names,
                "z": _pct(np.asarray(teacher, dtype=np.float64)[:, None]),
                "zmin": 0,
                "zmax": 100,
                "colorscale": SCALE,
                "showscale": False,
                "xaxis": "x2",
                "yaxis": "y",
                "ygap": 1,
                "texttemplate": "%{z:.0f}" if k <= 20 else "",
                "hovertemplate": f"class %{{y}} · teacher: {unit} %{{z:.1f}} %<extra></extra>",
                "name": "teacher",
            }
        )
    return as_figure({"data": data, "layout": lay})


def confusion_heatmap(
    matrix: np.ndarray,
    rows: str = "true label",
    classes: Sequence[str] | None = None,
    step: int | None = None,
    height: int = 420,
) -> go.Figure:
    """A confusion matrix: colour = share of its row in percent (each row sums to 100 %), text
    and hover = the count.

    Args:
        matrix: ``(K, K)`` non-negative counts; row ``i`` = items whose ``rows`` label is ``i``,
            column ``j`` = the student predicted ``j``.
        rows: what the rows are (``"true label"`` or ``"teacher prediction"``).
        classes: K class names (default ``0 … K-1``).
        step: the evaluated step, for the title, or None.
        height: pixels.

    Raises:
        ValueError: ``matrix`` is not square.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"matrix must be (K, K), got {m.shape}")
    k = m.shape[0]
    names = _class_names(k, classes)
    tot = m.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(tot > 0, m / tot, np.nan)
    counts = m.astype(np.int64).tolist()
    title = f"Student vs {rows}" + (f" at step {step}" if step is not None else "")
    heat = {
        "type": "heatmap",
        "x": names,
        "y": names,
        "z": _pct(share),
        "text": counts,
        "zmin": 0,
        "zmax": 100,
        "colorscale": SCALE,
        "colorbar": {"title": {"text": "% of row"}, "ticksuffix": " %", "len": 0.9},
        "texttemplate": "%{text}" if k <= 20 else "",
        "textfont": {"size": 11},
        "hovertemplate": (
            f"{rows} %{{y}} → student %{{x}}: %{{text}} images (%{{z:.1f}} % of the row)"
            "<extra></extra>"
        ),
        "xgap": 1,
        "ygap": 1,
    }
    lay = _heat_layout(
        title, {"title": {"text": "student prediction"}, "type": "category", **AXIS}, rows, height
    )
    return as_figure({"data": [heat], "layout": lay})
