"""Build an :class:`~dfkd_viz.distill.Engine` from a validated :class:`RunConfig`."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dfkd_viz.data import ImageDataset, load_dataset, load_domain, make_trigger
from dfkd_viz.distill import (
    Budget,
    Engine,
    EngineSettings,
    EvalSuite,
    create_defense,
    create_method,
)
from dfkd_viz.distill.precision import cuda_layout
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.models import Generator, create_model, default_size
from dfkd_viz.runs.checkpoint import load_checkpoint
from dfkd_viz.runs.config import RunConfig
from dfkd_viz.teachers import load_teacher


def resolve_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU. Raises DfkdVizError for ``cuda`` without CUDA."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise DfkdVizError(
            "device cuda was asked for but this machine has no CUDA GPU; use --device cpu"
        )
    return torch.device(device)


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads (default: all cores); returns the number used."""
    n = threads or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def eval_suite(cfg: RunConfig, card: dict) -> EvalSuite:
    """The real test data of a run: the teacher's ID test split, the OOD domain (config or the
    teacher's), and the trigger (config or the teacher's) for ASR."""
    dataset = card["dataset"]
    id_test = load_dataset(dataset, "test")
    domain = cfg.ood_domain or card.get("ood_domain")
    ood = load_domain(domain, dataset, "test") if domain else None
    trig_name = cfg.trigger or card.get("trigger")
    trigger = make_trigger(trig_name, id_test.shape) if trig_name else None
    target = cfg.target if cfg.target is not None else (card.get("target") or 0)
    student_test = load_domain(cfg.student_domain, dataset, "test") if cfg.student_domain else None
    return EvalSuite(
        id_test,
        ood,
        trigger,
        target,
        dataset=dataset,
        ood_domain=domain,
        student_test=student_test,
    )


def student_data(cfg: RunConfig, card: dict) -> ImageDataset | None:
    """The labelled student-domain training samples of an out-of-domain run: the first
    ``student_domain_samples`` of a permutation of the domain's train split seeded by the run's
    seed (runs with the same seed share the split), or None without ``student_domain``.

    Raises:
        DfkdVizError: more samples asked for than the split holds.
    """
    if not cfg.student_domain:
        return None
    train = load_domain(cfg.student_domain, card["dataset"], "train")
    n = cfg.student_domain_samples
    if n > len(train):
        raise DfkdVizError(
            f"student_domain_samples must be ≤ {len(train)}, the size of the {train.name} "
            f"train split (got {n})"
        )
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))
    return train.subset(perm[:n])


def _student_for(cfg: RunConfig, teacher, card: dict) -> torch.nn.Module:
    return create_model(
        cfg.student,
        num_classes=teacher.num_classes,
        in_shape=teacher.in_shape,
        mean=tuple(card["mean"]),
        std=tuple(card["std"]),
    )


def generator_size(cfg: RunConfig, in_shape) -> tuple[int, int]:
    """``(nz, ngf)`` of a run's generator: the config's, where set, else the default for the
    teacher's input shape ``(C, H, W)`` (:func:`dfkd_viz.models.default_size`: ``(100, 16)`` for
    28×28 grey images, CMI's ``(256, 64)`` for 32×32 colour)."""
    nz, ngf = default_size(in_shape)
    return (cfg.nz if cfg.nz is not None else nz, cfg.ngf if cfg.ngf is not None else ngf)


def load_run_models(
    cfg: RunConfig, checkpoint: str | Path, device: torch.device | str = "cpu"
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """``(teacher, student, teacher card)`` of a run, the student as evaluated at ``checkpoint``
    (its EMA copy when the run keeps one), both in eval mode.

    Raises UnknownNameError / DfkdVizError (teacher missing), OSError or
    safetensors' errors (unreadable checkpoint), RuntimeError (weights that do not fit)."""
    teacher, card = load_teacher(cfg.teacher, device)
    student = _student_for(cfg, teacher, card).to(device)
    tensors, _ = load_checkpoint(checkpoint, device)
    ema = "student_ema.module."  # torch's AveragedModel keeps the copy under .module
    prefix = ema if any(k.startswith(ema) for k in tensors) else "student."
    student.load_state_dict(
        {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    )
    return teacher.eval(), student.eval(), card


def build_engine(cfg: RunConfig, device: torch.device | str = "cpu") -> Engine:
    """Teacher from the zoo (must be trained), a fresh student and generator, the method and
    defense, the evaluation suite. Seeds torch with ``cfg.seed`` before building the models."""
    device = torch.device(device)
    teacher, card = load_teacher(cfg.teacher, device)
    torch.manual_seed(cfg.seed)
    student = _student_for(cfg, teacher, card).to(device)
    nz, ngf = generator_size(cfg, teacher.in_shape)
    generator = Generator(
        nz=nz,
        ngf=ngf,
        img_shape=teacher.in_shape,
        mean=tuple(card["mean"]),
        std=tuple(card["std"]),
    ).to(device)
    method = create_method(cfg.method, cfg.method_params)
    defense = create_defense(cfg.defense, cfg.defense_params)
    budget = Budget(steps=cfg.steps, seconds=cfg.seconds)
    settings = EngineSettings(
        batch_size=cfg.batch_size,
        nz=nz,
        eval_every=cfg.eval_every,
        snapshot_every=cfg.snapshot_every,
        snapshot_size=cfg.snapshot_size,
        checkpoint_every=cfg.checkpoint_every,
        seed=cfg.seed,
        precision=cfg.precision,
    )
    if device.type == "cuda":
        cuda_layout(teacher, student, generator)
    elif device.type == "cpu":
        # Measured on 2 cores: channels-last halves the generator's forward and the teacher's
        # inference; the 1× student trains faster in the default layout (tiny channel counts).
        generator.to(memory_format=torch.channels_last)
        teacher.set_memory_format(torch.channels_last)
    engine_cls = getattr(method, "engine_class", Engine)
    extra = {}
    if getattr(method, "needs_student_data", False):
        extra["student_data"] = student_data(cfg, card)
    return engine_cls(
        teacher,
        student,
        generator,
        method,
        defense,
        eval_suite(cfg, card),
        budget,
        settings,
        device,
        **extra,
    )
