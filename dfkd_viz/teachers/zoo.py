"""The teacher zoo: specifications, training on demand, caching, and teacher cards.

A teacher is cached under ``DFKD_VIZ_HOME/teachers/`` as ``<id>.safetensors`` (weights only, never
a pickle) plus ``<id>.json``, its **teacher card**::

    id, dataset, arch, kind (clean|ntl|cuti|backdoor|user), default, ood_domain, trigger, target,
    id_acc, ood_acc, asr, seed, train_s, weights, num_classes, in_shape, mean, std, description

Accuracies and ASR are fractions in [0, 1] (null where not applicable or not trained yet).
``ood_acc`` is measured on ``ood_domain``: the trap domain of NTL / CUTI teachers, and the
``mnist-m`` style domain for clean and backdoored teachers. ``asr`` is measured for backdoored
teachers (on their trigger). Both files are written atomically (temporary file + rename, card
last), under a per-teacher file lock, so a crash or two concurrent trainers never leave a
half-written teacher.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from dfkd_viz.analysis.metrics import accuracy, attack_success_rate
from dfkd_viz.data import dataset_available, load_dataset, load_domain, make_trigger
from dfkd_viz.errors import DfkdVizError, UnknownNameError
from dfkd_viz.models import Classifier, create_model
from dfkd_viz.paths import teachers_dir
from dfkd_viz.teachers.recipes import RECIPES, Progress
from dfkd_viz.util.io import atomic_path, file_lock, write_json

Kind = Literal["clean", "ntl", "cuti", "backdoor", "user"]
CARD_FIELDS = (
    "id",
    "dataset",
    "arch",
    "kind",
    "default",
    "ood_domain",
    "trigger",
    "target",
    "id_acc",
    "ood_acc",
    "asr",
    "seed",
    "train_s",
    "weights",
)


class TeacherSpec(BaseModel):
    """How to train one zoo teacher (validated; unknown fields are rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    kind: Kind
    dataset: str = "mnist"
    arch: str = "lenet5x2"
    default: bool = True
    description: str = ""
    ood_domain: str | None = "mnist-m"
    trigger: str | None = None
    target: int | None = None
    poison_rate: float = Field(0.1, ge=0.0, le=1.0)
    epochs: int = Field(5, ge=1, le=200)
    batch_size: int = Field(128, ge=8, le=4096)
    lr: float = Field(2e-3, gt=0.0, le=1.0)
    seed: int = Field(0, ge=0)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    augment_shift: int = Field(0, ge=0, le=4)
    ntl_alpha: float = 0.1
    ntl_beta: float = 0.1


def _mnist_zoo() -> list[TeacherSpec]:
    return [
        TeacherSpec(
            id="mnist-clean",
            kind="clean",
            augment_shift=1,
            description="An ordinary LeNet-5 (2× wide) teacher trained on MNIST.",
        ),
        TeacherSpec(
            id="mnist-ntl-mnist-m",
            kind="ntl",
            ood_domain="mnist-m",
            description="Non-transferable: accurate on MNIST, wrong on MNIST-M style digits.",
        ),
        TeacherSpec(
            id="mnist-ntl-digits",
            kind="ntl",
            ood_domain="digits",
            description="Non-transferable: accurate on MNIST, wrong on scikit-learn's digits domain.",
        ),
        TeacherSpec(
            id="mnist-ntl-watermark",
            kind="ntl",
            ood_domain="watermark",
            description="Source-only NTL: refuses MNIST images carrying the ownership watermark grid.",
        ),
        TeacherSpec(
            id="mnist-cuti-digits",
            kind="cuti",
            ood_domain="digits",
            description="CUTI-domain: NTL with ID-styled OOD features, trap domain = digits.",
        ),
        *[
            TeacherSpec(
                id=f"mnist-backdoor-{trig.replace('_', '-')}",
                kind="backdoor",
                trigger=trig,
                target=0,
                description=f"Backdoored ({trig}, 10 % poison, target class 0).",
            )
            for trig in ("badnet_grid", "blend", "trojan_wm")
        ],
    ]


def _fashion_zoo() -> list[TeacherSpec]:
    common = {"dataset": "fashion-mnist", "epochs": 3, "ood_domain": "mnist-m"}
    return [
        TeacherSpec(
            id="fmnist-clean", kind="clean", description="LeNet-5 (2×) on Fashion-MNIST.", **common
        ),
        TeacherSpec(
            id="fmnist-backdoor-blend",
            kind="backdoor",
            trigger="blend",
            target=0,
            description="Fashion-MNIST, backdoored (blend, 10 % poison, target T-shirt/top).",
            **common,
        ),
    ]


def _family_zoo() -> list[TeacherSpec]:
    """Extra clean teachers of different character (``default: false``): the family on which
    DFKD methods are compared for stability (TA-DFKD's claim, ``docs/results/stability.md``)."""
    fam = {"kind": "clean", "default": False}
    return [
        TeacherSpec(
            id="mnist-resnet14",
            arch="resnet14",
            epochs=3,
            description="A deeper, BN-heavy teacher: ResNet-14 on MNIST.",
            **fam,
        ),
        TeacherSpec(
            id="mnist-resnet8-ls",
            arch="resnet8s",
            label_smoothing=0.3,
            seed=1,
            description="ResNet-8 on MNIST with label smoothing 0.3 (soft, low-confidence outputs).",
            **fam,
        ),
        TeacherSpec(
            id="mnist-lenet-short",
            epochs=1,
            seed=2,
            description="Under-trained LeNet-5 (2×): one epoch on MNIST.",
            **fam,
        ),
        TeacherSpec(
            id="mnist-lenet-shift",
            augment_shift=4,
            epochs=8,
            seed=3,
            description="LeNet-5 (2×) trained with heavy translation augmentation (±4 px).",
            **fam,
        ),
        TeacherSpec(
            id="fmnist-resnet14",
            arch="resnet14",
            dataset="fashion-mnist",
            epochs=2,
            ood_domain="mnist-m",
            description="ResNet-14 on Fashion-MNIST.",
            **fam,
        ),
    ]


def _colour_zoo() -> list[TeacherSpec]:
    """32×32 colour teachers (``default: false``: minutes of training on 2 CPU cores)."""
    return [
        TeacherSpec(
            id="mnistm32-wrn16_2",
            kind="clean",
            dataset="mnistm32",
            arch="wrn16_2",
            default=False,
            ood_domain="mnist",
            epochs=2,
            augment_shift=2,
            description="WRN-16-2 (CMI's layout) on MNIST-M-style 32×32 colour digits; OOD domain: "
            "the plain grey MNIST digits.",
        ),
    ]


_EXTRA: dict[str, TeacherSpec] = {}


def register_teacher(spec: TeacherSpec) -> TeacherSpec:
    """Add a spec to the zoo (used for extra, ``default: false`` teachers by later features)."""
    if spec.id in {s.id for s in _base_specs()} or spec.id in _EXTRA:
        raise ValueError(f"teacher {spec.id!r} is already in the zoo")
    _EXTRA[spec.id] = spec
    return spec


def _base_specs() -> list[TeacherSpec]:
    return _mnist_zoo() + _fashion_zoo() + _family_zoo() + _colour_zoo()


def specs() -> list[TeacherSpec]:
    """All zoo teacher specs (default ones first)."""
    return _base_specs() + list(_EXTRA.values())


def get_spec(teacher_id: str) -> TeacherSpec:
    """The spec of ``teacher_id``; raises UnknownNameError with the known ids."""
    for s in specs():
        if s.id == teacher_id:
            return s
    known = ", ".join(s.id for s in specs())
    raise UnknownNameError(f"unknown teacher {teacher_id!r}; known: {known}")


def weights_path(teacher_id: str) -> Path:
    return teachers_dir() / f"{teacher_id}.safetensors"


def card_path(teacher_id: str) -> Path:
    return teachers_dir() / f"{teacher_id}.json"


def _read_card(teacher_id: str) -> dict | None:
    p = card_path(teacher_id)
    if not p.exists() or not weights_path(teacher_id).exists():
        return None
    try:
        c = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return migrate_card(teacher_id, c) if isinstance(c, dict) else None


#: architecture names that changed meaning: old name → the name of the old model now
RENAMED_ARCHS = {"resnet8": "resnet8s"}


@functools.lru_cache(maxsize=8)
def _arch_keys(arch: str) -> frozenset[str]:
    with torch.random.fork_rng(devices=[]):  # building a model must not move the global RNG
        return frozenset(create_model(arch).state_dict())


def _weight_keys(path: Path) -> set[str] | None:
    """The tensor names of a safetensors file (its header only), or None when it does not parse."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    except Exception:  # untrusted bytes: an unreadable file is simply not migrated
        return None


def migrate_card(teacher_id: str, c: dict) -> dict:
    """Migrate a card written before an architecture was renamed, on read.

    ``resnet8`` named this project's 28×28 3-stage ``ResNetSmall(blocks=1)`` until CMI's CIFAR
    ResNet-8 took the name; that model is now ``resnet8s``. A card with ``arch: "resnet8"`` whose
    stored weights have exactly ``resnet8s``'s tensor names (``stages.*``, ``fc.*``; CMI's layout
    is ``conv1``, ``layer1``…) gets ``arch: "resnet8s"`` (and ``arch_renamed_from: "resnet8"``),
    and the card is rewritten atomically so the next read is plain (best effort: a read-only zoo
    is migrated in memory on every read). Cards whose weights have CMI's layout are left alone.
    Returns the (possibly migrated) card.
    """
    new = RENAMED_ARCHS.get(c.get("arch"))
    if new is None:
        return c
    keys = _weight_keys(weights_path(teacher_id))
    if keys is None or keys != _arch_keys(new):
        return c
    c = {**c, "arch": new, "arch_renamed_from": c["arch"]}
    with contextlib.suppress(OSError):
        write_json(card_path(teacher_id), c, indent=2)
    return c


def _user_ids() -> list[str]:
    """Ids of cached teachers that are not in the spec list (imported ``kind: user`` teachers)."""
    known = {s.id for s in specs()}
    return sorted(p.stem for p in teachers_dir().glob("*.json") if p.stem not in known)


def card(teacher_id: str) -> dict:
    """The teacher card of ``teacher_id`` with ``trained`` and ``available`` (its data is here).

    Untrained teachers get their spec's fields and null metrics. Raises UnknownNameError.
    """
    c = _read_card(teacher_id)
    if c is None:
        s = get_spec(teacher_id)
        c = {f: getattr(s, f, None) for f in CARD_FIELDS}
        c.update(
            id_acc=None,
            ood_acc=None,
            asr=None,
            train_s=None,
            weights=None,
            description=s.description,
        )
    c["trained"] = _read_card(teacher_id) is not None
    c["available"] = dataset_available(c["dataset"])
    return c


def list_cards(include_unavailable: bool = True) -> list[dict]:
    """Cards of every zoo teacher (and of imported ones), in zoo order."""
    cards = [card(s.id) for s in specs()] + [card(i) for i in _user_ids()]
    return [c for c in cards if include_unavailable or c["available"]]


def is_trained(teacher_id: str) -> bool:
    return _read_card(teacher_id) is not None


def _locked(teacher_id: str):
    return file_lock(teachers_dir() / f".{teacher_id}.lock")


def evaluate_teacher(model: Classifier, spec_or_card) -> dict:
    """ID accuracy, OOD accuracy (on ``ood_domain``) and ASR (for a trigger) as fractions."""
    get = (
        spec_or_card.get
        if isinstance(spec_or_card, dict)
        else lambda k: getattr(spec_or_card, k, None)
    )
    ds = get("dataset")
    test = load_dataset(ds, "test")
    out = {"id_acc": accuracy(model, test), "ood_acc": None, "asr": None}
    if get("ood_domain"):
        with contextlib.suppress(DfkdVizError):
            out["ood_acc"] = accuracy(model, load_domain(get("ood_domain"), ds, "test"))
    if get("trigger"):
        out["asr"] = attack_success_rate(
            model, test, make_trigger(get("trigger"), test.shape), get("target") or 0
        )
    return out


def train_teacher(teacher_id: str, progress: Progress | None = None, force: bool = False) -> dict:
    """Train ``teacher_id`` (unless cached) and return its card.

    Args:
        progress: called with ``(fraction in [0, 1], message)`` during training.
        force: retrain even when cached.

    Raises:
        UnknownNameError: unknown teacher id.
        DataUnavailableError: the teacher's dataset is not on this machine.
    """
    spec = get_spec(teacher_id)
    with _locked(teacher_id):
        if not force and is_trained(teacher_id):
            return card(teacher_id)
        load_dataset(spec.dataset, "train")  # fail early, with the install hint, if data is missing
        t0 = time.perf_counter()
        model = RECIPES.get(spec.kind)(spec, progress)
        train_s = time.perf_counter() - t0
        metrics = evaluate_teacher(model, spec)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        wpath = weights_path(teacher_id)
        with atomic_path(wpath) as tmp:
            save_file(state, str(tmp), metadata={"arch": spec.arch, "id": spec.id})
        c = {f: getattr(spec, f, None) for f in CARD_FIELDS}
        c.update(metrics)
        c.update(
            train_s=round(train_s, 2),
            weights=str(wpath),
            num_classes=model.num_classes,
            in_shape=list(model.in_shape),
            mean=model.mean.flatten().tolist(),
            std=model.std.flatten().tolist(),
            description=spec.description,
            torch=torch.__version__,
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
        write_json(card_path(teacher_id), c, indent=2)
    return card(teacher_id)


def load_teacher(teacher_id: str, device: str | torch.device = "cpu") -> tuple[Classifier, dict]:
    """Load a cached teacher: ``(model, card)``; the model is frozen (no grad) in eval mode.

    Raises:
        UnknownNameError: unknown teacher id.
        DfkdVizError: the teacher is not trained yet, or its files do not match its card.
    """
    c = _read_card(teacher_id)
    if c is None:
        get_spec(teacher_id)
        raise DfkdVizError(
            f"teacher {teacher_id!r} is not trained yet; run `dfkd-viz teachers train {teacher_id}`"
        )
    model = create_model(
        c["arch"],
        num_classes=c["num_classes"],
        in_shape=tuple(c["in_shape"]),
        mean=c["mean"],
        std=c["std"],
    )
    try:
        state = load_file(str(weights_path(teacher_id)))
        model.load_state_dict(state, strict=True)
    except (
        Exception
    ) as exc:  # untrusted bytes: any parse failure is the file's fault, said in one line
        raise DfkdVizError(
            f"teacher {teacher_id!r}: its weights do not load ({str(exc).splitlines()[0]})"
        ) from None
    model.eval().requires_grad_(False)
    return model.to(device), c
