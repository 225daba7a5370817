"""Runs: every run in the store (from the app or the CLI) — status, config, final metrics; open,
delete, compare."""

import pandas as pd
import streamlit as st

from dfkd_viz import viz
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs import manager
from dfkd_viz.runs.export import compare_report_html
from dfkd_viz.runs.store import RunReader
from pages import _ui as ui

ui.page_setup()
st.title("Runs")
runs = ui.cached_runs()
if not runs:
    ui.empty_state(
        "No runs in the store yet. Runs started here or with `dfkd-viz run` appear in this list."
    )
    st.stop()


def lineage(info: dict) -> str:
    """``PARENT @ step N`` for a fork (``parent_run`` / ``fork_step`` from ``run_info``; read
    from the store's meta where ``run_info`` does not carry them), else empty."""
    if "parent_run" in info or info.get("status") == "corrupt":
        parent, at = info.get("parent_run"), info.get("fork_step")
    else:
        try:
            with RunReader(manager.run_dir(info["run_id"])) as rr:
                meta = rr.meta()
        except DfkdVizError:
            return ""
        parent, at = meta.get("parent_run"), meta.get("fork_step")
    if not parent:
        return ""
    return f"{parent} @ step {at}" if at not in (None, "") else str(parent)


rows = []
for r in runs:
    c = r.get("config") or {}
    budget = (
        f"{c['steps']} steps"
        if c.get("steps")
        else (f"{c.get('seconds')} s" if c.get("seconds") else "")
    )
    rows.append(
        {
            "run": r["run_id"],
            "status": r["status"],
            "teacher": c.get("teacher"),
            "method": c.get("method"),
            "defense": c.get("defense"),
            "seed": c.get("seed"),
            "budget": budget,
            "fork of": lineage(r),
            "step": r.get("step"),
            "ID acc %": None if r.get("id_acc") is None else round(100 * r["id_acc"], 2),
            "OOD acc %": None if r.get("ood_acc") is None else round(100 * r["ood_acc"], 2),
            "ASR %": None if r.get("asr") is None else round(100 * r["asr"], 2),
            "note": r.get("error") or "",
        }
    )
table = pd.DataFrame(rows)
if not table["fork of"].any():
    table = table.drop(columns="fork of")  # no forks in the store: no empty column
st.caption("Select rows to open, compare (two to four, side by side) or delete runs.")
event = st.dataframe(
    table,
    hide_index=True,
    on_select="rerun",
    selection_mode="multi-row",
    key="runs_table",
    column_config={"run": st.column_config.TextColumn(width="large")},
)
selected = [table.iloc[i]["run"] for i in (event.selection.rows if event else [])]

b = st.columns([1, 1.2, 1, 3])
if b[0].button("Open", disabled=len(selected) != 1, icon=":material/open_in_new:", key="open"):
    ui.go("live", selected[0])
if b[1].button(
    "Compare",
    disabled=not 2 <= len(selected) <= 4,
    icon=":material/compare:",
    key="to_compare",
    help="the selected runs side by side (two to four): samples, maps, per-class accuracy",
):
    ui.go_compare(selected)
if b[2].button("Delete", disabled=not selected, icon=":material/delete:", key="delete"):
    st.session_state["confirm_delete"] = selected
if st.session_state.get("confirm_delete"):
    todo = st.session_state["confirm_delete"]
    st.warning(f"Delete {len(todo)} run(s)? Active runs are stopped first. This cannot be undone.")
    d1, d2, _ = st.columns([1, 1, 4])
    if d1.button("Yes, delete", type="primary", key="confirm_yes"):
        for rid in todo:
            try:
                manager.delete(rid)
            except DfkdVizError as exc:
                st.warning(f"{rid}: {exc}")
        st.session_state["confirm_delete"] = None
        ui.cached_runs.clear()
        st.rerun()
    if d2.button("Cancel", key="confirm_no"):
        st.session_state["confirm_delete"] = None
        st.rerun()

st.subheader("Compare runs")
ok_ids = [r["run_id"] for r in runs if r["status"] != "corrupt"]
chosen = st.multiselect(
    "Runs to overlay",
    ok_ids,
    default=[s for s in selected if s in ok_ids][:4],
    key="compare_runs",
    max_selections=4,
)
if len(chosen) < 2:
    st.caption("Pick two to four runs (or select them in the table) to overlay their curves.")
else:
    ui.compare_link(chosen, "Open them side by side on Compare")
    metric = st.radio(
        "Metric",
        ["id_acc", "ood_acc", "asr", "agreement"],
        horizontal=True,
        key="cmp_metric",
        format_func=lambda m: viz.LABELS[m],
    )
    xaxis = st.radio(
        "x axis",
        ["step", "wall_s"],
        horizontal=True,
        key="cmp_x",
        format_func=lambda v: "step" if v == "step" else "seconds",
    )
    frames = {}
    for rid in chosen:
        with RunReader(manager.run_dir(rid)) as r:
            cfg = r.config()
            frames[
                f"{rid[-9:]} · {cfg['teacher']} · {cfg['method']}/{cfg.get('defense', 'none')}"
            ] = r.metrics_wide()
    st.plotly_chart(
        viz.compare_curves(frames, metric, xaxis), key="compare", config={"displaylogo": False}
    )
    final = table[table["run"].isin(chosen)][
        ["run", "teacher", "method", "defense", "seed", "step", "ID acc %", "OOD acc %", "ASR %"]
    ]
    ui.csv_download(
        pd.concat([f.assign(run=name) for name, f in frames.items()]),
        "dfkd-viz-comparison.csv",
        "compare_csv",
    )
    st.dataframe(final, hide_index=True, key="compare_table")
    dirs = [manager.run_dir(rid) for rid in chosen]
    st.download_button(
        "Comparison report (HTML)",
        data=lambda: compare_report_html(dirs).encode(),
        file_name="dfkd-viz-comparison.html",
        mime="text/html",
        on_click="ignore",
        icon=":material/download:",
        key="compare_report",
    )
