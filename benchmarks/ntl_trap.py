"""The NTL trap and ATEsc, measured: student ID / OOD accuracy after distilling each NTL teacher and
the clean teacher with the same method and budget, without and with defenses, over several seeds —
at equal steps and (``--seconds``) at equal wall time.

    python benchmarks/ntl_trap.py [--teachers mnist-ntl-watermark mnist-ntl-digits ...]
        [--methods dfq dafl] [--steps 200 | --seconds 40] [--seeds 0 1 2]
        [--defenses none domain-oracle atesc "atesc:group=class,epsilon=0.03"]
        [--out benchmarks/results/ntl_trap.json]

A defense is ``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (its parameters). Runs go in-process through
the engine the worker uses (no store), one after another; every finished run is appended to
``--out`` at once, and a rerun with the same ``--out`` skips the runs already there (resumable).
Prints a Markdown table per method: mean ± std of the student's ID accuracy, the trap (clean − NTL,
points), the share of the trap a defense recovers, OOD accuracy (on the NTL teacher's domain, for
the clean teacher too) and wall seconds.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _grid import Results, ms, run_grid, study_args

from dfkd_viz.teachers import card


def table(rows: list[dict], clean: str, method: str, budget: str) -> list[str]:
    out = [
        f"| NTL teacher (OOD domain) | {method}, {budget} | student ID acc % | trap (pts) | recovered | OOD acc % | steps | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ntls = list(dict.fromkeys(r["ntl"] for r in rows if r["method"] == method))
    for ntl in ntls:
        sub = [r for r in rows if r["method"] == method and r["ntl"] == ntl]
        ref = [r for r in sub if r["teacher"] == clean]
        dom = card(ntl)["ood_domain"]

        def line(label, sel, c_acc, trap, is_base, ntl=ntl, dom=dom):
            acc = statistics.mean(r["id_acc"] for r in sel)
            lost = None if c_acc is None else c_acc - acc
            rec = "—" if is_base or not trap or lost is None else f"{(trap - lost) / trap:.0%}"
            return (
                f"| {ntl} ({dom}) | {label} | {ms([r['id_acc'] for r in sel])} | "
                f"{'—' if lost is None else f'{100 * lost:.1f}'} | {rec} | {ms([r['ood_acc'] for r in sel])} | "
                f"{statistics.mean(r['steps'] for r in sel):.0f} | {statistics.mean(r['wall_s'] for r in sel):.0f} |"
            )

        c_acc = statistics.mean(r["id_acc"] for r in ref) if ref else None
        if ref:
            out.append(line("clean teacher", ref, None, None, True))
        base = [r for r in sub if r["teacher"] == ntl and r["defense"] == "none"]
        trap = c_acc - statistics.mean(r["id_acc"] for r in base) if base and ref else None
        for d in dict.fromkeys(r["defense"] for r in sub if r["teacher"] == ntl):
            sel = [r for r in sub if r["teacher"] == ntl and r["defense"] == d]
            out.append(line(f"NTL, defense {d}", sel, c_acc, trap, d == "none"))
    return out


def main() -> None:
    args, steps, budget_txt = study_args(
        __doc__.splitlines()[0],
        teachers=["mnist-ntl-watermark", "mnist-ntl-digits", "mnist-ntl-mnist-m"],
        methods=["dfq"],
        defenses=["none", "atesc"],
        out="benchmarks/results/ntl_trap.json",
    )
    res = Results(args.out, ("ntl", "teacher", "method", "defense", "seed", "budget"))
    run_grid(res, args, steps, budget_txt, "ntl", lambda t: {"ood_domain": card(t)["ood_domain"]})
    rows = res.rows
    for method in args.methods:
        sel = [
            r
            for r in rows
            if r["budget"] == budget_txt and r["method"] == method and r["ntl"] in args.teachers
        ]
        print("\n".join(table(sel, args.clean, method, budget_txt)) + "\n")


if __name__ == "__main__":
    main()
