"""``dfkd-viz``: the command line.

    dfkd-viz teachers list [--json]            the zoo's cards
    dfkd-viz teachers train ID... | --all      train (and cache) teachers, with progress
    dfkd-viz teachers show ID [--json]         one card
    dfkd-viz teachers import FILE --arch A --dataset D [--id ID] [--num-classes K]
                 [--normalization dataset|none|MEAN/STD] [--ood-domain D] [--json]
                                               validate and add your own teacher (kind: user)
    dfkd-viz teachers delete ID                remove an imported teacher
    dfkd-viz audit TEACHER_ID [--json] [--fresh]  a data-free trust report: NTL / backdoor /
                                               collapse verdicts and the scores behind them
    dfkd-viz data import SOURCE --name NAME [--size HxW] [--test-fraction F]
                                               your own images: a class-per-folder directory,
                                               a .zip of one, or an .npz with x and y
    dfkd-viz data list [--json] | data delete NAME
    dfkd-viz presets [--json]                  named scenarios
    dfkd-viz run [--preset NAME] [--teacher ID] [--method NAME] [--defense NAME]
                 [--steps N | --seconds S] [--seed K] [--device D] [--json] [--background]
    dfkd-viz runs list|show|stop|resume|delete|export|compare  the run store
    dfkd-viz sweep --teachers ID... --methods NAME... [--seeds K...] [--steps N] [--json]
                   [--background] | --resume SWEEP_ID   a grid of runs, one after another
    dfkd-viz sweeps list|show|stop                      the sweeps
    dfkd-viz worker RUN_DIR [--resume]         (internal) the detached worker

Errors a user can cause print one sentence on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from dfkd_viz.errors import DfkdVizError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-sentence errors (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and pct:
        return f"{v:.1%}"
    return str(v)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------------------- teachers
def cmd_teachers_list(args) -> int:
    from dfkd_viz.teachers import list_cards

    cards = list_cards()
    if args.json:
        _print_json(cards)
        return 0
    print(
        f"{'id':30} {'kind':9} {'dataset':14} {'trained':8} {'ID acc':>7} {'OOD acc':>8} {'ASR':>7}  OOD domain / trigger"
    )
    for c in cards:
        extra = c.get("trigger") or c.get("ood_domain") or ""
        trained = "yes" if c["trained"] else ("no" if c["available"] else "no data")
        print(
            f"{c['id']:30} {c['kind']:9} {c['dataset']:14} {trained:8} {_fmt(c['id_acc']):>7} "
            f"{_fmt(c['ood_acc']):>8} {_fmt(c['asr']):>7}  {extra}"
        )
    return 0


def cmd_teachers_show(args) -> int:
    from dfkd_viz.teachers import card

    c = card(args.id)
    if args.json:
        _print_json(c)
    else:
        for k, v in c.items():
            print(f"{k:14} {v}")
    return 0


def cmd_teachers_import(args) -> int:
    from dfkd_viz.teachers.importer import import_teacher

    c = import_teacher(
        args.file,
        arch=args.arch,
        dataset=args.dataset,
        teacher_id=args.id,
        num_classes=args.num_classes,
        normalization=args.normalization,
        ood_domain=None if args.ood_domain == "none" else args.ood_domain,
        replace=args.replace,
    )
    if args.json:
        _print_json(c)
        return 0
    print(
        f"imported {c['id']} (kind user, {c['arch']} on {c['dataset']}): ID accuracy "
        f"{_fmt(c['id_acc'])}, OOD accuracy ({c['ood_domain'] or '—'}) {_fmt(c['ood_acc'])}"
    )
    for w in c.get("warnings") or []:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_teachers_delete(args) -> int:
    from dfkd_viz.teachers.importer import delete_teacher

    delete_teacher(args.id)
    print(f"deleted {args.id}")
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"size must be H or HxW in pixels (got {text!r})"
        ) from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"size must be H or HxW in pixels (got {text!r})")
    return (parts[0], parts[-1])


def cmd_data_import(args) -> int:
    from dfkd_viz.data.user import import_dataset

    meta = import_dataset(
        args.source,
        args.name,
        size=args.size,
        test_fraction=args.test_fraction,
        replace=args.replace,
    )
    if args.json:
        _print_json(meta)
        return 0
    c, h, w = meta["shape"]
    print(
        f"imported {meta['name']}: {meta['n']} images ({meta['n'] - meta['n_test']} train / "
        f"{meta['n_test']} test), {c}×{h}×{w}, {len(meta['classes'])} classes "
        f"({', '.join(meta['classes'][:6])}{', …' if len(meta['classes']) > 6 else ''})"
    )
    return 0


def cmd_data_list(args) -> int:
    from dfkd_viz.data.user import list_datasets

    metas = list_datasets()
    if args.json:
        _print_json(metas)
        return 0
    if not metas:
        print("no imported datasets (add one with `dfkd-viz data import SOURCE --name NAME`)")
    for m in metas:
        c, h, w = m["shape"]
        print(f"{m['name']:24} {m['n']:>7} images  {c}×{h}×{w}  {len(m['classes'])} classes")
    return 0


def cmd_data_delete(args) -> int:
    from dfkd_viz.data.user import delete_dataset

    delete_dataset(args.name)
    print(f"deleted {args.name}")
    return 0


def cmd_teachers_train(args) -> int:
    from tqdm import tqdm

    from dfkd_viz.teachers import get_spec, list_cards, train_teacher

    if args.all and args.ids:
        raise DfkdVizError("give teacher ids or --all, not both")
    if not args.all and not args.ids:
        raise DfkdVizError("name the teachers to train, or use --all")
    if args.all:
        cards = [c for c in list_cards() if c.get("kind") != "user" and c.get("default", True)]
        ids = [c["id"] for c in cards if c["available"]]
        for c in cards:
            if not c["available"]:
                print(
                    f"skipping {c['id']}: its dataset {c['dataset']} is not on this machine",
                    file=sys.stderr,
                )
    else:
        ids = [get_spec(i).id for i in args.ids]  # unknown ids fail before any training
    t0 = time.perf_counter()
    for tid in ids:
        bar = tqdm(
            total=100,
            desc=tid,
            unit="%",
            file=sys.stderr,
            leave=True,
            bar_format="{desc:30} {bar} {n_fmt}% {postfix}",
        )

        def progress(frac: float, msg: str, bar=bar) -> None:
            bar.n = round(frac * 100)
            bar.set_postfix_str(msg)
            bar.refresh()

        c = train_teacher(tid, progress=progress, force=args.force)
        bar.n = 100
        bar.set_postfix_str(
            f"ID {_fmt(c['id_acc'])} OOD {_fmt(c['ood_acc'])} ASR {_fmt(c['asr'])} ({c['train_s']} s)"
        )
        bar.close()
    print(f"{len(ids)} teacher(s) ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------- audit
def cmd_audit(args) -> int:
    from tqdm import tqdm

    from dfkd_viz.analysis.audit import audit_teacher
    from dfkd_viz.teachers import load_teacher

    load_teacher(args.id)  # an unknown or untrained teacher fails before the progress bar
    bar = tqdm(
        total=100,
        desc=f"audit {args.id}",
        unit="%",
        file=sys.stderr,
        disable=args.json and not sys.stderr.isatty(),
        bar_format="{desc:30} {bar} {n_fmt}% {postfix}",
    )

    def progress(frac: float, msg: str) -> None:
        bar.n = round(frac * 100)
        bar.set_postfix_str(msg)
        bar.refresh()

    try:
        report = audit_teacher(args.id, progress=progress, use_cache=not args.fresh)
    except ValueError as exc:
        raise DfkdVizError(f"cannot audit {args.id!r}: {exc}") from None
    finally:
        bar.close()
    if args.json:
        _print_json(report.summary())
        return 0
    v, n, b, c = report.verdict, report.ntl, report.backdoor, report.collapse
    print(
        f"audit of {args.id} ({report.arch}, {report.seconds:.0f} s; weights {report.weights_sha256[:12]})"
    )
    print(
        f"  NTL       {v['ntl']:10}  robust mass {n.robust_mass:.2f} (lure share {n.lure_share:.2f}, class {n.lure_class}); "
        f"robust at ε={report.params.epsilon}: lure {n.robust_lure:.2f}, others {n.robust_other:.2f}"
    )
    print(
        f"  backdoor  {v['backdoor']:10}  shortcut gain {b.shortcut_gain:.2f} (target {b.target}; "
        f"L2 budget {b.radius:.1f}{', NTL lure class set aside' if b.lure_set_aside else ''}); "
        f"shuffle survival {b.shuffle_survival[b.target]:.2f}"
    )
    print(
        f"  collapse  {v['collapse']:10}  coverage {c.coverage:.2f} ({c.classes_covered} classes), "
        f"median confidence {c.confidence:.2f}"
    )
    for s in report.suggestions:
        print(f"  suggestion: {s}")
    return 0


# ------------------------------------------------------------------------------- presets
def cmd_presets(args) -> int:
    from dfkd_viz.distill.methods import METHODS
    from dfkd_viz.runs.presets import PRESETS

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
        _print_json(items)
        return 0
    for p in items:
        cfg = p["config"]
        budget = f"{cfg['steps']} steps" if "steps" in cfg else f"{cfg.get('seconds')} s"
        defense = cfg.get("defense") or METHODS.get(cfg["method"]).default_defense or "none"
        print(f"{p['name']:18} {cfg['teacher']:28} {cfg['method']:8} {defense:10} {budget}")
        print(f"{'':18} {p['description']}")
    return 0


# ------------------------------------------------------------------------------- runs
def _parse_params(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise DfkdVizError(f"--param takes KEY=VALUE (got {pair!r})")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


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
        "error": info.get("error"),
    }


def cmd_run(args) -> int:
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.presets import preset_config

    overrides = {
        "teacher": args.teacher,
        "method": args.method,
        "defense": args.defense,
        "steps": args.steps,
        "seconds": args.seconds,
        "seed": args.seed,
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "eval_every": args.eval_every,
        "ood_domain": args.ood_domain,
        "trigger": args.trigger,
    }
    if args.param:
        overrides["method_params"] = _parse_params(args.param)
    if args.defense_param:
        overrides["defense_params"] = _parse_params(args.defense_param)
    raw = preset_config(args.preset, overrides)
    if not args.preset:
        missing = [k for k in ("teacher", "method") if not raw.get(k)]
        if missing:
            raise DfkdVizError(f"--{missing[0]} is required without --preset")
    run_id = manager.create_run(raw)
    manager.start_worker(run_id)
    if args.background:
        if args.json:
            _print_json({"run_id": run_id})
        else:
            print(run_id)
        return 0
    return _follow(run_id, args.json)


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
            f"student ID accuracy {_fmt(summary['id_acc'])} (teacher {_fmt(summary['teacher_id_acc'])})",
            file=sys.stderr,
        )
    if as_json:
        _print_json(summary)
    if interrupted["sig"]:
        return 128 + interrupted["sig"]
    return 0 if summary["status"] == "finished" else 1


def cmd_runs_list(args) -> int:
    from dfkd_viz.runs import manager

    runs = manager.list_runs()
    if args.json:
        _print_json(
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
            f"step {r.get('step') or 0:>6}  ID {_fmt(r.get('id_acc'))}"
        )
    return 0


def cmd_runs_show(args) -> int:
    from dfkd_viz.runs import manager

    info = manager.run_info(args.run_id)
    if args.json:
        _print_json(info)
    else:
        for k, v in info.items():
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
    from dfkd_viz.runs.export import compare_report_html, write_atomic

    if len(args.run_ids) < 2:
        raise DfkdVizError("compare needs at least two runs")
    dirs = [manager.run_dir(r) for r in args.run_ids]
    out = Path(args.out)
    try:
        write_atomic(out, compare_report_html(dirs))
    except OSError as exc:
        raise DfkdVizError(f"could not write {out}: {exc.strerror or exc}") from exc
    print(str(out))
    return 0


# ------------------------------------------------------------------------------- sweeps
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


def cmd_sweep(args) -> int:
    from tqdm import tqdm

    from dfkd_viz.runs import sweep as sw

    if args.resume:
        sweep_id = args.resume
        sw.load_sweep(sweep_id)
    else:
        if not args.teachers or not args.methods:
            raise DfkdVizError("--teachers and --methods are required (or --resume SWEEP_ID)")
        base = {}
        if args.eval_every:
            base["eval_every"] = args.eval_every
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
            }
        )
    sw.start_runner(sweep_id)
    if args.background:
        _print_json({"sweep_id": sweep_id}) if args.json else print(sweep_id)
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
    rep = _sweep_report(sweep_id)
    if rep.get("error"):
        print(f"sweep {sweep_id}: the runner failed: {rep['error']}", file=sys.stderr)
    if args.json:
        _print_json(rep)
    else:
        _print_sweep_table(rep)
    if interrupted["sig"]:
        return 128 + interrupted["sig"]
    return 0 if rep["state"] == "finished" else 1


def cmd_sweeps_list(args) -> int:
    from dfkd_viz.runs.sweep import list_sweeps

    items = list_sweeps()
    if args.json:
        _print_json(items)
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
        _print_json(rep)
    else:
        _print_sweep_table(rep)
    return 0


def cmd_sweeps_stop(args) -> int:
    from dfkd_viz.runs.sweep import stop_sweep, sweep_dir

    sweep_dir(args.sweep_id)
    stop_sweep(args.sweep_id, wait_s=args.wait)
    print(
        f"sweep {args.sweep_id} stopped; continue it with dfkd-viz sweep --resume {args.sweep_id}"
    )
    return 0


def cmd_worker(args) -> int:
    from dfkd_viz.runs.worker import run_worker

    return run_worker(args.run_dir, args.resume)


# ------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="dfkd-viz",
        description="Data-free knowledge distillation from untrusted teachers, visualised.",
    )
    p.add_argument(
        "--data-dir",
        help="a directory searched for IDX datasets (mnist/, fashion-mnist/); workers inherit it",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("teachers", help="the teacher zoo")
    tsub = t.add_subparsers(dest="teachers_command", required=True, parser_class=_Parser)
    tl = tsub.add_parser("list", help="list the zoo's teacher cards")
    tl.add_argument("--json", action="store_true", help="one JSON array on one line")
    tl.set_defaults(func=cmd_teachers_list)
    tt = tsub.add_parser("train", help="train and cache teachers")
    tt.add_argument("ids", nargs="*", metavar="ID")
    tt.add_argument("--all", action="store_true", help="every default teacher whose data is here")
    tt.add_argument("--force", action="store_true", help="retrain even when cached")
    tt.set_defaults(func=cmd_teachers_train)
    ts = tsub.add_parser("show", help="show one teacher card")
    ts.add_argument("id")
    ts.add_argument("--json", action="store_true")
    ts.set_defaults(func=cmd_teachers_show)
    ti = tsub.add_parser(
        "import",
        help="validate and add your own teacher file (safetensors or a torch state_dict)",
    )
    ti.add_argument("file", help="a .safetensors file or a state_dict saved with torch.save")
    ti.add_argument("--arch", required=True, help="lenet5, lenet5x2, resnet8 or resnet14")
    ti.add_argument("--dataset", required=True, help="the dataset it classifies (e.g. mnist)")
    ti.add_argument("--id", help="the new teacher id (default: from the file name)")
    ti.add_argument("--num-classes", type=int, help="K (default: from the weights)")
    ti.add_argument(
        "--normalization",
        help="the input normalisation it was trained with: 'dataset' (default), 'none' or "
        "'MEAN/STD' per channel, e.g. 0.1307/0.3081",
    )
    ti.add_argument(
        "--ood-domain", default="mnist-m", help="domain for its OOD accuracy ('none': skip)"
    )
    ti.add_argument("--replace", action="store_true", help="overwrite an imported teacher")
    ti.add_argument("--json", action="store_true")
    ti.set_defaults(func=cmd_teachers_import)
    tdel = tsub.add_parser("delete", help="remove an imported (kind: user) teacher")
    tdel.add_argument("id")
    tdel.set_defaults(func=cmd_teachers_delete)

    au = sub.add_parser(
        "audit", help="a data-free trust report of a teacher (NTL, backdoor, collapse)"
    )
    au.add_argument("id", metavar="TEACHER_ID")
    au.add_argument("--json", action="store_true", help="verdict and scores as one JSON line")
    au.add_argument("--fresh", action="store_true", help="audit again, ignoring a stored report")
    au.set_defaults(func=cmd_audit)

    dt = sub.add_parser("data", help="your own datasets (ID, OOD or student-domain data)")
    dsub = dt.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    di = dsub.add_parser("import", help="import an image folder, a .zip of one, or an .npz")
    di.add_argument("source", help="folder with one sub-folder per class, .zip, or .npz (x, y)")
    di.add_argument("--name", required=True, help="the dataset's name (a-z, 0-9, _, -)")
    di.add_argument("--size", type=_size, help="resize every image to H or HxW pixels")
    di.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (0.2)")
    di.add_argument("--replace", action="store_true")
    di.add_argument("--json", action="store_true")
    di.set_defaults(func=cmd_data_import)
    dl = dsub.add_parser("list", help="the imported datasets")
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=cmd_data_list)
    dd = dsub.add_parser("delete", help="remove an imported dataset")
    dd.add_argument("name")
    dd.set_defaults(func=cmd_data_delete)

    pr = sub.add_parser("presets", help="list the named scenarios")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_presets)

    r = sub.add_parser("run", help="distil a student (in a detached worker)")
    r.add_argument("--preset", help="a named scenario; explicit options override it")
    r.add_argument("--teacher")
    r.add_argument("--method")
    r.add_argument("--defense")
    budget = r.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="budget in steps (outer iterations)")
    budget.add_argument("--seconds", type=float, help="budget in wall-clock seconds")
    r.add_argument("--seed", type=int)
    r.add_argument("--device", choices=["auto", "cpu", "cuda"])
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
    rsub = rs.add_subparsers(dest="runs_command", required=True, parser_class=_Parser)
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
    rco = rsub.add_parser("compare", help="an HTML report overlaying several runs")
    rco.add_argument("run_ids", nargs="+")
    rco.add_argument("--out", default="comparison.html")
    rco.set_defaults(func=cmd_runs_compare)

    sw = sub.add_parser(
        "sweep",
        help="distil a grid of teachers × methods × seeds, one run after another (resumable)",
    )
    sw.add_argument("--teachers", nargs="+", metavar="ID")
    sw.add_argument(
        "--methods", nargs="+", metavar="NAME", help="methods, or METHOD+DEFENSE (dfq+ta-select)"
    )
    sw.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="K")
    sbudget = sw.add_mutually_exclusive_group()
    sbudget.add_argument("--steps", type=int, help="steps per run (default: each method's)")
    sbudget.add_argument("--seconds", type=float, help="wall-clock seconds per run")
    sw.add_argument("--threads", type=int, help="torch CPU threads per run (default: all cores)")
    sw.add_argument("--eval-every", type=int, help="evaluate every N steps")
    sw.add_argument(
        "--embedding", action="store_true", help="fit each run's UMAP map (off by default)"
    )
    sw.add_argument("--resume", metavar="SWEEP_ID", help="continue a stopped sweep")
    sw.add_argument("--json", action="store_true", help="print the results as one JSON line")
    sw.add_argument("--background", action="store_true", help="return at once, print the id")
    sw.set_defaults(func=cmd_sweep)

    sws = sub.add_parser("sweeps", help="the sweeps")
    swsub = sws.add_subparsers(dest="sweeps_command", required=True, parser_class=_Parser)
    swl = swsub.add_parser("list")
    swl.add_argument("--json", action="store_true")
    swl.set_defaults(func=cmd_sweeps_list)
    sws_show = swsub.add_parser("show")
    sws_show.add_argument("sweep_id")
    sws_show.add_argument("--json", action="store_true")
    sws_show.set_defaults(func=cmd_sweeps_show)
    sws_stop = swsub.add_parser("stop")
    sws_stop.add_argument("sweep_id")
    sws_stop.add_argument("--wait", type=float, default=30.0)
    sws_stop.set_defaults(func=cmd_sweeps_stop)

    w = sub.add_parser("worker", help=argparse.SUPPRESS)
    w.add_argument("run_dir")
    w.add_argument("--resume", action="store_true")
    w.set_defaults(func=cmd_worker)
    return p


def main(argv: list[str] | None = None) -> int:
    # `dfkd-viz … | head` ends quietly, as Unix tools do (no BrokenPipeError traceback)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    if args.data_dir:
        import os

        os.environ["DFKD_VIZ_DATA"] = os.path.abspath(args.data_dir)
    try:
        return int(args.func(args) or 0)
    except DfkdVizError as exc:
        sys.stderr.write(f"dfkd-viz: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
