"""fp32 against bf16 autocast on this CPU (``--precision``, :mod:`dfkd_viz.distill.precision`).

    python benchmarks/precision.py [--seconds 30] [--seeds 0 1 2] [--rounds 5] [--block-s 6]
        [--threads 2] [--skip-runs] [--out benchmarks/results/precision.json] [--no-docs]

Three figures per precision:

- **(a) MNIST DFQ step rate**: LeNet-5×2 teacher (``mnist-clean``) → LeNet-5, ``dfq``, batch 128,
  in this process without evaluation, snapshots or the UMAP map (``machine.quiet_engine``);
  both precisions' engines are built once and timed in alternating blocks of ``--block-s``
  seconds over ``--rounds`` rounds (median of the blocks), so a change in the machine's load
  hits both alike.
- **(b) WRN DFQ step rate**: an untrained ``wrn16_2`` teacher → ``wrn16_1`` on 3×32×32 inputs
  (generator, teacher and student laid out as ``build_engine`` does on the CPU), timed the same
  way.
- **(c) accuracy at 30 s**: ``dfkd-viz run --preset clean-dfq --seconds 30 --threads 2
  --precision P --seed S --json`` (the product's path: detached worker, evaluation, the live
  map), seeds interleaved across precisions; the row keeps steps, it/s and the student's ID
  accuracy; the table gives medians.

The 1-minute load average (``os.getloadavg``) is recorded next to every measurement: other jobs
on the machine slow both precisions, and the table says how loaded it was. Writes
``benchmarks/results/precision.json`` and the table between the ``precision`` markers of
``docs/results/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import write_section
from machine import machine, quiet_engine

from dfkd_viz.data.datasets import ImageDataset
from dfkd_viz.distill import Budget, Engine, EngineSettings, EvalSuite, create_method
from dfkd_viz.distill.precision import cpu_has_bf16
from dfkd_viz.models import Generator, create_model, default_size
from dfkd_viz.models.cifar import CIFAR10_MEAN, CIFAR10_STD
from dfkd_viz.runs.build import set_threads
from dfkd_viz.teachers import train_teacher

PRECISIONS = ("fp32", "bf16")
CIFAR_MEAN, CIFAR_STD = CIFAR10_MEAN, CIFAR10_STD  # the statistics CMI trains with


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def wrn_engine(precision: str, seed: int = 0) -> tuple[Engine, callable]:
    """An engine distilling an untrained WRN-16-2 into a WRN-16-1 on 3×32×32 inputs (DFQ, batch
    128, the colour generator's default size, the product's CPU layouts), and its one-step
    function."""
    torch.manual_seed(seed)
    kw = {"num_classes": 10, "in_shape": (3, 32, 32), "mean": CIFAR_MEAN, "std": CIFAR_STD}
    teacher, student = create_model("wrn16_2", **kw), create_model("wrn16_1", **kw)
    nz, ngf = default_size((3, 32, 32))  # what a colour run gets (CMI's generator)
    gen = Generator(nz=nz, ngf=ngf, img_shape=(3, 32, 32), mean=CIFAR_MEAN, std=CIFAR_STD)
    gen.to(memory_format=torch.channels_last)
    teacher.set_memory_format(torch.channels_last)
    test = ImageDataset(
        "random", "test", torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,)), 10
    )
    big = 1_000_000
    eng = Engine(
        teacher,
        student,
        gen,
        create_method("dfq"),
        None,
        EvalSuite(test),
        Budget(steps=big),
        EngineSettings(
            nz=nz,
            eval_every=big,
            snapshot_every=big,
            checkpoint_every=big,
            seed=seed,
            precision=precision,
        ),
    )

    def one_step() -> None:
        eng.set_lr()
        eng.generator_phase()
        eng.student_phase()
        eng.step += 1

    return eng, one_step


def mnist_engine(precision: str, seed: int = 0):
    return quiet_engine("dfq", seed=seed, precision=precision)


def eval_times(rounds: int) -> dict:
    """Milliseconds of one evaluation (``EvalSuite.evaluate``: the channels-last inference copy,
    then accuracy on each test set) in fp32 and under bf16 autocast, alternating, median: the
    LeNet-5 student on MNIST's ID + OOD test splits, and a WRN-16-1 on 2,000 random 3×32×32
    images."""
    from contextlib import nullcontext

    eng, _ = quiet_engine("dfq")
    kw = {"num_classes": 10, "in_shape": (3, 32, 32), "mean": CIFAR_MEAN, "std": CIFAR_STD}
    colour = ImageDataset(
        "random", "test", torch.rand(2000, 3, 32, 32), torch.randint(0, 10, (2000,)), 10
    )
    cases = {
        "lenet5": (eng.evals, eng.student),
        "wrn16_1": (EvalSuite(colour), create_model("wrn16_1", **kw)),
    }
    out: dict = {}
    for name, (suite, model) in cases.items():
        times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for r in range(rounds + 1):
            for p in PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]:
                ctx = torch.autocast("cpu", dtype=torch.bfloat16) if p == "bf16" else nullcontext()
                t0 = time.perf_counter()
                with ctx:
                    suite.evaluate(model)
                if r:  # round 0 warms up
                    times[p].append(1000 * (time.perf_counter() - t0))
        out[name] = {p: round(statistics.median(v), 1) for p, v in times.items()}
    out["load1"] = load1()
    return out


def alternate(make, rounds: int, block_s: float, warmup: int = 3) -> dict:
    """Step rates of both precisions' engines in alternating ``block_s``-second blocks."""
    steps = {}
    for p in PRECISIONS:
        _, fn = make(p)
        for _ in range(warmup):
            fn()
        steps[p] = fn
    blocks: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    loads = []
    for r in range(rounds):
        order = PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]
        for p in order:
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < block_s:
                steps[p]()
                n += 1
            blocks[p].append(n / (time.perf_counter() - t0))
            loads.append(load1())
    out = {
        p: {"it_s": round(statistics.median(v), 2), "blocks": [round(b, 2) for b in v]}
        for p, v in blocks.items()
    }
    out["speedup_bf16"] = round(out["bf16"]["it_s"] / out["fp32"]["it_s"], 3)
    out["load1"] = {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}
    return out


def cli_run(precision: str, seed: int, seconds: float, threads: int) -> dict:
    cli = str(Path(sys.executable).with_name("dfkd-viz"))
    cmd = [cli, "run", "--preset", "clean-dfq", "--seconds", str(seconds), "--seed", str(seed)]
    cmd += ["--threads", str(threads), "--precision", precision, "--json"]
    before = load1()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 6 + 120)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed: {out.stderr.strip()[-500:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    keep = ("run_id", "steps", "wall_s", "it_s", "id_acc", "teacher_id_acc", "precision")
    row = {k: row.get(k) for k in keep}
    row.update(seed=seed, load1_before=before, load1_after=load1())
    row["steps_per_s"] = round(row["steps"] / row["wall_s"], 2) if row["wall_s"] else None
    return row


def accuracy_runs(seeds: list[int], seconds: float, threads: int) -> dict:
    rows = []
    for s in seeds:
        order = PRECISIONS if s % 2 == 0 else PRECISIONS[::-1]
        for p in order:
            rows.append(cli_run(p, s, seconds, threads))
            print(f"run {p} seed {s}: {rows[-1]}", file=sys.stderr, flush=True)
    out: dict = {"runs": rows}
    for p in PRECISIONS:
        sel = [r for r in rows if r["precision"] == p]
        out[p] = {
            "id_acc": round(statistics.median(r["id_acc"] for r in sel), 4),
            "id_acc_min": round(min(r["id_acc"] for r in sel), 4),
            "steps": statistics.median(r["steps"] for r in sel),
            "it_s": round(statistics.median(r["it_s"] or 0 for r in sel), 2),
            "steps_per_s": round(statistics.median(r["steps_per_s"] for r in sel), 2),
        }
    loads = [r[k] for r in rows for k in ("load1_before", "load1_after")]
    out["load1"] = {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}
    out["teacher_id_acc"] = rows[0]["teacher_id_acc"]
    return out


def table(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"Machine: {m['cpu']} · {m['cores']} cores · torch {m['torch']} · {res['threads']} threads"
        f" · native bf16: {'yes' if res['native_bf16'] else 'no'} · {res['date']}",
        "",
        "| figure | fp32 | bf16 | bf16 ÷ fp32 | load (1-min avg, min–max) |",
        "|---|---|---|---|---|",
    ]

    def rate_row(label: str, r: dict) -> str:
        ld = r["load1"]
        return (
            f"| {label} | {r['fp32']['it_s']:.2f} it/s | {r['bf16']['it_s']:.2f} it/s | "
            f"{r['speedup_bf16']:.2f}× | {ld['min']:.1f}–{ld['max']:.1f} |"
        )

    lines.append(rate_row("(a) MNIST `dfq` step, LeNet-5×2 → LeNet-5 (in process)", res["mnist"]))
    lines.append(rate_row("(b) `dfq` step, WRN-16-2 → WRN-16-1, 3×32×32", res["wrn"]))
    ev = res.get("eval_ms")
    if ev:
        for key, label in (
            ("lenet5", "one evaluation, LeNet-5 student, MNIST ID + OOD test splits"),
            ("wrn16_1", "one evaluation, WRN-16-1, 2,000 images 3×32×32"),
        ):
            f, b = ev[key]["fp32"], ev[key]["bf16"]
            lines.append(
                f"| {label} | {f:.0f} ms | {b:.0f} ms | {f / b:.2f}× | {ev['load1']:.1f} |"
            )
    acc = res.get("accuracy")
    if acc:
        ld = acc["load1"]
        f, b = acc["fp32"], acc["bf16"]
        n = len(acc["runs"]) // 2
        lines.append(
            f"| (a′) `run --preset clean-dfq --seconds {res['seconds']:g}`: steps/s (median of "
            f"{n} seeds) | {f['steps_per_s']:.2f} | {b['steps_per_s']:.2f} | "
            f"{b['steps_per_s'] / f['steps_per_s']:.2f}× | {ld['min']:.1f}–{ld['max']:.1f} |"
        )
        lines.append(
            f"| (c) student ID accuracy at {res['seconds']:g} s (median; min) | "
            f"{f['id_acc']:.2%}; {f['id_acc_min']:.2%} | {b['id_acc']:.2%}; {b['id_acc_min']:.2%} "
            f"| {100 * (b['id_acc'] - f['id_acc']):+.2f} pt | {ld['min']:.1f}–{ld['max']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block-s", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-runs", action="store_true", help="step rates only (no 30 s runs)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/precision.json"))
    ap.add_argument("--no-docs", action="store_true", help="do not rewrite performance.md")
    args = ap.parse_args()
    set_threads(args.threads)
    train_teacher("mnist-clean")
    res: dict = {
        "machine": machine(),
        "threads": args.threads,
        "native_bf16": cpu_has_bf16(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": args.seconds,
    }
    res["mnist"] = alternate(mnist_engine, args.rounds, args.block_s)
    print(f"mnist {res['mnist']}", file=sys.stderr, flush=True)
    res["wrn"] = alternate(wrn_engine, args.rounds, args.block_s)
    print(f"wrn {res['wrn']}", file=sys.stderr, flush=True)
    res["eval_ms"] = eval_times(args.rounds)
    print(f"eval {res['eval_ms']}", file=sys.stderr, flush=True)
    if not args.skip_runs:
        res["accuracy"] = accuracy_runs(args.seeds, args.seconds, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1))
    md = table(res)
    print(md)
    if not args.no_docs and not write_section("results/performance.md", "precision", md):
        print("docs/results/performance.md has no precision markers: table not written")


if __name__ == "__main__":
    main()
