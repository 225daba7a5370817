"""The ``teachers`` command group: list, show, train, import and delete teachers."""

from __future__ import annotations

import argparse
import sys
import time

from dfkd_viz.cli._common import Parser, fmt, print_json
from dfkd_viz.errors import DfkdVizError


def cmd_teachers_list(args) -> int:
    from dfkd_viz.teachers import list_cards

    cards = list_cards()
    if args.json:
        print_json(cards)
        return 0
    print(
        f"{'id':30} {'kind':9} {'dataset':14} {'trained':8} {'ID acc':>7} {'OOD acc':>8} {'ASR':>7}  OOD domain / trigger"
    )
    for c in cards:
        extra = c.get("trigger") or c.get("ood_domain") or ""
        trained = "yes" if c["trained"] else ("no" if c["available"] else "no data")
        print(
            f"{c['id']:30} {c['kind']:9} {c['dataset']:14} {trained:8} {fmt(c['id_acc']):>7} "
            f"{fmt(c['ood_acc']):>8} {fmt(c['asr']):>7}  {extra}"
        )
    return 0


def cmd_teachers_show(args) -> int:
    from dfkd_viz.teachers import card

    c = card(args.id)
    if args.json:
        print_json(c)
    else:
        for k, v in c.items():
            print(f"{k:14} {v}")
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
            f"ID {fmt(c['id_acc'])} OOD {fmt(c['ood_acc'])} ASR {fmt(c['asr'])} ({c['train_s']} s)"
        )
        bar.close()
    print(f"{len(ids)} teacher(s) ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    _start_maps(ids)
    return 0


def _start_maps(ids: list[str]) -> None:
    """Start the teachers' reference maps (background jobs, one fit at a time, low priority)."""
    from dfkd_viz.teachers.maps import map_progress, start_maps_quietly

    start_maps_quietly(ids)
    busy = [i for i in ids if (p := map_progress(i)) is not None and p.active]
    if busy:
        print(
            f"computing {len(busy)} reference map(s) in the background (low priority; "
            "the Teachers page shows their progress)",
            file=sys.stderr,
        )


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
    _start_maps([c["id"]])
    if args.json:
        print_json(c)
        return 0
    reported = (
        f" (the file reports {fmt(c['reported_acc'])})" if c.get("reported_acc") is not None else ""
    )
    src = c.get("source") or {}
    how = c.get("source_format") or src.get("format")
    if src.get("dataparallel"):
        how += ", DataParallel prefix removed"
    print(
        f"imported {c['id']} (kind user, {c['arch']} on {c['dataset']}, from a {how}): ID accuracy "
        f"{fmt(c['id_acc'])}{reported}, OOD accuracy ({c['ood_domain'] or '—'}) {fmt(c['ood_acc'])}"
    )
    for w in c.get("warnings") or []:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def cmd_teachers_delete(args) -> int:
    from dfkd_viz.teachers.importer import delete_teacher

    delete_teacher(args.id)
    print(f"deleted {args.id}")
    return 0


ARCH_HELP = (
    "a registered architecture: {models} (default: the checkpoint's own 'arch' entry, else the "
    "one architecture whose tensor names and shapes the weights have)"
)


class _ImportHelp(argparse._HelpAction):
    """``--help`` of ``teachers import``: lists the registered architectures, read from the model
    registry only when the help is shown (importing it loads torch, ~1 s, which no other command
    line should pay)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from dfkd_viz.models import list_models

        for action in parser._actions:
            if action.dest == "arch":
                action.help = ARCH_HELP.format(models=", ".join(list_models()))
        super().__call__(parser, namespace, values, option_string)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    t = sub.add_parser("teachers", help="the teacher zoo")
    tsub = t.add_subparsers(dest="teachers_command", required=True, parser_class=Parser)
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
        help="validate and add your own teacher file (safetensors, a state_dict or a checkpoint)",
        add_help=False,
    )
    ti.add_argument("-h", "--help", action=_ImportHelp, help="show this help message and exit")
    ti.add_argument(
        "file",
        help="a .safetensors file, a state_dict saved with torch.save, or a checkpoint dict: CMI / "
        "Fast-Datafree train_scratch.py ({'arch', 'state_dict', 'best_acc1', ...}), ABD "
        "({'model': ...}); DataParallel 'module.' prefixes are removed",
    )
    ti.add_argument("--arch", help=ARCH_HELP.format(models="see --help"))
    ti.add_argument(
        "--dataset", required=True, help="the dataset it classifies (e.g. mnist, cifar10)"
    )
    ti.add_argument("--id", help="the new teacher id (default: from the file name)")
    ti.add_argument(
        "--num-classes", type=int, help="K (default: from the weights; must be the dataset's)"
    )
    ti.add_argument(
        "--normalization",
        help="the input normalisation it was trained with: 'dataset' (default), 'none' or "
        "'MEAN/STD' per channel, e.g. 0.1307/0.3081 or 0.5,0.5,0.5/0.25,0.25,0.25 (for CIFAR the "
        "dataset's statistics are CMI's)",
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
