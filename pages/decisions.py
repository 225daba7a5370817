"""Decisions: the active defense's per-sample decisions at a chosen step — score histogram with
the threshold (for TA-DFKD's selection: the normalised teacher losses, the two fitted Gaussian
components and the 0.5-posterior line), kept and rejected galleries, counts over training. One generic view over the store;
each defense fills it with its own scores."""

import numpy as np
import streamlit as st

from dfkd_viz import viz
from dfkd_viz.runs import manager
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader
from pages import _ui as ui

ui.page_setup()
st.title("Defense decisions")
run_id, info = ui.load_run(
    "No runs yet. Launch a run with a defense to see which synthetic samples it keeps and rejects."
)
ui.run_header(info)
defense = info["config"].get("defense", "none")
if defense == "none":
    st.info(
        "This run has no defense: every synthetic sample is kept for distillation. Launch a run with a "
        "defense from **Setup** to see its per-sample scores and keep/reject decisions here.",
        icon=":material/info:",
    )
    if st.button("Set up a run", key="dec_setup"):
        ui.go("setup")
    st.stop()

active = info["status"] in ACTIVE_STATES


@st.fragment(run_every=2.0 if active else None)
def decisions() -> None:
    with RunReader(manager.run_dir(run_id)) as r:
        steps = r.snapshot_steps()
        if not steps:
            st.info("No snapshot yet.")
            return
        if st.session_state.get("dec_step") not in steps:
            st.session_state["dec_step"] = steps[-1]
        step = (
            st.select_slider("Step", options=steps, key="dec_step") if len(steps) > 1 else steps[0]
        )
        snap = r.snapshot_info(step) or {}
        df = r.samples(step)
        by, good = viz.decision_view(df)
        counts = r.decision_counts(by)
        ta_gmm, ta_loss = r.artifact("ta_gmm", step), r.artifact("ta_norm_loss", step)
    if df["keep"].isna().all():
        st.info(f"The defense {defense!r} recorded no decisions at step {step}.")
        return
    names = viz.DECISION_NAMES[by]
    if by == "flag":
        st.caption(
            f"**{defense}** flags synthetic samples without rejecting them: every sample is "
            "distilled, the flagged ones are what the defense acts on."
        )
    scores = df["score"].astype(float).to_numpy()
    name = snap.get("score_name") or "score"
    c1, c2, c3 = st.columns(3)
    c1.metric(names[0], int(good.sum()))
    c2.metric(names[1], int((~good).sum()))
    c3.metric("threshold", "—" if snap.get("threshold") is None else f"{snap['threshold']:.3g}")
    left, right = st.columns(2)
    if ta_gmm is not None and ta_loss is not None and len(ta_loss) == len(df):
        # TA-DFKD's selection: the normalised teacher losses and the mixture fitted to them
        left.plotly_chart(viz.gmm_selection(ta_loss, good, ta_gmm), key="gmm")
    else:
        left.plotly_chart(
            viz.score_histogram(scores, good, snap.get("threshold"), name, names), key="hist"
        )
    right.plotly_chart(viz.decision_counts(counts), key="counts")
    ui.csv_download(df, f"{run_id}-decisions-step{step}.csv", "dec_csv", container=left)
    ui.csv_download(counts, f"{run_id}-decision-counts.csv", "dec_counts_csv", container=right)
    for title, mask in ((names[0].capitalize(), good), (names[1].capitalize(), ~good)):
        st.markdown(f"**{title}** ({int(mask.sum())})")
        sub = df[mask]
        if sub.empty:
            st.caption("none")
            continue
        order = np.argsort(-sub["score"].to_numpy())
        sub = sub.iloc[order]
        caps = [f"T: {t} ({c:.0%})" for t, c in zip(sub["teacher_label"], sub["confidence"])]
        short = name.split(":")[0].strip()  # "suspicion: −log10 KL(…)" → "suspicion"
        subs = [f"{short} {s:.3f}" for s in sub["score"]]
        st.html(
            viz.sample_grid_html(
                list(sub["image"]),
                caps,
                subs,
                list(good[mask][order]),
                badges=viz.DECISION_BADGES[by],
            )
        )


decisions()
