"""Plotly figure builders: data in, figure out, no I/O (the pages lay them out).

All accuracy-like values arrive as fractions in [0, 1] and are plotted in percent; steps are
outer iterations; wall time in seconds. Colours are fixed per quantity across the app.

Figures are assembled as one plain dict and converted once (``go.Figure(dict)``): plotly's
incremental ``add_trace`` / ``update_layout`` / ``add_hline`` and named templates cost 10–20 ms per
figure, which adds up in a live view that redraws four figures every 1.5 s (measured: 15–20 ms →
~1 ms per figure).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
_AXIS = {"gridcolor": "#e5e7eb", "zerolinecolor": "#cbd5e1", "linecolor": "#94a3b8"}


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


def _figure(
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
        "xaxis": {"title": {"text": x_label}, **_AXIS},
        "yaxis": {"title": {"text": y_label}, **_AXIS, **layout.pop("yaxis", {})},
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
    return go.Figure({"data": traces, "layout": lay})


def _line(
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


def _hline(y: float, color: str | None, text: str) -> tuple[dict, dict]:
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


def accuracy_curves(
    wide: pd.DataFrame,
    metrics: Sequence[str] = ("id_acc", "ood_acc", "asr", "student_domain_acc"),
    x: str = "step",
    teacher_ref: Mapping[str, float | None] | None = None,
    title: str = "Student accuracy and attack success",
) -> go.Figure:
    """Lines of fraction metrics (in %) from a wide metrics frame (one row per step), with
    optional dotted reference lines (the teacher's values, fractions)."""
    traces, shapes, notes = [], [], []
    for m in metrics:
        if m not in wide.columns:
            continue
        d = wide[[x, m]].dropna()
        if d.empty:
            continue
        traces.append(_line(d[x], d[m] * 100, LABELS.get(m, m), COLORS.get(m), markers=True))
        ref = (teacher_ref or {}).get(m)
        if ref is not None:
            s, n = _hline(ref * 100, COLORS.get(m), f"teacher {ref:.1%}")
            shapes.append(s)
            notes.append(n)
    return _figure(
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
            _line(
                d[x],
                d[c],
                LABELS.get(c, c),
                "#111827" if total else _PALETTE[i % 10],
                3.5 if total else 2,
            )
        )
    who = "Generator" if prefix == "g_" else "Student"
    return _figure(
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
        traces.append(_line(d[x], d[metric] * 100, label, _PALETTE[i % 10], markers=True))
    return _figure(
        traces,
        f"Compared: {LABELS.get(metric, metric)}",
        x_title(x),
        "percent of test images",
        yaxis={"ticksuffix": " %"},
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
    return _figure(
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
    return _figure(
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
    return _figure(
        [trace], "Teacher labels of the snapshot", "teacher label", "samples", height=260
    )


def embedding_map(
    ref: pd.DataFrame,
    samples: pd.DataFrame | None,
    color_by: str = "source",
    score_name: str = "score",
) -> go.Figure:
    """The run's 2-D map: real ID and OOD reference points and one snapshot's synthetic samples.

    Args:
        ref: ``idx, source (id|ood), label, emb_x, emb_y`` rows.
        samples: ``idx, teacher_label, confidence, score, keep, emb_x, emb_y`` rows, or None.
        color_by: ``source`` (ID / OOD / synthetic kept / rejected), ``class`` (true label for
            real points, teacher label for synthetic ones), ``score`` or ``confidence``.

    Every point carries ``customdata = [kind, idx]`` (kind ``"ref"`` or ``"syn"``) so a selection can
    be mapped back to its images.
    """
    traces: list[dict[str, Any]] = []
    syn = samples.dropna(subset=["emb_x"]) if samples is not None and len(samples) else None

    def pts(df, kind, name, color, size, symbol="circle", opacity=0.7, **extra):
        return {
            "type": "scattergl",
            "mode": "markers",
            "x": df["emb_x"].tolist(),
            "y": df["emb_y"].tolist(),
            "name": name,
            "customdata": [[kind, int(i)] for i in df["idx"]],
            "marker": {"color": color, "size": size, "symbol": symbol, "opacity": opacity, **extra},
            "hovertemplate": f"{name}<br>%{{text}}<extra></extra>",
            "text": [
                f"label {lab}" for lab in (df["label"] if "label" in df else df["teacher_label"])
            ],
        }

    if color_by == "class":
        for c in sorted(ref["label"].unique()):
            d = ref[ref["label"] == c]
            traces.append(
                pts(d, "ref", f"class {c} (real)", _PALETTE[int(c) % 10], 5, opacity=0.35)
            )
        if syn is not None:
            for c in sorted(syn["teacher_label"].unique()):
                d = syn[syn["teacher_label"] == c]
                traces.append(
                    pts(
                        d,
                        "syn",
                        f"class {c} (synthetic)",
                        _PALETTE[int(c) % 10],
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
    fig = _figure(
        traces,
        "Teacher feature space (UMAP of real data; synthetic samples placed in it)",
        "UMAP 1",
        "UMAP 2",
        height=620,
        hovermode="closest",
        dragmode="lasso",
    )
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def ood_likeness_curves(runs: Mapping[str, pd.DataFrame], x: str = "step") -> go.Figure:
    """Share of synthetic samples whose nearest real neighbours are mostly OOD, per run (in %)."""
    traces = []
    for i, (label, wide) in enumerate(runs.items()):
        if "ood_likeness" not in wide.columns:
            continue
        d = wide[[x, "ood_likeness"]].dropna()
        traces.append(_line(d[x], d["ood_likeness"] * 100, label, _PALETTE[i % 10], markers=True))
    return _figure(
        traces,
        "OOD-likeness of synthetic samples",
        x_title(x),
        "% of samples with mostly-OOD neighbours",
        height=340,
        yaxis={"range": [0, 101], "ticksuffix": " %"},
    )


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
                _line(xs, pdf * len(s) * size, name, color, width=2.5)
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
    return _figure(
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
                "marker": {"color": _PALETTE[i % len(_PALETTE)], "size": 10, "opacity": 0.9},
                "text": [f"{t} · seed {s}" for s in g["seed"]],
                "hovertemplate": "%{text}: %{y:.1f} %<extra></extra>",
            }
        )
    label = (
        "student ID accuracy, % of the teacher's"
        if value == "rel_acc"
        else LABELS.get(value, value)
    )
    return _figure(
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
        color = _PALETTE[i % len(_PALETTE)]
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
    return _figure(
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


# ----------------------------------------------------------------------------- out-of-domain KD
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
    fig = _figure(traces, title, "energy (lower = teacher more certain)", "samples")
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
                marker_color=_PALETTE[i % 10],
                marker_line={
                    "width": [3 if c else 0 for c in sub.get("current", [False] * len(sub))]
                },
                text=[f"{100 * v:.1f} %" for v in sub["student_domain_acc"].astype(float)],
                hovertext=sub["run_id"],
                hovertemplate="%{hovertext}: %{y:.1f} %<extra></extra>",
            )
        )
    fig = _figure(traces, title, "method", "percent of student-domain test images")
    fig.update_layout(
        barmode="group", yaxis={"range": [0, 101], "ticksuffix": " %"}, showlegend=False
    )
    return fig
