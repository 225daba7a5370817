"""The ``sweep`` and ``sweeps`` commands."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from dfkd_viz.cli._common import Parser, print_json
from dfkd_viz.errors import DfkdVizError

STOP_WAIT_S = 90.0
"""``sweeps stop``'s default wait, seconds: a local run's stop (up to 30 s), or on Ray the stop
grace of the cells in flight (``STOP_GRACE_S``, 25 s) plus shipping their runs back."""


def _sweep_report(sweep_id: str) -> dict[str, Any]:
    from dfkd_viz.runs.sweep import summarize, sweep_results, sweep_status

    df = sweep_results(sweep_id)
    st = sweep_status(sweep_id, df)
    rows = df.astype(object).where(df.notna(), None).to_dict("records")
    return {**st, "summary": summarize(df), "rows": rows}


def _print_sweep_table(rep: dict[str, Any]) -> None:
    summ = rep["summary"]
    print(
        f"sweep {rep['sweep_id']}: {rep['state']}, {rep['done']}/{rep['total']} runs finished; "
        "student ID accuracy in % of the teacher's"
    )
    print(f"{'teacher':24} {'method':10} {'mean':>6} {'std':>5} {'min':>6} {'runs':>4}")
    for c in summ["cells"]:
        print(
            f"{c['teacher']:24} {c['method']:10} {c['mean']:6.1f} {c['std']:5.1f} {c['min']:6.1f} {c['n']:4d}"
        )
    for m, v in summ["methods"].items():
        w = v["worst"]
        print(
            f"{'all teachers':24} {m:10} {v['mean']:6.1f} {v['std']:5.1f} {v['min']:6.1f} {v['n']:4d}"
            f"   worst: {w['teacher']} seed {w['seed']}"
        )
    if summ["best_method"]:
        print(f"most stable (highest minimum): {summ['best_method']}")
    for r in rep.get("rows", []):
        if r.get("status") == "failed" and r.get("error"):
            print(f"failed: {r['teacher']} × {r['method']} seed {r['seed']}: {r['error']}")


def cmd_sweep(args) -> int:
    from tqdm import tqdm

    from dfkd_viz.runs import sweep as sw

    stored = None
    if args.resume:
        sw.load_sweep(args.resume)
        stored = sw.sweep_executor(args.resume).name
    executor = _executor_options(args, stored)
    if args.resume:
        sweep_id = args.resume
        if executor:  # resume elsewhere: the stored choice, updated by the options given
            sw.set_executor(sweep_id, {**sw.sweep_executor(sweep_id).model_dump(), **executor})
    else:
        if not args.teachers or not args.methods:
            raise DfkdVizError("--teachers and --methods are required (or --resume SWEEP_ID)")
        base = {}
        if args.eval_every:
            base["eval_every"] = args.eval_every
        if args.precision:
            base["precision"] = args.precision
        if args.student:
            base["student"] = args.student
        sweep_id = sw.create_sweep(
            {
                "teachers": args.teachers,
                "methods": args.methods,
                "seeds": args.seeds,
                "steps": args.steps,
                "seconds": args.seconds,
                "threads": args.threads,
                "embedding": args.embedding,
                "base": base,
            },
            executor,
        )
    sw.start_runner(sweep_id)
    if args.background:
        print_json({"sweep_id": sweep_id}) if args.json else print(sweep_id)
        return 0
    interrupted = {"sig": 0}

    def on_signal(signum, frame):
        interrupted["sig"] = signum

    old = signal.signal(signal.SIGINT, on_signal), signal.signal(signal.SIGTERM, on_signal)
    print(f"sweep {sweep_id} started (resume it with --resume {sweep_id})", file=sys.stderr)
    _, cells = sw.load_sweep(sweep_id)
    bar = tqdm(total=len(cells), file=sys.stderr, unit="run", desc=sweep_id)
    stopping = False
    try:
        time.sleep(1.0)
        while True:
            if interrupted["sig"] and not stopping:
                stopping = True
                bar.write("stopping the sweep (the current run checkpoints)…", file=sys.stderr)
                sw.stop_sweep(sweep_id)
            df = sw.sweep_results(sweep_id)
            bar.n = int((df["status"] == "finished").sum())
            cur = df[df["status"].isin(["queued", "running"])]
            if len(cur):
                c = cur.iloc[0]
                bar.set_postfix_str(f"{c['teacher']} × {c['method']} seed {c['seed']}")
            bar.refresh()
            if not sw.runner_alive(sweep_id):
                break
            time.sleep(1.0)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, old[0])
        signal.signal(signal.SIGTERM, old[1])
    rec = sw.runner_progress(sweep_id)
    if rec is not None and rec.state == "failed" and not rec.result and rec.error:
        raise DfkdVizError(f"sweep {sweep_id} failed: {rec.error}")  # e.g. no node has a GPU
    rep = _sweep_report(sweep_id)
    if rep.get("error"):
        print(f"sweep {sweep_id}: the runner failed: {rep['error']}", file=sys.stderr)
    if args.json:
        print_json(rep)
    else:
        _print_sweep_table(rep)
    if interrupted["sig"]:
        return 128 + interrupted["sig"]
    return 0 if rep["state"] == "finished" else 1


def _executor_options(args, stored: str | None = None) -> dict[str, Any]:
    """The executor options given on the command line (only those given). ``stored``: the
    executor of the sweep being resumed, which applies when ``--executor`` is not given.

    Raises:
        DfkdVizError: a Ray option (``--ray-address``, ``--cpus-per-run``, ``--gpus-per-run``)
            for a sweep whose executor is not ``ray``.
    """
    out: dict[str, Any] = {}
    if args.executor:
        out["name"] = args.executor
    for key in ("ray_address", "cpus_per_run", "gpus_per_run"):
        if getattr(args, key) is not None:
            out["address" if key == "ray_address" else key] = getattr(args, key)
    name = out.get("name", stored or "local")
    if set(out) - {"name"} and name != "ray":
        msg = "--ray-address, --cpus-per-run and --gpus-per-run need --executor ray"
        if "name" not in out and stored:
            msg += f" (sweep {args.resume} runs on the {stored} executor)"
        raise DfkdVizError(msg)
    return out


def cmd_sweeps_list(args) -> int:
    from dfkd_viz.runs.sweep import list_sweeps

    items = list_sweeps()
    if args.json:
        print_json(items)
        return 0
    for s in items:
        spec = s.get("spec") or {}
        print(
            f"{s['sweep_id']:28} {s['state']:9} {s.get('done', 0):>3}/{s.get('total', 0):<3} "
            f"{','.join(spec.get('methods', []))} on {len(spec.get('teachers', []))} teachers"
        )
    return 0


def cmd_sweeps_show(args) -> int:
    rep = _sweep_report(args.sweep_id)
    if args.json:
        print_json(rep)
    else:
        _print_sweep_table(rep)
    return 0


def cmd_sweeps_stop(args) -> int:
    """Stop a sweep's runner and wait for it; exit code 1 when it is still stopping after
    ``--wait`` seconds (it keeps stopping in the background)."""
    from dfkd_viz.runs.sweep import runner_alive, stop_sweep, sweep_dir

    sweep_dir(args.sweep_id)
    stop_sweep(args.sweep_id, wait_s=args.wait)
    if runner_alive(args.sweep_id):
        print(
            f"sweep {args.sweep_id} is still stopping after {args.wait:g} s (its runs are "
            f"checkpointing or on their way back); dfkd-viz sweeps show {args.sweep_id} tells "
            "when it has stopped"
        )
        return 1
    print(
        f"sweep {args.sweep_id} stopped; continue it with dfkd-viz sweep --resume {args.sweep_id}"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    from dfkd_viz.runs.executors import EXECUTORS

    sw = sub.add_parser(
        "sweep",
        help="distil a grid of teachers × methods × seeds in the background, here one run after "
        "another or on a Ray cluster (resumable)",
    )
    sw.add_argument("--teachers", nargs="+", metavar="ID")
    sw.add_argument(
        "--methods", nargs="+", metavar="NAME", help="methods, or METHOD+DEFENSE (dfq+ta-select)"
    )
    sw.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="K")
    sbudget = sw.add_mutually_exclusive_group()
    sbudget.add_argument("--steps", type=int, help="steps per run (default: each method's)")
    sbudget.add_argument("--seconds", type=float, help="wall-clock seconds per run")
    sw.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads per run (default: all cores; on Ray: --cpus-per-run, rounded up)",
    )
    sw.add_argument("--eval-every", type=int, help="evaluate every N steps")
    sw.add_argument(
        "--student",
        metavar="ARCH",
        help="every run's student architecture (default lenet5; it must take every teacher's "
        "images)",
    )
    sw.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        help="every run's precision (default fp32; fp16: CUDA only)",
    )
    sw.add_argument(
        "--embedding", action="store_true", help="fit each run's UMAP map (off by default)"
    )
    sw.add_argument(
        "--executor",
        choices=EXECUTORS.names(),
        help="where the runs go: this machine, one after another (local, the default), or a Ray "
        "cluster (ray; docs/scale-out.md); --resume keeps the sweep's own unless given",
    )
    sw.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster (HOST:PORT; default: RAY_ADDRESS, else a Ray instance started here)",
    )
    sw.add_argument("--cpus-per-run", type=float, metavar="N", help="Ray CPUs per run (default 1)")
    sw.add_argument("--gpus-per-run", type=float, metavar="N", help="Ray GPUs per run (default 0)")
    sw.add_argument("--resume", metavar="SWEEP_ID", help="continue a stopped sweep")
    sw.add_argument("--json", action="store_true", help="print the results as one JSON line")
    sw.add_argument("--background", action="store_true", help="return at once, print the id")
    sw.set_defaults(func=cmd_sweep)

    sws = sub.add_parser("sweeps", help="the sweeps")
    swsub = sws.add_subparsers(dest="sweeps_command", required=True, parser_class=Parser)
    swl = swsub.add_parser("list")
    swl.add_argument("--json", action="store_true")
    swl.set_defaults(func=cmd_sweeps_list)
    sws_show = swsub.add_parser("show")
    sws_show.add_argument("sweep_id")
    sws_show.add_argument("--json", action="store_true")
    sws_show.set_defaults(func=cmd_sweeps_show)
    sws_stop = swsub.add_parser("stop")
    sws_stop.add_argument("sweep_id")
    sws_stop.add_argument(
        "--wait",
        type=float,
        default=STOP_WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait for the runner to stop (default {STOP_WAIT_S:g}; on Ray the "
        "running cells get 25 s to checkpoint, then ship their runs back); exit code 1 when it "
        "is still stopping",
    )
    sws_stop.set_defaults(func=cmd_sweeps_stop)
