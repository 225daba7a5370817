"""Named scenarios (teacher + method + defense + budget) for demos and benchmarks, and the
scenario pairs that put two of them side by side for teaching.

``dfkd-viz run --preset NAME`` takes every setting from the preset; explicit options override it
(``--preset ntl-trap --teacher mnist-ntl-digits`` runs the same scenario on another teacher).
``dfkd-viz run --pair NAME`` (and Home's "Run the pair") starts both presets of a
:class:`ScenarioPair`, which differ only in the fields the pair is about (checked at import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from dfkd_viz.errors import ConfigError, UnknownNameError


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
        "(its partner: ntl-trap-clean).",
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
        "ntl-trap-clean",
        "The NTL trap's clean reference",
        "The ntl-trap scenario with the ordinary MNIST teacher instead of the non-transferable one: "
        "same DFQ, steps and seed, and OOD accuracy measured on the same watermarked digits, so "
        "the two runs differ only in the teacher. What the trap costs is the gap between them.",
        {
            "teacher": "mnist-clean",
            "method": "dfq",
            "steps": 200,
            "ood_domain": "watermark",
        },
        ("ntl", "baseline"),
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
        "samples into real ones (~45 s). Baselines on the same split and steps: ood-ce, or "
        "--method kd | dfq. Measured (3 seeds, MNIST-M accuracy): augkd 73.8 %, ce 78.2 %, "
        "kd 69.8 %, dfq 55.5 %; "
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
        "ood-ce",
        "Out-of-domain baseline: the labels alone",
        "ood-augkd's split and steps without the teacher: the LeNet student trains from scratch "
        "with plain cross-entropy on the same 300 labelled MNIST-M digits (no teacher, no "
        "generator; seconds, not minutes). The baseline AuG-KD has to beat on the student's "
        "domain; scored on MNIST-M like it.",
        {
            "teacher": "mnist-clean",
            "method": "ce",
            "student_domain": "mnist-m",
            "student_domain_samples": 300,
            "steps": 600,
            "eval_every": 20,
        },
        ("out-of-domain", "baseline"),
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


@dataclass(frozen=True)
class ScenarioPair:
    """Two presets that belong together for teaching: run side by side, they differ only in what
    the pair is about (the teacher, the defense, the method), so the Compare page shows its effect.

    Attributes:
        name: the pair's id (``dfkd-viz run --pair NAME``), lower case with dashes.
        title: one line for the Home card.
        presets: the two preset names, in the order Compare shows them (the reference or the
            problem first, then the variant).
        differs_in: the RunConfig fields in which the two presets' configs differ, sorted; checked
            against the presets when the pair is registered.
        look_for: what to look for when the two runs are compared, in plain sentences with the
            numbers measured on this lab's machine (docs/results/pairs.md names the runs).
        tags: group the pair in the app, like a preset's tags.
    """

    name: str
    title: str
    presets: tuple[str, str]
    differs_in: tuple[str, ...]
    look_for: str
    tags: tuple[str, ...] = field(default_factory=tuple)


PAIRS: dict[str, ScenarioPair] = {}
_MISSING = object()


def config_difference(first: str, second: str) -> tuple[str, ...]:
    """The RunConfig fields (sorted) whose values differ between the configs of two presets; a
    field missing from one config counts as different from any value in the other.

    Raises:
        UnknownNameError: either preset does not exist.
    """
    a, b = get_preset(first).config, get_preset(second).config
    return tuple(sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING)))


def register_pair(pair: ScenarioPair) -> ScenarioPair:
    """Add ``pair`` to :data:`PAIRS` after checking it (at import, for the built-in pairs).

    Raises:
        ValueError: the name is taken; the two presets are the same or either is not registered;
            ``differs_in`` is empty or is not exactly the fields in which the presets' configs
            differ (a pair must differ only in what it is about).
    """
    if pair.name in PAIRS:
        raise ValueError(f"scenario pair {pair.name!r} is already registered")
    first, second = pair.presets
    missing = [p for p in pair.presets if p not in PRESETS]
    if missing:
        raise ValueError(f"scenario pair {pair.name!r}: no preset {missing[0]!r}")
    if first == second:
        raise ValueError(f"scenario pair {pair.name!r}: both halves are the preset {first!r}")
    actual = config_difference(first, second)
    if not pair.differs_in or tuple(sorted(pair.differs_in)) != actual:
        raise ValueError(
            f"scenario pair {pair.name!r}: {first} and {second} differ in "
            f"{', '.join(actual) or 'nothing'}, not in {', '.join(pair.differs_in) or 'nothing'}"
        )
    PAIRS[pair.name] = pair
    return pair


def get_pair(name: str) -> ScenarioPair:
    """The scenario pair ``name``; raises UnknownNameError listing the known pairs."""
    try:
        return PAIRS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown scenario pair {name!r}; known: {', '.join(PAIRS)}"
        ) from None


def pair_configs(
    name: str, overrides: dict[str, Any] | None = None, cores: int | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw configs of the pair's two runs (see :func:`preset_config`), ``overrides`` applied
    to both. The two runs go at the same time, so unless ``overrides`` sets ``threads``, each gets
    half of ``cores`` (default: this machine's CPU count; at least 1 thread).

    Raises:
        UnknownNameError: no such pair.
        ConfigError: an override sets a field the pair compares (it would make both runs alike).
    """
    pair = get_pair(name)
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    clash = [k for k in pair.differs_in if k in over]
    if clash:
        raise ConfigError(
            f"{clash[0]} is what the pair {name} compares ({pair.presets[0]} against "
            f"{pair.presets[1]}), so it cannot be set for both runs"
        )
    if "threads" not in over:
        over["threads"] = max(1, (cores or os.cpu_count() or 1) // 2)
    first, second = pair.presets
    return preset_config(first, over), preset_config(second, over)


def compare_path(run_ids: list[str] | tuple[str, ...]) -> str:
    """The app's URL path that opens the Compare page on these runs, ``/compare?runs=A,B``
    (run ids are plain names: letters, digits, ``_ . -``)."""
    return "/compare?runs=" + ",".join(run_ids)


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


# Scenario pairs: the "what to look for" texts state what runs of the pair measured on this lab's
# machine (benchmarks/pairs.py reruns them and writes docs/results/pairs.md, which names the runs).
register_pair(
    ScenarioPair(
        "ntl-trap-vs-clean",
        "The NTL trap: what a non-transferable teacher costs",
        ("ntl-trap", "ntl-trap-clean"),
        ("teacher",),
        "The ID-accuracy curves part within 20 steps and never meet: at step 200 the NTL "
        "teacher's student scores 81.7 % on real MNIST digits, the clean teacher's 97.2 % (the "
        "teachers themselves: 97.6 and 98.6 %). The per-class heatmaps show where the 15.5 "
        "points go, whole classes: 8 (35 %, read as 5) and 9 (41 %, read as 7), while the clean "
        "student keeps every class above 93 %. On watermarked digits: 13.5 % against 89.6 %. "
        "Measured with seed 0 (docs/results/pairs.md).",
        ("ntl",),
    )
)
register_pair(
    ScenarioPair(
        "ntl-trap-vs-atesc",
        "The NTL trap and ATEsc, the escape",
        ("ntl-trap", "ntl-trap-atesc"),
        ("defense",),
        "ATEsc wins none of the trap back here: 81.8 % ID accuracy with it, 81.7 % without (the "
        "clean teacher's student: 97.2 %). It moves the damage instead: on the per-class "
        "heatmaps class 8 recovers (35 → 71 %) and class 9 falls further (41 → 26 %). On the "
        "embedding maps no synthetic sample of either run sits among the watermarked digits, so "
        "its robustness split has nothing OOD-like to find. Measured with seed 0 "
        "(docs/results/pairs.md).",
        ("ntl",),
    )
)
register_pair(
    ScenarioPair(
        "backdoor-vs-abd",
        "A backdoored teacher, without and with ABD",
        ("backdoor", "backdoor-abd"),
        ("defense",),
        "The two runs are identical until step 100 (ABD's Shuffling Vaccine never switches on "
        "for this teacher); then Self-Retrospection starts, and by step 120 the ASR falls from "
        "32 % to 5 %. At step 200: ASR 4.3 % with ABD against 32.8 % without, ID accuracy "
        "95.5 % in both. The per-class ASR heatmap shows the digits the ring bends most without "
        "ABD: 1 (82 % sent to class 0) and 8 (60 %). Measured with seed 0 "
        "(docs/results/pairs.md).",
        ("backdoor",),
    )
)
register_pair(
    ScenarioPair(
        "collapse-dfq-vs-tadfkd",
        "DFQ against TA-DFKD on a teacher that breaks DFQ",
        ("collapse-dfq", "collapse-tadfkd"),
        ("method",),
        "Both students climb slowly on this ResNet-14 teacher (98.5 %). In this run DFQ ends "
        "ahead, 89.4 % against 80.4 %, but over seeds 0–2 the two are level (85 % of the "
        "teacher each, docs/results/stability.md): which one wins depends on the run, not on "
        "the method. Per class, TA-DFKD's missing class prior shows: its student gets class 9 "
        "right 38 % of the time (read as 7), DFQ's 73 %. Measured with seed 0, one thread per "
        "run; alone on two threads the same DFQ run ends at 83.4 % (docs/results/pairs.md).",
        ("collapse",),
    )
)
register_pair(
    ScenarioPair(
        "ood-augkd-vs-ce",
        "Out-of-domain: AuG-KD against the labels alone",
        ("ood-augkd", "ood-ce"),
        ("method",),
        "On MNIST-M the labels alone win here: CE on the 300 labelled digits reaches 79.8 %, "
        "AuG-KD 73.8 % (the teacher: 56.4 %); AuG-KD keeps the teacher's MNIST, 95.2 % ID "
        "against 87.4 %. Its curve shows the stages: flat at 52 % through the data-free stage "
        "and the anchor (to step 300), then climbing with the mixup; CE is at 80 % by step 120. "
        "With its reference code's loss (--param u=1) AuG-KD does win (83.4 % against 78.2 %, "
        "3 seeds). Measured with seed 0 (docs/results/pairs.md).",
        ("out-of-domain",),
    )
)
