"""Screenshots of app pages for the README and docs/: serves the app (or uses a running one), opens each page
for a run in headless Chromium and saves full-page PNGs.

    python scripts/screenshots.py --run RUN_ID --pages live decisions embeddings saliency \\
        [--suffix -atesc] [--out assets/screenshots] [--url http://127.0.0.1:8501]
    python scripts/screenshots.py --sweep SWEEP_ID --pages sweeps
    python scripts/screenshots.py --teacher mnist-backdoor-badnet-grid --pages audit \
        --tab "Backdoor evidence" --suffix -backdoor

Needs Playwright (``pip install playwright``) and Debian's Chromium at /usr/bin/chromium (``make
chromium``); never downloads a browser. Waits for each page's charts to settle before the shot.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the Streamlit server did not start within 60 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="the run the pages show (?run=)")
    ap.add_argument("--sweep", help="the sweep the Sweeps page shows (?sweep=)")
    ap.add_argument("--teacher", help="the teacher the Audit page shows (?teacher=)")
    ap.add_argument("--tab", help="click the tab with this label before the shot")
    ap.add_argument("--pages", nargs="+", default=["live", "decisions", "embeddings", "saliency"])
    ap.add_argument("--suffix", default="")
    ap.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshots")
    ap.add_argument("--url")
    ap.add_argument("--settle", type=float, default=6.0, help="seconds to let charts draw")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument(
        "--height",
        type=int,
        default=2200,
        help="viewport height: Streamlit scrolls inside the page, so full_page shots need a tall one",
    )
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    proc, url = (None, args.url) if args.url else _serve()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            for name in args.pages:
                query = "&".join(
                    f"{k}={v}"
                    for k, v in (
                        ("run", args.run),
                        ("sweep", args.sweep),
                        ("teacher", args.teacher),
                    )
                    if v
                )
                page.goto(f"{url}/{name}?{query}")
                page.wait_for_selector("h1", timeout=60000)
                page.wait_for_load_state("networkidle")
                time.sleep(args.settle)
                if args.tab:
                    page.get_by_role("tab", name=args.tab).click()
                    time.sleep(args.settle / 2)
                path = args.out / f"{name}{args.suffix}.png"
                page.screenshot(path=str(path), full_page=True)
                print(path)
            browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
