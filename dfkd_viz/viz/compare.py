"""Runs side by side (the Compare page and ``dfkd-viz runs compare``): the table of configuration
differences, accuracy / ASR curves overlaid with a line at the compared step, and per-run panels at
that step (synthetic samples, the embedding map, the per-class heatmap).

Data in, figure / table / HTML out, no I/O: the page and the report read the run stores and pass
plain values here. Runs are identified by their position (0 … n-1, the order the user gave them),
which also picks their colour (:func:`run_colors`), so one run has one colour on every view.
Fractions arrive in [0, 1] and are drawn in percent; steps are outer iterations.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from dfkd_viz.viz._base import LABELS, PALETTE, figure, line, vline, x_title
from dfkd_viz.viz.decisions import DECISION_BADGES, decision_view
from dfkd_viz.viz.embedding import embedding_map
from dfkd_viz.viz.gallery import sample_grid_html
from dfkd_viz.viz.per_class import per_class_heatmap

MAX_RUNS = 4
"""At most this many runs side by side (the columns stay readable on one screen)."""

CURVE_METRICS = ("id_acc", "ood_acc", "asr")
"""The fraction metrics overlaid, in this order (each drawn only when some run recorded it)."""

FIRST_FIELDS = (
    "teacher",
    "method",
    "defense",
    "method_params",
    "defense_params",
    "student",
    "seed",
    "steps",
    "seconds",
    "preset",
)
"""Configuration fields listed first in the differences table (the rest follow in config order)."""

SHORT_TITLES = {
    "id_acc": "ID accuracy per class",
    "ood_acc": "OOD accuracy per class",
    "asr": "ASR per source class",
}
"""Titles of the per-class panels (narrow columns; the long ones are ``PER_CLASS_TITLES``)."""

_MISSING = "—"
_STAMP = re.compile(r"^\d{8}-\d{6}-(.+)$")


def run_colors(n: int) -> list[str]:
    """``n`` distinct colours (hex), the ``i``-th for the ``i``-th run on every view; ``n`` ≤ 10."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def short_id(run_id: str) -> str:
    """A run id without its ``YYYYmmdd-HHMMSS-`` stamp (``20260101-120000-dfq-1a2b`` →
    ``dfq-1a2b``); any other id unchanged."""
    m = _STAMP.match(run_id)
    return m.group(1) if m else run_id


def run_labels(run_ids: Sequence[str]) -> list[str]:
    """One distinct, short label per run for legends and column headers: :func:`short_id`, or the
    full id where two different runs share a short id; a run given twice gets ``(2)``, ``(3)`` …
    appended."""
    taken: dict[str, set[str]] = {}
    for r in run_ids:
        taken.setdefault(short_id(r), set()).add(r)
    out: list[str] = []
    seen: dict[str, int] = {}
    for r in run_ids:
        label = short_id(r) if len(taken[short_id(r)]) == 1 else r
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _fmt(v: Any) -> str:
    """A configuration value as table text: ``—`` for None / missing, JSON for lists and dicts."""
    if v is None:
        return _MISSING
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def flatten_config(
    config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A run configuration with its parameter dicts flattened: ``method_params: {"lr": 0.1}`` →
    ``method_params.lr: 0.1`` (likewise ``defense_params`` and any other dict field). Fields the
    configuration lacks are taken from ``defaults`` (e.g. :class:`~dfkd_viz.runs.config.RunConfig`'s
    defaults, so a config written before a field existed compares by its effective value)."""
    merged = {**(defaults or {}), **config}
    flat: dict[str, Any] = {}
    for k, v in merged.items():
        if isinstance(v, Mapping):
            for sub, sv in v.items():
                flat[f"{k}.{sub}"] = sv
        else:
            flat[k] = v
    return flat


def config_differences(
    configs: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    defaults: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The configuration fields whose values differ between runs.

    Args:
        configs: one ``config.json`` dict per run (RunConfig fields).
        labels: one column name per run (:func:`run_labels`).
        defaults: values of fields a configuration lacks (see :func:`flatten_config`).

    Returns:
        A DataFrame indexed by field name (``teacher``, ``method_params.lr`` …; the fields of
        :data:`FIRST_FIELDS` first, then in configuration order) with one string column per run
        (``—`` where a run has no such field); no rows when every field agrees.

    Raises:
        ValueError: ``labels`` and ``configs`` differ in length.
    """
    if len(labels) != len(configs):
        raise ValueError(f"{len(labels)} labels for {len(configs)} configurations")
    flat = [flatten_config(c, defaults) for c in configs]
    order: list[str] = []
    for f in flat:
        order += [k for k in f if k not in order]
    rank = {k: i for i, k in enumerate(FIRST_FIELDS)}
    pos = {k: i for i, k in enumerate(order)}
    order.sort(key=lambda k: (rank.get(k.split(".")[0], len(rank)), pos[k]))
    rows = {}
    for k in order:
        values = [_fmt(f.get(k)) for f in flat]
        if len(set(values)) > 1:
            rows[k] = values
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(labels))


def lineage_text(parent_run: str | None, fork_step: Any = None) -> str | None:
    """``"fork of PARENT at step N"`` for a run forked from another one (the store's meta keys
    ``parent_run`` and ``fork_step``), ``"fork of PARENT"`` without a step, None for a run that
    is no fork."""
    if not parent_run:
        return None
    if fork_step in (None, ""):
        return f"fork of {parent_run}"
    return f"fork of {parent_run} at step {fork_step}"


def status_rows(infos: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> pd.DataFrame:
    """Each run's state and progress as table rows under the configuration differences.

    Args:
        infos: per run, a dict with ``status`` (state), ``step``, ``total_steps`` and the latest
            ``id_acc`` / ``ood_acc`` / ``asr`` fractions (``manager.run_info`` output), and
            optionally ``parent_run`` / ``fork_step`` (a fork's lineage).
        labels: one column name per run.

    Returns:
        Rows ``lineage`` (only when some run is a fork), ``state``, ``step``, ``ID accuracy`` and
        ``OOD accuracy`` / ``ASR`` (only when some run has them), string cells.
    """
    rows: dict[str, list[str]] = {}
    lineage = [lineage_text(i.get("parent_run"), i.get("fork_step")) for i in infos]
    if any(lineage):
        rows["lineage"] = [x or _MISSING for x in lineage]
    rows["state"] = [str(i.get("status") or _MISSING) for i in infos]
    rows["step"] = [
        f"{i.get('step') or 0}" + (f" of {i['total_steps']}" if i.get("total_steps") else "")
        for i in infos
    ]
    for key, name in (("id_acc", "ID accuracy"), ("ood_acc", "OOD accuracy"), ("asr", "ASR")):
        vals = [i.get(key) for i in infos]
        if key == "id_acc" or any(v is not None for v in vals):
            rows[name] = [_MISSING if v is None else f"{100 * v:.1f} %" for v in vals]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(labels))


def at_or_before(steps: Sequence[int], step: int | None) -> int | None:
    """The largest of the ascending ``steps`` that is ≤ ``step`` (None when ``step`` precedes
    them all, ``steps`` is empty or ``step`` is None)."""
    if step is None or not steps:
        return None
    i = bisect.bisect_right(list(steps), step)
    return steps[i - 1] if i else None


def union_steps(step_lists: Sequence[Sequence[int]]) -> list[int]:
    """Every step any run recorded, ascending (the shared step slider's options)."""
    return sorted({int(s) for steps in step_lists for s in steps})


def common_step(step_lists: Sequence[Sequence[int]]) -> int | None:
    """The default step to compare at: the last step every run recorded; when they share none,
    the earliest of the runs' last steps (every run has something at or before it). None when no
    run recorded anything; runs without steps are ignored."""
    lists = [set(int(s) for s in steps) for steps in step_lists if len(steps)]
    if not lists:
        return None
    shared = set.intersection(*lists)
    return max(shared) if shared else min(max(s) for s in lists)


def overlay_curves(
    frames: Sequence[pd.DataFrame],
    labels: Sequence[str],
    metric: str = "id_acc",
    step: int | None = None,
    colors: Sequence[str] | None = None,
    x: str = "step",
    height: int = 340,
    legend: bool = True,
) -> go.Figure:
    """One line per run for the fraction ``metric`` (drawn in %), with a vertical line at ``step``.

    Args:
        frames: per run, a wide metrics frame (one row per step; columns ``step``, ``wall_s`` and
            metric names), e.g. ``RunReader.metrics_wide``; a run without ``metric`` draws nothing.
        labels: per run, its legend name.
        metric: ``id_acc``, ``ood_acc``, ``asr`` (on the real test images), ``agreement`` (on
            synthetic samples) or another fraction metric.
        step: the compared step (a dashed vertical line), or None; only with ``x="step"``.
        colors: per run, its colour (default :func:`run_colors`).
        x: ``step`` or ``wall_s``.
        height: pixels.
        legend: draw the legend (below the plot); False where the colours are named beside the
            figure (the Compare page's run chips), so narrow figures keep their plot area.
    """
    colors = list(colors or run_colors(len(frames)))
    traces = []
    for wide, label, color in zip(frames, labels, colors):
        if metric not in wide.columns:
            continue
        d = wide[[x, metric]].dropna()
        if len(d):
            traces.append(line(d[x], d[metric] * 100, label, color, width=2.5, markers=True))
    shapes, notes = [], []
    if step is not None and x == "step":
        shape, note = vline(step, "#475569", f"step {step}")
        shapes.append(shape)
        notes.append(note)
    return figure(
        traces,
        LABELS.get(metric, metric)[:1].upper() + LABELS.get(metric, metric)[1:],
        x_title(x),
        "percent of synthetic samples" if metric == "agreement" else "percent of test images",
        height=height,
        shapes=shapes,
        annotations=notes,
        yaxis={"range": [0, 101], "ticksuffix": " %"},
        margin={"l": 55, "r": 15, "t": 60, "b": 40},
        # below the x axis title however many lines the runs' names take
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "xanchor": "left", "x": 0},
        showlegend=legend,
    )


def samples_grid_html(samples: pd.DataFrame, img_px: int = 44, max_samples: int = 64) -> str:
    """The synthetic samples of one snapshot as an HTML grid, captioned as on the Live page:
    ``T: label (confidence)`` for the teacher, ``S: label`` for the student, and the defense's
    decision as a badge (kept / rejected, or flagged) where it took one.

    Args:
        samples: ``RunReader.samples`` rows (``image`` PNG bytes, ``teacher_label``,
            ``confidence`` in [0, 1], ``student_label``, ``keep``, ``flag``).
        img_px: image size in the grid, pixels.
        max_samples: at most this many (the first ones, by index).
    """
    df = samples.iloc[:max_samples]
    caps = [f"T: {t} ({c:.0%})" for t, c in zip(df["teacher_label"], df["confidence"])]
    subs = [
        "S: —" if s is None or s != s else f"S: {int(s)}" for s in df["student_label"]
    ]  # a snapshot without a student label (NaN) says so
    by, good = decision_view(df)
    decided = df[by].notna().to_numpy()
    keep = [bool(g) if d else None for g, d in zip(good, decided)]
    return sample_grid_html(
        list(df["image"]), caps, subs, keep, img_px=img_px, badges=DECISION_BADGES[by]
    )


def thin_reference(ref: pd.DataFrame, max_points: int = 2000) -> pd.DataFrame:
    """At most about ``max_points`` of a map's real reference points, every k-th row (ID and OOD
    keep their shares; deterministic, so runs of one teacher thin alike)."""
    if len(ref) <= max_points:
        return ref
    stride = -(-len(ref) // max_points)
    return ref.iloc[::stride]


def map_ranges(
    ref: pd.DataFrame, samples: Sequence[pd.DataFrame | None], pad: float = 0.04
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Axis ranges ``((x0, x1), (y0, y1))`` that hold a map's reference points and every run's
    placed synthetic samples, padded by ``pad`` of the span: maps of one teacher drawn side by side
    at one scale. None when there are no points."""
    parts = [ref[["emb_x", "emb_y"]]] + [
        s[["emb_x", "emb_y"]] for s in samples if s is not None and len(s)
    ]
    xy = pd.concat(parts).dropna().to_numpy(np.float64)
    if not len(xy):
        return None
    lo, hi = xy.min(0), xy.max(0)
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad * span, hi + pad * span
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def embedding_panel(
    ref: pd.DataFrame,
    samples: pd.DataFrame | None,
    step: int | None,
    ranges: tuple[tuple[float, float], tuple[float, float]] | None = None,
    height: int = 420,
) -> go.Figure:
    """One run's embedding map for a side-by-side column: :func:`~dfkd_viz.viz.embedding.embedding_map`
    (real ID / OOD reference points of the teacher's map, the synthetic samples kept / rejected)
    in its view-only form, titled with the snapshot's step, at fixed ``ranges`` (from
    :func:`map_ranges`) so maps of one teacher line up.

    Args:
        ref: the map's ``idx, source, label, emb_x, emb_y`` rows (thinned with
            :func:`thin_reference` for speed).
        samples: the snapshot's samples with ``emb_x`` / ``emb_y``, or None.
        step: the snapshot's step for the title, or None.
    """
    title = f"Samples of step {step}" if step is not None else "No samples placed yet"
    return embedding_map(
        ref, samples, "source", selectable=False, title=title, height=height, ranges=ranges
    )


def per_class_panel(
    steps: Sequence[int],
    values: np.ndarray,
    step: int | None,
    teacher: np.ndarray | None = None,
    metric: str = "id_acc",
    height: int = 340,
) -> go.Figure:
    """One run's per-class heatmap for a side-by-side column (:func:`~dfkd_viz.viz.per_class.per_class_heatmap`):
    class × evaluated step up to ``step`` (the columns after it are left out, so sliding the
    compared step replays the history), with the teacher's column when given.

    Args:
        steps: the run's ``S`` evaluated steps, ascending.
        values: ``(S, K)`` fractions in [0, 1] (NaN left blank).
        step: the last evaluated step to draw (None: all of them).
        teacher: ``(K,)`` the teacher's per-class fractions, or None.
        metric: ``id_acc``, ``ood_acc`` or ``asr``.

    Raises:
        ValueError: ``values`` is not ``(len(steps), K)``, or no evaluation is at or before ``step``.
    """
    steps = [int(s) for s in steps]
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != len(steps):
        raise ValueError(f"values must be (len(steps), K), got {values.shape} for {len(steps)}")
    n = len(steps) if step is None else bisect.bisect_right(steps, step)
    if n == 0:
        raise ValueError(f"no evaluation at or before step {step}")
    fig = per_class_heatmap(steps[:n], values[:n], teacher, metric=metric, height=height)
    fig.layout.title.text = f"{SHORT_TITLES.get(metric, metric)} to step {steps[n - 1]}"
    fig.layout.title.font.size = 15
    return fig
