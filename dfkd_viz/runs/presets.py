"""Named scenarios (teacher + method + defense + budget) for demos and benchmarks.

``dfkd-viz run --preset NAME`` takes every setting from the preset; explicit options override it
(``--preset ntl-trap --teacher mnist-clean`` runs the same scenario on another teacher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dfkd_viz.errors import UnknownNameError


@dataclass(frozen=True)
class Preset:
    """A scenario: ``config`` holds RunConfig fields; ``tags`` group presets in the app."""

    name: str
    title: str
    description: str
    config: dict[str, Any]
    tags: tuple[str, ...] = field(default_factory=tuple)


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    if preset.name in PRESETS:
        raise ValueError(f"preset {preset.name!r} is already registered")
    PRESETS[preset.name] = preset
    return preset


register_preset(
    Preset(
        "clean-dfq",
        "Clean teacher, DFQ",
        "The reference: an ordinary MNIST teacher distilled with DFQ-style synthesis (adversarial + "
        "BN statistics + class prior). The student reaches about 98 % of the teacher's accuracy in ~30 s "
        "(bf16 autocast where the CPU has native bf16: faster at the same accuracy per step).",
        {"teacher": "mnist-clean", "method": "dfq", "steps": 200, "precision": "auto"},
        ("baseline",),
    )
)
register_preset(
    Preset(
        "clean-dfad",
        "Clean teacher, DFAD",
        "Data-free adversarial distillation: a min-max L1 game without priors.",
        {"teacher": "mnist-clean", "method": "dfad", "steps": 300},
        ("baseline",),
    )
)
register_preset(
    Preset(
        "clean-zskt",
        "Clean teacher, ZSKT",
        "Zero-shot knowledge transfer: adversarial KL plus attention transfer, 10 student steps per batch.",
        {"teacher": "mnist-clean", "method": "zskt", "steps": 200},
        ("baseline",),
    )
)


register_preset(
    Preset(
        "ntl-trap",
        "NTL trap (watermark teacher), DFQ",
        "A source-only non-transferable teacher that refuses watermarked MNIST digits. DFQ distilled "
        "from it loses ~15 points of ID accuracy against the clean teacher with the same budget "
        "(compare: --preset ntl-trap --teacher mnist-clean).",
        {
            "teacher": "mnist-ntl-watermark",
            "method": "dfq",
            "steps": 200,
            "ood_domain": "watermark",
        },
        ("ntl",),
    )
)
register_preset(
    Preset(
        "ntl-trap-atesc",
        "NTL trap with ATEsc",
        "The same teacher, method and steps with ATEsc: synthetic samples split by the teacher's "
        "adversarial robustness (fragile → distillation, robust → forgetting). At this scale it "
        "recovers none of the trap (docs/results/ntl-trap.md); the Decisions and Embeddings pages show why: the "
        "samples it rejects sit among real ID points.",
        {
            "teacher": "mnist-ntl-watermark",
            "method": "dfq",
            "defense": "atesc",
            "steps": 200,
            "ood_domain": "watermark",
        },
        ("ntl",),
    )
)


register_preset(
    Preset(
        "backdoor",
        "Backdoored teacher (Trojan watermark), DFQ",
        "A teacher with a Trojan-watermark backdoor (a ring stamped bottom-right → class 0). DFQ "
        "passes part of it on: the student learns the task and sends ~40 % of triggered images to "
        "class 0, and its attribution moves onto the ring. Watch the ASR curve on Live and the "
        "trigger localisation on Saliency.",
        {"teacher": "mnist-backdoor-trojan-wm", "method": "dfq", "steps": 200},
        ("backdoor",),
    )
)
register_preset(
    Preset(
        "backdoor-abd",
        "Backdoored teacher with ABD",
        "The same teacher, method and steps with ABD: the Shuffling Vaccine (suspicious synthetic "
        "samples, flagged on Decisions) and Self-Retrospection (a synthesised trigger, shown on "
        "Saliency, unlearned by the student from mid-run). ASR falls to ~5 % at the same ID accuracy.",
        {"teacher": "mnist-backdoor-trojan-wm", "method": "dfq", "defense": "abd", "steps": 200},
        ("backdoor",),
    )
)


register_preset(
    Preset(
        "collapse-dfq",
        "A teacher that breaks DFQ",
        "A deeper, BN-heavy teacher (ResNet-14, 98.5 % on MNIST). DFQ's LeNet student levels off "
        "at 84–87 % of the teacher's accuracy after ~300 steps (seeds 0–2; "
        "docs/results/stability.md). Compare with collapse-tadfkd: same teacher, same 600 steps (~2 min).",
        {"teacher": "mnist-resnet14", "method": "dfq", "steps": 600, "eval_every": 25},
        ("collapse",),
    )
)
register_preset(
    Preset(
        "collapse-tadfkd",
        "The same teacher with TA-DFKD",
        "TA-DFKD on the same teacher and steps: no class prior, and the teacher only verifies "
        "synthetic samples (a Gaussian mixture on its own loss, shown on Decisions). With seed 0 "
        "its student keeps climbing to 89 % of the teacher's accuracy (DFQ: 85 %); with seed 2 it "
        "stops at 77 % — at this scale neither method is reliably the more stable (docs/results/stability.md).",
        {"teacher": "mnist-resnet14", "method": "tadfkd", "steps": 600, "eval_every": 25},
        ("collapse",),
    )
)

register_preset(
    Preset(
        "ood-augkd",
        "Out-of-domain KD: AuG-KD",
        "The teacher knows MNIST (56 % on MNIST-M); the student has 300 labelled MNIST-M digits "
        "and is scored on MNIST-M. AuG-KD learns a generator and an encoder data-free, anchors the "
        "student-domain samples where the teacher is certain, then mixes anchored generated "
        "samples into real ones (~45 s). Baselines on the same split and steps: --method ce | kd | "
        "dfq. Measured (3 seeds, MNIST-M accuracy): augkd 73.8 %, ce 78.2 %, kd 69.8 %, dfq 55.5 %; "
        "--param u=1 (CE only, what the reference code trains) 83.4 % (docs/results/out-of-domain.md).",
        {
            "teacher": "mnist-clean",
            "method": "augkd",
            "student_domain": "mnist-m",
            "student_domain_samples": 300,
            "steps": 600,
            "eval_every": 20,
        },
        ("out-of-domain",),
    )
)


register_preset(
    Preset(
        "colour-dfq",
        "Colour digits (32×32), DFQ",
        "MNIST-M-style 32×32 colour digits (mnistm32): a WRN-16-2 teacher (95.5 %) distilled "
        "into a WRN-16-1 with DFQ and CMI's 32×32 generator (nz 256, ngf 64) over 150 steps: "
        "the student reached 79–88 % (median 84 %) here, about 4 min on two quiet CPU cores "
        "(docs/results/colour.md). "
        "The first run trains the teacher (about 2½ min more).",
        {
            "teacher": "mnistm32-wrn16_2",
            "method": "dfq",
            "student": "wrn16_1",
            "steps": 150,
            "batch_size": 64,
            "eval_every": 10,
            "snapshot_every": 10,
            "checkpoint_every": 25,
        },
        ("colour",),
    )
)


def get_preset(name: str) -> Preset:
    """The preset ``name``; raises UnknownNameError listing the known presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def preset_config(name: str | None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A raw config dict: the preset's settings (if any) with ``overrides`` (non-None values) on
    top. A budget override (``steps`` or ``seconds``) replaces the preset's budget."""
    base: dict[str, Any] = dict(get_preset(name).config) if name else {}
    if name:
        base["preset"] = name
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "steps" in over or "seconds" in over:
        base.pop("steps", None)
        base.pop("seconds", None)
    for key in ("method_params", "defense_params"):
        if key in over and key in base:
            over[key] = {**base[key], **over[key]}
    if "method" in over and over["method"] != base.get("method"):
        base.pop("method_params", None)
    if "defense" in over and over["defense"] != base.get("defense"):
        base.pop("defense_params", None)
    base.update(over)
    return base
