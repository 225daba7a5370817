"""Page cost with a run going: render time of the live view's fragments (p50 / p95, measured inside
the real Streamlit server) and the memory of server + worker, while a browser watches; and the
time from clicking **Start demo** to the first curve in the browser (teacher trained, its
reference map computed: the app's default path after `dfkd-viz teachers train`).

    python benchmarks/app_bench.py [--seconds 40] [--out benchmarks/results/app.json]

Needs Debian's Chromium (``/usr/bin/chromium``) and Playwright. Uses a temporary DFKD_VIZ_HOME
(trains the default teacher there first, ~8 s).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "app.json")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    home = Path(tempfile.mkdtemp(prefix="dfkd-viz-bench-"))
    profile = home / "profile.tsv"
    env = dict(os.environ, DFKD_VIZ_HOME=str(home), DFKD_VIZ_PROFILE=str(profile))
    os.environ.update(DFKD_VIZ_HOME=str(home))
    from dfkd_viz.runs import manager
    from dfkd_viz.teachers import train_teacher
    from dfkd_viz.teachers.maps import compute_map

    train_teacher("mnist-clean")
    compute_map("mnist-clean")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t_start = time.perf_counter()
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("streamlit")),
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            urllib.request.urlopen(base + "/_stcore/health", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    server_ready_s = time.perf_counter() - t_start
    peak = 0.0
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = b.new_page(viewport={"width": 1400, "height": 2000})
        t0 = time.perf_counter()
        page.goto(f"{base}/")  # the first page this fresh server renders (the cold start)
        page.wait_for_selector("text=Start demo", timeout=120000)
        home_s = time.perf_counter() - t0
        # Start demo → the live page → the first curve (the demo's own run)
        t0 = time.perf_counter()
        page.get_by_role("button", name="Start demo").click()
        page.wait_for_url("**/live?run=*", timeout=120000)
        live_url_s = time.perf_counter() - t0
        page.wait_for_selector(".js-plotly-plot", timeout=120000)
        first_curve_s = time.perf_counter() - t0
        demo_id = page.url.split("run=")[1]
        manager.stop(demo_id, wait_s=10)
        # the steady state: a run long enough to stay active through the whole measurement
        run_id = manager.launch(
            {"teacher": "mnist-clean", "method": "dfq", "seconds": args.seconds + 20}
        )
        worker_pid = manager.run_info(run_id)["pid"]
        page.goto(f"{base}/live?run={run_id}")
        page.wait_for_selector(".js-plotly-plot", timeout=120000)
        profile.write_text("")  # measure steady state only
        t1 = time.perf_counter()
        while time.perf_counter() - t1 < args.seconds:
            peak = max(peak, rss_mb(server.pid) + rss_mb(worker_pid))
            time.sleep(0.5)
        b.close()
    manager.stop(run_id, wait_s=10)
    server.terminate()
    server.wait(10)
    rows = [line.split("\t") for line in profile.read_text().splitlines() if line]
    by: dict[str, list[float]] = {}
    for name, ms in rows:
        by.setdefault(name, []).append(float(ms))
    result = {
        "server_ready_s": round(server_ready_s, 2),
        # server launch → home page rendered in the browser (Chromium's own start not counted)
        "cold_start_s": round(server_ready_s + home_s, 2),
        "first_curve_s": round(first_curve_s, 2),
        "live_url_s": round(live_url_s, 2),  # Start demo → the Live page's URL (launch done)
        "fragments": {
            k: {
                "n": len(v),
                "p50_ms": round(statistics.median(v), 1),
                "p95_ms": round(pct(v, 0.95), 1),
            }
            for k, v in by.items()
        },
        "fragment_p95_ms": round(max(pct(v, 0.95) for v in by.values()), 1) if by else None,
        "peak_rss_mb_server_plus_worker": round(peak, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    print("| fragment | renders | p50 (ms) | p95 (ms) |\n|---|---|---|---|")
    for k, v in result["fragments"].items():
        print(f"| {k} | {v['n']} | {v['p50_ms']} | {v['p95_ms']} |")
    print(
        f"server + worker peak RSS: {peak:.0f} MB; first curve {first_curve_s:.1f} s after Start demo"
    )


if __name__ == "__main__":
    main()
