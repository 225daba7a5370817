"""Audit: a data-free trust report of a teacher before distilling it — NTL, backdoor and collapse
verdicts, the scores behind them and the evidence (robustness histogram, lure class, per-class
shortcut gains, the synthesised trigger), from the weights alone (:mod:`dfkd_viz.audit`)."""

import json

import numpy as np
import streamlit as st

from dfkd_viz import viz
from dfkd_viz.audit import DEFENSE_FOR, audit_progress, cached_report, start_audit
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.viz.audit import VERDICT_COLORS, class_bars, robustness_histogram, shortcut_gain_bars
from dfkd_viz.viz.saliency import trigger_figure
from pages import _ui as ui

ui.page_setup()
st.title("Teacher audit")
st.markdown(
    "Before you distil a teacher you did not train, ask what it hides. The audit never sees the "
    "teacher's data or its card's *kind*: it reads the **weights and architecture**, synthesises "
    "probe samples with two short generator runs, and measures three risks with the mechanisms "
    "the defenses use — **NTL** (ATEsc's robustness probe on samples that follow only the BN "
    "statistics), **backdoor** (Self-Retrospection's universal trigger per class, Neural-Cleanse "
    "style: how far a small fixed-budget perturbation pushes each class's margin, and ABD's "
    "channel shuffling) and **collapse** (TA-DFKD's concern: class coverage of "
    "class-prior synthesis)."
)

cards = [c for c in ui.cached_cards() if c["trained"]]
if not cards:
    st.info("No trained teacher yet: train the zoo on the Teachers page, or import your own.")
    st.stop()
ids = [c["id"] for c in cards]
wanted = st.query_params.get("teacher")
teacher = st.selectbox(
    "Teacher",
    ids,
    index=ids.index(wanted) if wanted in ids else 0,
    key="audit_teacher",
    help="any trained zoo teacher or one you imported",
)
if st.query_params.get("teacher") != teacher:
    st.query_params["teacher"] = teacher

report = cached_report(teacher)
job = audit_progress(teacher)
auditing = job is not None and job.active
left, right = st.columns([1, 4])
label = "Audit again" if report else "Run the audit"
run = left.button(
    label,
    type="primary" if report is None else "secondary",
    key="audit_run",
    disabled=auditing,
)
right.caption(
    "About 15 s for a LeNet-5 teacher, under a minute for a ResNet-14 on 2 cores, in a "
    "background job (you may leave the page). Reports are kept per weight digest: the same "
    "weights — also an imported copy — are not audited twice."
    if report is None
    else f"Stored report of these weights (audited in {report.seconds:.0f} s; digest "
    f"`{report.weights_sha256[:12]}`)."
)
if run:
    try:
        start_audit(teacher)
    except (DfkdVizError, OSError) as exc:
        st.error(f"The audit could not start: {exc}", icon=":material/error:")
        st.stop()
    st.rerun()


@st.fragment(run_every=0.5 if auditing else None)
def audit_job_panel() -> None:
    """The running audit's progress; when it ends, the page redraws with the stored report."""
    rec = audit_progress(teacher)
    if rec is None:
        return
    if rec.active:
        st.progress(rec.frac, text=f"Auditing {teacher}: {rec.msg}")
    elif auditing:  # it has just ended: draw the stored report (or the error) on a full rerun
        ui.cached_cards.clear()
        st.rerun()
    elif rec.state == "failed":  # the latest audit's error, until the next one starts
        st.error(f"The audit could not run: {rec.error}", icon=":material/error:")


audit_job_panel()

if report is None:
    st.stop()

RISKS = {
    "ntl": ("Non-transferable (NTL)", "robust lure mass", lambda r: f"{r.ntl.robust_mass:.0%}"),
    "backdoor": ("Backdoor", "shortcut gain", lambda r: f"{r.backdoor.shortcut_gain:.2f}"),
    "collapse": ("Collapse", "class coverage", lambda r: f"{r.collapse.coverage:.2f}"),
}
cols = st.columns(3)
for col, (risk, (title, score_name, fmt)) in zip(cols, RISKS.items(), strict=True):
    v = report.verdict[risk]
    with col.container(border=True):
        st.markdown(
            f"**{title}** <span class='dv-state' style='background:{VERDICT_COLORS[v]}'>{v}</span>",
            unsafe_allow_html=True,
        )
        st.metric(score_name, fmt(report))
        if v != "low":
            defense, why = DEFENSE_FOR[risk]
            st.caption(f"Suggested defense: **{defense}** — {why}.")
for s in report.suggestions:
    st.warning(s, icon=":material/shield:")
if not report.suggestions:
    st.success(
        "No risk above *low*: standard DFKD (e.g. DFQ) should transfer this teacher's knowledge.",
        icon=":material/verified:",
    )

tab_ntl, tab_bd, tab_col, tab_raw = st.tabs(
    ["NTL evidence", "Backdoor evidence", "Collapse evidence", "Scores (JSON)"]
)
n, b, c = report.ntl, report.backdoor, report.collapse
with tab_ntl:
    st.markdown(
        f"A generator that matches only the teacher's BN statistics (no class prior) put "
        f"**{n.lure_share:.0%}** of its samples in class **{n.lure_class}**; "
        f"{n.robust_lure:.0%} of those survive an ε = {report.params.epsilon:g} PGD attack, "
        f"{n.robust_other:.0%} of the others do — a robust lure mass of **{n.robust_mass:.0%}** "
        "of all samples. An NTL teacher's BN statistics remember its OOD domain, which it sends "
        "to one class with a large, robust margin: BN-only synthesis is lured there (one tall, "
        "robust class). A clean teacher's samples spread out and are fragile; a backdoored "
        "teacher's may crowd into one class but stay fragile."
    )
    a1, a2 = st.columns(2)
    a1.plotly_chart(
        robustness_histogram(n.robustness, n.predicted, n.lure_class, report.params.epsilon),
        use_container_width=True,
        key="audit_rob",
    )
    a2.plotly_chart(
        class_bars(n.class_counts, n.lure_class, "Classes of BN-only samples"),
        use_container_width=True,
        key="audit_bn_classes",
    )
    if report.samples_bn:
        imgs = viz.to_uint8(np.asarray(report.samples_bn, dtype=np.float32))
        preds = n.predicted[: len(imgs)]
        st.html(
            viz.sample_grid_html(
                list(imgs),
                captions=[f"class {p}" for p in preds],
                subcaptions=[f"robust {r:.2f}" for r in n.robustness[: len(imgs)]],
            )
        )
with tab_bd:
    aside = (
        f" Class {n.lure_class}, the NTL lure class, is set aside: an NTL teacher's OOD basin is "
        "a shortcut of its own, not a trigger."
        if b.lure_set_aside
        else ""
    )
    st.markdown(
        f"For each class, a universal perturbation of fixed L2 budget ({b.radius:.1f} pixel "
        f"units) pushes the class-prior synthetic samples toward it as hard as it can; the bars "
        f"show how much more margin each class gains than the median class. A backdoor is a "
        f"shortcut: its target gains far more than the rest. Class **{b.target}** gains "
        f"**{b.shortcut_gain:.2f}**; {b.shuffle_survival[b.target]:.0%} of its perturbed samples "
        "keep their prediction when the teacher's last convolutions have their channels shuffled "
        "(ABD's vaccine: a backdoor's shortcut tends to survive it, ordinary features do not)."
        + aside
    )
    b1, b2 = st.columns([3, 2])
    b1.plotly_chart(
        shortcut_gain_bars(
            b.gain, b.target, b.shuffle_survival, n.lure_class if b.lure_set_aside else None
        ),
        use_container_width=True,
        key="audit_gains",
    )
    b2.plotly_chart(
        trigger_figure(np.asarray(b.trigger), f"Synthesised trigger → class {b.target}"),
        use_container_width=False,
        key="audit_trigger",
    )
with tab_col:
    st.markdown(
        f"Class-prior synthesis (one-hot + class balance + BN, as DFQ) covers "
        f"**{c.classes_covered}** of {report.num_classes} classes (normalised entropy "
        f"**{c.coverage:.2f}**, smallest class {c.min_class_share:.0%}), median confidence "
        f"{c.confidence:.2f}. A teacher whose class prior concentrates synthesis on a few classes "
        "makes standard DFKD collapse; TA-DFKD drops the prior."
    )
    d1, d2 = st.columns(2)
    d1.plotly_chart(
        class_bars(c.class_counts, None, "Classes of class-prior samples"),
        use_container_width=True,
        key="audit_prior_classes",
    )
    if report.samples_prior:
        imgs = viz.to_uint8(np.asarray(report.samples_prior, dtype=np.float32))
        with d2:
            st.html(viz.sample_grid_html(list(imgs), captions=["" for _ in imgs]))
with tab_raw:
    summary = report.summary()
    st.json(summary)
    st.download_button(
        "Download the report (JSON)",
        json.dumps(report.model_dump(), default=str),
        file_name=f"audit-{teacher}.json",
        mime="application/json",
        key="audit_dl",
    )
