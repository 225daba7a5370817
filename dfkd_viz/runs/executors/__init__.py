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
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dfkd_viz.errors import ConfigError
from dfkd_viz.registry import Registry

if TYPE_CHECKING:
    from dfkd_viz.runs.sweep import SweepSpec

Progress = Callable[[int, int, dict[str, Any]], None]
"""``progress(done, total, cell)``: called as cells start and end (``cell`` may carry ``msg``)."""


MIN_SHARE = 0.0001
"""The smallest CPU or GPU share Ray can schedule (its resources are fixed-point, 1/10 000)."""


class ExecutorSpec(BaseModel):
    """How a sweep's cells are executed (stored in ``sweep.json``; a sweep without one is local).

    Attributes:
        name: an executor registered in :data:`EXECUTORS` (``local``, ``ray``, or one a plugin
            registered before the spec is validated).
        address: the Ray cluster to use (``host:port``, or ``ray://host:10001`` for Ray Client);
            None: ``RAY_ADDRESS`` when set, else a Ray instance started on this machine for the
            sweep. Ignored by ``local``.
        cpus_per_run: Ray CPUs each cell asks for, :data:`MIN_SHARE` … 1024 (fractions allowed).
            A run's torch threads default to ``cpus_per_run`` (rounded up) on Ray.
        gpus_per_run: Ray GPUs each cell asks for: 0, or :data:`MIN_SHARE` … 64.

    Raises (as pydantic's ``ValidationError``; :func:`parse_executor` turns it into one sentence):
        an unregistered name, a malformed address, or a share Ray cannot schedule (below
        :data:`MIN_SHARE`, Ray's resource granularity).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = "local"
    address: str | None = Field(None, max_length=500)
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v not in EXECUTORS:
            raise ValueError(f"must be one of {', '.join(EXECUTORS.names())} (got {v!r})")
        return v

    @field_validator("cpus_per_run")
    @classmethod
    def _cpus(cls, v: float) -> float:
        if not (math.isfinite(v) and MIN_SHARE <= v <= 1024):
            raise ValueError(
                f"must be between {MIN_SHARE:g} and 1024 CPUs (got {v:g}; Ray schedules shares "
                f"of a CPU in steps of {MIN_SHARE:g})"
            )
        return v

    @field_validator("gpus_per_run")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if not (math.isfinite(v) and (v == 0 or MIN_SHARE <= v <= 64)):
            raise ValueError(
                f"must be 0 or between {MIN_SHARE:g} and 64 GPUs (got {v:g}; Ray schedules "
                f"shares of a GPU in steps of {MIN_SHARE:g})"
            )
        return v

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
    """Whether Ray can be imported here (``pip install -e '.[ray]'`` in a checkout)."""
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
        raise ConfigError(
            "the ray executor needs Ray on this machine: pip install -e '.[ray]' in the dfkd-viz "
            "checkout"
        )
    return spec


def get_executor(spec: ExecutorSpec) -> Executor:
    """The executor for ``spec`` (Ray is imported only when it is used)."""
    return EXECUTORS.get(spec.name)(spec)
