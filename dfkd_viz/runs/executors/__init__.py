"""Executors: where a sweep's cells are distilled.

A sweep's runner (the detached ``python -m dfkd_viz.runs.sweep SWEEP_ID`` process) hands its cells
to one executor, named in the sweep's ``sweep.json``:

- ``local`` (:mod:`.local`): one run after another on this machine, each its own worker process —
  the runner as it always was;
- ``ray`` (:mod:`.ray`): one Ray task per cell on a Ray cluster (or a Ray instance started for the
  sweep); each run is written on the node's own disk and its finished directory comes back into
  this machine's run store. Ray is imported only there: everything else works without it.

A later executor (a Slurm one, say) implements :class:`Executor` and registers a factory in
:data:`EXECUTORS`. Every executor keeps the same contract: it links each cell to its run in
``cells.json`` before the run starts (so a crash never loses the link), skips cells whose run has
finished, continues stopped or failed runs from their checkpoint, and returns ``"finished"``,
``"stopped"`` or ``"incomplete"``.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dfkd_viz.errors import ConfigError
from dfkd_viz.registry import Registry

if TYPE_CHECKING:
    from dfkd_viz.runs.sweep import SweepSpec

Progress = Callable[[int, int, dict[str, Any]], None]
"""``progress(done, total, cell)``: called as cells start and end (``cell`` may carry ``msg``)."""


class ExecutorSpec(BaseModel):
    """How a sweep's cells are executed (stored in ``sweep.json``; a sweep without one is local).

    Attributes:
        name: ``local`` or ``ray``.
        address: the Ray cluster to use (``host:port``, or ``ray://host:10001`` for Ray Client);
            None: ``RAY_ADDRESS`` when set, else a Ray instance started on this machine for the
            sweep. Ignored by ``local``.
        cpus_per_run, gpus_per_run: Ray resources each cell asks for (fractions allowed). A run's
            torch threads default to ``cpus_per_run`` (rounded up) on Ray.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["local", "ray"] = "local"
    address: str | None = Field(None, max_length=500)
    cpus_per_run: float = Field(1.0, gt=0, le=1024)
    gpus_per_run: float = Field(0.0, ge=0, le=64)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        if not re.fullmatch(r"[A-Za-z0-9_.:/\[\]-]+", v.strip()):
            raise ValueError("address must look like HOST:PORT or ray://HOST:PORT")
        return v.strip()


class Executor(Protocol):
    """Works through a sweep's cells (see the module docstring for the contract)."""

    def run_cells(
        self,
        sweep_dir: Path,
        spec: SweepSpec,
        cells: list[dict[str, Any]],
        progress: Progress | None,
        stop: Callable[[], bool],
    ) -> str:
        """Distil the cells not finished yet; ``stop()`` turns True on SIGTERM/SIGINT.

        Returns ``"finished"``, ``"stopped"`` or ``"incomplete"`` (some run failed)."""
        ...


def _local(spec: ExecutorSpec) -> Executor:
    from dfkd_viz.runs.executors.local import LocalExecutor

    return LocalExecutor()


def _ray(spec: ExecutorSpec) -> Executor:
    from dfkd_viz.runs.executors.ray import RayExecutor

    return RayExecutor(spec)


EXECUTORS: Registry[Callable[[ExecutorSpec], Executor]] = Registry("executor")
EXECUTORS.register("local")(_local)
EXECUTORS.register("ray")(_ray)


def ray_installed() -> bool:
    """Whether Ray can be imported here (``pip install 'dfkd-viz[ray]'``)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # sys.modules["ray"] = None, or a broken install
        return False


def parse_executor(data: ExecutorSpec | dict[str, Any] | None) -> ExecutorSpec:
    """Validate an executor choice; a missing one is ``local``.

    Raises:
        ConfigError: one sentence naming the field, or Ray missing for ``ray``.
    """
    if isinstance(data, ExecutorSpec):
        spec = data
    else:
        try:
            spec = ExecutorSpec(**(data or {}))
        except ValidationError as exc:
            from dfkd_viz.runs.config import format_validation_error

            raise ConfigError(format_validation_error(exc)) from None
    if spec.name == "ray" and not ray_installed():
        raise ConfigError("the ray executor needs Ray on this machine: pip install 'dfkd-viz[ray]'")
    return spec


def get_executor(spec: ExecutorSpec) -> Executor:
    """The executor for ``spec`` (Ray is imported only when it is used)."""
    return EXECUTORS.get(spec.name)(spec)
