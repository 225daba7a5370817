"""Live: status, progress and ETA, Stop / Resume, curves, per-class accuracy and confusion
matrices, synthetic samples and "Fork from here", updating while the run goes. The controls are static; everything
that changes lives in one fragment that polls the run store (so a slow full rerun on a busy machine
never leaves half a page)."""

import bisect

import numpy as np
import streamlit as st

from dfkd_viz import viz
from dfkd_viz.distill.defenses import DEFENSES
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs import manager
from dfkd_viz.runs.config import parse_param_pairs
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader
from pages import _ui as ui

ui.page_setup()
st.title("Live run")
run_id, info = ui.load_run("No runs yet. Start the demo, or set up a run — it will show here live.")

active = info["status"] in ACTIVE_STATES
card = ui.teacher_card(info["config"]["teacher"]) or {}
same_domain = info["config"].get("ood_domain") in (None, card.get("ood_domain"))
teacher_ref = {
    "id_acc": card.get("id_acc"),
    "ood_acc": card.get("ood_acc") if same_domain else None,
    # the teacher's accuracy on the student's domain, when the card measured it
    "student_domain_acc": card.get("ood_acc")
    if info["config"].get("student_domain")
    and info["config"].get("student_domain") == card.get("ood_domain")
    else None,
}

c1, c2, c7, c3, c4, c5, c6 = st.columns([0.95, 1.3, 1.2, 1.0, 1.5, 1.05, 1.2])
if active and c1.button("Stop", icon=":material/stop:", key="stop"):
    try:
        manager.stop(run_id, wait_s=5.0)
    except DfkdVizError as exc:
        st.warning(str(exc))
    ui.cached_runs.clear()
    st.rerun()
if info["status"] in ("stopped", "failed") and c1.button(
    "Resume", icon=":material/play_arrow:", key="resume"
):
    try:
        manager.resume(run_id)
    except DfkdVizError as exc:
        st.warning(str(exc))
    ui.cached_runs.clear()
    st.rerun()
if c2.button("Decisions", icon=":material/rule:", key="to_decisions"):
    ui.go("decisions", run_id)
if c7.button(
    "Compare",
    icon=":material/compare:",
    key="to_compare",
    help="this run side by side with others (its parent, its forks, any run)",
):
    ui.go_compare([run_id] + ([info["parent_run"]] if info.get("parent_run") else []))
xaxis = c3.radio(
    "x axis",
    ["step", "wall_s"],
    horizontal=True,
    key="xaxis",
    format_func=lambda v: "step" if v == "step" else "seconds",
)
follow = c4.toggle(
    "Follow latest", value=True, key="follow", disabled=not active, help="show the newest snapshot"
)
play = c5.toggle("Play", value=False, key="play", help="step through the snapshots")
ui.export_menu(run_id, c6)
if info.get("parent_run"):
    p1, p2 = st.columns([3, 1.2])
    p1.caption(
        f"Fork of `{info['parent_run']}` at step {info['fork_step']}: its curves up to that step "
        "are the parent's history."
    )
    if p2.button("Compare with parent", icon=":material/compare:", key="cmp_parent"):
        ui.go_compare([info["parent_run"], run_id])


# until the first evaluation is in, poll faster so the first curve shows as soon as the worker
# has it (Start demo → first curve); the fragment draws it, then reruns the page once to return
# to 1.5 s
first_key = f"_first_curve_{run_id}"
first_wait = active and info.get("id_acc") is None and not st.session_state.get(first_key)


PER_CLASS = ui.PER_CLASS_METRICS


@st.cache_data(max_entries=32, show_spinner=False)
def confusion_at(run_path: str, step: int, name: str, last_eval: int) -> np.ndarray | None:
    """The confusion matrix ``name`` at the evaluated ``step`` (cached per run and last step)."""
    with RunReader(run_path) as r:
        return r.per_class(name, step)


def per_class_view(evals, snap_step: int | None) -> None:
    """The per-class heatmap (class × evaluated step, the teacher's column beside it) and the
    confusion matrix at the snapshot slider's step (the nearest evaluation at or before it)."""
    last_eval = int(evals["step"].iloc[-1])
    data = ui.per_class_histories(str(manager.run_dir(run_id)), last_eval)
    steps_id, _ = data["id_acc"]
    if not steps_id:
        return  # a run recorded before per-class evaluations: nothing to show
    st.subheader("Per class")
    cfg = {"displaylogo": False}
    left, right = st.columns(2)
    options = [m for m in PER_CLASS if data[m][0]]
    metric = "id_acc"
    if len(options) > 1:
        metric = left.radio(
            "per class",
            options,
            horizontal=True,
            key="pc_metric",
            format_func=ui.PER_CLASS_NAMES.get,
        )
    steps, values = data[metric]
    left.plotly_chart(
        viz.per_class_heatmap(
            steps, values, data["teacher"] if metric == "id_acc" else None, metric=metric
        ),
        key="pc_heat",
        config=cfg,
    )
    which = right.radio(
        "confusion matrix",
        ["id_confusion", "teacher_confusion"],
        horizontal=True,
        key="pc_confusion",
        format_func={
            "id_confusion": "student vs true label",
            "teacher_confusion": "student vs teacher",
        }.get,
    )
    want = snap_step if snap_step is not None else steps_id[-1]
    at = steps_id[max(0, bisect.bisect_right(steps_id, want) - 1)]
    m = confusion_at(str(manager.run_dir(run_id)), at, which, last_eval)
    if m is None:
        right.info("This run recorded no such confusion matrix.")
        return
    rows = "true label" if which == "id_confusion" else "teacher prediction"
    right.plotly_chart(viz.confusion_heatmap(m, rows, step=at), key="pc_conf", config=cfg)
    right.caption(
        f"On the real ID test images at step {at}, the evaluation nearest the snapshot slider's "
        f"step {want} at or before it; colour: share of the row, numbers: images."
    )


@st.fragment(run_every=(0.4 if first_wait else 1.5) if (active or play) else None)
def live_view() -> None:
    with ui.profiled("live_view"):
        _live_view()


def _live_view() -> None:
    try:
        cur = manager.run_info(run_id)
    except DfkdVizError as exc:
        st.warning(f"The run is no longer readable: {exc}")
        return
    if active and cur["status"] not in ACTIVE_STATES:
        st.rerun()  # the run ended: redraw the page once (controls change, polling stops)
    ui.run_header(cur)
    total = cur.get("total_steps")
    step = cur.get("step") or 0
    text = f"step {step}" + (f" of {total}" if total else "") + f" · {ui.eta_text(cur)}"
    st.progress(min(1.0, float(cur.get("progress") or 0.0)), text=text)
    if cur["status"] == "failed":
        st.error(f"The run failed: {cur.get('error')}", icon=":material/error:")
    m = st.columns(5)
    m[0].metric(
        "student ID accuracy", ui.pct(cur.get("id_acc")), help="on the teacher's real test split"
    )
    m[1].metric(
        "student OOD accuracy", ui.pct(cur.get("ood_acc")), help="on the OOD domain's test split"
    )
    m[2].metric(
        "attack success rate",
        ui.pct(cur.get("asr")),
        help="triggered non-target test images → target",
    )
    m[3].metric("agreement (synthetic)", ui.pct(cur.get("agreement")))
    m[4].metric("iterations / s", f"{cur['it_s']:.2f}" if cur.get("it_s") else "—")

    run_path = str(manager.run_dir(run_id))
    with ui.profiled("live_view/read"), RunReader(run_path) as r:
        wide = ui.run_metrics(run_path, exclude=("ood_likeness",))
        steps = r.snapshot_steps()
        if steps:
            key = "snap_step"
            if play:
                prev = st.session_state.get(key, steps[0])
                i = steps.index(prev) if prev in steps else -1
                st.session_state[key] = steps[(i + 1) % len(steps)]
            elif (follow and active) or st.session_state.get(key) not in steps:
                st.session_state[key] = steps[-1]
            snap_step = st.session_state[key]
            samples = r.samples(snap_step)

    if wide.empty or "id_acc" not in wide.columns:
        st.info("Waiting for the first evaluation…" if active else "This run recorded no metrics.")
    elif first_wait and st.session_state.get(first_key):
        st.rerun()  # the first curve is drawn: redraw the page once, polling at the usual pace
    else:
        if first_wait:  # draw the first curve at once; the next poll reruns the page
            st.session_state[first_key] = True  # once per run and session
        with ui.profiled("live_view/curves"):
            curves_view(cur, wide, snap_step if steps else None)

    with ui.profiled("live_view/samples"):
        samples_view(steps, snap_step if steps else None, samples if steps else None)


def curves_view(cur: dict, wide, snap_step: int | None) -> None:
    """The accuracy, agreement and loss curves and the per-class views. While the page waits
    for its first curve only the accuracy curve is drawn (the browser paints it sooner); the
    next poll redraws the page whole."""
    cfg = {"displaylogo": False}
    left, right = st.columns(2)
    evals = wide.dropna(subset=["id_acc"])
    fork_at = None
    if cur.get("fork_step") is not None:  # left of the line: the parent's history
        at_fork = wide[wide["step"] <= cur["fork_step"]]
        fork_at = cur["fork_step"] if xaxis == "step" or at_fork.empty else at_fork[xaxis].max()
    left.plotly_chart(
        viz.accuracy_curves(evals, x=xaxis, teacher_ref=teacher_ref, fork_at=fork_at),
        key="acc",
        config=cfg,
    )
    if first_wait:
        return
    thin = viz.downsample(wide, 400)
    right.plotly_chart(viz.agreement_curve(thin, x=xaxis), key="agree", config=cfg)
    left.plotly_chart(viz.loss_curves(thin, "g_", x=xaxis), key="gloss", config=cfg)
    right.plotly_chart(viz.loss_curves(thin, "s_", x=xaxis), key="sloss", config=cfg)
    # the CSV is read in full when clicked (it has the late-placed map metrics too)
    ui.csv_download(all_metrics, f"{run_id}-metrics-wide.csv", "live_csv")
    per_class_view(evals, snap_step)


def all_metrics():
    """Every metric of the run, read in full (the CSV download, built when clicked)."""
    with RunReader(manager.run_dir(run_id)) as r:
        return r.metrics_wide()


def samples_view(steps: list[int], snap_step: int | None, samples) -> None:
    """The snapshot slider, the synthetic samples at its step and "Fork from here"."""
    st.subheader("Synthetic samples")
    if not steps:
        st.info("No snapshot yet: the first one comes after the first step.")
        return
    if len(steps) > 1:
        st.select_slider("Snapshot at step", options=steps, key="snap_step")
    df = samples
    caps = [f"T: {t} ({c:.0%})" for t, c in zip(df["teacher_label"], df["confidence"])]
    subs = [
        f"S: {s}" + (f" · score {sc:.2f}" if sc == sc and sc is not None else "")
        for s, sc in zip(df["student_label"], df["score"])
    ]
    keep = [None if k is None or k != k else bool(k) for k in df["keep"]]
    decided = any(k is not None for k in keep)
    st.caption(
        f"{len(df)} synthetic samples at step {snap_step}: teacher label (confidence), student label"
        + (", defense score and decision" if decided else "")
    )
    st.html(viz.sample_grid_html(list(df["image"]), caps, subs, keep))
    fork_form(snap_step)


def fork_form(step: int) -> None:
    """ "Fork from here": a new run from this run's checkpoint at the snapshot slider's step (the
    nearest kept checkpoint at or before it) with another defense or parameters."""
    cfg = info["config"]
    with st.expander(f"Fork from here · step {step}", icon=":material/call_split:"):
        st.caption(
            "Starts a new run from this run's checkpoint at the snapshot slider's step (the "
            "nearest kept one at or before it) with the changes below and the rest of this run's "
            "budget; this run is left as it is. Turn **Follow latest** off to hold the step."
        )
        names = list(DEFENSES.names())
        with st.form(f"fork_{run_id}", border=False):
            defense = st.selectbox(
                "Defense from here on",
                names,
                index=names.index(cfg.get("defense") or "none"),
                key=f"fork_defense_{run_id}",
            )
            mp = st.text_input(
                "Method parameters to change",
                placeholder="KEY=VALUE, … e.g. lr_s=0.05",
                key=f"fork_mp_{run_id}",
            )
            dp = st.text_input(
                "Defense parameters",
                placeholder="KEY=VALUE, … (the defense's defaults otherwise)",
                key=f"fork_dp_{run_id}",
                help="the chosen defense's parameters: "
                + ", ".join(
                    f"{k}={f.default!r}"
                    for k, f in DEFENSES.get(defense).Params.model_fields.items()
                ),
            )
            go = st.form_submit_button("Start the fork", icon=":material/call_split:")
        if go:
            try:
                out = manager.fork(
                    run_id,
                    int(step),
                    defense=defense,
                    method_params=parse_param_pairs(mp, "method parameter") or None,
                    defense_params=parse_param_pairs(dp, "defense parameter") or None,
                )
            except DfkdVizError as exc:
                st.error(str(exc))
                return
            ui.cached_runs.clear()
            ui.go("live", out["run_id"])


live_view()
