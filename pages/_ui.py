"""Shared Streamlit helpers for the pages (the only Streamlit code besides app.py and pages/)."""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dfkd_viz.errors import DfkdVizError
from dfkd_viz.paths import home
from dfkd_viz.runs import manager
from dfkd_viz.runs.store import ACTIVE_STATES, RunReader

PAGE_FILES = {
    "home": "pages/home.py",
    "setup": "pages/setup.py",
    "live": "pages/live.py",
    "runs": "pages/runs.py",
    "compare": "pages/compare.py",
    "decisions": "pages/decisions.py",
    "embeddings": "pages/embeddings.py",
    "sweeps": "pages/sweeps.py",
    "out-of-domain": "pages/out-of-domain.py",
    "teachers": "pages/teachers.py",
    "audit": "pages/audit.py",
}

STATE_COLORS = {
    "queued": "#64748b",
    "running": "#2563eb",
    "finished": "#059669",
    "stopped": "#d97706",
    "failed": "#dc2626",
    "corrupt": "#7f1d1d",
}

_CSS = """
<style>
h1 {font-size: 2.2rem !important}
div[data-testid="stMetricValue"] {font-size: 2rem}
.dv-state {display:inline-block;padding:2px 12px;border-radius:999px;color:#fff;font-weight:600;font-size:0.95rem}
.dv-muted {color:#475569}
.dv-kind {display:inline-block;padding:0 8px;border-radius:6px;font-size:0.85rem;font-weight:600;color:#fff}
</style>
"""

KIND_COLORS = {
    "clean": "#059669",
    "ntl": "#d97706",
    "cuti": "#b45309",
    "backdoor": "#dc2626",
    "user": "#6366f1",
}


def page_setup() -> None:
    """Called first by every page: make sure the app's navigation is in charge, then styles, and
    a warm standby worker kept ready for the next launch (:func:`_keep_standby`).

    On a freshly started server, Streamlit (1.4x–1.67) serves the *first* request through its
    legacy ``pages/`` folder mode, which runs the page file directly and never runs ``app.py``
    (no navigation, no wide layout) — a deep link such as ``/live?run=…`` as the first request
    shows a bare page (seen in the browser tests). Streamlit leaves that mode for good once any script
    calls ``st.navigation``; when a page finds that ``app.py`` has not run in this session, it
    switches the mode off and reruns, so ``app.py`` routes the same URL properly.
    """
    if not st.session_state.get("_dv_app"):
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
        st.rerun()
    st.html(_CSS + _plotly_preload(), unsafe_allow_javascript=True)
    _warm_server()
    _keep_standby(str(home()))


WARM_DELAY_S = 3.0
"""Seconds the server's warm-up thread and the standby it starts wait first, so that they do not
slow the first page a fresh server renders (cold start 4.2–6.7 s without the wait, 3.9–4.2 s
with it, on the 2-core VM)."""


@functools.lru_cache(maxsize=1)
def _plotly_preload() -> str:
    """A script that has the browser import Streamlit's plotly chart code (its ``PlotlyChart``
    chunk, 4.6 MB of JavaScript) once any page has been shown for 2 s and the browser is idle,
    so that the first chart a page draws — the Live page's first curve after Start demo — does
    not wait for it to load and compile (1–3 s measured on the 2-core VM; the wait keeps it off
    the first page's own render). The chunk is imported by its URL next to Streamlit's own
    entry script, the URL Streamlit's lazy import uses, so the browser loads it once. ``""``
    when this Streamlit build has no such chunk (then charts load as before)."""
    js = Path(st.__file__).parent / "static" / "static" / "js"
    chunk = next(iter(sorted(js.glob("PlotlyChart.*.js"))), None)
    if chunk is None:
        return ""
    url = f"new URL({json.dumps(chunk.name)}, s.src).href"
    return (
        "<script>(() => {const s = document.querySelector('script[src*=\"/static/js/index.\"]');"
        f"const go = () => import({url}).catch(() => {{}});"
        "if (s) setTimeout(() => (window.requestIdleCallback ? requestIdleCallback(go) : go()), "
        "2000);})();</script>"
    )


@st.cache_resource(show_spinner=False)
def _warm_server() -> threading.Thread:
    """Once per server process, in a background thread that starts :data:`WARM_DELAY_S`
    seconds late: what the first launch and the first render of the Live page would otherwise
    pay for while the user waits for the first curve (measured 1–2.5 s on the 2-core VM): the
    teacher cards, whose ``available`` flag loads each zoo dataset's test split (MNIST-M's
    photos import scikit-learn), the first validation of a run configuration (the student-fits
    check imports sympy through torch.fx), and plotly's figure classes; then it freezes what
    is in memory out of the garbage collector's full collections (see below). Failures are
    ignored (the page then pays as before)."""

    def work() -> None:
        time.sleep(WARM_DELAY_S)
        with contextlib.suppress(Exception):
            from dfkd_viz.teachers import list_cards

            list_cards()
        with contextlib.suppress(Exception):  # the first check imports sympy (~0.6 s)
            from dfkd_viz.runs.config import validate_config
            from dfkd_viz.runs.presets import preset_config

            validate_config(preset_config("clean-dfq"))
        with contextlib.suppress(Exception):
            import plotly.graph_objects as go

            go.Figure(go.Scatter(x=[0], y=[0])).to_plotly_json()
            go.Figure(go.Heatmap(z=[[0]])).to_plotly_json()
        # With torch, scikit-learn and plotly imported the server holds ~350,000 objects, and
        # every full garbage collection walks them all: 275 ms, inside whichever render
        # happened to trigger it (the Live fragment's slowest renders). Frozen, they are left
        # out of every later collection (what is allocated afterwards is still collected).
        gc.collect()
        gc.freeze()

    # not a daemon: a process that exits while the thread is inside torch's or sympy's imports
    # would abort ("terminate called without an active exception"); the interpreter now waits
    # for it (a few seconds at most, once per process)
    thread = threading.Thread(target=work, name="dfkd-viz-warm", daemon=False)
    thread.start()
    return thread


@st.cache_data(ttl=10.0, show_spinner=False)
def _keep_standby(home: str) -> int | None:
    """Keep a warm standby worker ready for this home, so that the next launch's worker has
    already imported torch and warmed its kernels (:func:`dfkd_viz.runs.standby.ensure`: a
    directory listing when one is ready, ~3 ms; at most every 10 s per home; a new standby
    starts :data:`WARM_DELAY_S` seconds late). Never raises."""
    from dfkd_viz.runs import standby

    try:
        return standby.ensure(delay_s=WARM_DELAY_S)
    except Exception:  # a missing standby only makes the next launch slower
        return None


def state_badge(state: str) -> str:
    return f'<span class="dv-state" style="background:{STATE_COLORS.get(state, "#334155")}">{state}</span>'


def kind_badge(kind: str) -> str:
    return (
        f'<span class="dv-kind" style="background:{KIND_COLORS.get(kind, "#334155")}">{kind}</span>'
    )


def pct(v: Any) -> str:
    return "—" if v is None else f"{v:.1%}"


def go(page: str, run_id: str | None = None) -> None:
    """Switch to ``page`` (a key of PAGE_FILES), carrying the run in the URL."""
    st.switch_page(PAGE_FILES[page], query_params={"run": run_id} if run_id else None)


def compare_url(run_ids: Sequence[str]) -> str:
    """The Compare page's address for these runs, ``/compare?runs=A,B`` (2 to 4 runs shown side
    by side; relative to the app's root, e.g. for a Markdown link)."""
    from dfkd_viz.runs.presets import compare_path

    return compare_path(list(run_ids))


def go_compare(run_ids: Sequence[str]) -> None:
    """Switch to the Compare page showing ``run_ids`` side by side (2 to 4; the page says what it
    leaves out)."""
    st.switch_page(PAGE_FILES["compare"], query_params={"runs": ",".join(run_ids)})


def compare_link(run_ids: Sequence[str], label: str = "Compare side by side", container=None):
    """A link to the Compare page for ``run_ids`` (in ``container``, default the page)."""
    return (container or st).page_link(
        PAGE_FILES["compare"],
        label=label,
        icon=":material/compare:",
        query_params={"runs": ",".join(run_ids)},
    )


def run_list_param(value: str | None) -> list[str]:
    """Run ids from a comma-separated URL value (``?runs=A,B``): blanks dropped, each id once, in
    the order given."""
    out: list[str] = []
    for part in (value or "").split(","):
        part = part.strip()
        if part and part not in out:
            out.append(part)
    return out


@st.cache_data(ttl=2.0, show_spinner=False)
def _runs(home: str) -> list[dict[str, Any]]:
    return manager.list_runs()


@st.cache_data(ttl=5.0, show_spinner=False)
def _cards(home: str) -> list[dict[str, Any]]:
    from dfkd_viz.teachers import list_cards

    return list_cards()


def cached_runs() -> list[dict[str, Any]]:
    """Every run (cached 2 s per DFKD_VIZ_HOME)."""
    return _runs(str(home()))


def cached_cards() -> list[dict[str, Any]]:
    """Every teacher card (cached 5 s per DFKD_VIZ_HOME)."""
    return _cards(str(home()))


cached_runs.clear = _runs.clear  # type: ignore[attr-defined]
cached_cards.clear = _cards.clear  # type: ignore[attr-defined]


@st.cache_data(ttl=5.0, show_spinner=False)
def _audit(home: str, teacher_id: str) -> dict[str, Any] | None:
    from dfkd_viz.audit import cached_report

    report = cached_report(teacher_id)
    return None if report is None else report.summary()


def audit_summary(teacher_id: str) -> dict[str, Any] | None:
    """The stored audit of ``teacher_id``'s current weights (``AuditReport.summary()``), or None
    (cached 5 s per DFKD_VIZ_HOME)."""
    return _audit(str(home()), teacher_id)


def verdict_badge(verdict: str) -> str:
    from dfkd_viz.viz.audit import VERDICT_COLORS

    return f'<span class="dv-state" style="background:{VERDICT_COLORS.get(verdict, "#334155")}">{verdict}</span>'


def map_status(teacher_id: str, domain: str | None = None):
    """``(line, active)`` for the teacher's reference map (its own OOD domain unless ``domain``
    is given): ``"reference map: computing… 40 %"``, ``… ready``, ``… failed (why)``; line None
    when no map job ever ran. A JSON read and a stat (the weights digest is cached)."""
    from dfkd_viz.teachers.maps import map_progress, progress_text

    try:
        rec = map_progress(teacher_id, domain)
    except Exception:  # a status line never breaks a page
        return None, False
    return progress_text(rec), bool(rec is not None and rec.active)


def teacher_card(teacher_id: str) -> dict[str, Any] | None:
    for c in cached_cards():
        if c["id"] == teacher_id:
            return c
    return None


@st.cache_data(show_spinner=False)
def _fitting(in_shape: tuple[int, int, int], num_classes: int) -> list[str]:
    from dfkd_viz.models import fitting_models

    return fitting_models(in_shape, num_classes)


def fitting_students(teacher_id: str) -> list[str]:
    """The registered architectures that take ``teacher_id``'s images (every architecture when
    its input shape is not known here), cached per shape."""
    from dfkd_viz.models import list_models
    from dfkd_viz.runs.config import teacher_input

    c = teacher_card(teacher_id)
    known = teacher_input(c) if c else None
    return _fitting(*known) if known else list_models()


def pick_run(
    label: str = "Run", key: str = "run_pick", where: Callable[[dict], bool] | None = None
) -> str | None:
    """The run to show: ``?run=`` in the URL, else a choice among the runs (newest first; only
    those for which ``where(run_info)`` holds, when given). Keeps the URL in sync so the view can
    be shared."""
    runs = [
        r for r in cached_runs() if r.get("status") != "corrupt" and (where is None or where(r))
    ]
    ids = [r["run_id"] for r in runs]
    wanted = st.query_params.get("run")
    if wanted and wanted not in ids:
        try:
            manager.run_dir(wanted)
            ids.insert(0, wanted)
        except DfkdVizError:
            st.warning(f"There is no run {wanted!r} in the store; pick another one.")
            wanted = None
    if not ids:
        return None
    # no state in the label: the selector is drawn once, the live badge below keeps it current
    labels = {r["run_id"]: f"{r['run_id']} · {r['config'].get('teacher', '?')}" for r in runs}
    index = ids.index(wanted) if wanted in ids else 0
    chosen = st.selectbox(
        label, ids, index=index, format_func=lambda i: labels.get(i, i), key=f"{key}_{wanted}"
    )
    if st.query_params.get("run") != chosen:
        st.query_params["run"] = chosen
    return chosen


def run_header(info: dict[str, Any]) -> None:
    """Title line of a run: id, state badge, configuration summary."""
    cfg = info["config"]
    budget = f"{cfg['steps']} steps" if cfg.get("steps") else f"{cfg.get('seconds')} s"
    st.markdown(
        f"### {info['run_id']} &nbsp; {state_badge(info['status'])}", unsafe_allow_html=True
    )
    st.markdown(
        f"<span class='dv-muted'>teacher <b>{cfg['teacher']}</b> · method <b>{cfg['method']}</b> · "
        f"defense <b>{cfg.get('defense', 'none')}</b> · budget {budget} · seed {cfg.get('seed')} · "
        f"device {info.get('device') or cfg.get('device')}</span>",
        unsafe_allow_html=True,
    )


def eta_text(info: dict[str, Any]) -> str:
    prog = info.get("progress") or 0.0
    wall = info.get("wall_s") or 0.0
    if info["status"] not in ACTIVE_STATES:
        return f"{wall:.0f} s of distillation"
    if prog <= 0.01:
        return (
            "starting…"
            if not info.get("phase", "").startswith("teacher")
            else f"training the teacher ({info['phase']})"
        )
    remaining = wall * (1 - prog) / prog
    return f"{wall:.0f} s elapsed · about {remaining:.0f} s left"


def empty_state(message: str, *, setup: bool = True, demo: str = "clean-dfq") -> None:
    st.info(message, icon=":material/info:")
    cols = st.columns(3)
    if cols[0].button(
        "Start the demo", type="primary", icon=":material/play_arrow:", key="empty_demo"
    ):
        start_demo(demo)
    if setup and cols[1].button("Set up a run", icon=":material/tune:", key="empty_setup"):
        go("setup")


def start_demo(preset: str = "clean-dfq") -> None:
    """Launch the preset and open its page (Live; Out-of-domain for out-of-domain presets)."""
    from dfkd_viz.runs.presets import get_preset, preset_config

    try:
        run_id = manager.launch(preset_config(preset))
    except DfkdVizError as exc:
        st.error(str(exc))
        return
    cached_runs.clear()
    time.sleep(0.05)
    go("out-of-domain" if "out-of-domain" in get_preset(preset).tags else "live", run_id)


def start_pair(pair: str) -> None:
    """Launch both runs of the scenario pair ``pair`` (``dfkd_viz.runs.presets.PAIRS``; each run
    with half the cores) through the run manager and open the Compare page on them,
    ``/compare?runs=A,B``. Both configs are validated before either run starts; a
    :class:`DfkdVizError` (unknown pair, untrainable teacher, bad config) is shown as an error
    and nothing is started."""
    from dfkd_viz.runs.config import validate_config
    from dfkd_viz.runs.presets import pair_configs

    try:
        configs = pair_configs(pair)
        for raw in configs:
            validate_config(raw)
        run_ids = [manager.launch(raw) for raw in configs]
    except DfkdVizError as exc:
        st.error(str(exc))
        return
    cached_runs.clear()
    time.sleep(0.05)
    go_compare(run_ids)


@contextlib.contextmanager
def profiled(name: str) -> Iterator[None]:
    """Time a block; when ``DFKD_VIZ_PROFILE`` names a file, append
    ``name<TAB>wall ms<TAB>CPU ms of this thread<TAB>end (Unix seconds)<TAB>ms waiting for a
    core`` to it (used by ``benchmarks/app_bench.py`` to measure live-fragment render times: a
    render whose wall time far exceeds its CPU time waited for a core, or else for the GIL or
    a lock)."""
    path = os.environ.get("DFKD_VIZ_PROFILE")
    if not path:
        yield
        return
    t0, c0, q0 = time.perf_counter(), time.thread_time(), _runqueue_s()
    try:
        yield
    finally:
        wall, cpu = (time.perf_counter() - t0) * 1000, (time.thread_time() - c0) * 1000
        queued = (_runqueue_s() - q0) * 1000
        with open(path, "a") as fh:
            fh.write(f"{name}\t{wall:.2f}\t{cpu:.2f}\t{time.time():.3f}\t{queued:.2f}\n")


def _runqueue_s() -> float:
    """Seconds this thread has spent ready to run but waiting for a core (Linux's schedstat;
    0 elsewhere): what separates waiting for the CPU from waiting for the GIL or a lock."""
    try:
        with open("/proc/thread-self/schedstat") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def load_run(
    empty_message: str,
    where: Callable[[dict], bool] | None = None,
    demo: str = "clean-dfq",
) -> tuple[str, dict[str, Any]]:
    """The run picked for this page (among those ``where`` accepts) and its info; shows the empty
    state (its demo button starts the preset ``demo``) or a warning for an unreadable run, and
    stops the page when there is nothing to show."""
    run_id = pick_run(where=where)
    if run_id is None:
        empty_state(empty_message, demo=demo)
        st.stop()
    try:
        return run_id, manager.run_info(run_id)
    except DfkdVizError as exc:
        st.warning(f"This run cannot be shown: {exc}")
        st.stop()


def export_menu(run_id: str, container=None) -> None:
    """An "Export" popover with downloads of a run: the self-contained HTML report, the metrics as
    CSV / Parquet, the student as safetensors (model card in the metadata). Files are built when
    clicked (deferred download data), so the page pays nothing for them."""
    from dfkd_viz.runs import export

    d = manager.run_dir(run_id)
    with RunReader(d) as r:
        has_ckpt = bool(r.checkpoints())
    files = [
        ("HTML report", lambda: export.run_report_html(d).encode(), ".html", "text/html", "html"),
        (
            "Metrics (CSV)",
            lambda: export.metrics_bytes(d, "csv"),
            "-metrics.csv",
            "text/csv",
            "csv",
        ),
        (
            "Metrics (Parquet)",
            lambda: export.metrics_bytes(d, "parquet"),
            "-metrics.parquet",
            "application/octet-stream",
            "parquet",
        ),
        (
            "Student (safetensors)",
            lambda: export.student_bytes(d)[0],
            "-student.safetensors",
            "application/octet-stream",
            "student",
        ),
    ]
    helps = {
        "html": "one file that opens offline: config, curves, samples, decisions, maps",
        "student": "the student at the last checkpoint; its model card is in the file's metadata",
    }
    with (container or st).popover("Export", icon=":material/download:"):
        for label, data, suffix, mime, key in files:
            st.download_button(
                label,
                data=data,
                file_name=f"{run_id}{suffix}",
                mime=mime,
                on_click="ignore",
                key=f"exp_{key}",
                disabled=key == "student" and not has_ckpt,
                help=helps.get(key),
            )


def csv_download(df, file_name: str, key: str, label: str = "Data (CSV)", container=None) -> None:
    """A small download button with a chart's data as CSV (image bytes columns dropped); the
    CSV is built when clicked, from ``df`` or what ``df()`` returns then. Charts themselves
    download as PNG from plotly's toolbar."""

    def csv() -> bytes:
        frame = df() if callable(df) else df
        return frame[[c for c in frame.columns if c != "image"]].to_csv(index=False).encode()

    (container or st).download_button(
        label,
        data=csv,
        file_name=file_name,
        mime="text/csv",
        on_click="ignore",
        key=key,
        icon=":material/table:",
        type="tertiary",
    )


PER_CLASS_METRICS = ("id_acc", "ood_acc", "asr")
"""The per-class fractions a run records at each evaluation (see ``dfkd_viz.runs.store``)."""

PER_CLASS_NAMES = {"id_acc": "ID accuracy", "ood_acc": "OOD accuracy", "asr": "ASR (source class)"}
"""How the per-class quantities are labelled in the pages' pickers."""


def run_metrics(
    run_path: str, names: Sequence[str] | None = None, exclude: Sequence[str] = ()
) -> pd.DataFrame:
    """A run's metrics as a wide frame (``step``, ``wall_s``, one column per name; ``names``
    only, or all but ``exclude``), kept in the session per run and read incrementally.

    A poll reads only the rows from the last step it has on: a step's rows may be committed in
    two parts (its losses, then its evaluation), so that step is read again. Metrics written
    long after their step (``ood_likeness`` of snapshots placed once the map arrives) are not
    caught this way: leave them out with ``exclude`` or read them in full. When the worker
    started again or the last step's rows are gone (a resume cuts the history back to its
    checkpoint and rewrites the steps after it), everything is read again.
    300 steps of a DFQ run (~5,000 rows) take ~11 ms to read and pivot in full; a poll ~1 ms."""
    key = f"_metrics::{run_path}::{names}::{exclude}"
    have = st.session_state.get(key)
    with RunReader(run_path) as r:
        started = r.status().get("started")
        if have is None or have["started"] != started:
            have = {
                "started": started,
                "last": -1,
                "wide": pd.DataFrame(columns=["step", "wall_s"]),
            }
        new = r.metrics(names, since_step=have["last"] - 1)
        if have["last"] >= 0 and not (new["step"] == have["last"]).any():
            # the rows of the last step read are gone: the worker cut the history back
            have = {"started": started, "last": -1, "wide": have["wide"].iloc[:0]}
            new = r.metrics(names)
    if exclude:
        new = new[~new["name"].isin(list(exclude))]
    if len(new):
        part = new.pivot(index="step", columns="name", values="value")
        part["wall_s"] = new.groupby("step")["wall_s"].max()
        part = part.reset_index()
        old = have["wide"]
        old = old[old["step"] < part["step"].iloc[0]]
        wide = pd.concat([old, part], ignore_index=True) if len(old) else part
        have = {"started": started, "last": int(part["step"].iloc[-1]), "wide": wide}
    st.session_state[key] = have
    return have["wide"]


def _no_per_class() -> dict[str, Any]:
    return {"last": 0, "teacher": None, **{m: ([], np.zeros((0, 0))) for m in PER_CLASS_METRICS}}


def per_class_histories(run_path: str, last_eval: int) -> dict[str, Any]:
    """A run's per-class histories up to its evaluation at ``last_eval``: per quantity of
    :data:`PER_CLASS_METRICS` ``(steps, (S, K) fractions)`` (``([], (0, 0))`` when not recorded),
    the teacher's per-class ID accuracy under ``"teacher"`` (``(K,)`` or None) and ``"last"``.

    Kept in the session per run and read incrementally, so a view that polls reads only the
    evaluations since its last poll (one evaluation ~0.6 ms; 300 at once ~20 ms). When the steps
    went back or the last kept evaluation changed (a resume from an older checkpoint rewrites
    them), everything is read again."""
    key = f"_pc_hist::{run_path}"
    have = st.session_state.get(key) or _no_per_class()
    if last_eval == have["last"]:
        return have
    with RunReader(run_path) as r:
        kept_steps, kept = have["id_acc"]
        if have["last"] > last_eval or (
            kept_steps
            and not np.array_equal(r.per_class("id_acc", kept_steps[-1]), kept[-1], equal_nan=True)
        ):
            have = _no_per_class()
        for m in PER_CLASS_METRICS:
            steps, values = r.per_class_history(m, after=have["last"], upto=last_eval)
            if steps:
                old_steps, old = have[m]
                have[m] = (old_steps + steps, np.vstack([old, values]) if old_steps else values)
        if have["teacher"] is None:
            have["teacher"] = r.per_class("teacher_id_acc")
    have["last"] = last_eval
    st.session_state[key] = have
    return have
