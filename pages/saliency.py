"""Trigger saliency: where the teacher and the student look (captum attributions as overlays), on
real test images with and without the trigger and on the synthetic samples a defense flagged;
Self-Retrospection's synthesised trigger δ; the student's trigger-localisation score over training
(computed by the worker at every evaluation)."""

import numpy as np
import streamlit as st
import torch

from dfkd_viz.analysis.saliency import (
    LABELS,
    METHODS,
    attribute,
    local_mask,
    localisation,
    trigger_localisation,
)
from dfkd_viz.data import load_dataset, make_trigger
from dfkd_viz.data.triggers import TRIGGERS
from dfkd_viz.runs import manager
from dfkd_viz.runs.build import load_run_models
from dfkd_viz.runs.config import RunConfig
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader
from dfkd_viz.util.io import png_to_array
from dfkd_viz.viz.saliency import localisation_curve, saliency_mosaic, trigger_figure
from pages import _ui as ui

N_IMAGES = 8
SOURCES = {
    "triggered": "real test images + trigger",
    "clean": "real test images",
    "flagged": "synthetic samples flagged by the defense",
}

ui.page_setup()
st.title("Trigger saliency")
run_id, info = ui.load_run(
    "No runs yet. Distil a backdoored teacher (preset **backdoor**) to see where teacher and student look."
)
ui.run_header(info)
cfg = info["config"]
card = ui.teacher_card(cfg["teacher"]) or {}
default_trigger = cfg.get("trigger") or card.get("trigger")
target = cfg.get("target") if cfg.get("target") is not None else (card.get("target") or 0)
active = info["status"] in ACTIVE_STATES

if default_trigger:
    st.caption(
        f"Teacher **{cfg['teacher']}** carries the **{default_trigger}** backdoor (target class "
        f"{target}). A backdoored model that sees the trigger decides from it: its attribution "
        "moves from the digit onto the trigger. Does the student inherit that?"
    )
else:
    st.info(
        "This run's teacher has no known backdoor. You can still probe it with a trigger: a clean "
        "model's attribution stays on the digit.",
        icon=":material/info:",
    )

with RunReader(manager.run_dir(run_id)) as r:
    ckpts = r.checkpoints()
if not ckpts:
    st.info("No checkpoint of the student yet: the first is written a few steps into the run.")
    if active:
        st.button("Refresh", key="sal_refresh")
    st.stop()

c1, c2, c3, c4 = st.columns([2, 2, 3, 2])
method = c1.radio(
    "Attribution", METHODS, format_func=LABELS.get, key="sal_method", horizontal=False
)
trig_names = sorted(TRIGGERS.names())
trigger_name = c2.selectbox(
    "Trigger",
    trig_names,
    index=trig_names.index(default_trigger) if default_trigger in trig_names else 0,
    key="sal_trigger",
)
source = c3.radio(
    "Images", list(SOURCES), format_func=SOURCES.get, key="sal_source", horizontal=False
)
ck_steps = [c["step"] for c in ckpts]
ck_step = c4.selectbox(
    "Student at step", ck_steps[::-1], key="sal_ckpt", help="Checkpoints the run keeps"
)
ck_path = next(c["path"] for c in ckpts if c["step"] == ck_step)


@st.cache_resource(max_entries=4, show_spinner=False)
def models(run: str, step: int, path: str):
    c = RunConfig(**manager.run_info(run)["config"])
    return load_run_models(c, path)


@st.cache_data(max_entries=2, show_spinner=False)
def test_images(dataset: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset(dataset, "test")
    g = np.random.default_rng(seed)
    idx = g.choice(len(ds), size=4 * n, replace=False)
    return ds.x[idx].numpy(), ds.y[idx].numpy()


def _png(b: bytes) -> np.ndarray:
    """A stored sample (PNG bytes) as ``(C, H, W)`` float32 in [0, 1]."""
    a = png_to_array(b).astype(np.float32) / 255.0
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


@st.cache_data(max_entries=24, show_spinner=False)
def attributions(run: str, step: int, path: str, method: str, source: str, trig: str):
    """Images and both models' maps, predictions and localisation, cached by run, checkpoint
    step, attribution method, image source and trigger."""
    teacher, student, tcard = models(run, step, path)
    trigger = make_trigger(trig, teacher.in_shape)
    if source == "flagged":
        with RunReader(manager.run_dir(run)) as rr:
            steps = rr.snapshot_steps()
            df = rr.samples(steps[-1]) if steps else None
        if df is None or df["flag"].isna().all() or not df["flag"].fillna(0).astype(bool).any():
            return None
        df = df[df["flag"].fillna(0).astype(bool)].head(N_IMAGES)
        x = torch.from_numpy(np.stack([_png(b) for b in df["image"]]))
        labels = None
    else:
        xs, ys = test_images(tcard["dataset"], N_IMAGES)
        keep = ys != target
        x, labels = torch.from_numpy(xs[keep][:N_IMAGES]), ys[keep][:N_IMAGES]
        if source == "triggered":
            x = trigger.apply(x)
    with torch.no_grad():
        tp, sp = teacher(x).argmax(1).numpy(), student(x).argmax(1).numpy()
    maps = {"teacher": attribute(teacher, x, method), "student": attribute(student, x, method)}
    mask = local_mask(trigger)
    loc = {
        k: None if mask is None else float(localisation(m, mask).mean()) for k, m in maps.items()
    }
    return x.numpy(), maps, tp, sp, labels, loc, None if mask is None else float(mask.mean())


try:
    with st.spinner("Computing attributions…"):
        res = attributions(run_id, ck_step, ck_path, method, source, trigger_name)
except Exception as exc:  # e.g. a running run rotated the checkpoint away meanwhile
    st.warning(
        f"Could not compute the attributions ({type(exc).__name__}: {exc}). A running run keeps "
        "only its latest checkpoints: pick the student step again."
    )
    st.stop()

if res is None:
    st.info(
        "No flagged synthetic samples in this run's latest snapshot: only a defense that flags "
        "samples (ABD's Shuffling Vaccine) marks them. Pick real images instead."
    )
else:
    x, maps, tp, sp, labels, loc, area = res
    m1, m2, m3 = st.columns(3)
    m1.metric(
        "teacher: mass inside trigger", "—" if loc["teacher"] is None else f"{loc['teacher']:.1%}"
    )
    m2.metric(
        "student: mass inside trigger", "—" if loc["student"] is None else f"{loc['student']:.1%}"
    )
    m3.metric("chance (trigger area)", "—" if area is None else f"{area:.1%}")
    if area is None:
        st.caption(
            f"The {trigger_name} trigger covers the whole image: there is no region to localise; "
            "compare the maps by eye and the ASR on the Live page."
        )
    caps = [
        f"{'' if labels is None else f'y {labels[i]} · '}T {tp[i]} · S {sp[i]}"
        for i in range(len(x))
    ]
    st.plotly_chart(
        saliency_mosaic(
            x,
            {
                f"teacher ({LABELS[method]})": maps["teacher"],
                f"student @ {ck_step}": maps["student"],
            },
            caps,
            title=SOURCES[source],
        ),
        key="sal_mosaic",
        config={"displayModeBar": False},
    )
    st.caption(
        "Brighter = more attribution (each map scaled to its own 99th percentile). Captions: true "
        "label y, teacher (T) and student (S) predictions"
        + (f"; the backdoor's target is class {target}." if default_trigger else ".")
    )


@st.cache_data(max_entries=8, show_spinner=False)
def reference_localisation(teacher_id: str, trig: str, target_class: int) -> tuple:
    """``(backdoored teacher, clean teacher)`` trigger-localisation scores on 32 triggered test
    images (the curve's reference lines); None for a trigger covering the whole image, or for
    the clean model when the zoo has no trained clean teacher of the dataset."""
    from dfkd_viz.teachers import load_teacher

    tch, tcard = load_teacher(teacher_id)
    trigger = make_trigger(trig, tch.in_shape)
    xs, ys = test_images(tcard["dataset"], 32)
    xt = trigger.apply(torch.from_numpy(xs[ys != target_class][:32]))
    t_loc = trigger_localisation(tch, xt, trigger, ig_steps=8)  # None for a non-local trigger
    clean_id = next(
        (
            c["id"]
            for c in ui.cached_cards()
            if c.get("kind") == "clean"
            and c.get("dataset") == tcard["dataset"]
            and c.get("trained")
        ),
        None,
    )
    if t_loc is None or clean_id is None:
        return t_loc, None
    return t_loc, trigger_localisation(load_teacher(clean_id)[0], xt, trigger, ig_steps=8)


@st.fragment(run_every=3.0 if active else None)
def over_training() -> None:
    with RunReader(manager.run_dir(run_id)) as rr:
        wide = rr.metrics_wide(["trigger_loc", "asr"])
        delta = rr.artifact("sr_trigger")
        succ = rr.artifact("sr_class_success")
    left, right = st.columns([3, 2])
    with left:
        if default_trigger and "trigger_loc" in wide and wide["trigger_loc"].notna().any():
            t_loc, c_loc = reference_localisation(cfg["teacher"], default_trigger, target)
            shape = tuple(card.get("in_shape") or (1, 28, 28))  # the trigger at the image size
            chance = float(local_mask(make_trigger(default_trigger, shape)).mean())
            st.plotly_chart(
                localisation_curve(wide, t_loc, chance, clean=c_loc),
                key="sal_curve",
                config={"displaylogo": False},
            )
            ui.csv_download(wide, f"{run_id}-trigger-localisation.csv", "sal_csv")
        else:
            st.caption(
                "The trigger-localisation curve appears for runs of a teacher with a local trigger "
                "(badnet_grid, badnet_sq, trojan_wm); the worker computes it at each evaluation."
            )
    with right:
        if delta is not None:
            st.plotly_chart(
                trigger_figure(delta), key="sal_delta", config={"displayModeBar": False}
            )
            if succ is not None:
                best = int(np.argmax(succ))
                st.caption(
                    f"Self-Retrospection's universal perturbation (‖δ‖₂ = "
                    f"{np.linalg.norm(delta):.2f}) sends {succ[best]:.0%} of images to class {best} "
                    "on the teacher: the suspected backdoor target."
                )
        elif cfg.get("defense") == "abd":
            st.caption(
                "Self-Retrospection has not synthesised a trigger yet (it starts late in the run)."
            )


over_training()
