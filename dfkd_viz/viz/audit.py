"""Figures of the teacher audit (:mod:`dfkd_viz.audit`): the robustness histogram of
BN-only synthetic samples, class histograms of both probe sets, and the per-class shortcut gains
(Neural-Cleanse-style anomaly bars) with ABD's shuffle survival."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from dfkd_viz.viz._base import figure

LURE = "#d97706"
OTHER = "#2563eb"
TARGET = "#dc2626"
VERDICT_COLORS = {"low": "#059669", "suspicious": "#d97706", "high": "#dc2626"}


def robustness_histogram(
    robustness: Sequence[float], predicted: Sequence[int], lure_class: int, epsilon: float
) -> go.Figure:
    """Histogram of ``p_T(y | x + δ)`` (PGD at L∞ ``epsilon``, pixel units; values in [0, 1]) over
    the BN-only synthetic samples, the lure class's samples stacked on the others'. An NTL teacher
    shows a robust mode near 1 made of lure-class samples; a clean teacher's samples are fragile."""
    r = np.asarray(robustness, dtype=float)
    lure = np.asarray(predicted) == lure_class
    traces = [
        {
            "type": "histogram",
            "x": r[mask].tolist(),
            "name": f"{name} ({int(mask.sum())})",
            "marker": {"color": color},
            "opacity": 0.85,
            "xbins": {"start": 0.0, "end": 1.0001, "size": 0.05},
        }
        for name, mask, color in (
            (f"lure class {lure_class}", lure, LURE),
            ("other classes", ~lure, OTHER),
        )
    ]
    return figure(
        traces,
        f"Adversarial robustness of BN-only samples (ε = {epsilon:g})",
        "teacher confidence in its class after the attack",
        "samples",
        height=330,
        barmode="stack",
        hovermode="closest",
    )


def class_bars(
    counts: Sequence[int], highlight: int | None, title: str, highlight_name: str = "lure class"
) -> go.Figure:
    """Samples per predicted class, ``highlight`` in amber (the lure class), the rest in blue."""
    c = list(counts)
    colors = [LURE if i == highlight else OTHER for i in range(len(c))]
    trace = {
        "type": "bar",
        "x": [str(i) for i in range(len(c))],
        "y": c,
        "marker": {"color": colors},
        "hovertemplate": "class %{x}: %{y} samples<extra></extra>",
    }
    fig = figure([trace], title, "teacher's class", "samples", height=290, hovermode="closest")
    if highlight is not None:
        fig.add_annotation(
            x=str(highlight), y=c[highlight], text=highlight_name, showarrow=False, yshift=12
        )
    return fig


def shortcut_gain_bars(
    gain: Sequence[float],
    target: int,
    survival: Sequence[float] | None = None,
    set_aside: int | None = None,
) -> go.Figure:
    """Per-class shortcut gain (bars; unitless, ``(m_c − median) / (|median| + 1)`` of the mean
    margin a universal L2-bounded perturbation reaches for class ``c``), the suspected target in
    red and a class ``set_aside`` (the NTL lure class) hatched, with the zero line (the median
    class) and, on a second axis, the share of perturbed samples whose prediction survives channel
    shuffling (markers, %). A backdoor's target stands far above the others."""
    g = np.asarray(gain, dtype=float)
    colors = [
        TARGET if i == target else LURE if i == set_aside else "#94a3b8" for i in range(len(g))
    ]
    traces = [
        {
            "type": "bar",
            "x": [str(i) for i in range(len(g))],
            "y": g.tolist(),
            "name": "shortcut gain",
            "marker": {
                "color": colors,
                "pattern": {"shape": ["/" if i == set_aside else "" for i in range(len(g))]},
            },
            "hovertemplate": "class %{x}: gain %{y:.2f}<extra></extra>",
        }
    ]
    if survival is not None:
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": [str(i) for i in range(len(g))],
                "y": [100 * v for v in survival],
                "name": "survives channel shuffling (%)",
                "yaxis": "y2",
                "marker": {"color": "#7c3aed", "size": 10, "symbol": "diamond"},
                "hovertemplate": "class %{x}: %{y:.0f} % survive<extra></extra>",
            }
        )
    fig = figure(
        traces,
        "Shortcut gain per class (universal perturbation of fixed L2 budget)",
        "target class",
        "margin gain over the median class",
        height=340,
        hovermode="closest",
        yaxis2={
            "title": {"text": "survive shuffling (%)"},
            "overlaying": "y",
            "side": "right",
            "range": [0, 105],
            "tickmode": "array",
            "tickvals": [0, 25, 50, 75, 100],
            "showgrid": False,
        },
    )
    fig.add_hline(y=0.0, line={"dash": "dash", "color": "#334155", "width": 1.5})
    return fig
