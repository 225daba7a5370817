"""``dfkd-viz``: the command line.

    dfkd-viz teachers list [--json]            the zoo's cards
    dfkd-viz teachers train ID... | --all      train (and cache) teachers, with progress
    dfkd-viz teachers show ID [--json]         one card
    dfkd-viz teachers import FILE --dataset D [--arch A] [--id ID] [--num-classes K]
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
                 [--student ARCH] [--steps N | --seconds S] [--seed K] [--device D]
                 [--precision fp32|bf16|fp16] [--json] [--background]
    dfkd-viz runs list|show|stop|resume|delete|export|compare  the run store
    dfkd-viz sweep --teachers ID... --methods NAME... [--seeds K...] [--steps N] [--json]
                   [--executor local|ray] [--background] | --resume SWEEP_ID
                                               a grid of runs: here one after another, or
                                               spread over a Ray cluster
    dfkd-viz sweeps list|show|stop                      the sweeps
    dfkd-viz worker RUN_DIR [--resume]         (internal) the detached worker

Errors a user can cause print one sentence on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import signal
import sys

from dfkd_viz.cli import audit, data, runs, sweeps, teachers
from dfkd_viz.cli._common import EXIT_USAGE, Parser
from dfkd_viz.errors import DfkdVizError

GROUPS = (teachers, audit, data, runs, sweeps)
"""The command-group modules, in ``--help`` order; each has ``register(subparsers)``."""


def build_parser() -> argparse.ArgumentParser:
    """The ``dfkd-viz`` argument parser: global options, then every group's sub-commands."""
    p = Parser(
        prog="dfkd-viz",
        description="Data-free knowledge distillation from untrusted teachers, visualised.",
    )
    p.add_argument(
        "--data-dir",
        help="a directory searched for IDX datasets (mnist/, fashion-mnist/); workers inherit it",
    )
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in GROUPS:
        group.register(sub)
    runs.register_worker(sub)
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
