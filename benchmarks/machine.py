"""The engine against the machine: achieved GFLOP/s of a DFKD step (FLOPs counted with torch's
``FlopCounterMode``, forward and backward) next to the fp32 rates this CPU reaches on a large
matmul and on a channels-last 3×3 convolution of the students' size, measured in the same process.

    python benchmarks/machine.py [--method dfq] [--steps 40] [--threads N]
        [--out benchmarks/results/machine.json]

Prints the machine (CPU model, cores, torch version and threads), the three rates and
``kernel_fraction`` = achieved / the better of the two peaks (issue #12's goal: ≥ 50 %).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from dfkd_viz.runs.build import build_engine, set_threads
from dfkd_viz.runs.config import validate_config
from dfkd_viz.teachers import train_teacher


def load_avg() -> str:
    """The 1 / 5 / 15-minute load average now, as text (a shared machine slows every figure:
    each benchmark records it next to its measurements)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def _rate(fn, flops: float, min_s: float = 1.0) -> float:
    """GFLOP/s of ``fn`` (``flops`` per call): warm-up, then calls until ``min_s`` seconds pass."""
    for _ in range(3):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s:
        fn()
        n += 1
    return flops * n / (time.perf_counter() - t0) / 1e9


@torch.inference_mode()
def matmul_gflops(n: int = 1024) -> float:
    """fp32 ``(n×n) @ (n×n)`` rate, GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return _rate(lambda: a @ b, 2.0 * n**3)


@torch.inference_mode()
def conv_gflops(batch: int = 128, c: int = 32, hw: int = 14) -> float:
    """fp32 channels-last 3×3 convolution rate (``c → c`` channels on ``hw × hw``), GFLOP/s."""
    x = torch.randn(batch, c, hw, hw).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3).contiguous(memory_format=torch.channels_last)
    flops = 2.0 * batch * c * c * 9 * hw * hw
    return _rate(lambda: F.conv2d(x, w, padding=1), flops)


def quiet_engine(method: str = "dfq", steps: int = 10_000, seed: int = 0, **extra):
    """An engine on the clean MNIST teacher with evaluation, snapshots, checkpoints and the
    embedding map out of the way, and a function running one step (generator phase + student
    phase, as the engine's own loop does). ``extra``: more RunConfig fields."""
    cfg = validate_config(
        {
            "teacher": "mnist-clean",
            "method": method,
            "steps": steps,
            "seed": seed,
            "embedding": False,
            "eval_every": 1_000_000,
            "snapshot_every": 1_000_000,
            "checkpoint_every": 1_000_000,
            **extra,
        }
    )
    eng = build_engine(cfg)

    def one_step() -> None:
        eng.set_lr()
        eng.generator_phase()
        eng.student_phase()
        eng.step += 1

    return eng, one_step


def step_flops_and_rate(method: str, steps: int, seed: int = 0) -> dict:
    """FLOPs of one engine step (generator + student phase, forward and backward) and the rate
    achieved over ``steps`` steps without evaluation or snapshots."""
    _, one_step = quiet_engine(method, seed=seed)

    for _ in range(3):  # warm-up: memory filled, kernels chosen
        one_step()
    with FlopCounterMode(display=False) as counter:
        one_step()
    flops = float(counter.get_total_flops())
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step()
    wall = time.perf_counter() - t0
    return {
        "method": method,
        "flops_per_step": flops,
        "it_s": steps / wall,
        "achieved_gflops": flops * steps / wall / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="dfq")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/machine.json"))
    args = ap.parse_args()
    set_threads(args.threads)
    train_teacher("mnist-clean")
    out = {"machine": machine()}
    out["matmul_gflops"] = matmul_gflops()
    out["conv_cl_gflops"] = conv_gflops()
    out.update(step_flops_and_rate(args.method, args.steps))
    out["kernel_fraction"] = out["achieved_gflops"] / max(
        out["matmul_gflops"], out["conv_cl_gflops"]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    m = out["machine"]
    print(f"{m['cpu']} · {m['cores']} cores · torch {m['torch']} · {m['threads']} threads")
    print(
        f"fp32 matmul {out['matmul_gflops']:.1f} GFLOP/s · channels-last conv "
        f"{out['conv_cl_gflops']:.1f} GFLOP/s"
    )
    print(
        f"{args.method}: {out['flops_per_step'] / 1e9:.2f} GFLOP per step, {out['it_s']:.2f} it/s, "
        f"{out['achieved_gflops']:.1f} GFLOP/s achieved = {100 * out['kernel_fraction']:.0f} % of the better peak"
    )


if __name__ == "__main__":
    main()
