"""A deliberately plain, readable DFQ loop — the reference the engine is measured against.

Same algorithm family as the engine's ``dfq`` (adversarial + BN statistics + class prior + balance,
1 generator step then 5 student steps on *fresh* samples each), written the straightforward way:
default memory layout, no replay memory, no sample reuse, evaluation every 20 steps. It prints the
student's ID accuracy over wall time and a JSON line at the end.

    python benchmarks/plain_dfq.py --seconds 40 [--seed 0] [--teacher mnist-clean]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from dfkd_viz.analysis import accuracy
from dfkd_viz.data import load_dataset
from dfkd_viz.distill.losses import BNStatsHook
from dfkd_viz.models import Generator, create_model
from dfkd_viz.teachers import load_teacher, train_teacher


class PlainDFQ:
    """The plain loop's state: teacher, student, generator, optimisers (built with ``seed``)."""

    def __init__(self, teacher_id: str = "mnist-clean", seed: int = 0, batch_size: int = 128):
        train_teacher(teacher_id)
        self.teacher, self.card = load_teacher(teacher_id)
        torch.manual_seed(seed)
        mean, std = tuple(self.card["mean"]), tuple(self.card["std"])
        self.student = create_model("lenet5", mean=mean, std=std)
        self.gen = Generator(nz=100, ngf=16, mean=mean, std=std)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
        self.opt_s = torch.optim.Adam(self.student.parameters(), lr=2e-3)
        self.hook = BNStatsHook(self.teacher)
        self.batch_size = batch_size

    def step(self) -> None:
        """One outer iteration: a generator step, then five student steps on fresh samples."""
        teacher, student, gen, hook, b = (
            self.teacher,
            self.student,
            self.gen,
            self.hook,
            self.batch_size,
        )
        # generator: fool the student, match BN statistics, be confident, cover the classes
        x = gen(torch.randn(b, 100))
        hook.enabled = True
        t = teacher(x)
        hook.enabled = False
        s = student(x)
        p = F.softmax(t, 1).mean(0)
        loss_g = (
            -F.l1_loss(s, t)
            + hook.loss()
            + F.cross_entropy(t, t.argmax(1))
            + 20 * (p * p.clamp_min(1e-8).log()).sum()
        )
        self.opt_g.zero_grad()
        loss_g.backward()
        self.opt_g.step()
        # student: five steps, each on fresh synthetic samples
        for _ in range(5):
            with torch.no_grad():
                x = gen(torch.randn(b, 100))
                t = teacher(x)
            loss_s = F.l1_loss(student(x), t)
            self.opt_s.zero_grad()
            loss_s.backward()
            self.opt_s.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher", default="mnist-clean")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    loop = PlainDFQ(args.teacher, args.seed, args.batch_size)
    test = load_dataset(loop.card["dataset"], "test")
    t0 = time.perf_counter()
    step, curve = 0, []
    while time.perf_counter() - t0 < args.seconds:
        loop.step()
        step += 1
        if step % 20 == 0:
            acc = accuracy(loop.student, test)
            curve.append((round(time.perf_counter() - t0, 2), step, acc))
            print(f"{curve[-1][0]:7.1f} s  step {step:5d}  ID acc {acc:.2%}", flush=True)
    wall = time.perf_counter() - t0
    acc = accuracy(loop.student, test)
    print(
        json.dumps(
            {
                "loop": "plain",
                "seconds": round(wall, 2),
                "steps": step,
                "it_s": round(step / wall, 2),
                "id_acc": acc,
                "teacher_id_acc": loop.card["id_acc"],
                "curve": curve,
            }
        )
    )


if __name__ == "__main__":
    main()
