"""What fork points cost: checkpoint size on disk, time to write one, and that time as a share of
the steps between two checkpoints, for the product's two default student set-ups.

    python benchmarks/checkpoints.py [--rounds 5] [--out benchmarks/results/checkpoints.json]
        [--no-docs]

- **lenet5**: the ``clean-dfq`` set-up (LeNet-5×2 teacher ``mnist-clean`` → LeNet-5, DFQ, batch
  128, the 28×28 generator), built as the worker builds it (``machine.quiet_engine``);
- **wrn16_1**: the ``colour-dfq`` set-up's sizes (WRN-16-2 → WRN-16-1 on 3×32×32, CMI's
  generator), untrained (``precision.wrn_engine``; sizes and timings do not depend on the weights).

For each: the engine runs a few steps (so the optimisers hold their moments), then
``Engine.state_dict`` + ``save_checkpoint`` into a temporary directory are timed ``--rounds``
times (median), and ``--rounds`` blocks of 10 steps give the step time. The run store's
defaults — a checkpoint every ``checkpoint_every`` = 20 steps, ``keep_checkpoints`` = 25 kept —
turn these into "disk per run" (at most 25 checkpoints) and "write share" (one write per 20
steps). Writes ``benchmarks/results/checkpoints.json`` and the table between the ``checkpoints``
markers of ``docs/results/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import write_section
from machine import machine, quiet_engine
from precision import load1, wrn_engine

from dfkd_viz.runs.build import set_threads
from dfkd_viz.runs.checkpoint import save_checkpoint
from dfkd_viz.runs.config import RunConfig

EVERY = RunConfig.model_fields["checkpoint_every"].default
KEEP = RunConfig.model_fields["keep_checkpoints"].default


def measure(name: str, eng, one_step, rounds: int) -> dict:
    for _ in range(3):
        one_step()
    step_s = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(10):
            one_step()
        step_s.append((time.perf_counter() - t0) / 10)
    save_s, size = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            t0 = time.perf_counter()
            tensors, meta = eng.state_dict()
            path = Path(tmp) / f"step-{i}.safetensors"
            save_checkpoint(path, tensors, meta)
            save_s.append(time.perf_counter() - t0)
            size = path.stat().st_size
    step, save = statistics.median(step_s), statistics.median(save_s)
    return {
        "student": name,
        "checkpoint_mb": round(size / 2**20, 2),
        "write_ms": round(save * 1000, 1),
        "step_ms": round(step * 1000, 1),
        "write_share_pct": round(100 * save / (save + EVERY * step), 2),
        "disk_per_run_mb": round(KEEP * size / 2**20, 1),
        "load1": load1(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "checkpoints.json"))
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    rows = [
        measure("lenet5", *quiet_engine("dfq"), args.rounds),
        measure("wrn16_1", *wrn_engine("fp32"), args.rounds),
    ]
    result = {"machine": machine(), "every": EVERY, "keep": KEEP, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    md = [
        f"Checkpoint every {EVERY} steps, at most {KEEP} kept (`checkpoint_every`, "
        f"`keep_checkpoints`); {result['machine']['cpu']}, {args.threads} threads, median of "
        f"{args.rounds}; `python benchmarks/checkpoints.py`.",
        "",
        "| student (set-up) | one checkpoint | write | one step | write share | disk per run (max) "
        "| load |",
        "|---|---|---|---|---|---|---|",
    ]
    setup = {"lenet5": "LeNet-5 (clean-dfq)", "wrn16_1": "WRN-16-1 (colour-dfq)"}
    for r in rows:
        md.append(
            f"| {setup[r['student']]} | {r['checkpoint_mb']} MB | {r['write_ms']} ms | "
            f"{r['step_ms']} ms | {r['write_share_pct']} % | {r['disk_per_run_mb']} MB "
            f"| {r['load1']} |"
        )
    print("\n".join(md))
    if not args.no_docs:
        write_section("results/performance.md", "checkpoints", "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
