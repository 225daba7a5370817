"""The ``presets``, ``run`` and ``runs`` commands (and the internal ``worker``)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from dfkd_viz.cli._common import Parser, fmt, parse_params, print_json
from dfkd_viz.errors import DfkdVizError


def cmd_presets(args) -> int:
    from dfkd_viz.distill.methods import METHODS
    from dfkd_viz.runs.presets import PRESETS

    if args.pairs:
        return _list_pairs(args.json)
    items = [
        {
            "name": p.name,
            "title": p.title,
            "description": p.description,
            "config": p.config,
            "tags": list(p.tags),
        }
        for p in PRESETS.values()
    ]
    if args.json:
        print_json(items)
        return 0
    for p in items:
        cfg = p["config"]
        budget = f"{cfg['steps']} steps" if "steps" in cfg else f"{cfg.get('seconds')} s"
        defense = cfg.get("defense") or METHODS.get(cfg["method"]).default_defense or "none"
        print(f"{p['name']:18} {cfg['teacher']:28} {cfg['method']:8} {defense:10} {budget}")
        print(f"{'':18} {p['description']}")
    return 0


def _list_pairs(as_json: bool) -> int:
    """``presets --pairs``: the scenario pairs, as text or one JSON list."""
    from dfkd_viz.runs.presets import PAIRS

    items = [
        {
            "name": p.name,
            "title": p.title,
            "presets": list(p.presets),
            "differs_in": list(p.differs_in),
            "look_for": p.look_for,
            "tags": list(p.tags),
        }
        for p in PAIRS.values()
    ]
    if as_json:
        print_json(items)
        return 0
    for p in items:
        print(
            f"{p['name']:24} {' vs '.join(p['presets'])}  (differ in {', '.join(p['differs_in'])})"
        )
        print(f"{'':24} {p['look_for']}")
    return 0


def _run_summary(run_id: str) -> dict[str, Any]:
    from dfkd_viz.runs.manager import run_info
    from dfkd_viz.teachers import card

    info = run_info(run_id)
    cfg = info["config"]
    try:
        t_acc = card(cfg["teacher"]).get("id_acc")
    except DfkdVizError:
        t_acc = None
    return {
        "run_id": run_id,
        "status": info["status"],
        "preset": cfg.get("preset"),
        "teacher": cfg["teacher"],
        "method": cfg["method"],
        "defense": cfg.get("defense", "none"),
        "seed": cfg.get("seed"),
        "steps": info.get("step"),
        "wall_s": round(info["wall_s"], 2) if info.get("wall_s") is not None else None,
        "id_acc": info.get("id_acc"),
        "ood_acc": info.get("ood_acc"),
        "asr": info.get("asr"),
        "student_domain": cfg.get("student_domain"),
        "student_domain_acc": info.get("student_domain_acc"),
        "teacher_id_acc": t_acc,
        "it_s": info.get("it_s"),
        "device": info.get("device"),
        "precision": cfg.get("precision", "fp32"),
        "error": info.get("error"),
    }


def cmd_run(args) -> int:
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.presets import preset_config

    overrides = {
        "teacher": args.teacher,
        "method": args.method,
        "defense": args.defense,
        "student": args.student,
        "steps": args.steps,
        "seconds": args.seconds,
        "seed": args.seed,
        "device": args.device,
        "precision": args.precision,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "eval_every": args.eval_every,
        "ood_domain": args.ood_domain,
        "trigger": args.trigger,
    }
    if args.param:
        overrides["method_params"] = parse_params(args.param)
    if args.defense_param:
        overrides["defense_params"] = parse_params(args.defense_param)
    if args.pair:
        return _run_pair(args.pair, overrides, args.json)
    raw = preset_config(args.preset, overrides)
    if not args.preset:
        missing = [k for k in ("teacher", "method") if not raw.get(k)]
        if missing:
            raise DfkdVizError(f"--{missing[0]} is required without --preset")
    run_id = manager.create_run(raw)
    manager.start_worker(run_id)
    if args.background:
        if args.json:
            print_json({"run_id": run_id})
        else:
            print(run_id)
        return 0
    return _follow(run_id, args.json)


def _run_pair(name: str, overrides: dict[str, Any], as_json: bool) -> int:
    """``run --pair NAME``: validate both runs' configs, then start both in the background and
    print their ids and the Compare page's URL path (JSON: ``pair``, ``presets``, ``run_ids``,
    ``compare``)."""
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.config import validate_config
    from dfkd_viz.runs.presets import compare_path, get_pair, pair_configs

    pair = get_pair(name)
    configs = pair_configs(name, overrides)
    for raw in configs:  # both valid before either starts
        validate_config(raw)
    run_ids = [manager.create_run(raw) for raw in configs]
    for run_id in run_ids:
        manager.start_worker(run_id)
    if as_json:
        print_json(
            {
                "pair": name,
                "presets": list(pair.presets),
                "run_ids": run_ids,
                "compare": compare_path(run_ids),
            }
        )
    else:
        for run_id, preset in zip(run_ids, pair.presets):
            print(f"{run_id}  {preset}")
        print(compare_path(run_ids))
    return 0


def _follow(run_id: str, as_json: bool) -> int:
    """Follow a run in the foreground with a progress bar; Ctrl-C / SIGTERM stop its worker."""
    from tqdm import tqdm

    from dfkd_viz.runs import manager
    from dfkd_viz.runs.store import ACTIVE_STATES, RunReader

    interrupted = {"sig": 0}

    def on_signal(signum, frame):
        interrupted["sig"] = signum

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    print(f"run {run_id} started", file=sys.stderr)
    bar = tqdm(total=1000, file=sys.stderr, bar_format="{l_bar}{bar}| {postfix}", desc=run_id[-20:])
    stopping = False
    try:
        while True:
            st = manager.effective_status(run_id)
            if not stopping and interrupted["sig"]:
                stopping = True
                bar.write("stopping the worker…", file=sys.stderr)
                if st["state"] in ACTIVE_STATES:
                    manager.stop(run_id, wait_s=0)
            with RunReader(manager.run_dir(run_id)) as r:
                latest = r.latest(("id_acc", "it_s"))
            bar.n = int(1000 * (st.get("progress") or 0))
            acc = latest.get("id_acc")
            its = latest.get("it_s")
            bar.set_postfix_str(
                f"{st['state']} step {st.get('step') or 0}"
                + (f" ID acc {acc:.1%}" if acc is not None else "")
                + (f" {its:.1f} it/s" if its else "")
                + (
                    f" [{st['phase']}]"
                    if st.get("phase") and st.get("phase") not in ("distill", "done")
                    else ""
                )
            )
            bar.refresh()
            if st["state"] not in ACTIVE_STATES:
                break
            time.sleep(0.25)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    summary = _run_summary(run_id)
    if summary["status"] == "failed":
        print(f"run {run_id} failed: {summary['error']}", file=sys.stderr)
    else:
        print(
            f"run {run_id} {summary['status']}: {summary['steps']} steps in {summary['wall_s']} s, "
            f"student ID accuracy {fmt(summary['id_acc'])} (teacher {fmt(summary['teacher_id_acc'])})",
            file=sys.stderr,
        )
    if as_json:
        print_json(summary)
    if interrupted["sig"]:
        return 128 + interrupted["sig"]
    return 0 if summary["status"] == "finished" else 1


def cmd_runs_list(args) -> int:
    from dfkd_viz.runs import manager

    runs = manager.list_runs()
    if args.json:
        print_json(
            [
                {
                    "run_id": r["run_id"],
                    "status": r["status"],
                    "teacher": r["config"].get("teacher"),
                    "method": r["config"].get("method"),
                    "defense": r["config"].get("defense"),
                    "step": r.get("step"),
                    "id_acc": r.get("id_acc"),
                    "ood_acc": r.get("ood_acc"),
                    "asr": r.get("asr"),
                    "error": r.get("error"),
                }
                for r in runs
            ]
        )
        return 0
    if not runs:
        print("no runs yet; start one with `dfkd-viz run --preset clean-dfq`", file=sys.stderr)
    for r in runs:
        c = r["config"]
        print(
            f"{r['run_id']:36} {r['status']:9} {c.get('teacher', '?'):28} {c.get('method', '?'):8} "
            f"step {r.get('step') or 0:>6}  ID {fmt(r.get('id_acc'))}"
        )
    return 0


def cmd_runs_show(args) -> int:
    from dfkd_viz.runs import manager

    info = manager.run_info(args.run_id)
    if args.json:
        print_json(info)
    else:
        for k, v in info.items():
            if k.startswith("per_class_") and isinstance(v, list):  # class: percent
                v = "  ".join(f"{c}: {fmt(x)}" for c, x in enumerate(v))
            print(f"{k:12} {v}")
    return 0


def cmd_runs_stop(args) -> int:
    from dfkd_viz.runs import manager

    st = manager.stop(args.run_id, wait_s=args.wait)
    print(f"run {args.run_id}: {st['state']}", file=sys.stderr)
    return 0


def cmd_runs_resume(args) -> int:
    from dfkd_viz.runs import manager

    manager.resume(args.run_id)
    if args.background:
        print(args.run_id)
        return 0
    return _follow(args.run_id, args.json)


def cmd_runs_delete(args) -> int:
    from dfkd_viz.runs import manager

    manager.delete(args.run_id)
    print(f"run {args.run_id} deleted", file=sys.stderr)
    return 0


_SUFFIX = {"html": ".html", "csv": ".csv", "parquet": ".parquet", "safetensors": ".safetensors"}


def cmd_runs_export(args) -> int:
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.export import export_run

    d = manager.run_dir(args.run_id)
    out = Path(args.out) if args.out else Path(f"{args.run_id}{_SUFFIX[args.format]}")
    try:
        path = export_run(d, args.format, out)
    except OSError as exc:
        raise DfkdVizError(f"could not write {out}: {exc.strerror or exc}") from exc
    print(str(path))
    return 0


def cmd_runs_compare(args) -> int:
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.export import compare_report_html
    from dfkd_viz.util.io import write_atomic
    from dfkd_viz.viz.compare import MAX_RUNS

    if not 2 <= len(args.run_ids) <= MAX_RUNS:
        raise DfkdVizError(
            f"compare needs two to {MAX_RUNS} runs side by side (got {len(args.run_ids)})"
        )
    if args.step is not None and args.step < 0:
        raise DfkdVizError(f"--step must be a step ≥ 0 (got {args.step})")
    dirs = [manager.run_dir(r) for r in args.run_ids]
    out = Path(args.out)
    try:
        write_atomic(out, compare_report_html(dirs, step=args.step))
    except OSError as exc:
        raise DfkdVizError(f"could not write {out}: {exc.strerror or exc}") from exc
    print(str(out))
    return 0


def cmd_runs_fork(args) -> int:
    from dfkd_viz.runs import manager

    out = manager.fork(
        args.run_id,
        args.step,
        defense=args.defense,
        method_params=parse_params(args.param) or None,
        defense_params=parse_params(args.defense_param) or None,
    )
    if out["fork_step"] != out["requested_step"]:
        print(
            f"no checkpoint at step {out['requested_step']}: forking from the nearest kept one "
            f"at or before it, step {out['fork_step']}",
            file=sys.stderr,
        )
    if args.json:
        print_json({k: out[k] for k in ("run_id", "parent_run", "fork_step", "requested_step")})
    else:
        print(out["run_id"])
    return 0


def cmd_worker(args) -> int:
    from dfkd_viz.runs.worker import run_worker

    return run_worker(args.run_dir, args.resume)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    pr = sub.add_parser("presets", help="list the named scenarios")
    pr.add_argument("--json", action="store_true")
    pr.add_argument(
        "--pairs", action="store_true", help="list the scenario pairs (two presets to compare)"
    )
    pr.set_defaults(func=cmd_presets)

    r = sub.add_parser("run", help="distil a student (in a detached worker)")
    scenario = r.add_mutually_exclusive_group()
    scenario.add_argument("--preset", help="a named scenario; explicit options override it")
    scenario.add_argument(
        "--pair",
        metavar="NAME",
        help="a scenario pair (`presets --pairs`): start both of its runs in the background "
        "(each with half the cores unless --threads) and print their ids and the Compare URL "
        "path; other options apply to both, except the field the pair compares",
    )
    r.add_argument("--teacher")
    r.add_argument("--method")
    r.add_argument("--defense")
    r.add_argument(
        "--student",
        metavar="ARCH",
        help="student architecture (default lenet5): any registered one that takes the "
        "teacher's images",
    )
    budget = r.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="budget in steps (outer iterations)")
    budget.add_argument("--seconds", type=float, help="budget in wall-clock seconds")
    r.add_argument("--seed", type=int)
    r.add_argument("--device", choices=["auto", "cpu", "cuda"])
    r.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16", "auto"],
        help="forward passes in fp32 (default) or under bf16/fp16 autocast (fp16: CUDA only); "
        "auto = bf16 on a CPU with native bf16, else fp32",
    )
    r.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    r.add_argument("--batch-size", type=int)
    r.add_argument("--eval-every", type=int, help="evaluate every N steps")
    r.add_argument("--ood-domain", help="OOD domain for OOD accuracy (default: the teacher's)")
    r.add_argument("--trigger", help="trigger for ASR (default: the teacher's)")
    r.add_argument(
        "--param", action="append", metavar="KEY=VALUE", help="a method parameter (repeatable)"
    )
    r.add_argument(
        "--defense-param", action="append", metavar="KEY=VALUE", help="a defense parameter"
    )
    r.add_argument(
        "--json", action="store_true", help="print a JSON summary as the last line of stdout"
    )
    r.add_argument("--background", action="store_true", help="return at once and print the run id")
    r.set_defaults(func=cmd_run)

    rs = sub.add_parser("runs", help="the run store")
    rsub = rs.add_subparsers(dest="runs_command", required=True, parser_class=Parser)
    rl = rsub.add_parser("list")
    rl.add_argument("--json", action="store_true")
    rl.set_defaults(func=cmd_runs_list)
    rsh = rsub.add_parser("show")
    rsh.add_argument("run_id")
    rsh.add_argument("--json", action="store_true")
    rsh.set_defaults(func=cmd_runs_show)
    rst = rsub.add_parser("stop")
    rst.add_argument("run_id")
    rst.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for the worker to end"
    )
    rst.set_defaults(func=cmd_runs_stop)
    rre = rsub.add_parser("resume")
    rre.add_argument("run_id")
    rre.add_argument("--json", action="store_true")
    rre.add_argument("--background", action="store_true")
    rre.set_defaults(func=cmd_runs_resume)
    rde = rsub.add_parser("delete")
    rde.add_argument("run_id")
    rde.set_defaults(func=cmd_runs_delete)
    rex = rsub.add_parser(
        "export",
        help="a run as an HTML report, its metrics as CSV / Parquet, or its student as safetensors",
    )
    rex.add_argument("run_id")
    rex.add_argument("--format", choices=["html", "csv", "parquet", "safetensors"], default="html")
    rex.add_argument("--out", help="file to write (default: RUN_ID.<format> here)")
    rex.set_defaults(func=cmd_runs_export)
    rfo = rsub.add_parser(
        "fork",
        help="start a new run from a run's checkpoint at a step, with another defense or "
        "parameters (in the background; the parent is untouched)",
    )
    rfo.add_argument("run_id")
    rfo.add_argument(
        "--step",
        type=int,
        required=True,
        help="fork at this step (the nearest kept checkpoint at or before it is used)",
    )
    rfo.add_argument("--defense", help="the fork's defense (default: the parent's)")
    rfo.add_argument(
        "--method-param",
        "--param",
        dest="param",
        action="append",
        metavar="KEY=VALUE",
        help="a method parameter to change (repeatable)",
    )
    rfo.add_argument(
        "--defense-param", action="append", metavar="KEY=VALUE", help="a defense parameter"
    )
    rfo.add_argument("--json", action="store_true")
    rfo.set_defaults(func=cmd_runs_fork)
    rco = rsub.add_parser(
        "compare",
        help="an HTML report of 2 to 4 runs side by side: configuration differences, curves "
        "overlaid, samples, embedding maps and per-class heatmaps at one step",
    )
    rco.add_argument("run_ids", nargs="+", metavar="RUN")
    rco.add_argument("--out", default="comparison.html", help="file to write")
    rco.add_argument(
        "--step",
        type=int,
        help="the step to compare the runs at (each shows its nearest recorded step at or "
        "before it; default: the last snapshot step they all recorded)",
    )
    rco.set_defaults(func=cmd_runs_compare)


def register_worker(sub: argparse._SubParsersAction) -> None:
    """The internal ``worker`` command (what a detached run executes), listed last."""
    w = sub.add_parser("worker", help="(internal) the process a detached run executes")
    w.add_argument("run_dir")
    w.add_argument("--resume", action="store_true")
    w.set_defaults(func=cmd_worker)
