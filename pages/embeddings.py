"""Embeddings: the teacher's feature space as a UMAP map of real ID and real OOD test data, with
each snapshot's synthetic samples placed in it (the map is the teacher's, computed once in a
background job; the worker places the samples; this page only plots).
Select points (box or lasso) to see their images; the OOD-likeness curve shows the trap."""

import pandas as pd
import streamlit as st

from dfkd_viz import viz
from dfkd_viz.runs import manager
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader
from pages import _ui as ui

ui.page_setup()
st.title("Embeddings: where synthetic samples fall")
run_id, info = ui.load_run(
    "No runs yet. Every run maps its synthetic samples against real ID and OOD data here."
)
ui.run_header(info)
active = info["status"] in ACTIVE_STATES
cfg = info["config"]
if cfg.get("embedding") is False:
    st.info(
        "This run was started without an embedding map (`embedding: false`).",
        icon=":material/info:",
    )
    st.stop()
if cfg.get("student_domain"):
    st.caption(
        f"Out-of-domain run: the real OOD points are the student's own domain "
        f"(**{cfg['student_domain']}** test split). "
        + (
            "Snapshots of AuG-KD's anchor and mixup stages hold the mixed images of fixed "
            "student-domain samples: anchored, they sit among the teacher's ID clusters; as the "
            "mixup weight s climbs to 1 they move back onto the student-domain points."
            if cfg["method"] == "augkd"
            else ""
        )
    )

c1, c2 = st.columns([2, 3])
color_by = c1.radio(
    "Colour by",
    ["source", "class", "score", "confidence"],
    horizontal=True,
    key="emb_color",
    format_func={
        "source": "source",
        "class": "class",
        "score": "defense score",
        "confidence": "teacher confidence",
    }.get,
)
others = [
    r["run_id"]
    for r in ui.cached_runs()
    if r["run_id"] != run_id
    and r.get("config", {}).get("teacher") == cfg["teacher"]
    and r["status"] != "corrupt"
]
compare = c2.multiselect(
    "Compare OOD-likeness with runs of the same teacher",
    others,
    key="emb_compare",
    max_selections=5,
)


# a finished run whose snapshots wait for the teacher's map (still computing) keeps polling too
map_busy = ui.map_status(cfg["teacher"], cfg.get("student_domain") or cfg.get("ood_domain"))[1]


@st.fragment(run_every=2.0 if (active or map_busy) else None)
def emb_view() -> None:
    with RunReader(manager.run_dir(run_id)) as r:
        ref = r.reference()
        steps = r.embedded_steps()
        wide = r.metrics_wide(["ood_likeness"])
        score_name = None
        if steps:
            if st.session_state.get("emb_step") not in steps or (
                active and st.session_state.get("emb_follow", True)
            ):
                st.session_state["emb_step"] = steps[-1]
            step = (
                st.select_slider("Snapshot at step", options=steps, key="emb_step")
                if len(steps) > 1
                else steps[0]
            )
            samples = r.samples(step)
            score_name = (r.snapshot_info(step) or {}).get("score_name")
        else:
            samples = None
    if ref.empty:
        # the map is the teacher's, computed once in a background job; the worker places this
        # run's snapshots as soon as it is stored
        line, computing = ui.map_status(
            cfg["teacher"], cfg.get("student_domain") or cfg.get("ood_domain")
        )
        if computing or active:
            st.info(
                f"{line or 'reference map: not started'}. The UMAP map of real ID and OOD data is "
                "computed once per teacher, in the background; this run's snapshots are placed "
                "in it as soon as it is ready.",
                icon=":material/hourglass_top:",
            )
        else:
            st.info("This run has no embedding map" + (f" ({line})." if line else "."))
    else:
        fig = viz.embedding_map(ref, samples, color_by, score_name or "score")
        event = st.plotly_chart(
            fig,
            key="emb_map",
            on_select="rerun",
            selection_mode=("box", "lasso", "points"),
            config={"displaylogo": False},
        )
        ui.csv_download(
            pd.concat(
                [
                    ref.assign(kind="real"),
                    (samples if samples is not None else ref.iloc[:0]).assign(kind="synthetic"),
                ]
            ),
            f"{run_id}-embedding.csv",
            "emb_csv",
        )
        chosen = [
            p.get("customdata")
            for p in (event.selection.points if event else [])
            if p.get("customdata")
        ]
        st.markdown(f"**Selected points** ({len(chosen)}) — box or lasso on the map")
        if chosen:
            ref_idx = [int(i) for k, i in chosen if k == "ref"][:60]
            syn_idx = {int(i) for k, i in chosen if k == "syn"}
            with RunReader(manager.run_dir(run_id)) as r:
                ref_imgs = r.reference_images(ref_idx)
            refs = ref.set_index("idx")
            imgs = [ref_imgs[i] for i in ref_idx if i in ref_imgs]
            caps = [
                f"real {refs.loc[i, 'source'].upper()} · {refs.loc[i, 'label']}"
                for i in ref_idx
                if i in ref_imgs
            ]
            keep = [None] * len(imgs)
            if samples is not None and syn_idx:
                sub = samples[samples["idx"].isin(syn_idx)]
                imgs += list(sub["image"])
                caps += [
                    f"synthetic · T: {t} ({c:.0%})"
                    for t, c in zip(sub["teacher_label"], sub["confidence"])
                ]
                keep += [None if k != k or k is None else bool(k) for k in sub["keep"]]
            st.html(viz.sample_grid_html(imgs[:80], caps[:80], None, keep[:80], img_px=56))
        else:
            st.caption("Nothing selected yet.")
    frames = {f"this run ({cfg['method']}/{cfg.get('defense', 'none')})": wide}
    for other in compare:
        with RunReader(manager.run_dir(other)) as r2:
            c = r2.config()
            frames[f"{other[-9:]} ({c['method']}/{c.get('defense', 'none')})"] = r2.metrics_wide(
                ["ood_likeness"]
            )
    if "ood_likeness" in wide.columns:
        st.plotly_chart(
            viz.ood_likeness_curves(frames), key="ood_like", config={"displaylogo": False}
        )
        st.caption(
            "Share of snapshot samples whose 10 nearest real neighbours (teacher feature space) are mostly OOD. "
            "A rising curve is the generator drifting into the teacher's OOD trap."
        )


emb_view()
