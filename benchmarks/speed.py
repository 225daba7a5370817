"""Accuracy after a wall-clock budget, per method, through the product's own path
(``dfkd-viz run --preset ... --seconds S --json``: evaluation and recording included).

    python benchmarks/speed.py [--methods dfad zskt dfq dafl deepinv] [--seconds 30 120] [--seeds 0]
                               [--out benchmarks/results/speed.json]

Prints a Markdown table (mean ± std over seeds of the student's ID accuracy, its share of the
teacher's, steps and iterations/s) and writes the raw rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def run_one(method: str, seconds: float, seed: int, teacher: str) -> dict:
    cli = str(Path(sys.executable).with_name("dfkd-viz"))
    cmd = [
        cli,
        "run",
        "--teacher",
        teacher,
        "--method",
        method,
        "--seconds",
        str(seconds),
        "--seed",
        str(seed),
        "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["budget_s"] = seconds
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=["dfad", "zskt", "dfq", "dafl", "deepinv"])
    ap.add_argument("--seconds", nargs="+", type=float, default=[30.0, 120.0])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--teacher", default="mnist-clean")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.json"))
    args = ap.parse_args()
    rows = []
    for method in args.methods:
        for seconds in args.seconds:
            for seed in args.seeds:
                row = run_one(method, seconds, seed, args.teacher)
                rows.append(row)
                print(
                    f"{method:8} {seconds:5.0f} s seed {seed}: ID {row['id_acc']:.2%} ({row['steps']} steps)",
                    file=sys.stderr,
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print("| method | budget | student ID acc | of teacher | steps | it/s |")
    print("|---|---|---|---|---|---|")
    for method in args.methods:
        for seconds in args.seconds:
            sel = [r for r in rows if r["method"] == method and r["budget_s"] == seconds]
            accs = [100 * r["id_acc"] for r in sel]
            rel = [100 * r["id_acc"] / r["teacher_id_acc"] for r in sel]
            sd = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
            print(
                f"| {method} | {seconds:.0f} s | {statistics.mean(accs):.2f}{sd} % | {statistics.mean(rel):.1f} % | "
                f"{statistics.mean(r['steps'] for r in sel):.0f} | {statistics.mean(r['it_s'] or 0 for r in sel):.2f} |"
            )


if __name__ == "__main__":
    main()
