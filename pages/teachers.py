"""Teachers: the zoo's cards, example ID / OOD / triggered inputs, training of missing teachers
(in a background process, with progress)."""

import streamlit as st

from dfkd_viz import viz
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.teachers.jobs import start_training, training_progress
from pages import _ui as ui

ui.page_setup()
st.title("Teacher zoo")
st.markdown(
    "Each teacher is a LeNet-5 (2× wide) trained by a recipe: **clean**, **NTL** (non-transferable: accurate "
    "in-distribution, wrong on its OOD domain), **CUTI** (an NTL variant) or **backdoor** (a trigger sends any "
    "input to class 0). Accuracies are measured on held-out test data."
)


@st.cache_data(show_spinner=False)
def examples(
    dataset: str, ood_domain: str | None, trigger: str | None, n: int = 6
) -> dict[str, list[bytes]]:
    from dfkd_viz.data import load_dataset, load_domain, make_trigger
    from dfkd_viz.runs.store import png_bytes

    test = load_dataset(dataset, "test")
    out = {"ID": [png_bytes(viz.to_uint8(x.numpy())) for x in test.x[:n]]}
    if ood_domain:
        try:
            ood = load_domain(ood_domain, dataset, "test")
            out[f"OOD ({ood_domain})"] = [png_bytes(viz.to_uint8(x.numpy())) for x in ood.x[:n]]
        except DfkdVizError:
            pass
    if trigger:
        trig = make_trigger(trigger, test.shape).apply(test.x[:n]).numpy()
        out[f"triggered ({trigger})"] = [png_bytes(viz.to_uint8(x)) for x in trig]
    return out


cards = ui.cached_cards()
missing = [c["id"] for c in cards if not c["trained"] and c["available"]]
running = {
    c["id"]: p
    for c in cards
    if (p := training_progress(c["id"])) and p.get("state") in ("queued", "running")
}

top = st.columns([2, 5])
if top[0].button(
    f"Train {len(missing)} missing teacher(s)",
    disabled=not missing or bool(running),
    icon=":material/model_training:",
    key="train_all",
):
    start_training(missing)
    st.rerun()
if not missing:
    top[1].caption("Every teacher whose data is on this machine is trained and cached.")


@st.fragment(run_every=1.0 if running else None)
def progress_panel() -> None:
    live = {c["id"]: training_progress(c["id"]) for c in cards}
    active = {k: v for k, v in live.items() if v and v.get("state") in ("queued", "running")}
    for tid, p in active.items():
        st.progress(
            float(p.get("frac") or 0.0), text=f"{tid}: {p.get('state')} · {p.get('msg', '')}"
        )
    failed = {k: v for k, v in live.items() if v and v.get("state") == "failed"}
    for tid, p in failed.items():
        st.warning(f"Training {tid} failed: {p.get('error')}")
    if running and not active:
        ui.cached_cards.clear()
        st.rerun()


progress_panel()

for row in range(0, len(cards), 2):
    cols = st.columns(2)
    for col, c in zip(cols, cards[row : row + 2]):
        with col.container(border=True):
            st.markdown(f"#### `{c['id']}` {ui.kind_badge(c['kind'])}", unsafe_allow_html=True)
            st.caption(c.get("description") or "")
            m = st.columns(3)
            m[0].metric("ID accuracy", ui.pct(c.get("id_acc")))
            m[1].metric(f"OOD acc ({c.get('ood_domain') or '—'})", ui.pct(c.get("ood_acc")))
            m[2].metric(
                f"ASR ({c.get('trigger')})" if c.get("trigger") else "ASR", ui.pct(c.get("asr"))
            )
            if not c["available"]:
                st.caption(
                    f"Dataset {c['dataset']} is not on this machine (see the README for how to add it)."
                )
                continue
            if not c["trained"]:
                if st.button("Train", key=f"train_{c['id']}", disabled=bool(running)):
                    start_training([c["id"]])
                    st.rerun()
            else:
                st.caption(
                    f"{c['dataset']} · {c['arch']} · seed {c.get('seed')} · trained in {c.get('train_s')} s"
                )
            for label, imgs in examples(
                c["dataset"], c.get("ood_domain"), c.get("trigger")
            ).items():
                st.markdown(f"<span class='dv-muted'>{label}</span>", unsafe_allow_html=True)
                st.html(viz.sample_grid_html(imgs, img_px=48))
