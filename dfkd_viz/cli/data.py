"""The ``data`` command group: import, list and delete your own datasets."""

from __future__ import annotations

import argparse

from dfkd_viz.cli._common import Parser, print_json


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
        print_json(meta)
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
        print_json(metas)
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    dt = sub.add_parser("data", help="your own datasets (ID, OOD or student-domain data)")
    dsub = dt.add_subparsers(dest="data_command", required=True, parser_class=Parser)
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
