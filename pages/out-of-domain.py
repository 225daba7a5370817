"""Out-of-domain: a run that distils into the student's own domain (AuG-KD and its baselines) —
student-domain accuracy per stage, the same split's other methods side by side, and AuG-KD's
mechanics at a chosen snapshot: the mixup progression (x → G(anchor(z)) → mixed images along the
schedule), the anchor's mask per class, and the teacher's uncertainty (energy) before and after
anchoring."""

import pandas as pd
import streamlit as st

from dfkd_viz import viz
from dfkd_viz.data import load_dataset
from dfkd_viz.distill import METHODS
from dfkd_viz.runs import manager
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader
from pages import _ui as ui

ui.page_setup()
st.title("Out-of-domain distillation")
st.caption(
    "The teacher knows one domain, the student has a few labelled samples of another and is scored "
    "there (AuG-KD, ICLR 2024). Compare AuG-KD with training on the student's samples alone (ce), "
    "KD on them (kd) and data-free DFQ on the same split."
)


def _has_domain(r: dict) -> bool:
    return bool(r.get("config", {}).get("student_domain"))


run_id, info = ui.load_run(
    "No out-of-domain run yet. Start the ood-augkd demo (about a minute on two cores), or set one "
    "up with a student domain on Setup.",
    where=_has_domain,
    demo="ood-augkd",
)
ui.run_header(info)
cfg = info["config"]
if not cfg.get("student_domain"):
    st.info(
        "This run has no student domain: it distils data-free for the teacher's own domain. Pick an "
        "out-of-domain run above, or start the ood-augkd preset.",
        icon=":material/info:",
    )
    st.stop()
st.markdown(
    f"<span class='dv-muted'>student domain <b>{cfg['student_domain']}</b> · "
    f"{cfg.get('student_domain_samples')} labelled training samples (split seeded by the run's seed) "
    "· scored on its test split</span>",
    unsafe_allow_html=True,
)
active = info["status"] in ACTIVE_STATES


def _stage_bounds(cfg: dict, total: int | None) -> list[tuple[float, str]]:
    """Steps at which AuG-KD's anchor and mixup stages start (empty for other methods)."""
    if cfg["method"] != "augkd" or not total:
        return []
    p = METHODS.get("augkd").make_params(cfg.get("method_params"))
    n = p.df_steps + p.anchor_steps + p.mix_steps
    return [
        (total * p.df_steps / n, "anchor"),
        (total * (p.df_steps + p.anchor_steps) / n, "mixup"),
    ]


def _same_split(info: dict) -> pd.DataFrame:
    """Runs on the same teacher, student domain, sample count and seed (the same split)."""
    c = info["config"]
    keys = ("teacher", "student_domain", "student_domain_samples", "seed")
    rows = []
    for r in ui.cached_runs():
        rc = r.get("config") or {}
        if all(rc.get(k) == c.get(k) for k in keys) and r.get("student_domain_acc") is not None:
            rows.append(
                {
                    "method": rc["method"],
                    "run_id": r["run_id"],
                    "student_domain_acc": r["student_domain_acc"],
                    "status": r["status"],
                    "current": r["run_id"] == info["run_id"],
                }
            )
    return pd.DataFrame(rows)


@st.fragment(run_every=2.0 if active else None)
def overview() -> None:
    info = manager.run_info(run_id)
    with RunReader(manager.run_dir(run_id)) as r:
        wide = r.metrics_wide(["student_domain_acc", "id_acc", "mix_s"])
    m = st.columns(4)
    m[0].metric(
        "student-domain accuracy",
        ui.pct(info.get("student_domain_acc")),
        help=f"on the {cfg['student_domain']} test split",
    )
    m[1].metric("student ID accuracy", ui.pct(info.get("id_acc")), help="on the teacher's domain")
    m[2].metric("stage" if cfg["method"] == "augkd" else "phase", info.get("phase") or "—")
    s_now = (
        wide["mix_s"].dropna().iloc[-1] if "mix_s" in wide and wide["mix_s"].notna().any() else None
    )
    m[3].metric(
        "mixup weight s",
        "—" if s_now is None else f"{s_now:.2f}",
        help="share of the real sample in a mixed image",
    )
    left, right = st.columns(2)
    if "student_domain_acc" in wide.columns and wide["student_domain_acc"].notna().any():
        evals = wide.dropna(subset=["student_domain_acc"])
        card = ui.teacher_card(cfg["teacher"]) or {}
        ref = {"id_acc": card.get("id_acc")}
        if cfg["student_domain"] == card.get("ood_domain"):
            ref["student_domain_acc"] = card.get("ood_acc")  # the teacher on the student's domain
        fig = viz.accuracy_curves(
            evals,
            ("student_domain_acc", "id_acc"),
            teacher_ref=ref,
            title="Student accuracy: own domain vs the teacher's",
        )
        for x, name in _stage_bounds(cfg, cfg.get("steps")):
            fig.add_vline(
                x=x,
                line_dash="dot",
                line_color="#64748b",
                annotation_text=name,
                annotation_position="bottom right",
            )
        left.plotly_chart(fig, key="ood_curves")
    else:
        left.info("Waiting for the first evaluation…" if active else "No evaluation recorded.")
    same = _same_split(info)
    if len(same) > 1:
        right.plotly_chart(
            viz.domain_comparison(same, "Same split, other methods"), key="ood_compare"
        )
    else:
        right.info(
            "No other method on this split yet. Run the baselines on the same split and budget, "
            "e.g. `dfkd-viz run --preset ood-augkd --method ce` (also `kd`, `dfq`), with the same seed.",
            icon=":material/compare_arrows:",
        )


overview()

if cfg["method"] != "augkd":
    st.info(
        f"The anchor and mixup views belong to AuG-KD runs; this one is `{cfg['method']}`.",
        icon=":material/info:",
    )
    st.stop()


@st.fragment(run_every=3.0 if active else None)
def mechanics() -> None:
    with RunReader(manager.run_dir(run_id)) as r:
        steps = r.artifact_steps("augkd_progression")
        if not steps:
            st.info("No snapshot yet.")
            return
        if active or st.session_state.get("ood_step") not in steps:
            st.session_state["ood_step"] = steps[-1]  # a live run shows its latest snapshot
        step = (
            st.select_slider("Snapshot at step", options=steps, key="ood_step")
            if len(steps) > 1
            else steps[0]
        )
        prog = r.artifact("augkd_progression", step)
        s_arr = r.artifact("augkd_s", step)
        mask = r.artifact("augkd_mask", step)
        en = r.artifact("augkd_energy", step)
        labels = r.artifact("augkd_labels", step)
    s_now = float(s_arr[0]) if s_arr is not None else None
    st.subheader("Mixup progression")
    st.caption(
        "Each row: a real student-domain sample x, the generator's image of its encoding G(Enc(x)), "
        "the anchored image G(anchor(Enc(x))) where the teacher is certain, then the mixed image "
        "(1 − s)·G(mix) + s·x at s = 0.25, 0.5, 0.75 and at the run's current s. Stage 3 trains the "
        f"student on these with the labels of x; s climbs from {0.2:.1f} to 1."
    )
    if prog is not None:
        st.html(viz.progression_html(prog, None if labels is None else labels[: len(prog)], s_now))
    left, right = st.columns(2)
    if en is not None:
        left.plotly_chart(viz.energy_histograms(en), key="ood_energy")
    if mask is not None:
        card = ui.teacher_card(cfg["teacher"])
        classes = load_dataset(card["dataset"], "test").classes if card else None
        right.plotly_chart(viz.anchor_masks(mask, classes), key="ood_mask")
    st.caption(
        "Energy −logsumexp(teacher logits): lower is more certain. The anchor is trained to lower it "
        "on G(anchor(Enc(x))) while keeping the label (0.1·CE); its mask (values in [0, 1/3)) says "
        "which latent dimensions it may move for each class."
    )


mechanics()
