"""The local executor: a sweep's cells one after another on this machine, each an ordinary run with
its own detached worker process (:mod:`dfkd_viz.runs.manager`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs import manager
from dfkd_viz.runs.executors import Progress
from dfkd_viz.runs.store import ACTIVE_STATES
from dfkd_viz.util.io import write_json

if TYPE_CHECKING:
    from dfkd_viz.runs.sweep import SweepSpec


class LocalExecutor:
    """Cells in order (seed-major), one run at a time; a stop stops the current run at a
    checkpoint; a run whose worker outlived an earlier runner is waited for."""

    name = "local"

    def run_cells(
        self,
        sweep_dir: Path,
        spec: SweepSpec,
        cells: list[dict[str, Any]],
        progress: Progress | None,
        stop: Callable[[], bool],
    ) -> str:
        failed = 0
        for i, cell in enumerate(cells):
            if stop():
                return "stopped"
            run_id = cell.get("run_id")
            state = None
            if run_id:
                try:
                    state = manager.effective_status(run_id)["state"]
                except DfkdVizError:  # deleted (UnknownNameError) or corrupt: distil it anew
                    run_id = None
            if state == "finished":
                continue
            if progress:
                progress(i, len(cells), cell)
            if not run_id:
                run_id = manager.create_run(spec.run_config(cell))
                cell["run_id"] = run_id
                write_json(sweep_dir / "cells.json", cells)
                manager.start_worker(run_id)
            elif state not in ACTIVE_STATES:  # stopped or failed: continue from its checkpoint
                manager.resume(run_id)
            # (an active run: its worker outlived the previous runner; wait for it below)
            while True:
                st = manager.effective_status(run_id)
                if st["state"] not in ACTIVE_STATES:
                    break
                if stop():
                    manager.stop(run_id, wait_s=30.0)
                    return "stopped"
                time.sleep(0.5)
            if st["state"] != "finished":
                failed += 1
        if progress:
            progress(len(cells), len(cells), {})
        return "incomplete" if failed else "finished"
