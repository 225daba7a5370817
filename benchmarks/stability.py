"""Stability across teachers (TA-DFKD's claim): ``dfq`` vs ``tadfkd`` on a family of teachers of
different character, 3 seeds, through the product's own sweep (every run an ordinary run).

    python benchmarks/stability.py                      # create and run the sweep (resumable)
    python benchmarks/stability.py --sweep SWEEP_ID     # summarise (and finish) an existing one

Writes ``benchmarks/results/stability.json`` and prints the README's tables: per teacher the
student's ID accuracy in % of the teacher's (mean ± std over seeds, and the worst seed), and per
method the mean, std and minimum over every teacher and seed, with the seconds a run took.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

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


def tables(df) -> str:
    fin = df[df["status"] == "finished"]
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
        "| method | runs | mean | std | min | worst case | s per run |",
        "|---|---|---|---|---|---|---|",
    ]
    summ = sw.summarize(df)
    for m, v in summ["methods"].items():
        wall = fin[fin["method"] == m]["wall_s"].median()
        out.append(
            f"| {m} | {v['n']} | {v['mean']:.1f} | {v['std']:.1f} | {v['min']:.1f} | "
            f"{v['worst']['teacher']} seed {v['worst']['seed']} | {wall:.0f} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep", help="an existing sweep to finish and summarise")
    ap.add_argument("--teachers", nargs="+", default=FAMILY)
    ap.add_argument("--methods", nargs="+", default=["dfq", "tadfkd"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/stability.json"))
    args = ap.parse_args()
    sweep_id = args.sweep or sw.create_sweep(
        {
            "teachers": args.teachers,
            "methods": args.methods,
            "seeds": args.seeds,
            "steps": args.steps,
            "base": {"eval_every": 20},
        }
    )
    print(f"sweep {sweep_id}", file=sys.stderr)
    if not sw.runner_alive(sweep_id):
        sw.run_sweep(sweep_id, lambda i, n, c: print(f"cell {i + 1}/{n} {c}", file=sys.stderr))
    else:
        print("its runner is alive elsewhere: summarising what has finished", file=sys.stderr)
    df = sw.sweep_results(sweep_id)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    args.out.write_text(
        json.dumps({"sweep_id": sweep_id, "summary": sw.summarize(df), "rows": rows}, indent=1)
    )
    print(tables(df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
