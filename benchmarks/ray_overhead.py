"""What a sweep cell costs on Ray compared with the local executor, for the same tiny cell.

    python benchmarks/ray_overhead.py [--cells 4] [--steps 12] [--rounds 2]
        [--out benchmarks/results/ray_overhead.json]

Both executors run the same sweep (``mnist-clean`` × ``dfq`` × ``--cells`` seeds, ``--steps``
steps, batch 32, one torch thread) one cell at a time: ``local`` as always (a worker process per
run), ``ray`` with ``--cpus-per-run`` equal to the machine's cores, so Ray too runs one cell at a
time — once on a Ray instance the driver starts itself, once on a ``ray start --head`` node it
connects to. Rounds alternate local and Ray, so both see the same machine load; the figures are
medians over rounds.

Per cell: ``wall_per_cell`` = the sweep's wall time / cells (Ray: after connecting), and the
overhead = Ray's minus local's. ``connect_s`` is the one-off cost of a sweep on Ray (starting the
local instance, or connecting to the head). Runs as root inside a private network namespace
(``unshare -n``, loopback only), like tests/test_ray.py; the Ray processes live in a PID namespace
and end with the script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INNER = "DFKD_VIZ_RAY_BENCH_INNER"


def _reexec_in_namespaces() -> int:
    """Run this script again inside a network namespace with only loopback and a PID namespace
    (every Ray process ends with it)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        print("ray_overhead: needs root and unshare (a private network namespace)", file=sys.stderr)
        return 3
    args = " ".join(f"'{a}'" for a in sys.argv[1:])
    cmd = [
        "unshare", "--net", "--pid", "--kill-child", "--mount-proc", "sh", "-c",
        f"ip link set lo up && exec '{sys.executable}' '{Path(__file__).resolve()}' {args}",
    ]  # fmt: skip
    return subprocess.run(cmd, env={**os.environ, INNER: "1"}).returncode


def _sweep(executor: dict | None, cells: int, steps: int) -> dict:
    from dfkd_viz.runs import manager
    from dfkd_viz.runs import sweep as sw

    base = {"batch_size": 32, "eval_every": 4, "snapshot_every": 4, "snapshot_size": 8}
    spec = {
        "teachers": ["mnist-clean"],
        "methods": ["dfq"],
        "seeds": list(range(cells)),
        "steps": steps,
        "threads": 1,
        "base": base,
    }
    sweep_id = sw.create_sweep(spec, executor)
    marks: dict[str, float] = {}

    def progress(i: int, n: int, cell: dict) -> None:
        msg = str(cell.get("msg", ""))
        if "run(s) at a time" in msg and "connected" not in marks:
            marks["connected"] = time.perf_counter()  # the Ray driver is connected

    t0 = time.perf_counter()
    result = sw.run_sweep(sweep_id, progress)
    total = time.perf_counter() - t0
    df = sw.sweep_results(sweep_id)
    assert result == "finished" and (df["status"] == "finished").all(), df
    walls = [manager.run_info(r)["wall_s"] for r in df["run_id"]]
    connect = marks["connected"] - t0 if "connected" in marks else 0.0
    return {
        "total_s": total,
        "connect_s": connect,
        "wall_per_cell": (total - connect) / cells,
        "distil_s_per_cell": statistics.mean(walls),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=4)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_overhead.json"))
    args = ap.parse_args()
    if os.environ.get(INNER) != "1":
        return _reexec_in_namespaces()

    work = Path(tempfile.mkdtemp(prefix="dfkd-ray-bench-"))
    try:
        return _measure(args, work)
    finally:  # the Ray processes end with the PID namespace; their files here
        shutil.rmtree(work, ignore_errors=True)


def _measure(args: argparse.Namespace, work: Path) -> int:
    token = work / "token"
    token.write_text(secrets.token_hex(32))
    os.environ.update(
        DFKD_VIZ_HOME=str(work / "home"),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_USAGE_STATS_ENABLED="0",
    )
    os.environ.pop("RAY_ADDRESS", None)
    from dfkd_viz.teachers import train_teacher

    train_teacher("mnist-clean")
    cores = os.cpu_count() or 1
    head = subprocess.run(
        [
            str(Path(sys.executable).with_name("ray")), "start", "--head", "--port=0",
            f"--num-cpus={cores}", "--num-gpus=0", "--include-dashboard=false",
            "--disable-usage-stats", f"--temp-dir={work / 'ray'}",
            f"--object-store-memory={256 * 2**20}",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    m = re.search(r"ray start --address='([^']+)'", head.stdout + head.stderr)
    if not m:
        print(head.stdout + head.stderr, file=sys.stderr)
        return 1
    address = m.group(1)
    ray_local = {"name": "ray", "cpus_per_run": cores}
    ray_head = {**ray_local, "address": address}
    rows: dict[str, list[dict]] = {"local": [], "ray (own instance)": [], "ray (head node)": []}
    for r in range(args.rounds):
        for name, ex in (
            ("local", None),
            ("ray (own instance)", ray_local),
            ("ray (head node)", ray_head),
        ):
            res = _sweep(ex, args.cells, args.steps)
            rows[name].append(res)
            print(
                f"round {r + 1} {name:20} " + json.dumps({k: round(v, 2) for k, v in res.items()})
            )
    med = {
        name: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for name, rs in rows.items()
    }
    for m in med.values():  # what a cell costs beyond its distillation (start-up, shipping)
        m["fixed_s_per_cell"] = m["wall_per_cell"] - m["distil_s_per_cell"]
    for name in ("ray (own instance)", "ray (head node)"):
        for k in ("wall_per_cell", "fixed_s_per_cell"):
            med[name][f"overhead_{k}"] = med[name][k] - med["local"][k]
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    import ray
    import torch

    out = {
        "machine": {
            "cores": cores,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "loadavg_at_end": load,
        },
        "cells": args.cells,
        "steps": args.steps,
        "rounds": args.rounds,
        "median": med,
        "rounds_raw": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(med, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
