"""Pages read, workers compute: what a rerun of the Live, Embeddings and Saliency pages costs with a
run going, and where that time goes.

    python benchmarks/page_profile.py [--pages live embeddings saliency] [--reruns 5] [--seconds 90]

Trains the clean MNIST teacher and computes its reference map in a temporary DFKD_VIZ_HOME, starts
a real ``dfq`` run (detached worker, embedding map on, a checkpoint every 20 steps so the Saliency
page has one), waits for its first snapshot and checkpoint, then for each page runs it through
Streamlit's ``AppTest`` once (first render: caches fill) and ``--reruns`` times more, timing every
run. A cProfile of the script thread over the reruns lists each function of ``dfkd_viz``,
``pages`` or ``viz`` whose cumulative time is above 50 ms per rerun (the issue's threshold for
moving work into the worker or a cache).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from machine import load_avg  # noqa: E402


def profile_page(page: str, run_id: str, reruns: int) -> dict:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.query_params["run"] = run_id
    t0 = time.perf_counter()
    at.run()
    first = time.perf_counter() - t0
    errors = [str(e.value)[:200] for e in at.exception]
    profs: list[cProfile.Profile] = []

    def start(frame, event, arg):  # the first event of a new (script) thread starts its profiler
        p = cProfile.Profile()
        profs.append(p)
        p.enable()

    times = []
    threading.setprofile(start)
    try:
        for _ in range(reruns):
            t0 = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t0)
    finally:
        threading.setprofile(None)
    for p in profs:
        p.disable()
    hot = []
    if profs:
        stats = pstats.Stats(profs[0])
        for p in profs[1:]:
            stats.add(p)
        for (file, line, fn), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
            per = ct / reruns
            if per > 0.05 and any(k in file for k in ("dfkd_viz", "/pages/", "app.py")):
                hot.append((round(per * 1000, 1), f"{Path(file).name}:{line} {fn}"))
    hot.sort(reverse=True)
    times.sort()
    return {
        "first_s": round(first, 3),
        "rerun_median_s": round(times[len(times) // 2], 3),
        "rerun_max_s": round(times[-1], 3),
        "hot_ms_per_rerun": hot[:15],
        "errors": errors,
        "load": load_avg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", nargs="+", default=["live", "embeddings", "saliency"])
    ap.add_argument("--reruns", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pages.json")
    args = ap.parse_args()
    os.environ["DFKD_VIZ_HOME"] = tempfile.mkdtemp(prefix="dfkd-viz-pages-")
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.store import RunReader
    from dfkd_viz.teachers import train_teacher
    from dfkd_viz.teachers.maps import compute_map

    train_teacher("mnist-clean")
    compute_map("mnist-clean")
    run_id = manager.launch(
        {
            "teacher": "mnist-clean",
            "method": "dfq",
            "seconds": args.seconds,
            "checkpoint_every": 20,
        }
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        with RunReader(manager.run_dir(run_id)) as r:
            if r.embedded_steps() and r.checkpoints():
                break
        time.sleep(0.5)
    res = {"run_id": run_id}
    try:
        for page in args.pages:
            res[page] = profile_page(page, run_id, args.reruns)
            print(f"[pages] {page}: {json.dumps(res[page])}", file=sys.stderr, flush=True)
            if manager.run_info(run_id)["status"] not in ("queued", "running"):
                print("[pages] warning: the run ended during the measurement", file=sys.stderr)
    finally:
        manager.stop(run_id, wait_s=10)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
