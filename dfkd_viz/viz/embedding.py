"""The embedding map: real ID and OOD reference points and synthetic samples in the teacher's feature space (UMAP coordinates computed by the worker)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dfkd_viz.viz._base import (
    COLORS,
    PALETTE,
    figure,
)

TITLE = "Teacher feature space (UMAP of real data; synthetic samples placed in it)"


def embedding_map(
    ref: pd.DataFrame,
    samples: pd.DataFrame | None,
    color_by: str = "source",
    score_name: str = "score",
    *,
    selectable: bool = True,
    title: str = TITLE,
    height: int = 620,
    ranges: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> go.Figure:
    """The run's 2-D map: real ID and OOD reference points and one snapshot's synthetic samples.

    Args:
        ref: ``idx, source (id|ood), label, emb_x, emb_y`` rows.
        samples: ``idx, teacher_label, confidence, score, keep, emb_x, emb_y`` rows, or None.
        color_by: ``source`` (ID / OOD / synthetic kept / rejected), ``class`` (true label for
            real points, teacher label for synthetic ones), ``score`` or ``confidence``.
        selectable: every point carries ``customdata = [kind, idx]`` (kind ``"ref"`` or
            ``"syn"``) so a box / lasso selection can be mapped back to its images. False
            draws the same map for viewing only: coordinates go out as typed arrays and the
            hover shows the label (about 20× cheaper to build and send for 4000 points; the
            Compare page's side-by-side maps).
        title: the figure's title.
        height: pixels.
        ranges: ``((x0, x1), (y0, y1))`` fixed axis ranges in map coordinates (several maps of
            one teacher drawn at the same scale), or None to fit the points.
    """
    traces: list[dict[str, Any]] = []
    syn = samples.dropna(subset=["emb_x"]) if samples is not None and len(samples) else None

    def pts(df, kind, name, color, size, symbol="circle", opacity=0.7, **extra):
        labels = df["label"] if "label" in df else df["teacher_label"]
        trace = {
            "type": "scattergl",
            "mode": "markers",
            "name": name,
            "marker": {"color": color, "size": size, "symbol": symbol, "opacity": opacity, **extra},
        }
        if not selectable:
            trace.update(
                x=df["emb_x"].to_numpy(np.float32),
                y=df["emb_y"].to_numpy(np.float32),
                customdata=labels.to_numpy(np.int16),
                hovertemplate=f"{name}<br>label %{{customdata}}<extra></extra>",
            )
            return trace
        trace.update(
            x=df["emb_x"].tolist(),
            y=df["emb_y"].tolist(),
            customdata=[[kind, int(i)] for i in df["idx"]],
            hovertemplate=f"{name}<br>%{{text}}<extra></extra>",
            text=[f"label {lab}" for lab in labels],
        )
        return trace

    if color_by == "class":
        for c in sorted(ref["label"].unique()):
            d = ref[ref["label"] == c]
            traces.append(pts(d, "ref", f"class {c} (real)", PALETTE[int(c) % 10], 5, opacity=0.35))
        if syn is not None:
            for c in sorted(syn["teacher_label"].unique()):
                d = syn[syn["teacher_label"] == c]
                traces.append(
                    pts(
                        d,
                        "syn",
                        f"class {c} (synthetic)",
                        PALETTE[int(c) % 10],
                        11,
                        "star",
                        0.95,
                        line={"width": 1, "color": "#111827"},
                    )
                )
    else:
        for src, name, color in (("id", "real ID", "#93c5fd"), ("ood", "real OOD", "#fdba74")):
            d = ref[ref["source"] == src]
            if len(d):
                traces.append(pts(d, "ref", name, color, 5))
        if syn is not None:
            if color_by in ("score", "confidence") and syn[color_by].notna().any():
                t = pts(syn, "syn", "synthetic", None, 11, "star", 0.95)
                t["marker"].update(
                    color=syn[color_by].tolist(),
                    colorscale="Viridis",
                    showscale=True,
                    colorbar={
                        "title": {
                            "text": score_name if color_by == "score" else "teacher confidence"
                        }
                    },
                    line={"width": 1, "color": "#111827"},
                )
                traces.append(t)
            else:
                keep = syn["keep"]
                groups = (
                    [
                        ("synthetic kept", keep == 1, COLORS["kept"]),
                        ("synthetic rejected", keep == 0, COLORS["rejected"]),
                    ]
                    if keep.notna().any()
                    else [("synthetic", keep.isna(), "#111827")]
                )
                for name, mask, color in groups:
                    d = syn[mask.fillna(False).astype(bool)]
                    if len(d):
                        traces.append(
                            pts(
                                d,
                                "syn",
                                name,
                                color,
                                10,
                                "star",
                                0.95,
                                line={"width": 1, "color": "white"},
                            )
                        )
    fig = figure(
        traces,
        title,
        "UMAP 1",
        "UMAP 2",
        height=height,
        hovermode="closest",
        dragmode="lasso" if selectable else "zoom",
        yaxis={"showticklabels": False, **({"range": list(ranges[1])} if ranges else {})},
    )
    fig.layout.xaxis.showticklabels = False
    if ranges:
        fig.layout.xaxis.range = list(ranges[0])
    return fig
