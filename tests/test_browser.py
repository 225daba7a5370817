"""The real app in a real browser: ``streamlit run app.py`` driven by Playwright with Debian's
Chromium. Skipped (with the reason) when Chromium or Playwright is missing; ``make test`` installs
Chromium when run as root. Screenshots land in ``test-artifacts/screenshots/``."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not Path(CHROMIUM).exists():
    pytest.skip(
        "Chromium is not installed: run `make test` as root (it installs Debian's chromium) "
        "or `apt-get install chromium`",
        allow_module_level=True,
    )
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
PlaywrightTimeout = pytest.importorskip("playwright.sync_api").TimeoutError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(trained_home):
    """A freshly started Streamlit server on a free port (its first request is the test's)."""
    port = _free_port()
    # as the app runs for a user: its pages keep a warm standby worker ready (stopped by `home`)
    env = dict(os.environ, DFKD_VIZ_HOME=str(trained_home), DFKD_VIZ_STANDBY="1")
    cmd = [
        str(Path(sys.executable).with_name("streamlit")),
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--browser.gatherUsageStats",
        "false",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if urllib.request.urlopen(base + "/_stcore/health", timeout=1).status == 200:
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("streamlit did not start")
    yield base
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    # stop any run the test started (workers are detached on purpose)
    from dfkd_viz.runs import manager

    for r in manager.list_runs():
        if r["status"] in ("queued", "running"):
            manager.stop(r["run_id"], wait_s=10)


@pytest.fixture
def browser(request):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        # on failure, keep what every open page showed
        for ci, ctx in enumerate(b.contexts):
            for pi, pg in enumerate(ctx.pages):
                with contextlib.suppress(Exception):
                    pg.screenshot(
                        path=str(SHOTS / f"last-{request.node.name}-{ci}-{pi}.png"), full_page=True
                    )
        b.close()


def _no_errors(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")[:2000]
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0, page.inner_text(
        "body"
    )[:2000]


def _step(page) -> int:
    """The step the page shows, or -1 (also while a busy renderer does not answer within 10 s: the
    callers poll, so a slow moment under load is retried rather than failing the test)."""
    try:
        text = page.inner_text('[data-testid="stMain"]', timeout=10000)
    except PlaywrightTimeout:
        return -1
    m = re.search(r"step (\d+)", text)
    return int(m.group(1)) if m else -1


def test_deep_link_first_request_and_the_demo_flow(server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 2200})
    # 1. a deep link is the first request this fresh server gets: the app's navigation must be in charge
    page.goto(server + "/live?run=20990101-000000-dfq-none")
    page.wait_for_selector("text=Live run", timeout=60000)
    page.wait_for_selector('[data-testid="stSidebarNav"]', timeout=30000)
    nav = page.inner_text('[data-testid="stSidebarNav"]')
    for title in ("Home", "Setup", "Live", "Runs", "Decisions", "Teachers"):
        assert title in nav
    assert "app" not in nav.split()
    assert "run=20990101-000000-dfq-none" in page.url
    page.screenshot(path=str(SHOTS / "deep-link-first-request.png"), full_page=True)

    # 2. Home → Start demo → the live view of the new run, curves advancing
    page.goto(server + "/")
    page.get_by_role("button", name="Start demo").click()
    page.wait_for_url(re.compile(r".*/live\?run=.*"), timeout=60000)
    run_id = page.url.split("run=")[1]
    page.wait_for_selector(".js-plotly-plot", timeout=90000)
    first = _step(page)
    deadline = time.time() + 60
    while time.time() < deadline and _step(page) <= first:
        time.sleep(1)
    second = _step(page)
    assert second > first >= 0, (first, second)
    page.wait_for_selector("img[alt='sample 0']", timeout=60000)
    _no_errors(page)
    page.screenshot(path=str(SHOTS / "live.png"), full_page=True)

    # 3. the run is listed on Runs, and opens from there
    page.goto(server + "/runs")
    page.wait_for_selector('[data-testid="stDataFrame"]', timeout=30000)
    time.sleep(1.5)
    grid = page.locator('[data-testid="stDataFrame"]')
    assert run_id in (grid.inner_text() + (grid.get_attribute("aria-label") or "") + page.content())
    _no_errors(page)
    page.screenshot(path=str(SHOTS / "runs.png"), full_page=True)
    page.goto(server + f"/live?run={run_id}")
    page.wait_for_selector(".js-plotly-plot", timeout=60000)
    assert run_id in page.inner_text('[data-testid="stMain"]')
    _no_errors(page)

    # 3b. Export → HTML report downloads, and the file opens offline without a console error
    page.get_by_role("button", name="Export").click()
    with page.expect_download(timeout=60000) as dl:
        page.get_by_role("button", name="HTML report").click()
    report = SHOTS.parent / f"{run_id}.html"
    dl.value.save_as(str(report))
    rep = browser.new_page(viewport={"width": 1300, "height": 1600})
    errors: list[str] = []
    rep.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    rep.on("pageerror", lambda e: errors.append(str(e)))
    rep.route(
        "**/*",
        lambda route: route.abort() if route.request.url.startswith("http") else route.continue_(),
    )
    rep.goto(report.as_uri())
    rep.wait_for_selector(".js-plotly-plot", timeout=30000)
    assert rep.locator(".js-plotly-plot").count() >= 4 and not errors, errors
    assert run_id in rep.inner_text("h1")
    rep.screenshot(path=str(SHOTS / "report.png"), full_page=True)
    rep.close()
    page.keyboard.press("Escape")

    # 4. every other page renders without an error
    for path, marker in (
        ("/setup", "Set up a distillation run"),
        ("/teachers", "Teacher zoo"),
        ("/decisions", "Defense decisions"),
        ("/embeddings", "Embeddings: where synthetic samples fall"),
        ("/saliency", "Trigger saliency"),
        ("/sweeps", "Sweeps"),
        ("/out-of-domain", "Out-of-domain distillation"),
    ):
        page.goto(server + path + f"?run={run_id}")
        page.wait_for_selector(f"text={marker}", timeout=60000)
        time.sleep(1.5)
        _no_errors(page)
        if path == "/embeddings":
            # the map is the teacher's, computed in a background job the demo run started (this
            # home's teacher had none): its progress, or the map once it is ready
            main = page.inner_text('[data-testid="stMain"]')
            assert "reference map" in main or page.locator(".js-plotly-plot").count(), main[:800]
        page.screenshot(path=str(SHOTS / f"{path.strip('/')}.png"), full_page=True)


def test_two_runs_and_three_sessions_at_once(server, browser, trained_home):
    """Concurrency: two runs going (one torch thread each) while three browser sessions (separate
    contexts) watch them — no page errors, every page keeps updating, no step, evaluation,
    snapshot or event is lost, and closing a session does not disturb a run."""
    from dfkd_viz.runs import manager

    # long enough that both runs still go when the three pages have drawn their first curve (a
    # quiet CI machine runs ~10 steps/s per run; the pages may take 20 s to load under load)
    steps, eval_every, snap_every = 400, 10, 40
    common = {
        "teacher": "mnist-clean",
        "method": "dfq",
        "steps": steps,
        "threads": 1,
        "batch_size": 64,
        "eval_every": eval_every,
        "snapshot_every": snap_every,
        "checkpoint_every": 100,
        "embedding": False,
    }
    runs = [manager.launch({**common, "seed": s}) for s in (0, 1)]
    sessions = [browser.new_context(viewport={"width": 1280, "height": 1400}) for _ in range(3)]
    watched = [runs[0], runs[1], runs[0]]  # two sessions on the same run
    pages = [ctx.new_page() for ctx in sessions]
    for pg, rid in zip(pages, watched):
        pg.goto(server + f"/live?run={rid}")
    for pg in pages:
        pg.wait_for_selector(".js-plotly-plot", timeout=120000)
    first = [_step(pg) for pg in pages]
    deadline = time.time() + 90
    while time.time() < deadline and not all(_step(p) > f for p, f in zip(pages, first)):
        time.sleep(1)
    assert all(_step(p) > f >= 0 for p, f in zip(pages, first)), (first, [_step(p) for p in pages])
    for pg in pages:
        _no_errors(pg)
    # the third session browses other pages meanwhile, then leaves
    for path in ("/runs", "/decisions", "/teachers"):
        pages[2].goto(server + path + f"?run={runs[0]}")
        pages[2].wait_for_selector('[data-testid="stMain"]', timeout=60000)
        time.sleep(1.0)
        _no_errors(pages[2])
    sessions[2].close()
    for rid in runs:
        assert manager.wait(rid, timeout_s=300)["state"] == "finished"
    for pg, rid in zip(pages[:2], runs):
        deadline = time.time() + 90
        while time.time() < deadline and _step(pg) != steps:
            time.sleep(1)
        assert _step(pg) == steps, pg.inner_text('[data-testid="stMain"]')[:500]
        _no_errors(pg)
        pg.screenshot(path=str(SHOTS / f"concurrent-{rid[-4:]}.png"), full_page=True)
    from dfkd_viz.runs.store import RunReader

    for rid in runs:
        with RunReader(manager.run_dir(rid)) as r:
            m = r.metrics(["g_total", "id_acc"])
            assert sorted(m[m.name == "g_total"].step) == list(range(1, steps + 1))
            evals = sorted(m[m.name == "id_acc"].step)
            assert set(range(eval_every, steps + 1, eval_every)) <= set(evals), evals
            assert set(range(snap_every, steps + 1, snap_every)) <= set(r.snapshot_steps())
            events = list(r.events()["message"])
            assert events[-1].startswith(f"finished at step {steps}")
            assert not (r.events()["level"] == "error").any()
    for ctx in sessions[:2]:
        ctx.close()


def test_teachers_page_imports_uploads_and_rejects_hostile_files(server, browser, tmp_path):
    """The upload forms: a copy of a zoo teacher is imported (kind user, its accuracy measured), a
    hostile pickle is rejected with one message and never runs, an .npz becomes a dataset."""
    import pickle

    import numpy as np
    from safetensors.torch import save_file

    from dfkd_viz.data import load_dataset
    from dfkd_viz.teachers import list_cards, load_teacher

    good = tmp_path / "my-copy.safetensors"
    sd = load_teacher("mnist-clean")[0].state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(good))
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Payload()))
    digits = load_dataset("digits", "train")
    npz = tmp_path / "mine.npz"
    np.savez(npz, x=(digits.x[:120, 0].numpy() * 255).astype(np.uint8), y=digits.y[:120].numpy())

    page = browser.new_page(viewport={"width": 1300, "height": 2000})
    page.goto(server + "/teachers")
    page.wait_for_selector("text=Teacher zoo", timeout=60000)
    page.get_by_text("Import your own teacher").click()
    form = page.locator('[data-testid="stForm"]').first
    form.locator('input[type="file"]').set_input_files(str(evil))
    time.sleep(1.0)
    form.get_by_role("button", name="Validate and import").click()
    page.wait_for_selector("text=Rejected:", timeout=60000)
    assert "pickle" in page.inner_text('[data-testid="stAlertContentError"]')
    assert not marker.exists()
    form.locator('input[type="file"]').set_input_files(str(good))
    time.sleep(1.0)
    form.get_by_role("button", name="Validate and import").click()
    page.get_by_text("Imported my-copy").wait_for(timeout=60000)
    page.wait_for_selector("text=Imported from my-copy.safetensors", timeout=30000)  # its card
    assert page.locator('[data-testid="stException"]').count() == 0
    page.screenshot(path=str(SHOTS / "teachers-import.png"), full_page=True)
    c = next(c for c in list_cards() if c["id"] == "my-copy")
    assert c["kind"] == "user" and c["id_acc"] > 0.95

    page.get_by_text("Import your own data").click()
    dform = page.locator('[data-testid="stForm"]').nth(1)
    dform.locator('input[type="file"]').set_input_files(str(npz))
    dform.get_by_label("Dataset name").fill("my-digits")
    time.sleep(1.0)
    dform.get_by_role("button", name="Validate and import").click()
    page.get_by_text("Imported my-digits").wait_for(timeout=60000)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert len(load_dataset("my-digits", "test")) == 24


def _compare_state(page) -> tuple[list[int], list[int]]:
    """On the Compare page: each run's recorded step (the ``step`` row, ``N of TOTAL``) and the
    number of points of each run's line on the ID-accuracy curves ([] while not readable)."""
    try:
        text = page.inner_text('[data-testid="stMain"]', timeout=10000)
        points = page.evaluate(
            "() => { const p = document.querySelector('.js-plotly-plot');"
            " return p && p.data ? p.data.map(t => t.x.length) : []; }"
        )
    except PlaywrightTimeout:
        return [], []
    return [int(s) for s in re.findall(r"(\d+) of \d+", text)], list(points or [])


def test_compare_page_shows_two_runs_side_by_side_while_they_run(server, browser, trained_home):
    """``/compare?runs=A,B`` with both runs going: the configuration difference first, one column
    per run (each with its own synthetic samples), and the page follows them: each run's
    recorded step and the points of its ID-accuracy curve grow without a reload."""
    from dfkd_viz.runs import manager

    common = {
        "teacher": "mnist-clean",
        "method": "dfq",
        "steps": 600,
        "threads": 1,
        "batch_size": 64,
        "eval_every": 10,
        "snapshot_every": 20,
        "snapshot_size": 16,
        "checkpoint_every": 200,
        "embedding": False,
    }
    runs = [manager.launch({**common, "defense": d}) for d in ("none", "ta-select")]
    page = browser.new_page(viewport={"width": 1440, "height": 2600})
    page.goto(server + f"/compare?runs={','.join(runs)}")
    page.wait_for_selector("text=What differs", timeout=120000)
    deadline = time.time() + 120  # both runs' first snapshot and evaluation
    while time.time() < deadline and not (
        page.locator("img[alt='sample 0']").count() == 2 and len(_compare_state(page)[1]) == 2
    ):
        time.sleep(1)
    first_steps, first_points = _compare_state(page)
    assert len(first_steps) == 2 and len(first_points) == 2, page.inner_text("body")[:2000]
    deadline = time.time() + 120
    while time.time() < deadline:
        steps, points = _compare_state(page)
        if (
            len(steps) == len(points) == 2
            and all(s > f for s, f in zip(steps, first_steps))
            and all(p > f for p, f in zip(points, first_points))
        ):
            break
        time.sleep(1)
    assert all(s > f for s, f in zip(steps, first_steps)), (first_steps, steps)
    assert all(p > f for p, f in zip(points, first_points)), (first_points, points)
    _no_errors(page)
    main = page.inner_text('[data-testid="stMain"]')
    # the configuration difference comes first, and only what differs: the defense
    assert main.index("What differs") < main.index("Synthetic samples") < main.index("Per class")
    assert re.search(r"defense\s+none\s+ta-select", main), main[:1500]
    assert page.locator("img[alt='sample 0']").count() == 2  # one grid per run, side by side
    page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)
