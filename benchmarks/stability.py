"""Stability across teachers (TA-DFKD's claim): ``dfq`` vs ``tadfkd`` on a family of teachers of
different character, 3 seeds, through the product's own sweep (every run an ordinary run).

    python benchmarks/stability.py                      # create and run the sweep (resumable)
    python benchmarks/stability.py --sweep ID [ID ...]  # summarise (and finish) existing ones

Writes ``benchmarks/results/stability.json`` and prints the tables of
``docs/results/stability.md``: per teacher the student's ID accuracy in % of the teacher's (mean ±
std over seeds, and the worst seed), and per method the mean, std and minimum over every teacher
and seed, with the seconds a run took.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pandas as pd

from dfkd_viz.runs import sweep as sw

FAMILY = [
    "mnist-clean",
    "mnist-lenet-short",
    "mnist-lenet-shift",
    "mnist-resnet8-ls",
    "mnist-resnet14",
    "fmnist-clean",
    "fmnist-resnet14",
]


def class_coverage(run_id: str) -> float | None:
    """Normalised entropy (0–1) of the teacher's labels over the run's last snapshot of
    synthetic samples: 1 = every class equally often, 0 = one class."""
    import numpy as np

    from dfkd_viz.runs import manager
    from dfkd_viz.runs.store import RunReader

    with RunReader(manager.run_dir(run_id)) as r:
        steps = r.snapshot_steps()
        if not steps:
            return None
        labels = r.samples(steps[-1])["teacher_label"].to_numpy()
    k = max(10, int(labels.max()) + 1)
    p = np.bincount(labels, minlength=k) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(k))


def tables(df) -> str:
    fin = df[df["status"] == "finished"].copy()
    fin["coverage"] = [class_coverage(r) for r in fin["run_id"]]
    methods = list(dict.fromkeys(fin["method"]))
    out = ["| teacher | teacher ID acc | " + " | ".join(methods) + " |"]
    out.append("|---|---|" + "---|" * len(methods))
    for t in dict.fromkeys(fin["teacher"]):
        g = fin[fin["teacher"] == t]
        cells = []
        for m in methods:
            v = [100 * x for x in g[g["method"] == m]["rel_acc"]]
            if not v:
                cells.append("—")
                continue
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.1f} ± {sd:.1f} (min {min(v):.1f})")
        out.append(f"| {t} | {100 * g['teacher_acc'].iloc[0]:.1f} % | " + " | ".join(cells) + " |")
    out += [
        "",
        "| method | runs | mean | std | min | worst case | s per run | class coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    summ = sw.summarize(df)
    for m, v in summ["methods"].items():
        g = fin[fin["method"] == m]
        out.append(
            f"| {m} | {v['n']} | {v['mean']:.1f} | {v['std']:.1f} | {v['min']:.1f} | "
            f"{v['worst']['teacher']} seed {v['worst']['seed']} | {g['wall_s'].median():.0f} | "
            f"{g['coverage'].mean():.2f} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sweep", nargs="+", help="existing sweeps to finish and summarise (results merged)"
    )
    ap.add_argument("--teachers", nargs="+", default=FAMILY)
    ap.add_argument("--methods", nargs="+", default=["dfq", "tadfkd"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/stability.json"))
    args = ap.parse_args()
    sweep_ids = args.sweep or [
        sw.create_sweep(
            {
                "teachers": args.teachers,
                "methods": args.methods,
                "seeds": args.seeds,
                "steps": args.steps,
                "base": {"eval_every": 20},
            }
        )
    ]
    frames = []
    for sweep_id in sweep_ids:
        print(f"sweep {sweep_id}", file=sys.stderr)
        if not sw.runner_alive(sweep_id):
            sw.run_sweep(sweep_id, lambda i, n, c: print(f"cell {i + 1}/{n} {c}", file=sys.stderr))
        else:
            print("its runner is alive elsewhere: summarising what has finished", file=sys.stderr)
        frames.append(sw.sweep_results(sweep_id))
    df = pd.concat(frames, ignore_index=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    args.out.write_text(
        json.dumps({"sweeps": sweep_ids, "summary": sw.summarize(df), "rows": rows}, indent=1)
    )
    print(tables(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
