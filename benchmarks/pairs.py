"""The scenario pairs, measured: each pair of ``dfkd_viz.runs.presets.PAIRS`` is started the way
Home's "Run the pair" button and ``dfkd-viz run --pair`` start it (both runs at once, each with
half the cores), one pair after another, and the finished runs' final metrics are tabled.

    python benchmarks/pairs.py [--pairs NAME ...] [--seeds 0] [--timeout 1800]
        [--out benchmarks/results/pairs.json] [--docs]

The runs are ordinary runs in the run store (``DFKD_VIZ_HOME``): Live, Runs and Compare can open
them, and the table names them. Results are appended to ``--out`` pair by pair; a rerun skips the
(pair, seed) rows already there (``--fresh`` measures them again). ``--docs`` writes the table into
``docs/results/pairs.md`` between its ``pairs`` markers. Prints the Markdown table.

Per run (in the table): the student's ID accuracy (real MNIST test digits), its share of the
teacher's ID accuracy, OOD accuracy (the run's OOD domain), ASR (triggered non-target images sent
to the target), student-domain accuracy (out-of-domain runs), the classes whose ID accuracy is
below ``--weak`` (80 %) at the last evaluation with the class they are most often taken for, and
the per-source-class ASR range. The JSON also keeps the per-class lists, every evaluation (the
curves) and what the defense did over the run (``traces``), the sources of the pairs' "what to
look for" texts. ``--reread`` runs nothing and reads the runs named in ``--out`` again. Fractions
are stored as fractions, shown as percentages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, load_avg

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("dfkd-viz"))


def start_pair(name: str, seed: int) -> list[str]:
    """``dfkd-viz run --pair NAME --seed S --json`` → the two run ids (raises on a CLI error)."""
    r = subprocess.run(
        [CLI, "run", "--pair", name, "--seed", str(seed), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(f"run --pair {name} failed: {r.stderr.strip()}")
    return json.loads(r.stdout.strip().splitlines()[-1])["run_ids"]


def weak_classes(run_dir: Path, threshold: float) -> list[dict]:
    """Classes with ID accuracy below ``threshold`` at the run's last per-class evaluation:
    ``[{"class": k, "acc": fraction, "taken_for": the most frequent wrong prediction}]``,
    weakest first (empty when the run recorded no per-class evaluation)."""
    from dfkd_viz.runs.store import RunReader

    with RunReader(run_dir) as r:
        acc = r.per_class("id_acc")
        conf = r.per_class("id_confusion")
    if acc is None:
        return []
    out = []
    for k in np.argsort(acc):
        if not acc[k] < threshold:
            break
        taken = None
        if conf is not None:
            row = np.array(conf[k], dtype=float)
            row[k] = -1
            taken = int(row.argmax())
        out.append({"class": int(k), "acc": round(float(acc[k]), 4), "taken_for": taken})
    return out


CURVE = ("id_acc", "ood_acc", "asr", "student_domain_acc")
"""The metrics of every evaluation kept in the JSON (the curves Compare overlays)."""


def curve(run_dir: Path) -> dict[str, list]:
    """The run's evaluations: ``{"step": [...], NAME: [...]}`` for the metrics of :data:`CURVE`
    it recorded (fractions rounded to 4 digits, None where an evaluation lacks one)."""
    from dfkd_viz.runs.store import RunReader

    with RunReader(run_dir) as r:
        df = r.metrics_wide(list(CURVE))
    df = df.dropna(subset=["id_acc"]) if "id_acc" in df else df.iloc[:0]
    out: dict[str, list] = {"step": [int(s) for s in df["step"]]}
    for name in CURVE:
        if name in df and df[name].notna().any():
            out[name] = [None if v != v else round(float(v), 4) for v in df[name]]
    return out


TRACES = (
    "ood_likeness",
    "kept_frac",
    "sv_active",
    "sv_tail",
    "sr_active",
    "sr_target_class",
    "sr_target_success",
)


def traces(run_dir: Path) -> dict[str, dict]:
    """What the defense (and the map) did over the run, for the metrics of :data:`TRACES` it
    recorded: ``{NAME: {"mean", "last", "first_on"}}`` (``first_on``: the first step where the
    value is > 0, or None). ``ood_likeness`` is the share of a snapshot's synthetic samples the
    teacher's map places among OOD points; ``kept_frac`` the share a defense keeps; ``sv_active``
    / ``sr_active`` whether ABD's Shuffling Vaccine / Self-Retrospection act at a step,
    ``sv_tail`` the Vaccine's share of backdoor-like samples (it switches on above 2 %),
    ``sr_target_class`` / ``sr_target_success`` the class Self-Retrospection's trigger aims at and
    the share of a batch it sends there on the teacher."""
    from dfkd_viz.runs.store import RunReader

    with RunReader(run_dir) as r:
        df = r.metrics_wide(list(TRACES))
    out = {}
    for name in TRACES:
        if name not in df or not df[name].notna().any():
            continue
        sel = df[["step", name]].dropna()
        on = sel[sel[name] > 0]
        out[name] = {
            "mean": round(float(sel[name].mean()), 4),
            "last": round(float(sel[name].iloc[-1]), 4),
            "first_on": int(on["step"].iloc[0]) if len(on) else None,
        }
    return out


def measure(run_id: str, weak: float) -> dict:
    """The finished run's record for the table (see the module docstring)."""
    from dfkd_viz.runs import manager
    from dfkd_viz.teachers import card

    info = manager.run_info(run_id)
    cfg = info["config"]
    t_acc = card(cfg["teacher"]).get("id_acc")
    asr_pc = [a for a in (info.get("per_class_asr") or []) if a is not None]
    return {
        "run_id": run_id,
        "preset": cfg.get("preset"),
        "status": info["status"],
        "teacher": cfg["teacher"],
        "method": cfg["method"],
        "defense": cfg.get("defense") or "none",
        "threads": cfg.get("threads"),
        "steps": info.get("step"),
        "wall_s": round(info.get("wall_s") or 0.0, 1),
        "id_acc": info.get("id_acc"),
        "teacher_id_acc": t_acc,
        "ood_acc": info.get("ood_acc"),
        "asr": info.get("asr"),
        "student_domain_acc": info.get("student_domain_acc"),
        "per_class_id_acc": info.get("per_class_id_acc"),
        "per_class_asr": info.get("per_class_asr"),
        "asr_range": [min(asr_pc), max(asr_pc)] if asr_pc else None,
        "weak_classes": weak_classes(manager.run_dir(run_id), weak),
        "curve": curve(manager.run_dir(run_id)),
        "traces": traces(manager.run_dir(run_id)),
        "error": info.get("error"),
    }


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def markdown(rows: list[dict]) -> str:
    """One table row per run, the pairs in registry order, seeds ascending."""
    from dfkd_viz.runs.presets import PAIRS

    order = {name: i for i, name in enumerate(PAIRS)}
    out = [
        "| pair | seed | run | preset | teacher · method · defense | ID acc % | % of teacher | "
        "OOD acc % | ASR % (per class) | student-domain acc % | ID classes < 80 % (taken for) "
        "| steps | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (order.get(r["pair"], 99), r["seed"])):
        for m in row["runs"]:
            rel = (
                f"{100 * m['id_acc'] / m['teacher_id_acc']:.1f}"
                if m["id_acc"] is not None and m["teacher_id_acc"]
                else "—"
            )
            asr = _pct(m["asr"])
            if m["asr_range"]:
                asr += f" ({_pct(m['asr_range'][0])}–{_pct(m['asr_range'][1])})"
            weak = (
                ", ".join(
                    f"{w['class']}: {_pct(w['acc'])}"
                    + (f" ({w['taken_for']})" if w["taken_for"] is not None else "")
                    for w in m["weak_classes"]
                )
                or "none"
            )
            out.append(
                f"| `{row['pair']}` | {row['seed']} | `{m['run_id']}` | `{m['preset']}` | "
                f"{m['teacher']} · {m['method']} · {m['defense']} | {_pct(m['id_acc'])} | {rel} | "
                f"{_pct(m['ood_acc'])} | {asr} | {_pct(m['student_domain_acc'])} | {weak} | "
                f"{m['steps']} | {m['wall_s']:.0f} |"
            )
    return "\n".join(out)


def main() -> int:
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.presets import PAIRS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per pair")
    ap.add_argument("--weak", type=float, default=0.8, help="a class is weak below this ID acc")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pairs.json")
    ap.add_argument("--fresh", action="store_true", help="measure pairs already in --out again")
    ap.add_argument(
        "--reread",
        action="store_true",
        help="run nothing: read the runs named in --out from the run store again (e.g. after "
        "this script records more), then print and write the table",
    )
    ap.add_argument("--docs", action="store_true", help="write the table into docs/results/")
    args = ap.parse_args()

    rows: list[dict] = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    if args.reread:
        for row in rows:
            row["runs"] = [measure(m["run_id"], args.weak) for m in row["runs"]]
        args.out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    for name in [] if args.reread else args.pairs:
        for seed in args.seeds:
            if not args.fresh and any(r["pair"] == name and r["seed"] == seed for r in rows):
                continue
            load_before = load_avg()
            t0 = time.time()
            run_ids = start_pair(name, seed)
            print(f"{name} seed {seed}: {' '.join(run_ids)}", file=sys.stderr, flush=True)
            for run_id in run_ids:
                st = manager.wait(run_id, timeout_s=max(1.0, args.timeout - (time.time() - t0)))
                if st["state"] in ("queued", "running"):
                    manager.stop(run_id, wait_s=30)
                    raise SystemExit(f"{name}: run {run_id} did not finish in {args.timeout:g} s")
            row = {
                "pair": name,
                "seed": seed,
                "date": time.strftime("%Y-%m-%d"),
                "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
                "load_before": load_before,
                "runs": [measure(run_id, args.weak) for run_id in run_ids],
            }
            rows = [r for r in rows if not (r["pair"] == name and r["seed"] == seed)] + [row]
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
            print(json.dumps(row), file=sys.stderr, flush=True)
    md = markdown(rows)
    print(md)
    if args.docs:
        from _docs import write_section

        if not write_section("results/pairs.md", "pairs", md):
            print("docs/results/pairs.md has no pairs markers: table not written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
