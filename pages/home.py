"""Home: what the lab shows, the scenario pairs and scenarios, one-click demo."""

import re

import streamlit as st

from dfkd_viz.distill.methods import METHODS
from dfkd_viz.runs.presets import PAIRS, PRESETS
from pages import _ui as ui

ui.page_setup()
st.title("dfkd-viz · data-free distillation from untrusted teachers")
st.markdown(
    """
A **generator** synthesises inputs, a **student** learns the **teacher's** outputs on them — no real data
needed. But a teacher can betray it: a *non-transferable* teacher lures the generator out of distribution,
a *backdoored* teacher passes its trigger on, some teachers make distillation collapse, and a teacher's
domain may not be the student's (out-of-domain KD with a few labelled student samples). This lab runs the
distillation in a background process and shows, live, what the generator synthesises, which samples a
defense keeps or rejects, and how the student's **ID accuracy**, **OOD accuracy** and **attack success
rate** evolve.
"""
)

c1, c2, _ = st.columns([1.2, 1, 2])
if c1.button(
    "Start demo",
    type="primary",
    icon=":material/play_arrow:",
    use_container_width=True,
    key="start_demo",
):
    ui.start_demo("clean-dfq")
if c2.button("Set up a run", icon=":material/tune:", use_container_width=True, key="home_setup"):
    ui.go("setup")
st.caption(
    "The demo distils the clean MNIST teacher with DFQ (≈30 s on two CPU cores) and opens its live view."
)

st.subheader("Scenario pairs")
st.caption(
    "Two scenarios that differ in one setting, run side by side: **Run the pair** starts both "
    "(each on half the cores) and opens them on Compare. The numbers below were measured with "
    "seed 0 on this lab's two-core machine (docs/results/pairs.md)."
)
pairs = list(PAIRS.values())
for row in range(0, len(pairs), 3):
    cols = st.columns(3)
    for col, pair in zip(cols, pairs[row : row + 3]):
        with col.container(border=True):
            first, second = (PRESETS[name] for name in pair.presets)
            st.markdown(f"**{pair.title}**  \n`{first.name}` vs `{second.name}`")
            st.caption(
                f"{first.title} · {second.title} — they differ only in {', '.join(pair.differs_in)}"
            )
            # a number keeps its unit on the same line in a narrow card ("35 %", not "35 / %")
            look_for = re.sub(r"(\d) %", "\\1\u00a0%", pair.look_for)
            st.markdown(f"**What to look for.** {look_for}")
            if st.button(
                "Run the pair",
                key=f"pair_{pair.name}",
                icon=":material/compare_arrows:",
                type="primary",
            ):
                ui.start_pair(pair.name)

st.subheader("Scenarios")
cards = list(PRESETS.values())
for row in range(0, len(cards), 3):
    cols = st.columns(3)
    for col, p in zip(cols, cards[row : row + 3]):
        with col.container(border=True):
            cfg = p.config
            budget = f"{cfg['steps']} steps" if "steps" in cfg else f"{cfg.get('seconds')} s"
            st.markdown(f"**{p.title}**  \n`{p.name}`")
            st.markdown(p.description)
            st.caption(
                f"teacher {cfg['teacher']} · {cfg['method']} · defense "
                f"{cfg.get('defense') or METHODS.get(cfg['method']).default_defense or 'none'} · {budget}"
            )
            if st.button("Run this scenario", key=f"preset_{p.name}", icon=":material/play_arrow:"):
                ui.start_demo(p.name)

runs = ui.cached_runs()
st.subheader("Recent runs")
if not runs:
    st.caption(
        "No runs yet — start the demo above, or launch one from the command line: `dfkd-viz run --preset clean-dfq`."
    )
for r in runs[:5]:
    c = st.columns([4, 2, 2, 1])
    c[0].markdown(
        f"`{r['run_id']}` · {r['config'].get('teacher', '?')} · {r['config'].get('method', '?')}"
    )
    c[1].markdown(ui.state_badge(r["status"]), unsafe_allow_html=True)
    c[2].markdown(f"ID accuracy {ui.pct(r.get('id_acc'))}")
    if c[3].button("Open", key=f"open_{r['run_id']}"):
        ui.go("live", r["run_id"])
