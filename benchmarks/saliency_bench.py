"""Saliency cost and the trigger-localisation signal on the zoo's backdoored teachers.

    python benchmarks/saliency_bench.py [--out benchmarks/results/saliency.json]

For a page of 16 triggered test images: seconds to compute each attribution method for teacher
and student (goal, issue #6: ≤ 2 s for the page on the CPU), warm (captum imported, models loaded).
Then the trigger-localisation score (share of Integrated-Gradients mass inside the trigger, 64
triggered test images) of each backdoored teacher and of the clean teacher, with the trigger's area
share as the chance level. Uses the user's zoo (trains missing teachers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dfkd_viz.analysis.saliency import METHODS, attribute, local_mask, localisation
from dfkd_viz.data import load_dataset, make_trigger
from dfkd_viz.data.triggers import triggered_test_set
from dfkd_viz.runs.build import set_threads
from dfkd_viz.teachers import load_teacher, train_teacher

BACKDOORED = ["mnist-backdoor-badnet-grid", "mnist-backdoor-trojan-wm", "mnist-backdoor-blend"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/saliency.json"))
    args = ap.parse_args()
    set_threads(None)
    for t in [*BACKDOORED, "mnist-clean"]:
        train_teacher(t)
    test = load_dataset("mnist", "test")
    clean, _ = load_teacher("mnist-clean")
    out: dict = {"page_s": {}, "localisation": {}, "threads": torch.get_num_threads()}

    teacher, card = load_teacher(BACKDOORED[0])
    trig = make_trigger(card["trigger"], test.shape)
    x16 = triggered_test_set(test.subset(slice(0, 100)), trig, card["target"] or 0).x[:16]
    for m in METHODS:  # warm-up: imports, first-call overheads
        attribute(teacher, x16[:2], m)
    total = 0.0
    for m in METHODS:
        t0 = time.perf_counter()
        attribute(teacher, x16, m)
        attribute(clean, x16, m)  # the student's place: a LeNet-5 of the same size class
        dt = time.perf_counter() - t0
        out["page_s"][m] = round(dt, 3)
        total += dt
    out["page_s"]["all three"] = round(total, 3)

    for tid in BACKDOORED:
        model, c = load_teacher(tid)
        trig = make_trigger(c["trigger"], test.shape)
        mask = local_mask(trig)
        xt = triggered_test_set(test.subset(slice(0, 400)), trig, c["target"] or 0).x[:64]
        row = {
            "trigger": c["trigger"],
            "area": None if mask is None else round(float(mask.mean()), 4),
        }
        if mask is not None:
            for name, mdl in (("backdoored", model), ("clean", clean)):
                row[name] = round(
                    float(localisation(attribute(mdl, xt, "integrated-gradients"), mask).mean()), 3
                )
        out["localisation"][tid] = row

    print("| attribution method | 16 images, teacher + student (s) |\n|---|---|")
    for m, s in out["page_s"].items():
        print(f"| {m} | {s:.2f} |")
    print(
        "\n| backdoored teacher (trigger) | trigger area % | IG mass in trigger, backdoored % | clean teacher % |"
        "\n|---|---|---|---|"
    )
    for tid, r in out["localisation"].items():
        if r["area"] is None:
            print(f"| {tid} ({r['trigger']}) | whole image | — | — |")
        else:
            print(
                f"| {tid} ({r['trigger']}) | {100 * r['area']:.1f} | {100 * r['backdoored']:.1f} | {100 * r['clean']:.1f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
