"""Backdoored teachers and ABD, measured: student ID accuracy and attack success rate (ASR) after
distilling each backdoored teacher without and with a defense, over several seeds, next to the
ASR of a student distilled from the *clean* teacher with the same method and budget (the rate at
which triggered images reach the target class without any backdoor).

    python benchmarks/backdoor.py [--teachers mnist-backdoor-badnet-grid mnist-backdoor-blend
        mnist-backdoor-trojan-wm] [--methods dfq zskt] [--steps 200 | --seconds 40]
        [--seeds 0 1 2] [--defenses none abd "abd:filter=true"]
        [--out benchmarks/results/backdoor.json]

A defense is ``NAME`` or ``NAME:KEY=VALUE,...``. Resumable (see ``_grid.py``). Prints a Markdown
table per method; a backdoor *transfers* when the baseline student's ASR is ≥ 50 % while it has
learned the task (ID accuracy ≥ 80 %).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _grid import Results, ms, run_grid, study_args

from dfkd_viz.teachers import card


def loc(sel: list[dict]) -> str:
    """Mean ± std trigger-localisation score, or — (a non-local trigger, or an older result)."""
    vals = [r["trigger_loc"] for r in sel if r.get("trigger_loc") is not None]
    return ms(vals) if vals else "—"


def table(rows: list[dict], clean: str, method: str, budget: str, teachers: list[str]) -> list[str]:
    out = [
        f"| backdoored teacher (trigger) | {method}, {budget} | student ID acc % | ASR % | ASR cut | transfers? | trigger loc. % | steps | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for bd in teachers:
        sub = [r for r in rows if r["method"] == method and r["backdoor"] == bd]
        if not sub:
            continue
        trig = card(bd)["trigger"]
        ref = [r for r in sub if r["teacher"] == clean]
        base = [r for r in sub if r["teacher"] == bd and r["defense"] == "none"]
        b_asr = statistics.mean(r["asr"] for r in base) if base else None
        b_acc = statistics.mean(r["id_acc"] for r in base) if base else None
        transfers = b_asr is not None and b_asr >= 0.5 and b_acc >= 0.8

        def line(label, sel, cut="—", tr="", bd=bd, trig=trig):
            return (
                f"| {bd} ({trig}) | {label} | {ms([r['id_acc'] for r in sel])} | {ms([r['asr'] for r in sel])} | "
                f"{cut} | {tr} | {loc(sel)} | {statistics.mean(r['steps'] for r in sel):.0f} | {statistics.mean(r['wall_s'] for r in sel):.0f} |"
            )

        if ref:
            out.append(line("clean teacher (reference)", ref))
        for d in dict.fromkeys(r["defense"] for r in sub if r["teacher"] == bd):
            sel = [r for r in sub if r["teacher"] == bd and r["defense"] == d]
            if d == "none":
                out.append(line("backdoored, no defense", sel, "—", "yes" if transfers else "no"))
            else:
                asr = statistics.mean(r["asr"] for r in sel)
                cut = f"{(b_asr - asr) / b_asr:.0%}" if b_asr else "—"
                out.append(line(f"backdoored, defense {d}", sel, cut))
    return out


def main() -> None:
    args, steps, budget_txt = study_args(
        __doc__.splitlines()[0],
        teachers=["mnist-backdoor-badnet-grid", "mnist-backdoor-blend", "mnist-backdoor-trojan-wm"],
        methods=["dfq", "zskt"],
        defenses=["none", "abd"],
        out="benchmarks/results/backdoor.json",
    )
    res = Results(args.out, ("backdoor", "teacher", "method", "defense", "seed", "budget"))
    run_grid(
        res,
        args,
        steps,
        budget_txt,
        "backdoor",
        lambda bd: {"trigger": card(bd)["trigger"], "target": card(bd)["target"]},
    )
    for method in args.methods:
        sel = [r for r in res.rows if r["budget"] == budget_txt]
        print("\n".join(table(sel, args.clean, method, budget_txt, args.teachers)) + "\n")


if __name__ == "__main__":
    main()
