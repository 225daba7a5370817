"""Out-of-domain KD (AuG-KD): energy histograms, anchor masks, the same-split comparison of methods."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dfkd_viz.viz._base import (
    PALETTE,
    figure,
)

ENERGY_NAMES = (
    "real student-domain x",
    "G(Enc(x)) before anchoring",
    "G(anchor(Enc(x))) after anchoring",
)


def energy_histograms(
    energy: np.ndarray, title: str = "Teacher's uncertainty (energy)"
) -> go.Figure:
    """Overlaid histograms of the teacher's free energy ``−logsumexp(logits)`` (lower = more
    certain; AuG-KD's uncertainty) on three sets of the same student-domain samples.

    Args:
        energy: ``(3, n)`` rows in :data:`ENERGY_NAMES` order (``augkd_energy`` artifact).

    Raises:
        ValueError: ``energy`` is not ``(3, n)``.
    """
    e = np.asarray(energy, dtype=float)
    if e.ndim != 2 or e.shape[0] != 3:
        raise ValueError(f"energy must be (3, n) (got {e.shape})")
    colors = ("#0891b2", "#94a3b8", "#7c3aed")
    traces = [
        go.Histogram(
            x=row,
            name=f"{name} (median {np.median(row):.1f})",
            marker_color=c,
            opacity=0.65,
            nbinsx=30,
        )
        for row, name, c in zip(e, ENERGY_NAMES, colors)
    ]
    fig = figure(traces, title, "energy (lower = teacher more certain)", "samples")
    fig.update_layout(barmode="overlay", legend={"orientation": "h", "y": -0.25})
    return fig


def anchor_masks(
    mask: np.ndarray, classes: Sequence[str] | None = None, title: str = "Anchor mask per class"
) -> go.Figure:
    """Heatmap of the anchor's label-conditioned mask ``m`` (``augkd_mask`` artifact, ``(K, L)``,
    values in [0, 1/3)): which latent dimensions the anchor may move for each class.

    Raises:
        ValueError: ``mask`` is not 2-D.
    """
    m = np.asarray(mask, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"mask must be (K, L) (got {m.shape})")
    names = list(classes) if classes is not None else [str(i) for i in range(m.shape[0])]
    fig = go.Figure(
        go.Heatmap(
            z=m,
            y=[f"class {n}" for n in names],
            colorscale="Viridis",
            zmin=0.0,
            zmax=1.0 / 3.0,
            colorbar={"title": "m"},
            hovertemplate="%{y}, latent dim %{x}: m = %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title={"text": title, "font": {"size": 18}},
        xaxis_title="latent dimension",
        height=360,
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
        font={"size": 14},
        template="plotly_white",
    )
    return fig


def domain_comparison(
    rows: pd.DataFrame, title: str = "Student-domain accuracy by method"
) -> go.Figure:
    """Bars of student-domain accuracy (%) per run, grouped by method.

    Args:
        rows: columns ``method``, ``run_id``, ``student_domain_acc`` (fraction) and optionally
            ``current`` (bool: the run on show, drawn darker).
    """
    traces = []
    for i, (method, sub) in enumerate(rows.groupby("method", sort=False)):
        traces.append(
            go.Bar(
                x=[method] * len(sub),
                y=sub["student_domain_acc"].astype(float) * 100,
                name=method,
                marker_color=PALETTE[i % 10],
                marker_line={
                    "width": [3 if c else 0 for c in sub.get("current", [False] * len(sub))]
                },
                text=[f"{100 * v:.1f} %" for v in sub["student_domain_acc"].astype(float)],
                hovertext=sub["run_id"],
                hovertemplate="%{hovertext}: %{y:.1f} %<extra></extra>",
            )
        )
    fig = figure(traces, title, "method", "percent of student-domain test images")
    fig.update_layout(
        barmode="group", yaxis={"range": [0, 101], "ticksuffix": " %"}, showlegend=False
    )
    return fig
