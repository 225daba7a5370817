"""``make gpu-check``: the GPU path (``--device cuda``) per precision, on a machine with a GPU.

    python scripts/gpu_check.py [--seconds 60] [--precisions fp32 bf16 fp16]
        [--out benchmarks/results/gpu_check.json]

Scenarios, each distilled for ``--seconds`` of wall clock per precision (``fp32``, ``bf16`` where
the GPU has it, ``fp16`` with loss scaling), through the product's engine and its CUDA setup
(channels-last models, cuDNN autotuning, pinned evaluation data):

- ``colour-dfq``: the preset of that name (a WRN-16-2 teacher on 32×32 colour digits → WRN-16-1,
  DFQ; the teacher is trained first if needed) — skipped with a message when this checkout has
  no such preset;
- ``resnet34→resnet18``: DFQ on CIFAR-10-shaped inputs (3×32×32). The teacher is a trained
  ``resnet34`` from the zoo on ``cifar10`` when there is one (then accuracy is measured on the
  CIFAR-10 test split, if that data is here); otherwise random weights, which is enough for
  throughput (accuracy then shows as ``—``).

Prints one line per scenario and precision: iterations/s (steps / wall seconds, evaluation
included), peak GPU memory (``torch.cuda.max_memory_allocated``) and the student's final accuracy;
writes the rows as JSON.

Exit codes: 0 done; 1 a scenario failed; **3 no CUDA GPU** — a distinct code rather than 0, so a
CI job or a script cannot mistake "nothing was measured" for a passed check, and rather than 1,
so it is not mistaken for a failure either (``make gpu-check`` passes it on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from dfkd_viz.models.cifar import CIFAR10_MEAN, CIFAR10_STD

NO_GPU = 3
NO_GPU_MESSAGE = (
    "no CUDA GPU found: gpu-check measures the GPU path; on this machine use make bench"
)
CIFAR_MEAN, CIFAR_STD = CIFAR10_MEAN, CIFAR10_STD  # the statistics CMI trains with


def _precisions(wanted: list[str]) -> list[str]:
    out = []
    for p in wanted:
        if p == "bf16" and not torch.cuda.is_bf16_supported():
            print("bf16: not supported by this GPU, skipped", file=sys.stderr)
            continue
        out.append(p)
    return out


def _measure(engine) -> dict:
    """Run ``engine`` to its budget; iterations/s, peak GPU memory, final ID accuracy."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    final = engine.run()
    torch.cuda.synchronize()
    return {
        "steps": final["step"],
        "wall_s": round(final["wall_s"], 2),
        "it_s": round(final["step"] / max(final["wall_s"], 1e-9), 2),
        "peak_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "id_acc": final.get("id_acc"),
    }


def colour_dfq(precision: str, seconds: float) -> dict | None:
    """The ``colour-dfq`` preset on the GPU, or None when the preset does not exist."""
    from dfkd_viz.runs.build import build_engine
    from dfkd_viz.runs.config import validate_config
    from dfkd_viz.runs.presets import PRESETS, preset_config
    from dfkd_viz.teachers import is_trained, train_teacher

    if "colour-dfq" not in PRESETS:
        return None
    raw = preset_config(
        "colour-dfq",
        {"seconds": seconds, "device": "cuda", "precision": precision, "embedding": False},
    )
    cfg = validate_config(raw)
    if not is_trained(cfg.teacher):
        print(f"training teacher {cfg.teacher} first…", file=sys.stderr, flush=True)
        train_teacher(cfg.teacher)
    return _measure(build_engine(cfg, "cuda"))


def _cifar_teacher():
    """A trained resnet34 zoo teacher on cifar10 ``(model, card)`` on the GPU, or None."""
    from dfkd_viz.teachers import load_teacher
    from dfkd_viz.teachers.zoo import list_cards

    for c in list_cards():
        if c.get("arch") == "resnet34" and c.get("dataset") == "cifar10" and c.get("trained"):
            return load_teacher(c["id"], "cuda")
    return None


def resnet_dfq(precision: str, seconds: float) -> dict:
    """ResNet-34 → ResNet-18 DFQ on 3×32×32 (a cifar10 teacher from the zoo, or random weights)."""
    from dfkd_viz.data import dataset_available, load_dataset
    from dfkd_viz.data.datasets import ImageDataset
    from dfkd_viz.distill import Budget, Engine, EngineSettings, EvalSuite, create_method
    from dfkd_viz.distill.precision import cuda_layout
    from dfkd_viz.models import Generator, create_model, default_size

    torch.manual_seed(0)
    found = _cifar_teacher()
    if found is not None:
        teacher, card = found
        mean, std = tuple(card["mean"]), tuple(card["std"])
    else:
        teacher, card, mean, std = None, None, CIFAR_MEAN, CIFAR_STD
    kw = {"num_classes": 10, "in_shape": (3, 32, 32), "mean": mean, "std": std}
    if teacher is None:
        teacher = create_model("resnet34", **kw).cuda().eval()
    student = create_model("resnet18", **kw).cuda()
    nz, ngf = default_size((3, 32, 32))
    gen = Generator(nz=nz, ngf=ngf, img_shape=(3, 32, 32), mean=mean, std=std).cuda()
    cuda_layout(teacher, student, gen)
    if card is not None and dataset_available("cifar10"):
        test = load_dataset("cifar10", "test")
    else:  # throughput only: a tiny random set keeps the engine's evaluation cheap
        test = ImageDataset("random", "test", torch.rand(256, 3, 32, 32), torch.zeros(256).long())
    eng = Engine(
        teacher,
        student,
        gen,
        create_method("dfq"),
        None,
        EvalSuite(test),
        Budget(seconds=seconds),
        EngineSettings(
            nz=nz,
            eval_every=50,
            snapshot_every=1_000_000,
            checkpoint_every=1_000_000,
            precision=precision,
        ),
        "cuda",
    )
    row = _measure(eng)
    row["teacher"] = card["id"] if card is not None else "resnet34 (random weights)"
    if test.name == "random":
        row["id_acc"] = None
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="budget per scenario and precision")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_GPU_MESSAGE, file=sys.stderr)
        return NO_GPU
    gpu = torch.cuda.get_device_name(0)
    print(f"GPU: {gpu} · torch {torch.__version__} · {args.seconds:g} s per row", flush=True)
    rows, failed = [], False
    print(f"{'scenario':22} {'precision':9} {'it/s':>8} {'peak MiB':>9} {'accuracy':>9}")
    for name, fn in (("colour-dfq", colour_dfq), ("resnet34→resnet18", resnet_dfq)):
        for p in _precisions(args.precisions):
            try:
                row = fn(p, args.seconds)
            except Exception as exc:
                traceback.print_exc()
                print(f"{name} {p}: failed: {exc}", file=sys.stderr)
                failed = True
                continue
            if row is None:
                print(f"{name}: no such preset in this checkout, skipped", flush=True)
                break
            row.update(scenario=name, precision=p)
            rows.append(row)
            acc = f"{row['id_acc']:.1%}" if row.get("id_acc") is not None else "—"
            print(
                f"{name:22} {p:9} {row['it_s']:8.2f} {row['peak_mem_mib']:9.1f} {acc:>9}",
                flush=True,
            )
            torch.cuda.empty_cache()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"gpu": gpu, "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1)
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
