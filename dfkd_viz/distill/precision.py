"""Mixed precision for the engine's forward passes (``RunConfig.precision``, ``--precision``).

``fp32`` (the default) changes nothing. ``auto`` is ``bf16`` on a CPU with native bf16 and ``fp32``
everywhere else (GPUs included, where it was not measured), silently: the ``clean-dfq`` preset (the
app's Start demo) uses it, because on this project's AVX512-BF16 CPU bf16 made a DFQ step 1.3×
(LeNet) to 1.6× (WRN) faster at the same accuracy per step (``docs/results/performance.md``,
"Mixed precision"). ``bf16`` runs the generator's, teacher's and student's
forward passes under :func:`torch.autocast` with ``torch.bfloat16`` (convolutions and linear
layers in bf16, weights and optimiser state stay fp32); ``fp16`` does the same with
``torch.float16`` on CUDA only, with one :class:`torch.amp.GradScaler` per optimiser (their state
travels in the engine's checkpoints). The loss terms are computed in fp32: the engine casts the
models' outputs back with :func:`fp32` before the method's terms, and the BN-statistics loss casts
the activations it keeps (:class:`~dfkd_viz.distill.losses.BNStatsHook`).

Decisions:

- ``fp16`` on the CPU is refused (:class:`~dfkd_viz.errors.ConfigError`): CPUs without AMX-FP16
  emulate it, and the CPU has no loss-scaling story here; ``bf16`` is the CPU's half precision.
- ``bf16`` on a CPU without native bf16 arithmetic (neither AVX512-BF16 nor AMX tiles, as torch's
  ``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported`` report) or on a GPU
  without bf16 falls back to ``fp32`` with a warning (:attr:`Precision.warning`, which the worker
  records as a run event): emulated bf16 computes the same thing more slowly, so a run configured
  on one machine still runs on another instead of failing.
- Scope: the base engine's generator and student phases (evaluation stays fp32). The extra passes of
  AuG-KD (encoder and anchor steps, the student-data engine) and of the ABD and oracle defenses
  stay in fp32: they are a small share of a step, and their losses were tuned in fp32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from dfkd_viz.errors import ConfigError
from dfkd_viz.models import Classifier, Features

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles); False when torch
    cannot tell."""
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except Exception:  # a private probe that changed: treat as unsupported
            continue
    return False


def check_precision(precision: str, device: str | torch.device) -> None:
    """Raise :class:`~dfkd_viz.errors.ConfigError` (one sentence) for a precision the device
    cannot run at all: an unknown name, or ``fp16`` off CUDA."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "fp16" and torch.device(device).type != "cuda":
        raise ConfigError(
            "precision fp16 needs a CUDA GPU (loss-scaled half precision); "
            "on the CPU use --precision bf16 or fp32"
        )


class Precision:
    """The engine's precision policy for one device.

    Args:
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (``bf16`` where the CPU has it
            natively, else ``fp32``; never a warning).
        device: where the models run.

    Attributes:
        requested: the precision asked for.
        name: the precision in use (``fp32`` after a fallback).
        dtype: the autocast dtype, or None for fp32.
        warning: one sentence when ``bf16`` fell back to ``fp32``, else None.

    Raises:
        ConfigError: see :func:`check_precision`.
    """

    def __init__(self, precision: str = "fp32", device: str | torch.device = "cpu") -> None:
        dev = torch.device(device)
        check_precision(precision, dev)
        self.requested = precision
        self.device_type = dev.type
        self.warning: str | None = None
        name = precision
        if precision == "auto":
            name = "bf16" if dev.type == "cpu" and cpu_has_bf16() else "fp32"
        elif precision == "bf16":
            ok = torch.cuda.is_bf16_supported() if dev.type == "cuda" else cpu_has_bf16()
            if not ok:
                where = "this GPU" if dev.type == "cuda" else "this CPU (no AVX512-BF16 or AMX)"
                self.warning = f"bf16 is not native on {where}: running in fp32 instead"
                name = "fp32"
        self.name = name
        self.dtype = _DTYPES.get(name)
        self._scalers: dict[str, torch.amp.GradScaler] = {}

    @property
    def enabled(self) -> bool:
        """Whether forward passes run under autocast."""
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for forward passes (a no-op in fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self, name: str) -> torch.amp.GradScaler | None:
        """The gradient scaler of optimiser ``name`` (created on first use), fp16 only."""
        if self.name != "fp16":
            return None
        if name not in self._scalers:
            self._scalers[name] = torch.amp.GradScaler(self.device_type)
        return self._scalers[name]

    def step(self, name: str, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        """``loss.backward()`` then ``opt.step()`` — loss-scaled in fp16 (a step whose gradients
        overflowed is skipped and the scale lowered, as :class:`torch.amp.GradScaler` does)."""
        scaler = self.scaler(name)
        if scaler is None:
            loss.backward()
            opt.step()
            return
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The scalers' states by optimiser name (JSON-able numbers; empty unless fp16)."""
        return {k: s.state_dict() for k, s in self._scalers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (ignored outside fp16: a run resumed in another
        precision starts its scalers afresh)."""
        for k, st in (state or {}).items():
            scaler = self.scaler(k)
            if scaler is not None:
                scaler.load_state_dict(st)


def cuda_layout(teacher: Classifier, student: Classifier, generator: torch.nn.Module) -> None:
    """The GPU path's setup (``build_engine`` on CUDA): cuDNN autotuning for the fixed batch
    shapes (``torch.backends.cudnn.benchmark``) and every model channels-last, the layout tensor
    cores run bf16/fp16 convolutions in. (On the CPU the engine chooses per model instead.)"""
    torch.backends.cudnn.benchmark = True
    generator.to(memory_format=torch.channels_last)
    teacher.set_memory_format(torch.channels_last)
    student.set_memory_format(torch.channels_last)


def fp32(f: Features) -> Features:
    """``f`` with logits, blocks and penultimate features as float32 (no copy when they are)."""
    return Features(f.logits.float(), [b.float() for b in f.blocks], f.penultimate.float())
