"""Figures for the trigger-saliency view: attribution overlays as one mosaic image, the
Self-Retrospection trigger δ, and the trigger-localisation curve over training.

Attribution maps arrive as ``(N, H, W)`` floats ≥ 0 (:func:`dfkd_viz.analysis.saliency.attribute`);
images as ``(N, C, H, W)`` (C = 1 or 3: grey or colour) or ``(N, H, W)``, uint8 in [0, 255] or
float in [0, 1]. The mosaic is a single ``go.Image`` (one trace whatever the number of tiles: cheap
to send and draw); colour images stay in colour, in the image row and under the overlays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dfkd_viz.viz._base import figure, hline, line, x_title

# "inferno"-like anchors (black → purple → orange → pale yellow) for attribution strength
_HEAT = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)
TILE_PAD = 2
LOC_COLOR = "#7c3aed"


def _rgb01(images: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` float in [0, 1] from ``(N, C, H, W)`` (C = 1 or 3) / ``(N, H, W)`` uint8
    or float: grey images repeated over the three channels, colour images as they are."""
    a = np.asarray(images)
    a = a.astype(np.float64) / 255.0 if a.dtype == np.uint8 else a.astype(np.float64)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(
            f"expected (N, C, H, W) images with C = 1 or 3, or (N, H, W), got shape {a.shape}"
        )
    a = np.repeat(a, 3, 1) if a.shape[1] == 1 else a
    return np.clip(a.transpose(0, 2, 3, 1), 0.0, 1.0)


def heat_rgb(attr: np.ndarray) -> np.ndarray:
    """``(..., H, W)`` maps ≥ 0 → ``(..., H, W, 3)`` uint8 heat colours, each map scaled by its own
    99th percentile (so one hot pixel does not wash the rest out)."""
    a = np.abs(np.asarray(attr, dtype=np.float64))
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1]) if a.ndim > 2 else a.reshape(1, -1)
    hi = np.percentile(flat, 99, axis=1)
    hi = np.where(hi > 0, hi, 1.0).reshape((*a.shape[:-2], 1, 1))
    t = np.clip(a / hi, 0, 1) * (len(_HEAT) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_HEAT) - 2)
    f = (t - lo)[..., None]
    rgb = _HEAT[lo] * (1 - f) + _HEAT[lo + 1] * f
    return rgb.round().astype(np.uint8)


def overlay_rgb(images: np.ndarray, attr: np.ndarray, context: float = 0.35) -> np.ndarray:
    """Heat colours of ``attr`` ``(N, H, W)`` with the ``images`` (grey or colour) faintly
    underneath (weight ``context``, the larger value per channel wins) so the digit stays
    recognisable: ``(N, H, W, 3)`` uint8."""
    g = _rgb01(images) * 255.0 * context
    heat = heat_rgb(attr).astype(np.float64)
    return np.maximum(heat, g).round().clip(0, 255).astype(np.uint8)


def saliency_mosaic(
    images: np.ndarray,
    maps: Mapping[str, np.ndarray],
    captions: Sequence[str] | None = None,
    title: str = "",
    tile_px: int = 72,
) -> go.Figure:
    """One row of images, then one row of overlays per entry of ``maps`` (``name → (N, H, W)``),
    as a single image; row names on the left, ``captions`` (one per column) below.

    Raises ValueError if a map's shape does not match the images."""
    g = _rgb01(images)
    n, h, w = g.shape[:3]
    rows = [(g * 255).round().astype(np.uint8)]
    for name, m in maps.items():
        if np.asarray(m).shape != (n, h, w):
            raise ValueError(f"map {name!r} has shape {np.asarray(m).shape}, expected {(n, h, w)}")
        rows.append(overlay_rgb(images, m))
    p = TILE_PAD
    mosaic = np.full((len(rows) * (h + p) + p, n * (w + p) + p, 3), 255, dtype=np.uint8)
    for r, tiles in enumerate(rows):
        for c in range(n):
            y, x = p + r * (h + p), p + c * (w + p)
            mosaic[y : y + h, x : x + w] = tiles[c]
    names = ["image", *maps.keys()]
    y_ticks = [p + r * (h + p) + h / 2 for r in range(len(rows))]
    x_ticks = [p + c * (w + p) + w / 2 for c in range(n)]
    lay = {
        "title": {"text": title, "x": 0.01, "font": {"size": 16}},
        "height": int(len(rows) * tile_px + 110),
        "width": int(n * tile_px * w / h + 170),
        "margin": {"l": 150, "r": 10, "t": 40 if title else 10, "b": 60},
        "xaxis": {
            "tickvals": x_ticks,
            "ticktext": list(captions) if captions is not None else [""] * n,
            "showgrid": False,
            "zeroline": False,
            "side": "bottom",
            "tickangle": 0,
            "tickfont": {"size": 12},
        },
        "yaxis": {
            "tickvals": y_ticks,
            "ticktext": names,
            "showgrid": False,
            "zeroline": False,
            "scaleanchor": "x",
        },
        "font": {"size": 13},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
    }
    return go.Figure({"data": [{"type": "image", "z": mosaic, "hoverinfo": "skip"}], "layout": lay})


def trigger_figure(delta: np.ndarray, title: str = "Self-Retrospection trigger δ") -> go.Figure:
    """The synthesised universal trigger ``(C, H, W)`` or ``(H, W)`` (pixel units, signed) as a
    diverging heatmap centred on 0 (channels averaged)."""
    d = np.asarray(delta, dtype=np.float64)
    if d.ndim == 3:
        d = d.mean(0)
    if d.ndim != 2:
        raise ValueError(f"expected a (C, H, W) or (H, W) trigger, got shape {d.shape}")
    lim = float(np.abs(d).max()) or 1.0
    trace = {
        "type": "heatmap",
        "z": d[::-1].tolist(),
        "colorscale": "RdBu",
        "reversescale": True,
        "zmin": -lim,
        "zmax": lim,
        "colorbar": {"title": {"text": "δ (pixels)"}},
        "hovertemplate": "δ=%{z:.3f}<extra></extra>",
    }
    lay = {
        "title": {"text": title, "x": 0.01, "font": {"size": 16}},
        "height": 320,
        "width": 360,
        "margin": {"l": 20, "r": 20, "t": 40, "b": 20},
        "xaxis": {"visible": False},
        "yaxis": {"visible": False, "scaleanchor": "x"},
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
    }
    return go.Figure({"data": [trace], "layout": lay})


def localisation_curve(
    wide: pd.DataFrame,
    teacher: float | None = None,
    chance: float | None = None,
    x: str = "step",
    clean: float | None = None,
) -> go.Figure:
    """The student's trigger-localisation score over training (``wide`` has ``trigger_loc`` in
    [0, 1] and ``x``), in percent, with the backdoored teacher's value, a clean model's value (what
    a model without the backdoor puts there: the trigger may overlap digit strokes) and the chance
    level (the trigger's area share) as dotted lines."""
    d = wide.dropna(subset=["trigger_loc"]) if "trigger_loc" in wide else wide.iloc[:0]
    traces = []
    if len(d):
        traces.append(line(d[x], 100 * d["trigger_loc"], "student", LOC_COLOR, markers=len(d) < 30))
    shapes, notes = [], []
    for val, color, text in (
        (teacher, "#dc2626", "teacher"),
        (clean, "#059669", "clean model"),
        (chance, "#64748b", "chance"),
    ):
        if val is not None:
            s, a = hline(100 * val, color, f"{text} {100 * val:.1f} %")
            shapes.append(s)
            notes.append(a)
    return figure(
        traces,
        "Trigger localisation: attribution mass inside the trigger",
        x_title(x),
        "% of |IG attribution|",
        height=340,
        shapes=shapes,
        annotations=notes,
        yaxis={"range": [0, 100]},
    )
