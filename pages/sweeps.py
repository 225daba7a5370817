"""Sweeps: grids of teachers × methods × seeds run in the background — here one after another, or
on a Ray cluster — start one, follow it, and compare the methods' stability (box plot, per-teacher
view, best / worst)."""

import pandas as pd
import streamlit as st

from dfkd_viz import viz
from dfkd_viz.distill.methods import METHODS
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs import sweep as sw
from dfkd_viz.runs.executors import EXECUTORS, ray_installed
from pages import _ui as ui

ui.page_setup()
st.title("Sweeps")
st.caption(
    "A sweep distils every teacher × method × seed in a background process — here one run after "
    "another, or several at a time on a Ray cluster (resumable; each run is an ordinary run of "
    "the store). The result of a run is the "
    "student's ID accuracy **relative to its teacher's**: the spread and the worst case across "
    "teachers and seeds measure a method's stability."
)


def _new_sweep_form() -> None:
    cards = [c for c in ui.cached_cards() if c["available"]]
    ids = [c["id"] for c in cards]
    default_t = [i for i in ("mnist-clean", "mnist-resnet14", "mnist-resnet8-ls") if i in ids]
    with st.form("new_sweep"):
        teachers = st.multiselect(
            "Teachers", ids, default=default_t, help="untrained teachers are trained first"
        )
        methods = st.multiselect("Methods", METHODS.names(), default=["dfq", "tadfkd"])
        c1, c2, c3 = st.columns(3)
        seeds = c1.multiselect("Seeds", list(range(10)), default=[0, 1, 2])
        steps = c2.number_input("Steps per run", 1, 100_000, 200, step=50)
        threads = c3.number_input("Torch threads per run (0 = all cores)", 0, 64, 0)
        has_ray = ray_installed()
        labels = {
            "local": "here, one after another",
            "ray": "on a Ray cluster" + ("" if has_ray else " (pip install -e '.[ray]')"),
        }
        where = st.radio(
            "Run the cells",
            EXECUTORS.names(),
            format_func=lambda x: labels.get(x, x),
            horizontal=True,
            help="Ray: one task per run on a Ray cluster (docs/scale-out.md); the finished runs "
            "come back into this machine's run store",
        )
        r1, r2, r3 = st.columns(3)
        address = r1.text_input(
            "Ray address",
            "",
            placeholder="HOST:PORT",
            help="empty: RAY_ADDRESS, else a Ray instance started on this machine for the sweep",
        )
        cpus = r2.number_input("Ray CPUs per run", 0.0001, 1024.0, 1.0, step=1.0, format="%g")
        gpus = r3.number_input("Ray GPUs per run", 0.0, 64.0, 0.0, step=1.0)
        # (a form sends its values only on submit: no live run count on the button)
        submitted = st.form_submit_button(
            "Start the sweep", type="primary", icon=":material/play_arrow:"
        )
    if submitted:
        try:
            sweep_id = sw.create_sweep(
                {
                    "teachers": teachers,
                    "methods": methods,
                    "seeds": seeds,
                    "steps": int(steps),
                    "threads": int(threads) or None,
                    "base": {"eval_every": 20},
                },
                {
                    "name": where,
                    "address": address or None,
                    "cpus_per_run": cpus,
                    "gpus_per_run": gpus,
                }
                if where == "ray"
                else {"name": where},
            )
            sw.start_runner(sweep_id)
        except DfkdVizError as exc:
            st.error(str(exc))
            return
        st.query_params["sweep"] = sweep_id
        st.rerun()


sweeps = sw.list_sweeps()
with st.expander("Start a new sweep", expanded=not sweeps, icon=":material/add:"):
    _new_sweep_form()
if not sweeps:
    st.info(
        "No sweeps yet. Start one above, or from the command line: "
        "`dfkd-viz sweep --teachers mnist-clean mnist-resnet14 --methods dfq tadfkd`.",
        icon=":material/info:",
    )
    st.stop()

by_id = {s["sweep_id"]: s for s in sweeps}
wanted = st.query_params.get("sweep")
ids = list(by_id)
index = ids.index(wanted) if wanted in by_id else 0


def _label(i: str) -> str:
    s = by_id[i]
    spec = s.get("spec") or {}
    return (
        f"{i} · {s['state']} · {s.get('done', 0)}/{s.get('total', 0)} runs · "
        f"{', '.join(spec.get('methods', []))} on {len(spec.get('teachers', []))} teachers"
    )


sweep_id = st.selectbox("Sweep", ids, index=index, format_func=_label, key=f"sweep_{wanted}")
if st.query_params.get("sweep") != sweep_id:
    st.query_params["sweep"] = sweep_id
if by_id[sweep_id]["state"] == "corrupt":
    st.warning(f"This sweep cannot be shown: {by_id[sweep_id].get('error')}")
    st.stop()


@st.fragment(run_every=3.0)
def sweep_view(sweep_id: str) -> None:
    try:
        df = sw.sweep_results(sweep_id)
        status = sw.sweep_status(sweep_id, df)
    except DfkdVizError as exc:
        st.warning(f"This sweep cannot be shown: {exc}")
        return
    spec = status["spec"]
    budget = f"{spec['steps']} steps" if spec.get("steps") else f"{spec.get('seconds')} s"
    st.markdown(f"### {sweep_id} &nbsp; {ui.state_badge(status['state'])}", unsafe_allow_html=True)
    st.markdown(
        f"<span class='dv-muted'>{len(spec['teachers'])} teachers × {len(spec['methods'])} methods × "
        f"{len(spec['seeds'])} seeds · {budget} per run"
        + (" · on a Ray cluster" if status.get("executor") == "ray" else "")
        + "</span>",
        unsafe_allow_html=True,
    )
    st.progress(
        status["done"] / max(status["total"], 1),
        text=f"{status['done']} of {status['total']} runs finished",
    )
    if status.get("error"):
        st.error(f"The sweep's runner failed: {status['error']}")
    remote = df[df["remote"].astype(bool)]
    if len(remote):  # cells on a Ray cluster: their latest reports, step by step
        st.caption(f"{len(remote)} run(s) on the Ray cluster now; each arrives here when it ends.")
        flying = remote[["teacher", "method", "seed", "status", "step", "node", "run_id"]]
        st.dataframe(flying, hide_index=True, key="sweep_remote")
    b = st.columns([1, 2, 3])
    if status["state"] == "running":
        if b[0].button("Stop", icon=":material/stop:", key="sweep_stop"):
            sw.stop_sweep(sweep_id)
            st.rerun()
    elif status["state"] != "finished" and b[0].button(
        "Resume", icon=":material/play_arrow:", key="sweep_resume", type="primary"
    ):
        try:
            sw.start_runner(sweep_id)
        except DfkdVizError as exc:
            st.error(str(exc))
        st.rerun()
    if status["current"] and b[1].button(
        "Watch the current run", icon=":material/monitoring:", key="sweep_live"
    ):
        ui.go("live", status["current"])

    failed = df[(df["status"] == "failed") & df["error"].notna()]
    if len(failed):  # why each failed cell failed (a Ray cell's run may never have arrived)
        st.caption(f"{len(failed)} run(s) failed:")
        st.dataframe(
            failed[["teacher", "method", "seed", "node", "run_id", "error"]],
            hide_index=True,
            key="sweep_failed",
        )
    summ = sw.summarize(df)
    if not summ["methods"]:
        st.info("No run has finished yet; results appear here as runs finish.")
        return
    methods = summ["methods"]
    best, worst = summ["best_method"], summ["worst_method"]
    cols = st.columns(max(2, len(methods)))
    for col, (m, v) in zip(cols, methods.items()):
        col.metric(
            f"{m}: worst case",
            f"{v['min']:.1f} %",
            help=f"mean {v['mean']:.1f} % ± {v['std']:.1f} over {v['n']} runs; "
            f"worst: {v['worst']['teacher']} seed {v['worst']['seed']}",
        )
        col.caption(
            f"mean {v['mean']:.1f} % ± {v['std']:.1f} · worst: {v['worst']['teacher']} "
            f"(seed {v['worst']['seed']})"
        )
    if best != worst:
        st.success(
            f"Most stable here: **{best}** (highest worst case, {methods[best]['min']:.1f} % of "
            f"the teacher's accuracy); least: **{worst}** ({methods[worst]['min']:.1f} %).",
            icon=":material/balance:",
        )
    left, right = st.columns(2)
    left.plotly_chart(viz.sweep_box(df), key="sweep_box", config={"displaylogo": False})
    right.plotly_chart(viz.sweep_by_teacher(df), key="sweep_teacher", config={"displaylogo": False})

    st.subheader("Results per teacher and method")
    table = pd.DataFrame(summ["cells"]).rename(
        columns={"mean": "mean %", "std": "std %", "min": "min %", "n": "runs"}
    )
    wide = table.pivot(index="teacher", columns="method", values="mean %")
    mins = table.pivot(index="teacher", columns="method", values="min %")
    teachers = [t for t in dict.fromkeys(df["teacher"]) if t in wide.index]  # the sweep's order

    def cell(t: str, m: str) -> str:
        v = wide.at[t, m]
        return "—" if pd.isna(v) else f"{v:.1f} (min {mins.at[t, m]:.1f})"

    t_acc = df.groupby("teacher")["teacher_acc"].first()
    show = pd.DataFrame(
        {
            "teacher ID acc": [ui.pct(t_acc.get(t)) for t in teachers],
            **{m: [cell(t, m) for t in teachers] for m in wide.columns},
        },
        index=pd.Index(teachers, name="teacher"),
    )
    st.dataframe(show, key="sweep_table")
    st.caption("Mean over seeds (and the worst seed), student ID accuracy in % of the teacher's.")
    cols = ["teacher", "method", "seed", "status", "step", "id_acc", "rel_acc", "node", "run_id"]
    cols += ["error"]
    runs = df[cols].copy()
    runs["id_acc"] = (100 * runs["id_acc"].astype(float)).round(2)
    runs["rel_acc"] = (100 * runs["rel_acc"].astype(float)).round(2)
    with st.expander(f"All {len(runs)} runs"):
        st.dataframe(
            runs.rename(columns={"id_acc": "ID acc %", "rel_acc": "% of teacher"}),
            hide_index=True,
            key="sweep_runs",
        )
        ui.csv_download(runs, f"{sweep_id}.csv", "sweep_csv")


sweep_view(sweep_id)
