"""Plotly figure builders: data in, figure out, no I/O (the pages lay them out).

All accuracy-like values arrive as fractions in [0, 1] and are plotted in percent; steps are
outer iterations; wall time in seconds. Colours are fixed per quantity across the app.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

COLORS = {
    "id_acc": "#2563eb",
    "ood_acc": "#f59e0b",
    "asr": "#dc2626",
    "agreement": "#059669",
    "kept_frac": "#7c3aed",
    "kept": "#059669",
    "rejected": "#dc2626",
}
LABELS = {
    "id_acc": "student ID accuracy",
    "ood_acc": "student OOD accuracy",
    "asr": "attack success rate (ASR)",
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
_FONT = {"size": 15}
_PALETTE = [
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


def downsample(wide: pd.DataFrame, max_rows: int = 400) -> pd.DataFrame:
    """At most about ``max_rows`` evenly spaced rows (always keeping the last), so long runs stay
    cheap to send and draw; rows holding evaluations (``id_acc``) are always kept."""
    if len(wide) <= max_rows:
        return wide
    stride = -(-len(wide) // max_rows)
    keep = (wide.index.to_series() % stride == 0).to_numpy()
    keep[-1] = True
    if "id_acc" in wide.columns:
        keep |= wide["id_acc"].notna().to_numpy()
    return wide[keep]


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 18}},
        xaxis_title=x_title,
        yaxis_title=y_title,
        height=height,
        margin={"l": 60, "r": 20, "t": 50, "b": 40},
        font=_FONT,
        legend={"orientation": "h", "yanchor": "top", "y": -0.22, "xanchor": "left", "x": 0},
        hovermode="x unified",
        template="plotly_white",
        uirevision="keep",
    )
    return fig


def x_title(x: str) -> str:
    return "step (outer iteration)" if x == "step" else "wall time (s)"


def accuracy_curves(
    wide: pd.DataFrame,
    metrics: Sequence[str] = ("id_acc", "ood_acc", "asr"),
    x: str = "step",
    teacher_ref: Mapping[str, float | None] | None = None,
    title: str = "Student accuracy and attack success",
) -> go.Figure:
    """Lines of fraction metrics (in %) from a wide metrics frame (one row per step), with
    optional dotted reference lines (the teacher's values, fractions)."""
    fig = go.Figure()
    for m in metrics:
        if m not in wide.columns:
            continue
        d = wide[[x, m]].dropna()
        if d.empty:
            continue
        fig.add_trace(
            go.Scatter(
                x=d[x],
                y=d[m] * 100,
                name=LABELS.get(m, m),
                mode="lines+markers",
                marker={"size": 5},
                line={"color": COLORS.get(m), "width": 3},
            )
        )
        ref = (teacher_ref or {}).get(m)
        if ref is not None:
            fig.add_hline(
                y=ref * 100,
                line={"color": COLORS.get(m), "dash": "dot", "width": 1.5},
                annotation_text=f"teacher {ref:.1%}",
                annotation_position="bottom right",
            )
    fig.update_yaxes(range=[0, 101], ticksuffix=" %")
    return _layout(fig, title, x_title(x), "percent of test images")


def loss_curves(
    wide: pd.DataFrame, prefix: str, x: str = "step", title: str | None = None
) -> go.Figure:
    """Every weighted loss term whose name starts with ``prefix`` (``"g_"`` or ``"s_"``)."""
    cols = [c for c in wide.columns if isinstance(c, str) and c.startswith(prefix)]
    cols.sort(key=lambda c: (c.endswith("total"), c))
    fig = go.Figure()
    for i, c in enumerate(cols):
        d = wide[[x, c]].dropna()
        fig.add_trace(
            go.Scatter(
                x=d[x],
                y=d[c],
                name=LABELS.get(c, c),
                mode="lines",
                line={
                    "width": 3.5 if c.endswith("total") else 2,
                    "color": "#111827" if c.endswith("total") else _PALETTE[i % 10],
                },
            )
        )
    who = "Generator" if prefix == "g_" else "Student"
    return _layout(fig, title or f"{who} loss terms (weighted)", x_title(x), "loss (weighted term)")


def agreement_curve(wide: pd.DataFrame, x: str = "step") -> go.Figure:
    """Teacher–student agreement on synthetic samples and the kept share, in %."""
    return accuracy_curves(
        wide, ("agreement", "kept_frac"), x, title="Agreement on synthetic samples"
    )


def compare_curves(
    runs: Mapping[str, pd.DataFrame], metric: str = "id_acc", x: str = "step"
) -> go.Figure:
    """One line per run (label → wide frame) for ``metric`` (a fraction, plotted in %)."""
    fig = go.Figure()
    for i, (label, wide) in enumerate(runs.items()):
        if metric not in wide.columns:
            continue
        d = wide[[x, metric]].dropna()
        fig.add_trace(
            go.Scatter(
                x=d[x],
                y=d[metric] * 100,
                name=label,
                mode="lines+markers",
                line={"width": 3, "color": _PALETTE[i % 10]},
            )
        )
    fig.update_yaxes(ticksuffix=" %")
    return _layout(
        fig, f"Compared: {LABELS.get(metric, metric)}", x_title(x), "percent of test images"
    )


def score_histogram(
    scores: Iterable[float],
    keep: Iterable[bool],
    threshold: float | None = None,
    score_name: str = "score",
) -> go.Figure:
    """Histogram of per-sample defense scores, kept vs rejected, with the decision threshold."""
    s = np.asarray(list(scores), dtype=float)
    k = np.asarray(list(keep), dtype=bool)
    fig = go.Figure()
    for name, mask, color in (("kept", k, COLORS["kept"]), ("rejected", ~k, COLORS["rejected"])):
        fig.add_trace(
            go.Histogram(
                x=s[mask],
                name=f"{name} ({int(mask.sum())})",
                marker_color=color,
                opacity=0.75,
                nbinsx=30,
            )
        )
    if threshold is not None:
        fig.add_vline(
            x=threshold,
            line={"color": "#111827", "dash": "dash", "width": 2},
            annotation_text="threshold",
        )
    fig.update_layout(barmode="overlay")
    return _layout(
        fig, "Defense scores of synthetic samples", score_name, "number of samples", height=340
    )


def decision_counts(df: pd.DataFrame) -> go.Figure:
    """Kept / rejected snapshot samples per step (stacked bars)."""
    fig = go.Figure()
    for col in ("kept", "rejected"):
        if col in df.columns:
            fig.add_trace(go.Bar(x=df["step"], y=df[col], name=col, marker_color=COLORS[col]))
    fig.update_layout(barmode="stack")
    return _layout(
        fig,
        "Decisions over training (snapshot samples)",
        "step (outer iteration)",
        "samples",
        height=300,
    )


def label_histogram(
    labels: Iterable[int], num_classes: int, class_names: Sequence[str] | None = None
) -> go.Figure:
    """How many synthetic samples the teacher assigns to each class (class coverage)."""
    counts = np.bincount(np.asarray(list(labels), dtype=int), minlength=num_classes)[:num_classes]
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    fig = go.Figure(go.Bar(x=names, y=counts, marker_color="#2563eb"))
    return _layout(fig, "Teacher labels of the snapshot", "teacher label", "samples", height=260)
