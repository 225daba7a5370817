"""Shared plumbing of the study benchmarks (``ntl_trap.py``, ``backdoor.py``): one in-process run
through the engine the worker uses, defense specs on the command line, and a resumable results
file (every finished run is appended at once; a rerun skips the runs already there)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from dfkd_viz.runs.build import build_engine
from dfkd_viz.runs.config import validate_config


def parse_defense(spec: str) -> tuple[str, dict]:
    """``"atesc:group=class,epsilon=0.03"`` → ``("atesc", {"group": "class", "epsilon": 0.03})``
    (values are JSON when they parse as JSON, else strings)."""
    name, _, rest = spec.partition(":")
    params = {}
    for kv in filter(None, rest.split(",")):
        k, _, v = kv.partition("=")
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    return name, params


def run_one(
    teacher: str,
    method: str,
    defense: str,
    seed: int,
    steps: int | None,
    seconds: float | None,
    **extra,
) -> dict:
    """Distil once (no store, evaluation at the end only) and return the final metrics:
    ``id_acc``, ``ood_acc``, ``asr``, ``trigger_loc``, ``student_domain_acc`` (fractions or None),
    ``steps``, ``wall_s``."""
    name, params = parse_defense(defense)
    cfg = {
        "teacher": teacher,
        "method": method,
        "defense": name,
        "defense_params": params,
        "seed": seed,
        "eval_every": 1_000_000,
        "embedding": False,
        **{k: v for k, v in extra.items() if v is not None},
    }
    cfg.update({"steps": steps} if steps else {"seconds": seconds})
    eng = build_engine(validate_config(cfg))
    t0 = time.perf_counter()
    final = eng.run()
    return {
        "id_acc": final["id_acc"],
        "ood_acc": final["ood_acc"],
        "asr": final["asr"],
        "trigger_loc": final.get("trigger_loc"),
        "student_domain_acc": final.get("student_domain_acc"),
        "steps": final["step"],
        "wall_s": time.perf_counter() - t0,
    }


class Results:
    """Rows of a study in a JSON file ``{"rows": [...]}``, appended run by run."""

    def __init__(self, path: Path, key_fields: Iterable[str]) -> None:
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.rows: list[dict] = (
            json.loads(self.path.read_text())["rows"] if self.path.exists() else []
        )
        self._done = {self.key(r) for r in self.rows}

    def key(self, row: dict) -> tuple:
        return tuple(row.get(k) for k in self.key_fields)

    def has(self, **fields) -> bool:
        return self.key(fields) in self._done

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self._done.add(self.key(row))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"rows": self.rows}, indent=1))
        print(json.dumps(row), file=sys.stderr, flush=True)


def ms(values: list[float | None], scale: float = 100.0) -> str:
    """``mean ± std`` of fractions as percentages (one value: the value; none: ``—``)."""
    v = [scale * x for x in values if x is not None]
    if not v:
        return "—"
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"


def study_args(
    description: str, teachers: list[str], methods: list[str], defenses: list[str], out: str
) -> tuple[argparse.Namespace, int | None, str]:
    """The command line shared by the studies (``--teachers --clean --methods --steps|--seconds
    --seeds --defenses --out``); returns ``(args, steps or None, budget text)`` with 200 steps as
    the default budget. Also sets torch's threads and trains the teachers the study needs."""
    from dfkd_viz.runs.build import set_threads
    from dfkd_viz.teachers import train_teacher

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--teachers", nargs="+", default=teachers)
    ap.add_argument("--clean", default="mnist-clean")
    ap.add_argument("--methods", nargs="+", default=methods)
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int)
    budget.add_argument("--seconds", type=float)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--defenses", nargs="+", default=defenses)
    ap.add_argument("--out", type=Path, default=Path(out))
    args = ap.parse_args()
    steps = args.steps or (None if args.seconds else 200)
    set_threads(None)
    for tid in [args.clean, *args.teachers]:
        train_teacher(tid)
    return args, steps, f"{steps} steps" if steps else f"{args.seconds:g} s"


def run_grid(
    res: Results,
    args: argparse.Namespace,
    steps: int | None,
    budget: str,
    field: str,
    run_kw: Callable[[str], dict],
) -> None:
    """For each method, studied teacher (recorded under ``field``) and seed: the clean teacher
    without a defense, then the studied teacher with every defense; runs already in ``res`` are
    skipped. ``run_kw(teacher_id)`` gives the extra :func:`run_one` arguments (OOD domain, trigger)."""
    for method in args.methods:
        for tid in args.teachers:
            kw = run_kw(tid)
            jobs = [(args.clean, "none")] + [(tid, d) for d in args.defenses]
            for seed in args.seeds:
                for teacher, d in jobs:
                    key = {
                        field: tid,
                        "teacher": teacher,
                        "method": method,
                        "defense": d,
                        "seed": seed,
                        "budget": budget,
                    }
                    if not res.has(**key):
                        r = run_one(teacher, method, d, seed, steps, args.seconds, **kw)
                        res.add({**r, **key})
