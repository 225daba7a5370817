"""Run configuration: typed and validated at the boundary (CLI and app alike).

A bad value raises :class:`~dfkd_viz.errors.ConfigError` whose message is one sentence naming the
field and the allowed range, e.g. ``steps must be ≥ 1 (got -5)``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dfkd_viz.errors import ConfigError, DfkdVizError

MAX_STEPS = 1_000_000
MAX_SECONDS = 7 * 24 * 3600.0


class RunConfig(BaseModel):
    """Everything a distillation run needs; stored as the run's ``config.json``.

    Budget: exactly one of ``steps`` (outer iterations) or ``seconds`` (wall clock, seconds); when
    neither is given, :func:`validate_config` fills in the method's ``default_steps``.
    """

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(min_length=1, description="teacher id in the zoo")
    method: str = Field(min_length=1, description="DFKD method name")
    defense: str | None = Field(
        None,
        description="defense name (default: the method's own, e.g. ta-select for tadfkd, else none)",
    )
    method_params: dict[str, Any] = Field(default_factory=dict)
    defense_params: dict[str, Any] = Field(default_factory=dict)
    student: str = Field("lenet5", description="student architecture")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    seconds: float | None = Field(None, gt=0, le=MAX_SECONDS)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16", "auto"] = Field(
        "fp32",
        description="forward passes in fp32, or under bf16/fp16 autocast (fp16: CUDA only); auto "
        "= bf16 on a CPU with native bf16, else fp32 (the clean-dfq preset's choice: faster at "
        "the same accuracy per step, docs/results/performance.md)",
    )
    threads: int | None = Field(
        None, ge=1, le=256, description="torch CPU threads (default: all cores)"
    )
    batch_size: int = Field(128, ge=2, le=4096)
    nz: int | None = Field(
        None,
        ge=2,
        le=1024,
        description="generator latent size (default: by the teacher's input shape, "
        "models.default_size: 100 for 28×28 grey, CMI's 256 for 32×32 colour)",
    )
    ngf: int | None = Field(
        None,
        ge=4,
        le=256,
        description="generator base width (default: 16 for 28×28 grey, CMI's 64 for 32×32 colour)",
    )
    eval_every: int = Field(10, ge=1, le=MAX_STEPS)
    snapshot_every: int = Field(20, ge=1, le=MAX_STEPS)
    snapshot_size: int = Field(64, ge=1, le=512)
    checkpoint_every: int = Field(
        20,
        ge=1,
        le=MAX_STEPS,
        description="write a checkpoint every N steps (default: at every default snapshot, so a "
        "fork from Live's snapshot slider starts exactly there)",
    )
    keep_checkpoints: int = Field(
        25,
        ge=1,
        le=10_000,
        description="checkpoints kept on disk: beyond this many the older ones are thinned to "
        "every 2nd, 4th… (the newest always kept); forks start from the nearest kept one",
    )
    ood_domain: str | None = Field(
        None, description="OOD domain for OOD accuracy (default: the teacher's)"
    )
    trigger: str | None = Field(None, description="trigger for ASR (default: the teacher's)")
    target: int | None = Field(None, ge=0, le=999)
    student_domain: str | None = Field(
        None,
        description="the student's own domain (out-of-domain KD): a domain of the teacher's dataset "
        "whose labelled training samples the student may use and whose test split it is scored on",
    )
    student_domain_samples: int = Field(
        300, ge=10, le=1_000_000, description="labelled student-domain training samples"
    )
    embedding: bool = Field(
        True, description="fit a UMAP map of real ID/OOD data and place synthetic samples in it"
    )
    preset: str | None = None

    @model_validator(mode="after")
    def _one_budget(self) -> RunConfig:
        if self.steps is not None and self.seconds is not None:
            raise ValueError("give either steps or seconds as the budget, not both")
        return self

    def budget_text(self) -> str:
        return f"{self.steps} steps" if self.steps is not None else f"{self.seconds:g} s"

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2, sort_keys=True)


_RANGES = {
    "greater_than_equal": "≥ {ge}",
    "greater_than": "> {gt}",
    "less_than_equal": "≤ {le}",
    "less_than": "< {lt}",
}


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One sentence for the first error of ``exc``: the field, what is allowed, what was given."""
    err = exc.errors()[0]
    field = prefix + ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
    if field and not re.fullmatch(r"[A-Za-z0-9_.\-]{1,80}", field):
        field = repr(field[:60])  # a user-typed key: quoted, never raw newlines or control codes
    ctx = err.get("ctx") or {}
    kind = err.get("type", "")
    given = err.get("input")
    if kind in _RANGES:
        rule = "must be " + _RANGES[kind].format(**ctx)
    elif kind == "extra_forbidden":
        return f"{field} is not a known option"
    elif kind == "missing":
        return f"{field} is required"
    elif kind == "literal_error":
        rule = f"must be one of {ctx.get('expected', '')}"
    elif kind == "value_error":
        msg = str(ctx.get("error", err.get("msg", "")))
        return f"{field + ': ' if field else ''}{msg}"
    else:
        rule = err.get("msg", "is invalid").lower().replace("input should", "must")
    text = f"{field} {rule}" if field else rule
    return f"{text} (got {given!r})" if given is not None and not isinstance(given, dict) else text


def parse_param_pairs(pairs: list[str] | str | None, what: str = "parameter") -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict; a value is read as JSON where it parses (``0.5``, ``true``,
    ``[1, 2]``), else kept as text. A string is split at newlines and at commas outside brackets.

    Raises:
        ConfigError: an item without ``=`` or with an empty key (one sentence).
    """
    if isinstance(pairs, str):
        pairs = [p for p in re.split(r"\n|,(?![^\[\{]*[\]\}])", pairs) if p.strip()]
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"a {what} takes KEY=VALUE (got {pair.strip()!r})")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value.strip()
    return out


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a raw dict as a :class:`RunConfig`; raises ConfigError (one sentence)."""
    try:
        return RunConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def teacher_input(tcard: dict) -> tuple[tuple[int, int, int], int] | None:
    """``(in_shape, num_classes)`` of a teacher from its card, or, for a zoo teacher not trained
    yet, from its dataset; None when neither is known (the dataset is not on this machine)."""
    if tcard.get("in_shape") and tcard.get("num_classes"):
        return tuple(int(v) for v in tcard["in_shape"]), int(tcard["num_classes"])
    from dfkd_viz.data import load_dataset

    try:
        ds = load_dataset(tcard["dataset"], "test")
    except DfkdVizError:
        return None
    return ds.shape, ds.num_classes


def _check_student_fits(student: str, tcard: dict) -> None:
    """ConfigError (one sentence listing the architectures that fit) when the student
    architecture does not take the teacher's images."""
    from dfkd_viz.models import fitting_models, input_fits

    known = teacher_input(tcard)
    if known is None or input_fits(student, *known):
        return
    (c, h, w), _ = known
    raise ConfigError(
        f"student {student} does not take the teacher's {c}×{h}×{w} images; architectures "
        f"that do: {', '.join(fitting_models(*known))}"
    )


def validate_config(cfg: RunConfig | dict[str, Any], check_teacher: bool = True) -> RunConfig:
    """Full validation: field ranges, then names (teacher, method, defense, student, domain,
    trigger) and the method's and defense's own parameters; fills the default budget and the
    method's default defense (when ``defense`` is None).

    Raises:
        ConfigError: one sentence naming the field.
    """
    from dfkd_viz.data import TRIGGERS, domain_names
    from dfkd_viz.distill.defenses import DEFENSES
    from dfkd_viz.distill.methods import METHODS
    from dfkd_viz.models import MODELS
    from dfkd_viz.teachers import card

    if isinstance(cfg, dict):
        cfg = parse_config(cfg)
    if cfg.method in METHODS and cfg.defense is None:
        cfg = cfg.model_copy(update={"defense": METHODS.get(cfg.method).default_defense or "none"})
    checks = [
        ("method", METHODS, cfg.method),
        ("defense", DEFENSES, cfg.defense),
        ("student", MODELS, cfg.student),
    ]
    if cfg.trigger is not None:
        checks.append(("trigger", TRIGGERS, cfg.trigger))
    for field, reg, value in checks:
        if value not in reg:
            raise ConfigError(f"{field} must be one of {', '.join(reg.names())} (got {value!r})")
    if cfg.precision == "fp16":  # CUDA only; "auto" means CUDA only where there is a GPU
        import torch

        from dfkd_viz.distill.precision import check_precision

        cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        check_precision(cfg.precision, "cuda" if cuda else "cpu")
    if cfg.ood_domain is not None and cfg.ood_domain not in domain_names():
        raise ConfigError(
            f"ood_domain must be one of {', '.join(domain_names())} (got {cfg.ood_domain!r})"
        )
    if cfg.student_domain is not None and cfg.student_domain not in domain_names():
        raise ConfigError(
            f"student_domain must be one of {', '.join(domain_names())} (got {cfg.student_domain!r})"
        )
    method_cls = METHODS.get(cfg.method)
    if getattr(method_cls, "needs_student_data", False) and cfg.student_domain is None:
        raise ConfigError(
            f"method {cfg.method} trains on labelled student-domain data: set student_domain "
            f"(e.g. mnist-m) or use the ood-augkd preset"
        )
    if check_teacher:
        try:
            tcard = card(cfg.teacher)
        except DfkdVizError as exc:
            raise ConfigError(f"teacher: {exc}") from None
        _check_student_fits(cfg.student, tcard)
        if cfg.student_domain is not None:
            from dfkd_viz.runs.build import student_data

            try:
                student_data(cfg, tcard)
            except DfkdVizError as exc:
                raise ConfigError(str(exc)) from None
    try:
        mp = method_cls.make_params(cfg.method_params)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "method_params.")) from None
    try:
        DEFENSES.get(cfg.defense).Params(**cfg.defense_params)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "defense_params.")) from None
    if cfg.steps is None and cfg.seconds is None:
        cfg = cfg.model_copy(update={"steps": mp.default_steps})
    return cfg
