"""Curves over a run: accuracy / OOD accuracy / ASR, loss terms, teacher–student agreement, runs overlaid, OOD-likeness."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go

from dfkd_viz.viz._base import (
    COLORS,
    LABELS,
    PALETTE,
    figure,
    hline,
    line,
    vline,
    x_title,
)


def accuracy_curves(
    wide: pd.DataFrame,
    metrics: Sequence[str] = ("id_acc", "ood_acc", "asr", "student_domain_acc"),
    x: str = "step",
    teacher_ref: Mapping[str, float | None] | None = None,
    title: str = "Student accuracy and attack success",
    fork_at: float | None = None,
) -> go.Figure:
    """Lines of fraction metrics (in %) from a wide metrics frame (one row per step), with
    optional dotted reference lines (the teacher's values, fractions) and, for a fork, a dashed
    line at ``fork_at`` (in units of ``x``): left of it is the parent's history."""
    traces, shapes, notes = [], [], []
    if fork_at is not None:
        s, n = vline(fork_at, "#475569", "fork")
        shapes.append(s)
        notes.append(n)
    for m in metrics:
        if m not in wide.columns:
            continue
        d = wide[[x, m]].dropna()
        if d.empty:
            continue
        traces.append(line(d[x], d[m] * 100, LABELS.get(m, m), COLORS.get(m), markers=True))
        ref = (teacher_ref or {}).get(m)
        if ref is not None:
            s, n = hline(ref * 100, COLORS.get(m), f"teacher {ref:.1%}")
            shapes.append(s)
            notes.append(n)
    return figure(
        traces,
        title,
        x_title(x),
        "percent of test images",
        shapes=shapes,
        annotations=notes,
        yaxis={"range": [0, 101], "ticksuffix": " %"},
    )


def loss_curves(
    wide: pd.DataFrame, prefix: str, x: str = "step", title: str | None = None
) -> go.Figure:
    """Every weighted loss term whose name starts with ``prefix`` (``"g_"`` or ``"s_"``)."""
    cols = sorted(
        (c for c in wide.columns if isinstance(c, str) and c.startswith(prefix)),
        key=lambda c: (c.endswith("total"), c),
    )
    traces = []
    for i, c in enumerate(cols):
        d = wide[[x, c]].dropna()
        total = c.endswith("total")
        traces.append(
            line(
                d[x],
                d[c],
                LABELS.get(c, c),
                "#111827" if total else PALETTE[i % 10],
                3.5 if total else 2,
            )
        )
    who = "Generator" if prefix == "g_" else "Student"
    return figure(
        traces, title or f"{who} loss terms (weighted)", x_title(x), "loss (weighted term)"
    )


def agreement_curve(wide: pd.DataFrame, x: str = "step") -> go.Figure:
    """Teacher–student agreement on synthetic samples and the kept share, in %."""
    return accuracy_curves(
        wide, ("agreement", "kept_frac"), x, title="Agreement on synthetic samples"
    )


def compare_curves(
    runs: Mapping[str, pd.DataFrame], metric: str = "id_acc", x: str = "step"
) -> go.Figure:
    """One line per run (label → wide frame) for ``metric`` (a fraction, plotted in %)."""
    traces = []
    for i, (label, wide) in enumerate(runs.items()):
        if metric not in wide.columns:
            continue
        d = wide[[x, metric]].dropna()
        traces.append(line(d[x], d[metric] * 100, label, PALETTE[i % 10], markers=True))
    return figure(
        traces,
        f"Compared: {LABELS.get(metric, metric)}",
        x_title(x),
        "percent of test images",
        yaxis={"ticksuffix": " %"},
    )


def ood_likeness_curves(runs: Mapping[str, pd.DataFrame], x: str = "step") -> go.Figure:
    """Share of synthetic samples whose nearest real neighbours are mostly OOD, per run (in %)."""
    traces = []
    for i, (label, wide) in enumerate(runs.items()):
        if "ood_likeness" not in wide.columns:
            continue
        d = wide[[x, "ood_likeness"]].dropna()
        traces.append(line(d[x], d["ood_likeness"] * 100, label, PALETTE[i % 10], markers=True))
    return figure(
        traces,
        "OOD-likeness of synthetic samples",
        x_title(x),
        "% of samples with mostly-OOD neighbours",
        height=340,
        yaxis={"range": [0, 101], "ticksuffix": " %"},
    )
