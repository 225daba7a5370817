"""Sweep results: the spread of relative student accuracy per method and per teacher."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from dfkd_viz.viz._base import (
    LABELS,
    PALETTE,
    figure,
)


def sweep_box(df: pd.DataFrame, value: str = "rel_acc") -> go.Figure:
    """Box plot per method of a sweep's finished runs: ``value`` (fraction, plotted in percent)
    across teachers and seeds, every run drawn as a point coloured by its teacher.

    Args:
        df: rows of :func:`dfkd_viz.runs.sweep.sweep_results` (``method``, ``teacher``, ``seed``,
            ``status``, ``value``).
    """
    fin = df[(df["status"] == "finished") & df[value].notna()]
    methods = list(dict.fromkeys(fin["method"]))
    teachers = list(dict.fromkeys(fin["teacher"]))
    traces: list[dict[str, Any]] = [
        {
            "type": "box",
            "x": [m] * int((fin["method"] == m).sum()),
            "y": (100 * fin.loc[fin["method"] == m, value].astype(float)).tolist(),
            "name": m,
            "boxpoints": False,
            "marker": {"color": "#475569"},
            "fillcolor": "rgba(148,163,184,0.25)",
            "line": {"color": "#475569"},
            "showlegend": False,
            "hoverinfo": "skip",
        }
        for m in methods
    ]
    for i, t in enumerate(teachers):
        g = fin[fin["teacher"] == t]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "x": g["method"].tolist(),
                "y": (100 * g[value].astype(float)).tolist(),
                "name": t,
                "marker": {"color": PALETTE[i % len(PALETTE)], "size": 10, "opacity": 0.9},
                "text": [f"{t} · seed {s}" for s in g["seed"]],
                "hovertemplate": "%{text}: %{y:.1f} %<extra></extra>",
            }
        )
    label = (
        "student ID accuracy, % of the teacher's"
        if value == "rel_acc"
        else LABELS.get(value, value)
    )
    return figure(
        traces,
        "Stability across teachers and seeds",
        "method",
        label,
        height=440,
        hovermode="closest",
        legend={"orientation": "v", "yanchor": "top", "y": 1, "xanchor": "left", "x": 1.02},
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
    )


def sweep_by_teacher(df: pd.DataFrame, value: str = "rel_acc") -> go.Figure:
    """Per teacher, each method's runs (mean bar with the seeds as points), in percent."""
    fin = df[(df["status"] == "finished") & df[value].notna()]
    teachers = list(dict.fromkeys(fin["teacher"]))
    traces: list[dict[str, Any]] = []
    for i, m in enumerate(dict.fromkeys(fin["method"])):
        g = fin[fin["method"] == m]
        mean = g.groupby("teacher", sort=False)[value].mean().reindex(teachers)
        color = PALETTE[i % len(PALETTE)]
        traces.append(
            {
                "type": "bar",
                "x": teachers,
                "y": (100 * mean).round(2).tolist(),
                "name": f"{m} (mean)",
                "marker": {"color": color, "opacity": 0.55},
                "offsetgroup": m,
            }
        )
        traces.append(
            {
                "type": "box",
                "x": g["teacher"].tolist(),
                "y": (100 * g[value].astype(float)).tolist(),
                "name": f"{m} (seeds)",
                "boxpoints": "all",
                "pointpos": 0,
                "jitter": 0.2,
                "fillcolor": "rgba(0,0,0,0)",
                "line": {"color": "rgba(0,0,0,0)"},
                "marker": {"color": color, "size": 7},
                "offsetgroup": m,
            }
        )
    return figure(
        traces,
        "Per teacher",
        "",
        "student ID accuracy, % of the teacher's",
        height=440,
        boxmode="group",
        barmode="group",
        hovermode="closest",
        legend={"orientation": "v", "yanchor": "top", "y": 1, "xanchor": "left", "x": 1.02},
        margin={"l": 60, "r": 20, "t": 50, "b": 100},
    )
