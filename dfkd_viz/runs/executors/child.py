"""A run's worker as the child of a Ray task: ``python -m dfkd_viz.runs.executors.child PARENT_PID
RUN_DIR [--resume]``.

It asks the kernel to end it with its parent (the Ray worker process running the cell: a killed
Ray worker takes its run along, and Ray's retry starts the cell afresh), then is the ordinary
worker (:mod:`dfkd_viz.runs.worker`): SIGTERM stops it at a checkpoint.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or not args[0].isdigit():
        print("usage: python -m dfkd_viz.runs.executors.child PARENT_PID RUN_DIR [--resume]")
        return 2
    from dfkd_viz.jobs import die_with_parent

    die_with_parent(int(args[0]))
    from dfkd_viz.runs.worker import main as worker_main

    return worker_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
