"""Compare: two to four runs side by side, ``/compare?runs=A,B[,C]``. The configuration fields
that differ come first, then one step slider for all runs, their accuracy / ASR curves overlaid,
and per run at that step its synthetic samples, its samples on the teacher's embedding map and its
per-class heatmap. Everything that changes lives in one fragment that polls the run stores while a
run goes (cheap reads, cached per run and step); the page only reads and draws
(``dfkd_viz.viz.compare`` builds the figures)."""

import pandas as pd
import streamlit as st

from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs import manager
from dfkd_viz.runs.export import run_config_defaults
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader
from dfkd_viz.viz import compare as vc
from pages import _ui as ui

ui.page_setup()
st.title("Compare runs")

runs = ui.cached_runs()
if not runs:
    ui.empty_state("No runs yet. Start two runs, then compare them here side by side.")
    st.stop()

# -- which runs: ?runs=A,B in the URL, else (and to change them) a choice among the store's runs
wanted = ui.run_list_param(st.query_params.get("runs"))
known = {r["run_id"]: r for r in runs if r.get("status") != "corrupt"}
valid, unknown = [], []
for rid in wanted:
    if rid in known:
        valid.append(rid)
        continue
    try:  # a run newer than the cached list
        manager.run_dir(rid)
        valid.append(rid)
    except DfkdVizError:
        unknown.append(rid)
if unknown:
    names = ", ".join(repr(u) for u in unknown)
    st.error(
        f"There is no run {names} in the store, so the comparison leaves it out."
        if len(unknown) == 1
        else f"There are no runs {names} in the store, so the comparison leaves them out.",
        icon=":material/error:",
    )
if len(valid) > vc.MAX_RUNS:
    st.warning(
        f"Compare shows at most {vc.MAX_RUNS} runs side by side: the first {vc.MAX_RUNS} are shown."
    )
    valid = valid[: vc.MAX_RUNS]

options = list(known)
options += [v for v in valid if v not in known]
chosen = st.multiselect(
    "Runs to compare (two to four)",
    options,
    default=valid,
    max_selections=vc.MAX_RUNS,
    format_func=lambda i: (
        f"{i} · {known[i]['config'].get('teacher', '?')} · {known[i]['config'].get('method', '?')}"
        f"/{known[i]['config'].get('defense') or 'none'}"
        if i in known
        else i
    ),
    key=f"cmp_pick_{','.join(wanted)}",
)
if chosen != valid:
    if chosen:
        st.query_params["runs"] = ",".join(chosen)
    else:
        st.query_params.pop("runs", None)
if not chosen:
    st.info("Pick two to four runs to see them side by side.", icon=":material/info:")
    st.stop()
if len(chosen) == 1:
    st.info("Add a second run to compare it with.", icon=":material/info:")

infos, run_ids = [], []
for rid in chosen:
    try:
        infos.append(manager.run_info(rid))
        run_ids.append(rid)
    except DfkdVizError as exc:
        st.error(f"Run {rid} cannot be shown: {exc}", icon=":material/error:")
if not run_ids:
    st.stop()

paths = {rid: str(manager.run_dir(rid)) for rid in run_ids}
labels = vc.run_labels(run_ids)
colors = vc.run_colors(len(run_ids))
defaults = run_config_defaults()
active = any(i["status"] in ACTIVE_STATES for i in infos)
PER_CLASS_NAMES = ui.PER_CLASS_NAMES


def chip(i: int) -> str:
    return (
        f"<span style='display:inline-block;width:12px;height:12px;border-radius:3px;"
        f"background:{colors[i]};margin-right:6px'></span><b>{labels[i]}</b>"
    )


@st.cache_data(max_entries=64, show_spinner=False)
def snapshot(run_path: str, step: int, placed: bool) -> pd.DataFrame:
    """The samples of the snapshot at ``step`` (cached per run and step; read again once the
    worker has placed them on the map)."""
    with RunReader(run_path) as r:
        return r.samples(step)


def shown_snapshot(run_path: str, step: int) -> tuple[pd.DataFrame, bool]:
    """The samples of the snapshot at ``step`` and whether the worker has placed them on the map
    yet. A snapshot once placed is remembered in the session and then comes from the cache; one
    not placed yet is read again at each poll (64 rows, ~1 ms)."""
    known = st.session_state.setdefault(f"_cmp_placed::{run_path}", set())
    if step in known:
        return snapshot(run_path, step, True), True
    with RunReader(run_path) as r:
        df = r.samples(step)
    if df["emb_x"].notna().any():
        known.add(step)
        return df, True
    return df, False


@st.cache_data(max_entries=64, show_spinner=False)
def grid_html(run_path: str, step: int, k: int, _samples: pd.DataFrame) -> str:
    """The snapshot's sample grid of its first ``k`` samples (cached per run and step)."""
    return vc.samples_grid_html(_samples, img_px=40, max_samples=k)


@st.cache_data(max_entries=16, show_spinner=False)
def reference(run_path: str, placed: bool) -> pd.DataFrame:
    """The run's copy of the teacher's reference map (thinned for drawing); read again once the
    run has placed samples (the map arrives before the first placement)."""
    with RunReader(run_path) as r:
        return vc.thin_reference(r.reference())


@st.cache_resource(max_entries=32, show_spinner=False)
def map_figure(run_path: str, step: int | None, ref_of: str, ranges, _ref, _samples):
    """The run's embedding panel at ``step`` on the map of ``ref_of`` (cached per run, step and
    scale; plotly figures are only read when drawn)."""
    return vc.embedding_panel(_ref, _samples, step, ranges, height=400)


@st.cache_resource(max_entries=32, show_spinner=False)
def per_class_figure(run_path: str, metric: str, step: int, _steps, _values, _teacher):
    """The run's per-class heatmap up to the evaluated ``step`` (cached per run, quantity and
    step: what was evaluated up to a step does not change)."""
    return vc.per_class_panel(_steps, _values, step, _teacher, metric, height=320)


@st.fragment(run_every=1.5 if active else None)
def compare_view() -> None:
    with ui.profiled("compare_view"):
        _compare_view()


def _compare_view() -> None:
    cur = []
    for rid, old in zip(run_ids, infos):
        try:
            cur.append(manager.run_info(rid))
        except DfkdVizError:
            cur.append(old)
    if active and not any(i["status"] in ACTIVE_STATES for i in cur):
        st.rerun()  # every run ended: redraw the page once (polling stops)

    # -- what differs, and where each run stands
    st.markdown(
        " &nbsp; ".join(
            chip(i)
            + " "
            + ui.state_badge(cur[i]["status"])
            + (
                f" <span class='dv-muted'>· {line}</span>"
                if (line := vc.lineage_text(cur[i].get("parent_run"), cur[i].get("fork_step")))
                else ""
            )
            for i in range(len(run_ids))
        ),
        unsafe_allow_html=True,
    )
    st.subheader("What differs")
    diff = vc.config_differences([i["config"] for i in cur], labels, defaults)
    if not len(diff):
        st.caption("The runs have the same configuration (the same run twice, or a copy).")
    st.table(pd.concat([diff, vc.status_rows(cur, labels)]))
    st.caption(
        "The configuration fields that differ (parameters as `method_params.NAME`), then each "
        "run's state, step and latest evaluation."
    )

    # -- one step for all runs
    frames, snaps = [], []
    for rid in run_ids:
        frames.append(ui.run_metrics(paths[rid], vc.CURVE_METRICS))
        with RunReader(paths[rid]) as r:
            snaps.append(r.snapshot_steps())
    eval_steps = [
        f["step"][f["id_acc"].notna()].astype(int).tolist() if "id_acc" in f.columns else []
        for f in frames
    ]
    source = "snapshot" if any(snaps) else "evaluated"
    options = vc.union_steps(snaps if any(snaps) else eval_steps)
    if not options:
        st.info(
            "Waiting for the first evaluation…"
            if active
            else "These runs recorded no evaluations or snapshots."
        )
        return
    c1, c2 = st.columns([5, 1])
    follow = c2.toggle(
        "Follow latest",
        value=True,
        key="cmp_follow",
        disabled=not active,
        help="keep the slider at the newest recorded step",
    )
    key = "cmp_step"
    if (follow and active) or st.session_state.get(key) not in options:
        st.session_state[key] = (
            options[-1] if active else vc.common_step(snaps if any(snaps) else eval_steps)
        )
    if len(options) > 1:
        step = c1.select_slider(f"Step (every {source} step of these runs)", options, key=key)
    else:
        step = options[0]
        c1.caption(f"Step {step}: the only {source} step so far")
    st.caption(
        "Each run shows its nearest recorded step at or before this one (and says which); the "
        "dashed line marks it on the curves, where each run has its colour above."
    )

    # -- curves overlaid
    cfg = {"displaylogo": False}
    metrics = [
        m for m in vc.CURVE_METRICS if any(m in f.columns and f[m].notna().any() for f in frames)
    ]
    if metrics:
        for col, m in zip(st.columns(len(metrics)), metrics):
            col.plotly_chart(
                vc.overlay_curves(frames, labels, m, step, colors, legend=False),
                key=f"cmp_{m}",
                config=cfg,
            )
        ui.csv_download(
            pd.concat([f.assign(run=rid) for rid, f in zip(run_ids, frames)]),
            "dfkd-viz-compare.csv",
            "cmp_csv",
            label="Curves (CSV)",
        )

    # -- side by side at the step
    n = len(run_ids)
    snap_at = [vc.at_or_before(s, step) for s in snaps]
    shown = [
        None if at is None else shown_snapshot(paths[rid], at) for rid, at in zip(run_ids, snap_at)
    ]
    samples = [None if x is None else x[0] for x in shown]

    st.subheader("Synthetic samples")
    for i, col in enumerate(st.columns(n)):
        col.markdown(chip(i), unsafe_allow_html=True)
        if samples[i] is None:
            first = snaps[i][0] if snaps[i] else None
            col.caption(
                f"No snapshot at or before step {step} yet (the first is at step {first})."
                if first is not None
                else "No synthetic samples recorded yet."
                if cur[i]["status"] in ACTIVE_STATES
                else "This run recorded no synthetic samples."
            )
            continue
        k = min(64 // max(2, n), len(samples[i]))  # 32 each for two runs, 16 for four
        col.caption(
            f"Snapshot at step {snap_at[i]}"
            + (f" (nearest at or before {step})" if snap_at[i] != step else "")
            + ": teacher label (confidence), student label"
            + (f"; the first {k} of {len(samples[i])}" if k < len(samples[i]) else "")
        )
        col.html(grid_html(paths[run_ids[i]], snap_at[i], k, samples[i]))

    st.subheader("Embedding map")
    emb, emb_at = [], []
    for i, rid in enumerate(run_ids):
        if shown[i] is not None and shown[i][1]:
            emb.append(samples[i])
            emb_at.append(snap_at[i])
            continue
        # the shown snapshot is not placed yet (the map may still be computing): the last placed
        with RunReader(paths[rid]) as r:
            at = vc.at_or_before(r.embedded_steps(), step)
        emb.append(None if at is None else snapshot(paths[rid], at, True))
        emb_at.append(at)
    groups: dict[tuple, list[int]] = {}
    for i, info in enumerate(cur):
        c = info["config"]
        groups.setdefault(
            (c.get("teacher"), c.get("student_domain") or c.get("ood_domain")), []
        ).append(i)
    refs, ranges = {}, {}
    for members in groups.values():
        ref = None
        for i in members:  # runs of one teacher share its map: read it once
            ref_of = paths[run_ids[i]]
            ref = reference(ref_of, emb_at[i] is not None)
            if len(ref):
                break
        if ref is None or not len(ref):
            continue
        rng = vc.map_ranges(ref, [emb[i] for i in members])
        for i in members:
            refs[i], ranges[i] = (ref_of, ref), rng
    for i, col in enumerate(st.columns(n)):
        col.markdown(chip(i), unsafe_allow_html=True)
        c = cur[i]["config"]
        if c.get("embedding") is False:
            col.caption("Started without an embedding map (`embedding: false`).")
            continue
        if i not in refs:
            line, _ = ui.map_status(c["teacher"], c.get("student_domain") or c.get("ood_domain"))
            col.caption(
                f"No reference map in this run yet ({line or 'reference map: not started'})."
            )
            continue
        group = groups[(c.get("teacher"), c.get("student_domain") or c.get("ood_domain"))]
        mates = [labels[j] for j in group if j != i]
        col.caption(
            (
                f"Samples of step {emb_at[i]}"
                + (f" (nearest placed at or before {step})" if emb_at[i] != step else "")
                if emb_at[i] is not None
                else f"No samples placed at or before step {step} yet"
            )
            + (f"; the same teacher map as {', '.join(mates)}" if mates else "")
        )
        col.plotly_chart(
            map_figure(paths[run_ids[i]], emb_at[i], refs[i][0], ranges[i], refs[i][1], emb[i]),
            key=f"cmp_map_{i}",
            config=cfg,
        )

    hist = [
        ui.per_class_histories(paths[rid], int(ev[-1]))
        if ev
        else ui.per_class_histories(paths[rid], 0)
        for rid, ev in zip(run_ids, eval_steps)
    ]
    available = [m for m in ui.PER_CLASS_METRICS if any(h[m][0] for h in hist)]
    st.subheader("Per class")
    if not available:
        st.caption(
            "No per-class evaluations yet."
            if active
            else "These runs recorded no per-class evaluations (runs from before they existed)."
        )
        return
    metric = available[0]
    if len(available) > 1:
        metric = st.radio(
            "per class",
            available,
            horizontal=True,
            key="cmp_pc_metric",
            format_func=PER_CLASS_NAMES.get,
        )
    for i, col in enumerate(st.columns(n)):
        col.markdown(chip(i), unsafe_allow_html=True)
        steps, values = hist[i][metric]
        at = vc.at_or_before(steps, step)
        if not steps:
            col.caption(f"This run recorded no per-class {PER_CLASS_NAMES[metric]}.")
            continue
        if at is None:
            col.caption(
                f"No evaluation at or before step {step} (the first is at step {steps[0]})."
            )
            continue
        col.caption(
            f"Evaluations up to step {at}"
            + (f" (nearest at or before {step})" if at != step else "")
            + (", the teacher's own accuracy at the right" if metric == "id_acc" else "")
        )
        teacher = hist[i]["teacher"] if metric == "id_acc" else None
        col.plotly_chart(
            per_class_figure(paths[run_ids[i]], metric, at, steps, values, teacher),
            key=f"cmp_pc_{i}",
            config=cfg,
        )


compare_view()
