"""The ``audit`` command: a data-free trust report of a teacher."""

from __future__ import annotations

import argparse
import sys

from dfkd_viz.cli._common import print_json
from dfkd_viz.errors import DfkdVizError


def cmd_audit(args) -> int:
    from tqdm import tqdm

    from dfkd_viz.audit import audit_teacher
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
        print_json(report.summary())
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


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's sub-commands to the top-level parser."""
    au = sub.add_parser(
        "audit", help="a data-free trust report of a teacher (NTL, backdoor, collapse)"
    )
    au.add_argument("id", metavar="TEACHER_ID")
    au.add_argument("--json", action="store_true", help="verdict and scores as one JSON line")
    au.add_argument("--fresh", action="store_true", help="audit again, ignoring a stored report")
    au.set_defaults(func=cmd_audit)
