"""Take results out of the run store: metrics as CSV / Parquet, the student as safetensors with a
JSON model card, a self-contained HTML report of one run, and a comparison report of several.

The HTML reports inline plotly.js once (they open offline, ~4.6 MB) and embed every image as a
data URI; nothing is fetched when they are opened. Figures are the app's own builders
(:mod:`dfkd_viz.viz`), so a report shows what the pages show.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs.store import RunReader
from dfkd_viz.util.io import write_atomic

FORMATS = ("html", "csv", "parquet", "safetensors")
METRIC_COLUMNS = ["step", "name", "value", "wall_s"]


def metrics_bytes(run_dir: str | Path, fmt: str = "csv") -> bytes:
    """Every metric row of the run (``step, name, value, wall_s``; long format, ordered by step)
    as CSV or Parquet bytes. Raises ValueError for another ``fmt``."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"metrics export format must be csv or parquet, not {fmt!r}")
    with RunReader(run_dir) as r:
        df = r.metrics()[METRIC_COLUMNS]
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def export_metrics(run_dir: str | Path, out: str | Path, fmt: str = "csv") -> Path:
    """:func:`metrics_bytes` written to ``out``. Raises ValueError, OSError (write errors)."""
    return write_atomic(Path(out), metrics_bytes(run_dir, fmt))


def model_card(run_dir: str | Path) -> dict[str, Any]:
    """The exported student's card: run, teacher, method, defense, seed, architecture and the
    final accuracies (fractions; None where not measured)."""
    with RunReader(run_dir) as r:
        cfg = r.config()
        status = r.status()
        latest = r.latest(("id_acc", "ood_acc", "asr", "trigger_loc", "student_domain_acc"))
    return {
        "run_id": Path(run_dir).name,
        "teacher": cfg.get("teacher"),
        "method": cfg.get("method"),
        "defense": cfg.get("defense", "none"),
        "seed": cfg.get("seed"),
        "student": cfg.get("student", "lenet5"),
        "steps": status.get("step"),
        "state": status.get("state"),
        "id_acc": latest.get("id_acc"),
        "ood_acc": latest.get("ood_acc"),
        "asr": latest.get("asr"),
        "trigger_loc": latest.get("trigger_loc"),
        "student_domain": cfg.get("student_domain"),
        "student_domain_acc": latest.get("student_domain_acc"),
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "format": "safetensors state_dict of the student (pixel-unit inputs in [0, 1]; the model "
        "normalises inside); load with dfkd_viz.runs.export.load_student",
    }


def student_bytes(run_dir: str | Path) -> tuple[bytes, dict[str, Any]]:
    """The student as evaluated at the run's last checkpoint (its EMA copy when the run keeps
    one) as safetensors bytes with the model card (:func:`model_card` plus architecture, input
    shape and normalisation) in the metadata; returns ``(bytes, card)``.
    Raises DfkdVizError when the run has no checkpoint yet."""
    from safetensors.torch import save

    from dfkd_viz.runs.build import load_run_models
    from dfkd_viz.runs.config import RunConfig

    with RunReader(run_dir) as r:
        ckpts = r.checkpoints()
        cfg = RunConfig(**r.config())
    if not ckpts or not Path(ckpts[-1]["path"]).exists():
        raise DfkdVizError("this run has no checkpoint yet: nothing to export")
    _, student, tcard = load_run_models(cfg, ckpts[-1]["path"])
    card = model_card(run_dir)
    card.update(
        checkpoint_step=ckpts[-1]["step"],
        num_classes=student.num_classes,
        in_shape=list(student.in_shape),
        mean=tcard["mean"],
        std=tcard["std"],
        dataset=tcard["dataset"],
    )
    tensors = {k: v.detach().cpu().contiguous() for k, v in student.state_dict().items()}
    return save(tensors, metadata={"model_card": json.dumps(card)}), card


def export_student(run_dir: str | Path, out: str | Path) -> Path:
    """:func:`student_bytes` written to ``out``, and the model card beside it as
    ``<out>.json``. Raises DfkdVizError (no checkpoint yet), OSError on write errors."""
    data, card = student_bytes(run_dir)
    out = Path(out)
    write_atomic(out.with_suffix(out.suffix + ".json"), json.dumps(card, indent=2))
    return write_atomic(out, data)


def load_student(path: str | Path):
    """Rebuild an exported student from its safetensors file (architecture, shape and
    normalisation from the model card in the metadata). Returns ``(model in eval mode, card)``.
    Raises DfkdVizError when the file has no model card, safetensors' errors when it is not a
    safetensors file, RuntimeError when the weights do not fit the architecture."""
    from safetensors import safe_open

    from dfkd_viz.models import create_model

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if "model_card" not in meta:
            raise DfkdVizError(f"{path} is not a dfkd-viz student export (no model card)")
        card = json.loads(meta["model_card"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    model = create_model(
        card["student"],
        num_classes=card["num_classes"],
        in_shape=tuple(card["in_shape"]),
        mean=tuple(card["mean"]),
        std=tuple(card["std"]),
    )
    model.load_state_dict(tensors)
    return model.eval(), card


# --------------------------------------------------------------------------- HTML reports

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#0f172a;
background:#f8fafc}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:28px;margin:8px 0 4px} h2{font-size:21px;margin:34px 0 8px;border-bottom:1px solid
#e2e8f0;padding-bottom:4px} .muted{color:#64748b}
table.kv{border-collapse:collapse;font-size:14px} table.kv td,table.kv th{padding:3px 12px 3px 0;
text-align:left;vertical-align:top} table.kv th{color:#475569;font-weight:600}
table.grid{border-collapse:collapse;font-size:14px;margin-top:8px} table.grid th,table.grid td{
border:1px solid #e2e8f0;padding:4px 10px;text-align:right} table.grid th{background:#f1f5f9}
.fig{background:white;border:1px solid #e2e8f0;border-radius:8px;margin:10px 0;padding:4px}
.two{display:grid;grid-template-columns:1fr 1fr;gap:12px}
"""


def _fig_html(fig) -> str:
    return '<div class="fig">' + fig.to_html(full_html=False, include_plotlyjs=False) + "</div>"


def _kv(rows: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f'<table class="kv">{cells}</table>'


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict | list):
        return json.dumps(v)
    return str(v)


def _pct(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f} %"


def _page(title: str, body: list[str]) -> str:
    from plotly.offline import get_plotlyjs

    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body><main>"
        + "".join(body)
        + "</main></body></html>"
    )


def _pick_steps(steps: list[int], n: int) -> list[int]:
    if len(steps) <= n:
        return steps
    idx = np.unique(np.linspace(0, len(steps) - 1, n).round().astype(int))
    return [steps[i] for i in idx]


def run_report_html(run_dir: str | Path, sample_steps: Sequence[int] | None = None) -> str:
    """A self-contained HTML report of one run: configuration, teacher card, final metrics, the
    curves (interactive), the per-class heatmaps (ID accuracy with the teacher's column; ASR per
    source class for a run with a trigger), synthetic samples at ``sample_steps`` (default: first, middle, last
    snapshot), the defense's decisions, the embedding map and the backdoor views when the run has
    them; a fork names its parent ("fork of PARENT at step N", from the store's meta keys
    ``parent_run`` and ``fork_step``). Raises DfkdVizError for an unreadable run."""
    from dfkd_viz import viz
    from dfkd_viz.teachers import card as teacher_card
    from dfkd_viz.viz.saliency import localisation_curve, trigger_figure

    run_dir = Path(run_dir)
    with RunReader(run_dir) as r:
        cfg = r.config()
        status = r.status()
        meta = r.meta()
        wide = r.metrics_wide()
        steps = r.snapshot_steps()
        chosen = [s for s in (sample_steps or _pick_steps(steps, 3)) if s in steps]
        snaps = {s: (r.samples(s), r.snapshot_info(s) or {}) for s in chosen}
        counts_keep = r.decision_counts("keep")
        counts_flag = r.decision_counts("flag")
        emb_steps = r.embedded_steps()
        ref = r.reference()
        emb = r.samples(emb_steps[-1]) if emb_steps else None
        delta = r.artifact("sr_trigger")
        events = r.events()
        per_class = {m: r.per_class_history(m) for m in ("id_acc", "asr")}
        teacher_per_class = r.per_class("teacher_id_acc")
    try:
        tcard = teacher_card(cfg["teacher"])
    except Exception:  # a deleted or unknown teacher: the report still tells the run's story
        tcard = {}
    card = model_card(run_dir)
    body = [
        f"<h1>Run {html.escape(run_dir.name)}</h1>",
        f"<p class='muted'>dfkd-viz report · teacher <b>{html.escape(str(cfg.get('teacher')))}</b> · "
        f"method <b>{html.escape(str(cfg.get('method')))}</b> · defense "
        f"<b>{html.escape(str(cfg.get('defense', 'none')))}</b> · state {html.escape(str(status.get('state')))}"
        f" · {status.get('step') or 0} steps in {status.get('wall_s') or 0:.0f} s</p>",
        *(
            [f"<p><b>Lineage:</b> {html.escape(lineage)}</p>"]
            if (lineage := _lineage(meta))
            else []
        ),
        "<h2>Metrics at the last evaluation</h2>",
        _kv(
            {
                "student ID accuracy": _pct(card["id_acc"]),
                "student OOD accuracy": _pct(card["ood_acc"]),
                "attack success rate (ASR)": _pct(card["asr"]),
                **(
                    {
                        f"student-domain accuracy ({card['student_domain']})": _pct(
                            card["student_domain_acc"]
                        )
                    }
                    if card.get("student_domain")
                    else {}
                ),
                "teacher ID accuracy": _pct(tcard.get("id_acc")),
                "teacher ASR": _pct(tcard.get("asr")),
            }
        ),
        "<h2>Configuration</h2>",
        _kv(cfg),
    ]
    if tcard:
        body += [
            "<h2>Teacher card</h2>",
            _kv(
                {
                    k: v
                    for k, v in tcard.items()
                    if k != "weights" and (not isinstance(v, dict | list) or k in ("mean", "std"))
                }
            ),
        ]
    if not wide.empty and "id_acc" in wide.columns:
        evals = wide.dropna(subset=["id_acc"])
        thin = viz.downsample(wide, 400)
        body += [
            "<h2>Curves</h2>",
            _fig_html(
                viz.accuracy_curves(
                    evals,
                    teacher_ref={"id_acc": tcard.get("id_acc"), "ood_acc": tcard.get("ood_acc")},
                )
            ),
            "<div class='two'>",
            _fig_html(viz.loss_curves(thin, "g_")),
            _fig_html(viz.loss_curves(thin, "s_")),
            "</div>",
            _fig_html(viz.agreement_curve(thin)),
        ]
    if per_class["id_acc"][0]:  # runs from before per-class evaluations have none
        body.append("<h2>Per class</h2>")
        body.append(_fig_html(viz.per_class_heatmap(*per_class["id_acc"], teacher_per_class)))
        if per_class["asr"][0]:
            body.append(_fig_html(viz.per_class_heatmap(*per_class["asr"], metric="asr")))
    if snaps:
        body.append("<h2>Synthetic samples</h2>")
        for s, (df, _info) in snaps.items():
            caps = [f"T: {t} ({c:.0%})" for t, c in zip(df["teacher_label"], df["confidence"])]
            subs = [f"S: {x}" for x in df["student_label"]]
            by, good = viz.decision_view(df)
            decided = df[by].notna().to_numpy()
            keep = [bool(g) if d else None for g, d in zip(good, decided)]
            body += [
                f"<p><b>step {s}</b> — teacher label (confidence), student label</p>",
                viz.sample_grid_html(
                    list(df["image"]), caps, subs, keep, badges=viz.DECISION_BADGES[by]
                ),
            ]
    if cfg.get("defense", "none") != "none" and snaps:
        last_df, last_info = snaps[max(snaps)]
        by, good = viz.decision_view(last_df)
        body += [
            "<h2>Defense decisions</h2>",
            "<div class='two'>",
            _fig_html(
                viz.score_histogram(
                    last_df["score"].astype(float).to_numpy(),
                    good,
                    last_info.get("threshold"),
                    last_info.get("score_name") or "score",
                    viz.DECISION_NAMES[by],
                )
            ),
            _fig_html(viz.decision_counts(counts_flag if by == "flag" else counts_keep)),
            "</div>",
        ]
    if not ref.empty and emb is not None:
        body += [
            "<h2>Embedding map</h2>",
            f"<p class='muted'>teacher features, UMAP of real ID / OOD test data; synthetic samples of step {emb_steps[-1]}</p>",
            _fig_html(viz.embedding_map(ref, emb)),
        ]
    trig_name = cfg.get("trigger") or tcard.get("trigger")
    if trig_name:
        body.append("<h2>Backdoor</h2>")
        mosaic = _saliency_mosaic(run_dir, trig_name, cfg, tcard)
        if mosaic is not None:
            body.append(_fig_html(mosaic))
    if "trigger_loc" in wide.columns and wide["trigger_loc"].notna().any():
        body.append(_fig_html(localisation_curve(wide)))
    if delta is not None:
        body.append(_fig_html(trigger_figure(delta)))
    if not events.empty:
        rows = "".join(
            f"<tr><td>{html.escape(str(lv))}</td><td style='text-align:left'>{html.escape(str(m).splitlines()[0])}</td></tr>"
            for lv, m in zip(events["level"], events["message"])
        )
        body += [
            "<h2>Events</h2>",
            f"<table class='grid'><tr><th>level</th><th>message</th></tr>{rows}</table>",
        ]
    return _page(f"dfkd-viz run {run_dir.name}", body)


def _lineage(meta: dict[str, str]) -> str | None:
    """``"fork of PARENT at step N"`` from a run store's meta (``parent_run``, ``fork_step``), or
    None for a run that is no fork."""
    from dfkd_viz.viz.compare import lineage_text

    return lineage_text(meta.get("parent_run"), meta.get("fork_step"))


def _saliency_mosaic(run_dir: Path, trig_name: str, cfg: dict, tcard: dict):
    """Integrated-Gradients overlays of teacher and final student on 8 triggered test images, or
    None when the run has no checkpoint (or its models cannot be loaded)."""
    import torch

    from dfkd_viz.analysis.saliency import attribute
    from dfkd_viz.data import load_dataset, make_trigger
    from dfkd_viz.runs.build import load_run_models
    from dfkd_viz.runs.config import RunConfig
    from dfkd_viz.viz.saliency import saliency_mosaic

    with RunReader(run_dir) as r:
        ckpts = r.checkpoints()
    if not ckpts or not Path(ckpts[-1]["path"]).exists():
        return None
    try:
        teacher, student, _ = load_run_models(RunConfig(**cfg), ckpts[-1]["path"])
    except Exception:  # a report never fails for want of a figure
        return None
    target = cfg.get("target") if cfg.get("target") is not None else (tcard.get("target") or 0)
    test = load_dataset(tcard.get("dataset", "mnist"), "test")
    keep = test.y != target
    x = make_trigger(trig_name, teacher.in_shape).apply(test.x[keep][:8])
    with torch.no_grad():
        tp, sp = teacher(x).argmax(1).tolist(), student(x).argmax(1).tolist()
    maps = {
        "teacher": attribute(teacher, x, "integrated-gradients"),
        f"student @ {ckpts[-1]['step']}": attribute(student, x, "integrated-gradients"),
    }
    caps = [f"y {y} · T {a} · S {b}" for y, a, b in zip(test.y[keep][:8].tolist(), tp, sp)]
    return saliency_mosaic(
        x.numpy(),
        maps,
        caps,
        title=f"Integrated Gradients on test images + {trig_name} trigger",
        tile_px=100,
    )


def run_config_defaults() -> dict[str, Any]:
    """Every :class:`~dfkd_viz.runs.config.RunConfig` field's default value (a config written
    before a field existed compares by its effective value)."""
    from dfkd_viz.runs.config import RunConfig

    return {
        name: f.get_default(call_default_factory=True) for name, f in RunConfig.model_fields.items()
    }


def _map_key(cfg: dict[str, Any]) -> tuple[str, str | None]:
    """Runs with the same key share one reference map (the teacher's, for its OOD domain or the
    student's domain)."""
    return str(cfg.get("teacher")), cfg.get("student_domain") or cfg.get("ood_domain")


def _compare_data(run_dir: Path) -> dict[str, Any]:
    """What the comparison shows of one run, but the samples of a snapshot: config, status,
    lineage, curves, recorded steps, the reference map and the per-class histories."""
    with RunReader(run_dir) as r:
        meta = r.meta()
        out: dict[str, Any] = {
            "config": r.config(),
            "status": r.status(),
            "latest": r.latest(("id_acc", "ood_acc", "asr")),
            "lineage": _lineage(meta),
            "parent_run": meta.get("parent_run"),
            "fork_step": meta.get("fork_step"),
            "wide": r.metrics_wide(("id_acc", "ood_acc", "asr", "agreement")),
            "snapshot_steps": r.snapshot_steps(),
            "embedded_steps": r.embedded_steps(),
            "reference": r.reference(),
            "per_class": {m: r.per_class_history(m) for m in ("id_acc", "ood_acc", "asr")},
            "teacher_per_class": r.per_class("teacher_id_acc"),
        }
    return out


def _run_samples(run_dir: Path, step: int | None):
    if step is None:
        return None
    with RunReader(run_dir) as r:
        return r.samples(step)


def _nearest(at: int, step: int | None) -> str:
    return "" if at == step else f" (nearest at or before {step})"


def _columns(cells: list[str]) -> str:
    return (
        f"<div class='cols' style='grid-template-columns:repeat({len(cells)},minmax(0,1fr))'>"
        + "".join(f"<div class='col'>{c}</div>" for c in cells)
        + "</div>"
    )


def _table(df, corner: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join(
        f"<tr><th>{html.escape(str(i))}</th>"
        + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        + "</tr>"
        for i, row in zip(df.index, df.itertuples(index=False))
    )
    return f"<table class='grid diff'><tr><th>{html.escape(corner)}</th>{head}</tr>{rows}</table>"


_COMPARE_CSS = """
main{max-width:1600px}
.cols{display:grid;gap:12px;align-items:start}
.col{min-width:0}
.chip{display:inline-block;width:12px;height:12px;border-radius:3px;margin-right:6px;
vertical-align:baseline}
.runhead{font-weight:600;border-top:4px solid;padding-top:4px;margin-bottom:4px}
table.diff td,table.diff th{text-align:left}
.cap{font-size:13px;color:#64748b;margin:4px 0}
"""


def compare_report_html(run_dirs: Sequence[str | Path], step: int | None = None) -> str:
    """A self-contained HTML report of 2 to 4 runs side by side, as the Compare page shows them:
    the configuration fields that differ (with each run's state, step, latest accuracies and a
    fork's lineage "fork of PARENT at step N"), the ID / OOD accuracy, ASR and agreement curves
    overlaid (one colour per run, a dashed line at the compared step), and at the compared step one
    column per run with its synthetic samples, its samples on the teacher's embedding map (runs of
    one teacher on one map at one scale) and its per-class heatmap up to that step. Each run shows
    its nearest recorded step at or before the compared one and says which.

    Args:
        run_dirs: the runs' directories, in column order (a run may appear twice).
        step: the compared step (≥ 0); default the last snapshot step every run recorded (else
            the earliest of the runs' last snapshots; evaluated steps for runs without snapshots).

    Raises:
        ValueError: fewer than two or more than :data:`~dfkd_viz.viz.compare.MAX_RUNS` runs, or a
            negative ``step``. DfkdVizError: a run cannot be read.
    """
    from dfkd_viz.viz import compare as vc

    if len(run_dirs) < 2:
        raise ValueError("a comparison needs at least two runs")
    if len(run_dirs) > vc.MAX_RUNS:
        raise ValueError(f"a comparison shows at most {vc.MAX_RUNS} runs side by side")
    if step is not None and step < 0:
        raise ValueError(f"the compared step must be ≥ 0 (got {step})")
    dirs = [Path(d) for d in run_dirs]
    ids = [d.name for d in dirs]
    data = [_compare_data(d) for d in dirs]
    labels = vc.run_labels(ids)
    colors = vc.run_colors(len(dirs))
    if step is None:
        step = vc.common_step([x["snapshot_steps"] for x in data])
    if step is None:
        step = vc.common_step(
            [
                x["wide"]["step"][x["wide"]["id_acc"].notna()].tolist()
                if "id_acc" in x["wide"].columns
                else []
                for x in data
            ]
        )
    infos = [
        {
            "status": x["status"].get("state"),
            "step": x["status"].get("step"),
            "total_steps": x["status"].get("total_steps"),
            **x["latest"],
            "parent_run": x["parent_run"],
            "fork_step": x["fork_step"],
        }
        for x in data
    ]
    diff = vc.config_differences([x["config"] for x in data], labels, run_config_defaults())
    chips = "".join(
        f"<li><span class='chip' style='background:{c}'></span><b>{html.escape(lab)}</b> "
        f"<span class='muted'>{html.escape(rid)} · teacher {html.escape(str(x['config'].get('teacher')))}"
        f" · {html.escape(str(x['config'].get('method')))}/"
        f"{html.escape(str(x['config'].get('defense') or 'none'))}"
        + (f" · {html.escape(x['lineage'])}" if x["lineage"] else "")
        + "</span></li>"
        for lab, c, rid, x in zip(labels, colors, ids, data)
    )
    body = [
        f"<style>{_COMPARE_CSS}</style>",
        f"<h1>Comparison of {len(dirs)} runs</h1>",
        f"<ul style='list-style:none;padding:0'>{chips}</ul>",
        "<h2>Configuration differences</h2>",
        (
            _table(diff, "field")
            if len(diff)
            else "<p class='muted'>The runs have the same configuration.</p>"
        ),
        "<p class='muted' style='margin-top:14px'>State and latest evaluation</p>",
        _table(vc.status_rows(infos, labels)),
        "<h2>Curves</h2>",
    ]
    frames = [x["wide"] for x in data]
    for metric in (*vc.CURVE_METRICS, "agreement"):
        if any(metric in f.columns and f[metric].notna().any() for f in frames):
            body.append(_fig_html(vc.overlay_curves(frames, labels, metric, step, colors)))
    body.append(f"<h2>At step {step if step is not None else '—'}</h2>")
    body.append(
        "<p class='muted'>Each run shows its nearest recorded step at or before this one.</p>"
    )

    def head(i: int) -> str:
        return (
            f"<div class='runhead' style='border-color:{colors[i]}'>"
            f"<span class='chip' style='background:{colors[i]}'></span>{html.escape(labels[i])}</div>"
        )

    # synthetic samples
    snap_at = [vc.at_or_before(x["snapshot_steps"], step) for x in data]
    samples = [_run_samples(d, s) for d, s in zip(dirs, snap_at)]
    cells = []
    for i, x in enumerate(data):
        if snap_at[i] is None:
            first = x["snapshot_steps"][0] if x["snapshot_steps"] else None
            cells.append(
                head(i)
                + "<p class='cap'>"
                + (
                    f"No snapshot at or before step {step} (the first is at step {first})."
                    if first is not None
                    else "This run recorded no synthetic samples."
                )
                + "</p>"
            )
            continue
        cells.append(
            head(i) + f"<p class='cap'>snapshot at step {snap_at[i]}{_nearest(snap_at[i], step)}: "
            "teacher label (confidence), student label</p>"
            + vc.samples_grid_html(samples[i], img_px=40)
        )
    body += ["<h3>Synthetic samples</h3>", _columns(cells)]

    # embedding maps: runs of one teacher (and domain) share its reference map and one scale
    emb_at = [vc.at_or_before(x["embedded_steps"], step) for x in data]
    emb = [
        samples[i] if emb_at[i] is not None and emb_at[i] == snap_at[i] else None
        for i in range(len(data))
    ]
    for i, d in enumerate(dirs):
        if emb_at[i] is not None and emb[i] is None:
            emb[i] = _run_samples(d, emb_at[i])
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(data):
        groups.setdefault(_map_key(x["config"]), []).append(i)
    refs: dict[int, Any] = {}
    ranges: dict[int, Any] = {}
    for members in groups.values():
        ref = next((data[i]["reference"] for i in members if len(data[i]["reference"])), None)
        if ref is None:
            continue
        ref = vc.thin_reference(ref)
        rng = vc.map_ranges(ref, [emb[i] for i in members])
        for i in members:
            refs[i], ranges[i] = ref, rng
    cells = []
    for i, x in enumerate(data):
        if x["config"].get("embedding") is False:
            cells.append(head(i) + "<p class='cap'>Started without an embedding map.</p>")
        elif i not in refs:
            cells.append(head(i) + "<p class='cap'>No reference map in this run.</p>")
        else:
            mates = [labels[j] for j in groups[_map_key(x["config"])] if j != i]
            note = (
                f"samples of step {emb_at[i]}{_nearest(emb_at[i], step)}"
                if emb_at[i] is not None
                else f"no samples placed at or before step {step}"
            ) + (f"; the same teacher map as {', '.join(mates)}" if mates else "")
            cells.append(
                head(i)
                + f"<p class='cap'>{html.escape(note)}</p>"
                + _fig_html(vc.embedding_panel(refs[i], emb[i], emb_at[i], ranges[i], height=380))
            )
    body += ["<h3>Embedding map</h3>", _columns(cells)]

    # per class
    for metric in ("id_acc", "asr"):
        if not any(x["per_class"][metric][0] for x in data):
            continue
        cells = []
        for i, x in enumerate(data):
            steps, values = x["per_class"][metric]
            at = vc.at_or_before(steps, step)
            if not steps:
                cells.append(head(i) + "<p class='cap'>No per-class evaluations recorded.</p>")
            elif at is None:
                cells.append(
                    head(i) + f"<p class='cap'>No evaluation at or before step {step}.</p>"
                )
            else:
                teacher = x["teacher_per_class"] if metric == "id_acc" else None
                cells.append(
                    head(i)
                    + f"<p class='cap'>evaluations to step {at}{_nearest(at, step)}"
                    + (", the teacher's own accuracy at the right" if teacher is not None else "")
                    + "</p>"
                    + _fig_html(vc.per_class_panel(steps, values, at, teacher, metric))
                )
        title = "Per class" if metric == "id_acc" else "Per class: ASR per source class"
        body += [f"<h3>{title}</h3>", _columns(cells)]
    return _page("dfkd-viz comparison", body)


def export_run(run_dir: str | Path, fmt: str, out: str | Path) -> Path:
    """Export one run in ``fmt`` (one of :data:`FORMATS`) to ``out``; returns the path written.
    Raises ValueError (unknown format), DfkdVizError (nothing to export), OSError (write)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt in ("csv", "parquet"):
        return export_metrics(run_dir, out, fmt)
    if fmt == "safetensors":
        return export_student(run_dir, out)
    return write_atomic(Path(out), run_report_html(run_dir))
