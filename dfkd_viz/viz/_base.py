"""Shared pieces of the figure builders: colours per quantity, axis style, and the plain-dict
figure assembly every view uses.

Figures are assembled as one plain dict and converted once (:func:`as_figure`): plotly's
incremental ``add_trace`` / ``update_layout`` / ``add_hline`` and named templates cost 10–20 ms per
figure, which adds up in a live view that redraws six figures every 1.5 s (measured: 15–20 ms →
~1 ms per figure). All accuracy-like values arrive as fractions in [0, 1] and are plotted in
percent; steps are outer iterations; wall time in seconds."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

COLORS = {
    "id_acc": "#2563eb",
    "ood_acc": "#f59e0b",
    "asr": "#dc2626",
    "student_domain_acc": "#0891b2",
    "agreement": "#059669",
    "kept_frac": "#7c3aed",
    "kept": "#059669",
    "rejected": "#dc2626",
    "not flagged": "#059669",
    "flagged": "#d97706",
}

LABELS = {
    "id_acc": "student ID accuracy",
    "ood_acc": "student OOD accuracy",
    "asr": "attack success rate (ASR)",
    "student_domain_acc": "student-domain accuracy",
    "s_ce": "cross-entropy (labels)",
    "a_energy": "energy (uncertainty)",
    "a_mask": "mask size",
    "a_ce": "label CE ×0.1",
    "e_rec": "encoder (CVAE)",
    "agreement": "teacher–student agreement (synthetic)",
    "kept_frac": "share of samples kept",
    "it_s": "iterations / s",
    "g_total": "generator total",
    "s_total": "student total",
    "g_adv": "adversarial",
    "g_bn": "BN statistics",
    "g_oh": "class prior (one-hot)",
    "g_bal": "class balance",
    "g_act": "activation",
    "s_kd": "distillation (KD)",
    "s_at": "attention transfer",
}

PALETTE = [
    "#2563eb",
    "#dc2626",
    "#059669",
    "#f59e0b",
    "#7c3aed",
    "#0891b2",
    "#db2777",
    "#65a30d",
    "#9333ea",
    "#ea580c",
]

AXIS = {"gridcolor": "#e5e7eb", "zerolinecolor": "#cbd5e1", "linecolor": "#94a3b8"}


def downsample(wide: pd.DataFrame, max_rows: int = 400) -> pd.DataFrame:
    """At most about ``max_rows`` evenly spaced rows (always keeping the last), so long runs stay
    cheap to send and draw; rows holding evaluations (``id_acc``) are always kept."""
    if len(wide) <= max_rows:
        return wide
    stride = -(-len(wide) // max_rows)
    keep = np.arange(len(wide)) % stride == 0
    keep[-1] = True
    if "id_acc" in wide.columns:
        keep |= wide["id_acc"].notna().to_numpy()
    return wide[keep]


def x_title(x: str) -> str:
    return "step (outer iteration)" if x == "step" else "wall time (s)"


VALIDATE_ENV = "DFKD_VIZ_VALIDATE_FIGURES"
"""Set to ``1`` to have plotly validate every figure :func:`as_figure` builds (the tests do)."""


def as_figure(spec: dict[str, Any]) -> go.Figure:
    """``spec`` (``{"data": [...], "layout": {...}}``, built by this package) as a figure,
    without plotly's per-property validation: checking every element of every data list was
    40 % of the time the Live page spent on its charts (4 curve figures: 38 → 22 ms including
    Streamlit's own conversion, which validates the figure once anyway); the figure's JSON is
    the same. With ``DFKD_VIZ_VALIDATE_FIGURES=1`` (set for the whole test suite) every figure
    is validated, so a wrong property name fails a test.

    Raises:
        ValueError: an invalid property, only when validating.
    """
    return go.Figure(spec, _validate=os.environ.get(VALIDATE_ENV) == "1")


def figure(
    traces: list[dict[str, Any]],
    title: str,
    x_label: str,
    y_label: str,
    height: int = 380,
    shapes: list[dict] | None = None,
    annotations: list[dict] | None = None,
    **layout: Any,
) -> go.Figure:
    lay = {
        "title": {"text": title, "x": 0.01, "font": {"size": 18}},
        "xaxis": {"title": {"text": x_label}, **AXIS},
        "yaxis": {"title": {"text": y_label}, **AXIS, **layout.pop("yaxis", {})},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
        "font": {"size": 15},
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0},
        "hovermode": "x unified",
        "uirevision": "keep",
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "shapes": shapes or [],
        "annotations": annotations or [],
        **layout,
    }
    return as_figure({"data": traces, "layout": lay})


def line(
    x, y, name: str, color: str | None, width: float = 3, markers: bool = False
) -> dict[str, Any]:
    return {
        "type": "scatter",
        "x": np.asarray(x).tolist(),
        "y": np.asarray(y).tolist(),
        "name": name,
        "mode": "lines+markers" if markers else "lines",
        "marker": {"size": 5},
        "line": {"color": color, "width": width},
    }


def vline(x: float, color: str | None, text: str) -> tuple[dict, dict]:
    """A dashed vertical line at data ``x`` across the plot, and its label at the top: a
    ``(shape, annotation)`` pair for :func:`figure`."""
    shape = {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": x,
        "x1": x,
        "y0": 0,
        "y1": 1,
        "line": {"color": color, "dash": "dash", "width": 1.5},
    }
    note = {
        "xref": "x",
        "yref": "paper",
        "x": x,
        "y": 1,
        "text": text,
        "showarrow": False,
        "xanchor": "left",
        "yanchor": "bottom",
        "font": {"color": color, "size": 12},
    }
    return shape, note


def hline(y: float, color: str | None, text: str) -> tuple[dict, dict]:
    shape = {
        "type": "line",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "y0": y,
        "y1": y,
        "line": {"color": color, "dash": "dot", "width": 1.5},
    }
    note = {
        "xref": "paper",
        "x": 1,
        "y": y,
        "text": text,
        "showarrow": False,
        "xanchor": "right",
        "yanchor": "bottom",
        "font": {"color": color, "size": 13},
    }
    return shape, note
