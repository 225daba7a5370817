"""Setup: choose dataset, teacher, method, defense, budget and seed; launch a background run."""

import streamlit as st

from dfkd_viz.data import domain_names
from dfkd_viz.distill.defenses import DEFENSES
from dfkd_viz.distill.methods import METHODS
from dfkd_viz.distill.precision import PRECISIONS
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs import manager
from dfkd_viz.runs.config import MAX_SECONDS, MAX_STEPS, validate_config
from dfkd_viz.runs.presets import PRESETS, preset_config
from pages import _ui as ui

ui.page_setup()
st.title("Set up a distillation run")

cards = ui.cached_cards()
presets = ["(none)", *PRESETS]
preset = st.selectbox("Start from a scenario (optional)", presets, key="setup_preset")
base = preset_config(None if preset == "(none)" else preset)

left, right = st.columns([3, 2])
with left:
    datasets = sorted({c["dataset"] for c in cards})
    base_card = next((c for c in cards if c["id"] == base.get("teacher")), None)
    ds_index = (
        datasets.index(base_card["dataset"])
        if base_card
        else (datasets.index("mnist") if "mnist" in datasets else 0)
    )
    dataset = st.selectbox("Dataset", datasets, index=ds_index, key=f"ds_{preset}")
    teachers = [c for c in cards if c["dataset"] == dataset]
    tids = [c["id"] for c in teachers]
    t_index = tids.index(base["teacher"]) if base.get("teacher") in tids else 0
    teacher = st.selectbox(
        "Teacher",
        tids,
        index=t_index,
        key=f"t_{preset}_{dataset}",
        format_func=lambda i: f"{i} ({next(c['kind'] for c in teachers if c['id'] == i)})",
    )
    methods = METHODS.names()
    method = st.selectbox(
        "Method",
        methods,
        index=methods.index(base.get("method", "dfq")),
        key=f"m_{preset}",
        format_func=lambda m: f"{m} — {METHODS.get(m).summary}",
    )
    defenses = DEFENSES.names()
    # a method's own selection (tadfkd → ta-select) is its default defense
    default_defense = (
        base.get("defense")
        if method == base.get("method") and base.get("defense")
        else METHODS.get(method).default_defense or "none"
    )
    defense = st.selectbox(
        "Defense",
        defenses,
        index=defenses.index(default_defense) if default_defense in defenses else 0,
        key=f"d_{preset}_{method}",
        help="tadfkd brings its own selection (ta-select); any method can use it as a defense",
    )
    students = ui.fitting_students(teacher)
    wanted_student = base.get("student", "lenet5")
    student = st.selectbox(
        "Student",
        students,
        index=students.index(wanted_student) if wanted_student in students else 0,
        key=f"s_{preset}_{teacher}",
        help="the architectures that take the teacher's images (lenet5 is the default student; "
        "the CIFAR zoo has CMI's names: wrn16_1, resnet8, vgg8…)",
    )
    student_domain, sd_samples = None, None
    needs_sd = getattr(METHODS.get(method), "needs_student_data", False)
    if needs_sd or base.get("student_domain"):
        # out-of-domain KD: the student's own labelled domain (AuG-KD and its baselines)
        d1, d2 = st.columns(2)
        domains = [d for d in domain_names() if d != dataset]
        options = domains if needs_sd else ["(none)", *domains]
        wanted = base.get("student_domain") or "mnist-m"
        student_domain = d1.selectbox(
            "Student domain",
            options,
            index=options.index(wanted) if wanted in options else 0,
            key=f"sd_{preset}_{method}",
            help="the student's labelled samples come from this domain's train split; it is "
            "scored on its test split (student-domain accuracy)",
        )
        sd_samples = d2.number_input(
            "Labelled student-domain samples",
            min_value=10,
            max_value=100_000,
            value=int(base.get("student_domain_samples", 300)),
            step=50,
            key=f"sdn_{preset}",
        )
        if student_domain == "(none)":
            student_domain, sd_samples = None, None
    b1, b2, b3 = st.columns(3)
    kind = b1.radio(
        "Budget in",
        ["steps", "seconds"],
        horizontal=True,
        index=0 if "seconds" not in base else 1,
        key=f"bk_{preset}",
    )
    if kind == "steps":
        default_steps = int(base.get("steps") or METHODS.get(method).make_params().default_steps)
        budget = b2.number_input(
            "Steps",
            min_value=1,
            max_value=MAX_STEPS,
            value=default_steps,
            step=50,
            key=f"bs_{preset}_{method}",
        )
    else:
        budget = b2.number_input(
            "Seconds",
            min_value=1.0,
            max_value=MAX_SECONDS,
            value=float(base.get("seconds") or 30.0),
            step=10.0,
            key=f"bsec_{preset}",
        )
    seed = b3.number_input(
        "Seed", min_value=0, max_value=2**31 - 1, value=int(base.get("seed", 0)), key="seed"
    )
    with st.expander("Advanced"):
        a1, a2, a3 = st.columns(3)
        batch = a1.number_input(
            "Batch size",
            min_value=2,
            max_value=4096,
            value=int(base.get("batch_size", 128)),
            key=f"batch_{preset}",
        )
        eval_every = a2.number_input(
            "Evaluate every (steps)", min_value=1, max_value=10000, value=10, key="eval_every"
        )
        snap_every = a3.number_input(
            "Snapshot every (steps)", min_value=1, max_value=10000, value=20, key="snap_every"
        )
        a4, a5, a6 = st.columns(3)
        device = a4.selectbox(
            "Device", ["auto", "cpu", "cuda"], key="device", help="auto = the GPU when there is one"
        )
        precision = a4.selectbox(
            "Precision",
            PRECISIONS,
            index=PRECISIONS.index(base.get("precision", "fp32")),
            key=f"precision_{preset}",
            help="forward passes under bf16/fp16 autocast (weights stay fp32); fp16 needs a CUDA "
            "GPU; bf16 falls back to fp32 on a CPU without native bf16; auto = bf16 where the CPU "
            "has it natively, else fp32",
        )
        threads = a5.number_input(
            "CPU threads (0 = all cores)", min_value=0, max_value=256, value=0, key="threads"
        )
        snap_size = a6.number_input(
            "Samples per snapshot", min_value=1, max_value=512, value=64, key="snap_size"
        )
        t_card = next(c for c in teachers if c["id"] == teacher)
        own_ood = base.get("ood_domain") or t_card.get("ood_domain")
        ood_choices = ["(the teacher's)"] + [d for d in domain_names() if d != dataset]
        ood_pick = st.selectbox(
            "OOD domain (OOD accuracy and the real-OOD side of the map)",
            ood_choices,
            key=f"ood_{preset}_{teacher}",
            format_func=lambda d: (
                f"the teacher's ({own_ood or 'none'})" if d == ood_choices[0] else d
            ),
            help="any shift or dataset, including data you imported on the Teachers page",
        )

raw = {
    "teacher": teacher,
    "method": method,
    "defense": defense,
    "student": student,
    "seed": int(seed),
    "batch_size": int(batch),
    "eval_every": int(eval_every),
    "snapshot_every": int(snap_every),
    "snapshot_size": int(snap_size),
    "device": device,
    "precision": precision,
    "threads": int(threads) or None,
    ("steps" if kind == "steps" else "seconds"): budget,
}
if student_domain:
    raw.update(student_domain=student_domain, student_domain_samples=int(sd_samples))
if ood_pick != ood_choices[0]:
    raw["ood_domain"] = ood_pick
if preset != "(none)":
    raw["preset"] = preset
    for key in ("method_params", "defense_params", "ood_domain", "trigger"):
        if (
            key in base
            and key not in raw
            and (key != "method_params" or method == base.get("method"))
            and (key != "defense_params" or defense == base.get("defense"))
        ):
            raw[key] = base[key]

with right:
    card = ui.teacher_card(teacher)
    with st.container(border=True):
        st.markdown(
            f"**Teacher card** · `{teacher}` {ui.kind_badge(card['kind'])}", unsafe_allow_html=True
        )
        st.caption(card.get("description") or "")
        m1, m2, m3 = st.columns(3)
        m1.metric("ID accuracy", ui.pct(card.get("id_acc")))
        m2.metric(
            "OOD accuracy",
            ui.pct(card.get("ood_acc")),
            help=f"on the {card.get('ood_domain') or '—'} domain",
        )
        m3.metric(
            "ASR",
            ui.pct(card.get("asr")),
            help=f"trigger {card.get('trigger')}" if card.get("trigger") else None,
        )
        st.caption(
            f"OOD domain: {card.get('ood_domain') or '—'} · trigger: {card.get('trigger') or '—'}"
        )
        if card.get("trained"):
            audit = ui.audit_summary(teacher)
            if audit is None:
                st.page_link(
                    "pages/audit.py",
                    label="Audit this teacher first (~15 s, from its weights alone)",
                    icon=":material/policy:",
                    query_params={"teacher": teacher},
                )
            else:
                v = audit["verdict"]
                st.markdown(
                    "**Audit** · "
                    + " · ".join(
                        f"{k.upper() if k == 'ntl' else k} {ui.verdict_badge(v[k])}"
                        for k in ("ntl", "backdoor", "collapse")
                    ),
                    unsafe_allow_html=True,
                )
                for s in audit["suggestions"]:
                    st.caption(f":material/shield: {s}")
                risky = [k for k in ("ntl", "backdoor", "collapse") if v[k] != "low"]
                if risky:
                    from dfkd_viz.audit import DEFENSE_FOR

                    suggested = DEFENSE_FOR[risky[0]][0]
                    st.button(
                        f"Use the suggested defense: {suggested}",
                        key=f"use_def_{teacher}",
                        disabled=defense == suggested,
                        on_click=lambda k=f"d_{preset}_{method}", d=suggested: (
                            st.session_state.update({k: d})
                        ),
                    )
                st.page_link(
                    "pages/audit.py",
                    label="The evidence",
                    icon=":material/policy:",
                    query_params={"teacher": teacher},
                )
        if card.get("trained"):
            # the run's embedding map is the teacher's, computed once in the background
            map_domain = student_domain or (None if ood_pick == ood_choices[0] else ood_pick)

            @st.fragment(run_every=2.0 if ui.map_status(teacher, map_domain)[1] else None)
            def map_line() -> None:
                line, _ = ui.map_status(teacher, map_domain)
                st.caption(
                    line or "reference map: not computed yet (the run starts it, in the background)"
                )

            map_line()
        if not card.get("trained"):
            st.warning(
                "This teacher is not trained yet: the run trains it first (≈10–20 s), or train it on the Teachers page."
            )
        if not card.get("available"):
            st.error(f"The dataset {card['dataset']} is not on this machine.")

error = None
try:
    cfg = validate_config(raw)
except DfkdVizError as exc:
    error = str(exc)
    cfg = None
if error:
    st.error(f"Cannot launch: {error}", icon=":material/error:")
else:
    st.success(
        f"Ready: {cfg.teacher} · {cfg.method} · defense {cfg.defense} · {cfg.budget_text()} · seed {cfg.seed}"
        + (
            f" · student domain {cfg.student_domain} ({cfg.student_domain_samples} labelled)"
            if cfg.student_domain
            else ""
        ),
        icon=":material/check_circle:",
    )
if st.button(
    "Launch",
    type="primary",
    disabled=error is not None,
    icon=":material/rocket_launch:",
    key="launch",
):
    try:
        run_id = manager.launch(cfg)
    except DfkdVizError as exc:
        st.error(str(exc))
    else:
        ui.cached_runs.clear()
        ui.go("out-of-domain" if cfg.student_domain else "live", run_id)
