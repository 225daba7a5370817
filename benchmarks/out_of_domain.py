"""Out-of-domain KD, measured: student accuracy on the *student's* domain after AuG-KD and its
baselines on the same split and step budget (the ``ood-augkd`` preset's setting: teacher
``mnist-clean``, 300 labelled MNIST-M training digits, scored on the MNIST-M test split).

    python benchmarks/out_of_domain.py [--methods ce kd dfq augkd "augkd:u=1"] [--seeds 0 1 2]
        [--steps 600] [--samples 300] [--domain mnist-m] [--teacher mnist-clean]
        [--out benchmarks/results/out_of_domain.json]

A method is ``NAME`` or ``NAME:KEY=VALUE,...`` (method parameters). Resumable (see ``_grid.py``).
Prints the Markdown tables of ``docs/results/out-of-domain.md`` (mean ± std over the seeds, best
mean in bold).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _grid import Results, ms, parse_defense, run_one

from dfkd_viz.analysis.metrics import accuracy
from dfkd_viz.data import load_domain
from dfkd_viz.runs.build import set_threads
from dfkd_viz.teachers import load_teacher, train_teacher

LABELS = {
    "ce": "CE on student-domain data only",
    "kd": "KD on student-domain data (CE + KL to the teacher)",
    "dfq": "DFQ, data-free (no student-domain data)",
    "augkd": "AuG-KD, as the paper describes (KL to the teacher's logits)",
    "augkd:u=1": "AuG-KD with the reference code's effective loss (CE only, its KL term ≈ 0)",
    "augkd:u=1,b=1": "ablation: stages 1–2, then CE on real samples only (s = 1: no mixup)",
}


def table(rows: list[dict], methods: list[str], budget: str, n: int, domain: str) -> list[str]:
    means = {
        m: statistics.mean(r["student_domain_acc"] for r in rows if r["method_spec"] == m)
        for m in methods
        if any(r["method_spec"] == m for r in rows)
    }
    best = max(means, key=means.get) if means else None
    out = [
        f"| method ({n} labelled {domain} samples, {budget}) | student-domain acc % | ID (MNIST) acc % | seeds | wall s |",
        "|---|---|---|---|---|",
    ]
    for m in methods:
        sel = [r for r in rows if r["method_spec"] == m]
        if not sel:
            continue
        acc = ms([r["student_domain_acc"] for r in sel])
        if m == best:
            acc = f"**{acc}**"
        wall = statistics.median(r["wall_s"] for r in sel)
        out.append(
            f"| `{m}` — {LABELS.get(m, m)} | {acc} | {ms([r['id_acc'] for r in sel])} | "
            f"{len(sel)} | {wall:.0f} |"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=["ce", "kd", "dfq", "augkd", "augkd:u=1"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--domain", default="mnist-m")
    ap.add_argument("--teacher", default="mnist-clean")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/out_of_domain.json"))
    args = ap.parse_args()
    set_threads(None)
    train_teacher(args.teacher)
    res = Results(args.out, ("teacher", "domain", "samples", "method_spec", "seed", "steps"))
    for seed in args.seeds:
        for spec in args.methods:
            key = {
                "teacher": args.teacher,
                "domain": args.domain,
                "samples": args.samples,
                "method_spec": spec,
                "seed": seed,
                "steps": args.steps,
            }
            if res.has(**key):
                continue
            name, params = parse_defense(spec)
            r = run_one(
                args.teacher,
                name,
                "none",
                seed,
                args.steps,
                None,
                method_params=params,
                student_domain=args.domain,
                student_domain_samples=args.samples,
            )
            res.add({**r, **key, "method": name})
    rows = [
        r
        for r in res.rows
        if r["teacher"] == args.teacher
        and r["domain"] == args.domain
        and r["samples"] == args.samples
        and r["steps"] == args.steps
    ]
    teacher, t = load_teacher(args.teacher)
    on_domain = accuracy(teacher, load_domain(args.domain, t["dataset"], "test"))
    print(
        f"\nteacher {args.teacher}: ID {100 * t['id_acc']:.1f} %, "
        f"on the {args.domain} test split {100 * on_domain:.1f} %\n"
    )
    print("\n".join(table(rows, args.methods, f"{args.steps} steps", args.samples, args.domain)))


if __name__ == "__main__":
    main()
