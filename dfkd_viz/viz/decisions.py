"""The defenses' keep/reject decisions: score histograms with the threshold, kept/rejected counts, teacher labels, TA-DFKD's two-component mixture."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dfkd_viz.viz._base import (
    COLORS,
    figure,
    line,
)

DECISION_NAMES = {"keep": ("kept", "rejected"), "flag": ("not flagged", "flagged")}

DECISION_BADGES = {"keep": ("kept", "rejected"), "flag": ("ok", "flagged")}


def decision_view(samples: pd.DataFrame) -> tuple[str, np.ndarray]:
    """How a snapshot's per-sample decisions are shown: ``(by, good)``. A defense that flags
    samples without rejecting any (ABD's suspicious samples) is shown by its flags
    (``by="flag"``, ``good`` = not flagged); one that selects, by keep / reject (``by="keep"``,
    ``good`` = kept; samples without a decision count as kept). ``good`` is ``(n,)`` bool; the
    labels are :data:`DECISION_NAMES` / :data:`DECISION_BADGES` ``[by]``."""
    flag, keep = samples["flag"], samples["keep"]
    if flag.notna().any() and keep.fillna(1).astype(bool).all():
        return "flag", ~flag.fillna(0).astype(bool).to_numpy()
    return "keep", keep.fillna(1).astype(bool).to_numpy()


def score_histogram(
    scores: Iterable[float],
    keep: Iterable[bool],
    threshold: float | None = None,
    score_name: str = "score",
    names: tuple[str, str] = ("kept", "rejected"),
) -> go.Figure:
    """Histogram of per-sample defense scores split by a decision (``keep`` True → ``names[0]``,
    False → ``names[1]``; kept vs rejected, or not flagged vs flagged), stacked on shared bins,
    with the threshold. Non-negative scores crowded near 0 (median < 2 % of the maximum) are
    shown as log10(score + 1e-6)."""
    s = np.asarray(list(scores), dtype=float)
    k = np.asarray(list(keep), dtype=bool)
    finite = s[np.isfinite(s)]
    # non-negative scores crowded near 0 (ATEsc's post-attack confidence) read better in log10
    log = (
        len(finite) > 1
        and finite.min() >= 0
        and finite.max() > 0
        and np.quantile(finite, 0.5) < 0.02 * finite.max()
    )
    if log:
        eps = 1e-6
        s = np.log10(s + eps)
        threshold = None if threshold is None else float(np.log10(threshold + eps))
        score_name = f"log10 {score_name}"
    finite = s[np.isfinite(s)]
    edges = np.histogram_bin_edges(finite if len(finite) else [0.0, 1.0], bins=30)
    size = float(edges[1] - edges[0]) or 1.0
    traces = [
        {
            "type": "histogram",
            "x": s[mask].tolist(),
            "name": f"{name} ({int(mask.sum())})",
            "marker": {"color": color},
            "opacity": 0.85,
            "xbins": {"start": float(edges[0]), "end": float(edges[-1]) + size, "size": size},
        }
        for name, mask, color in (
            (names[0], k, COLORS.get(names[0], COLORS["kept"])),
            (names[1], ~k, COLORS.get(names[1], COLORS["rejected"])),
        )
    ]
    shapes, notes = [], []
    if threshold is not None:
        shapes.append(
            {
                "type": "line",
                "yref": "paper",
                "x0": threshold,
                "x1": threshold,
                "y0": 0,
                "y1": 1,
                "line": {"color": "#111827", "dash": "dash", "width": 2},
            }
        )
        notes.append(
            {
                "yref": "paper",
                "x": threshold,
                "y": 1,
                "text": "threshold",
                "showarrow": False,
                "yanchor": "bottom",
            }
        )
    return figure(
        traces,
        "Defense scores of synthetic samples",
        score_name,
        "number of samples",
        height=360,
        shapes=shapes,
        annotations=notes,
        barmode="stack",
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0},
        margin={"l": 60, "r": 20, "t": 50, "b": 70},
    )


def decision_counts(df: pd.DataFrame) -> go.Figure:
    """Snapshot samples per step and decision (stacked bars; one trace per column besides
    ``step``: kept / rejected, or not flagged / flagged)."""
    traces = [
        {
            "type": "bar",
            "x": df["step"].tolist(),
            "y": df[col].tolist(),
            "name": col,
            "marker": {"color": COLORS.get(col, "#64748b")},
        }
        for col in df.columns
        if col != "step"
    ]
    return figure(
        traces,
        "Decisions over training (snapshot samples)",
        "step (outer iteration)",
        "samples",
        height=320,
        barmode="stack",
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0},
        margin={"l": 60, "r": 20, "t": 50, "b": 70},
    )


def label_histogram(
    labels: Iterable[int], num_classes: int, class_names: Sequence[str] | None = None
) -> go.Figure:
    """How many synthetic samples the teacher assigns to each class (class coverage)."""
    counts = np.bincount(np.asarray(list(labels), dtype=int), minlength=num_classes)[:num_classes]
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    trace = {"type": "bar", "x": names, "y": counts.tolist(), "marker": {"color": "#2563eb"}}
    return figure([trace], "Teacher labels of the snapshot", "teacher label", "samples", height=260)


def gmm_posterior_crossing(gmm: np.ndarray, level: float = 0.5) -> float | None:
    """Where the clean component's posterior falls to ``level`` between the two component means
    of a 1-D two-component mixture ``gmm`` ``(3, 2)`` (rows means, variances, weights; clean
    first) — the selection boundary of TA-DFKD on the normalised-loss axis, or None (no fit, or
    no crossing between the means)."""
    m, v, w = (np.asarray(r, dtype=float) for r in gmm)
    if not np.isfinite(gmm).all():
        return None
    xs = np.linspace(m[0], m[1], 2001)
    dens = (
        w[:, None]
        * np.exp(-((xs[None] - m[:, None]) ** 2) / (2 * v[:, None]))
        / np.sqrt(2 * np.pi * v[:, None])
    )
    post = dens[0] / np.maximum(dens.sum(0), 1e-300)
    below = np.nonzero(post <= level)[0]
    return float(xs[below[0]]) if len(below) else None


def gmm_selection(norm_loss: Iterable[float], keep: Iterable[bool], gmm: np.ndarray) -> go.Figure:
    """TA-DFKD's selection for one batch: histogram of the normalised teacher losses (kept vs
    rejected, stacked), the two fitted Gaussian components (scaled to counts), and the line where
    the clean component's posterior is 0.5.

    Args:
        norm_loss: ``(n,)`` in [0, 1]; keep: ``(n,)`` bool; gmm: ``(3, 2)`` means, variances,
            weights (clean component first; NaN when not fitted).
    """
    s = np.asarray(list(norm_loss), dtype=float)
    k = np.asarray(list(keep), dtype=bool)
    nbins = 25
    size = 1.0 / nbins
    traces: list[dict[str, Any]] = [
        {
            "type": "histogram",
            "x": s[mask].tolist(),
            "name": f"{name} ({int(mask.sum())})",
            "marker": {"color": COLORS[name]},
            "opacity": 0.8,
            "xbins": {"start": 0.0, "end": 1.0 + 1e-9, "size": size},
        }
        for name, mask in (("kept", k), ("rejected", ~k))
    ]
    shapes, notes = [], []
    gmm = np.asarray(gmm, dtype=float)
    if gmm.shape == (3, 2) and np.isfinite(gmm).all():
        xs = np.linspace(0, 1, 201)
        for i, (name, color) in enumerate(
            (("clean component", "#047857"), ("noisy component", "#b91c1c"))
        ):
            m, v, w = gmm[0, i], gmm[1, i], gmm[2, i]
            pdf = w * np.exp(-((xs - m) ** 2) / (2 * v)) / np.sqrt(2 * np.pi * v)
            traces.append(
                line(xs, pdf * len(s) * size, name, color, width=2.5)
                | {"line": {"color": color, "width": 2.5, "dash": "dot"}}
            )
        cut = gmm_posterior_crossing(gmm)
        if cut is not None:
            shapes.append(
                {
                    "type": "line",
                    "yref": "paper",
                    "x0": cut,
                    "x1": cut,
                    "y0": 0,
                    "y1": 1,
                    "line": {"color": "#111827", "dash": "dash", "width": 2},
                }
            )
            notes.append(
                {
                    "yref": "paper",
                    "x": cut,
                    "y": 1,
                    "text": "posterior 0.5",
                    "showarrow": False,
                    "yanchor": "bottom",
                }
            )
    return figure(
        traces,
        "Teacher verification (mixture on the teacher's loss)",
        "normalised teacher loss CE(T(x), argmax T(x)) (0 = most certain)",
        "number of samples",
        height=380,
        shapes=shapes,
        annotations=notes,
        barmode="stack",
        hovermode="closest",
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0},
        margin={"l": 60, "r": 20, "t": 50, "b": 80},
    )
