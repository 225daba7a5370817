"""Bring your own teacher: import untrusted weight files into the zoo, validated, never unpickled.

A teacher file is **data, never code**. Two formats are read:

- **safetensors** (preferred): an 8-byte little-endian header length, a JSON header, raw tensor
  bytes. The header is checked here (length, JSON object, sane entries) before the safetensors
  library parses the tensors.
- a **PyTorch state_dict** saved with ``torch.save`` (zip or legacy format), read with
  ``torch.load(weights_only=True)``: PyTorch's restricted unpickler, which builds tensors and plain
  containers only and refuses any other global (``os.system`` and friends). Anything else — a bare
  pickle, a pickled ``nn.Module``, a NumPy file — is rejected without being unpickled.

Then every tensor is checked against the chosen architecture (names, shapes, dtypes), NaN / Inf
values and negative BN variances are refused, and the teacher's accuracy on the chosen dataset's
test split is measured (and its outputs checked for NaN). Only then are a re-serialised
safetensors file (float32, written by us; the user's bytes are never kept) and a card
(``kind: user``) written, atomically and card last, under the teacher's lock. A rejected file
raises :class:`TeacherImportError` (one sentence) and leaves the zoo exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from dfkd_viz.data import domain_names, load_dataset
from dfkd_viz.errors import DfkdVizError, UnknownNameError
from dfkd_viz.models import MODELS, create_model
from dfkd_viz.teachers.zoo import (
    _locked,
    _read_card,
    card,
    card_path,
    evaluate_teacher,
    specs,
    weights_path,
)
from dfkd_viz.util.io import atomic_path, write_json

MAX_TEACHER_BYTES = 64 * 1024 * 1024
"""Largest teacher file accepted (bytes); the app's upload limit is the same (``.streamlit``)."""
MAX_HEADER_BYTES = 1024 * 1024
"""Largest safetensors JSON header accepted (bytes): a few hundred tensors need a few KB."""
MAX_TENSORS = 4096
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # torch.save's legacy (non-zip) format starts with a pickle protocol opcode


class TeacherImportError(DfkdVizError):
    """A teacher file or an import option was rejected (the message is one sentence)."""


def _sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "…") if len(text) > 160 else text or type(exc).__name__


def default_id(filename: str) -> str:
    """A teacher id derived from an uploaded file's name: lower case, ``[a-z0-9_.-]`` only,
    at most 64 characters, never a path (``"../../My Net.pt"`` → ``"my-net"``)."""
    stem = Path(str(filename).replace("\\", "/")).name
    for suffix in (".safetensors", ".pth", ".pt", ".bin"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    slug = re.sub(r"[^a-z0-9_.-]+", "-", stem.lower()).strip("-._")[:64]
    return slug or "user-teacher"


def parse_normalization(text: str | None, channels: int, dataset_stats) -> tuple[list, list]:
    """Per-channel ``(mean, std)`` from ``--normalization``.

    Args:
        text: ``None`` or ``"dataset"`` (the dataset's own statistics), ``"none"`` (mean 0, std 1:
            the model takes pixels in [0, 1]), or ``"MEAN/STD"`` with one comma-separated value per
            channel, e.g. ``"0.1307/0.3081"`` or ``"0.5,0.5,0.5/0.25,0.25,0.25"`` (pixel units).
        channels: C of the dataset's images.
        dataset_stats: ``(mean, std)`` of the dataset.

    Raises:
        TeacherImportError: malformed text, wrong number of values, a non-finite value or std ≤ 0.
    """
    if text is None or text.strip().lower() == "dataset":
        return list(dataset_stats[0]), list(dataset_stats[1])
    if text.strip().lower() == "none":
        return [0.0] * channels, [1.0] * channels
    parts = text.split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        mean, std = ([float(v) for v in p.split(",")] for p in parts)
    except ValueError:
        raise TeacherImportError(
            f"normalization must be 'dataset', 'none' or 'MEAN/STD' like '0.1307/0.3081' (got {text!r})"
        ) from None
    if len(mean) != channels or len(std) != channels:
        raise TeacherImportError(
            f"normalization needs {channels} mean and {channels} std value(s), one per channel "
            f"(got {len(mean)} and {len(std)})"
        )
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise TeacherImportError(
            f"normalization values must be finite and every std must be > 0 (got {text!r})"
        )
    return mean, std


def _read_safetensors(data: bytes) -> dict[str, torch.Tensor]:
    if len(data) < 8:
        raise TeacherImportError("the file is truncated: a safetensors file starts with 8 bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES:
        raise TeacherImportError(
            f"the safetensors header claims {n} bytes, more than the {MAX_HEADER_BYTES} allowed"
        )
    if 8 + n > len(data):
        raise TeacherImportError(
            f"the file is truncated: its header claims {n} bytes but only {len(data) - 8} follow"
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TeacherImportError("the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise TeacherImportError("the safetensors header is not a JSON object")
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    if len(entries) > MAX_TENSORS:
        raise TeacherImportError(f"the file lists {len(entries)} tensors (at most {MAX_TENSORS})")
    body = len(data) - 8 - n
    for name, e in entries.items():
        ok = (
            isinstance(e, dict)
            and isinstance(e.get("shape"), list)
            and all(isinstance(d, int) and 0 <= d < 2**31 for d in e["shape"])
            and isinstance(e.get("data_offsets"), list)
            and len(e["data_offsets"]) == 2
            and all(isinstance(o, int) and o >= 0 for o in e["data_offsets"])
        )
        if not ok:
            raise TeacherImportError(f"tensor {name[:60]!r} has a malformed header entry")
    end = max((e["data_offsets"][1] for e in entries.values()), default=0)
    if end > body:
        raise TeacherImportError(
            f"the file is truncated: its tensors need {end} bytes but only {body} follow the header"
        )
    try:
        return load_safetensors_bytes(data)
    except Exception as exc:  # the library's own checks (offsets, dtype sizes, overlaps)
        raise TeacherImportError(f"the safetensors file is malformed ({_sentence(exc)})") from None


def _read_torch(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise for a user
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = _sentence(exc)
        if "weights_only" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise TeacherImportError(
                "the file is a pickle that would run code or build objects other than tensors; "
                "only safetensors files and plain state_dicts are accepted"
            ) from None
        raise TeacherImportError(
            f"the file is not a readable PyTorch state_dict ({text})"
        ) from None


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read an untrusted weight file: ``(state_dict, format)`` with format ``safetensors`` or
    ``torch``. Nested ``{"state_dict": {...}}`` / ``{"model": {...}}`` and DataParallel's
    ``module.`` prefixes are unwrapped.

    Raises:
        TeacherImportError: missing, empty, oversized, truncated or malformed file; a pickle with
            anything but tensors and plain containers; a non-tensor value.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise TeacherImportError(f"cannot read {path.name}: no such file") from None
    if size == 0:
        raise TeacherImportError(f"{path.name} is empty")
    if size > MAX_TEACHER_BYTES:
        raise TeacherImportError(
            f"{path.name} is {size / 2**20:.1f} MiB, more than the {MAX_TEACHER_BYTES // 2**20} MiB "
            "allowed for a teacher"
        )
    data = path.read_bytes()
    if data[:4] == _ZIP_MAGIC or data[0] == _PICKLE_PROTO:
        obj, fmt = _read_torch(path), "torch"
    elif len(data) < 9 or data[8:9] == b"{":
        obj, fmt = _read_safetensors(data), "safetensors"
    else:
        raise TeacherImportError(
            f"{path.name} is neither a safetensors file nor a PyTorch state_dict"
        )
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and len(obj) == 1 and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise TeacherImportError("the file does not hold a state_dict (a name → tensor mapping)")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise TeacherImportError(f"entry {str(k)[:60]!r} of the state_dict is not a tensor")
        out[k.removeprefix("module.")] = v
    return out, fmt


def check_state_dict(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict:
    """Match ``state`` against ``model.state_dict()`` and return it converted to the model's dtypes.

    Checks every name (missing / unexpected), shape, dtype kind (floating tensors for floating
    parameters, integers for counters), finiteness, and BN ``running_var`` ≥ 0.

    Raises:
        TeacherImportError: the first mismatch, named.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0][:60]!r})")
        raise TeacherImportError(
            f"the tensors do not match the architecture: {' and '.join(parts)}; check --arch"
        )
    out = {}
    for k, ref in expected.items():
        t = state[k]
        if tuple(t.shape) != tuple(ref.shape):
            raise TeacherImportError(
                f"tensor {k!r} has shape {tuple(t.shape)}, the architecture needs {tuple(ref.shape)}"
                " (check --arch, --num-classes and --dataset)"
            )
        if ref.is_floating_point() != t.is_floating_point() or t.is_complex():
            raise TeacherImportError(f"tensor {k!r} has dtype {t.dtype}, expected {ref.dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TeacherImportError(f"tensor {k!r} holds NaN or infinite values")
        if k.endswith("running_var") and bool((t < 0).any()):
            raise TeacherImportError(f"tensor {k!r} holds negative BN variances")
        out[k] = t.to(ref.dtype).contiguous().clone()
    return out


def import_teacher(
    path: str | Path,
    arch: str,
    dataset: str,
    teacher_id: str | None = None,
    num_classes: int | None = None,
    normalization: str | None = None,
    ood_domain: str | None = "mnist-m",
    replace: bool = False,
    filename: str | None = None,
) -> dict:
    """Validate an untrusted teacher file and add it to the zoo as ``kind: user``.

    Args:
        path: the file (safetensors or a ``torch.save``-d state_dict), at most
            :data:`MAX_TEACHER_BYTES`.
        arch: a registered architecture (``lenet5``, ``lenet5x2``, ``resnet8``, ``resnet14``).
        dataset: the dataset the teacher classifies (built-in or imported with
            :func:`dfkd_viz.data.user.import_dataset`); its test split measures the accuracy.
        teacher_id: the new id (``[a-z0-9][a-z0-9_.-]{0,63}``); default: from the file name.
        num_classes: K (default: the rows of the weights' ``fc.weight``, else the dataset's).
        normalization: see :func:`parse_normalization` (default: the dataset's statistics).
        ood_domain: the domain its card's OOD accuracy is measured on (None: none).
        replace: overwrite an earlier imported teacher of the same id (never a zoo teacher).
        filename: the original file name (for the card and the default id; uploads).

    Returns:
        The new teacher card (``id_acc`` / ``ood_acc`` fractions in [0, 1], ``source`` with the
        file's name, format, size and SHA-256, ``warnings``).

    Raises:
        TeacherImportError: every rejection, as one sentence; nothing is written then.
    """
    path = Path(path)
    filename = filename or path.name
    tid = teacher_id if teacher_id is not None else default_id(filename)
    if not ID_RE.match(tid):
        raise TeacherImportError(
            f"teacher id must be 1–64 characters of a-z, 0-9, '_', '.', '-' starting with a letter "
            f"or digit (got {tid[:70]!r})"
        )
    if tid in {s.id for s in specs()}:
        raise TeacherImportError(f"{tid!r} is a zoo teacher's id; choose another with --id")
    if arch not in MODELS:
        raise TeacherImportError(f"arch must be one of {', '.join(MODELS.names())} (got {arch!r})")
    if ood_domain is not None and ood_domain not in domain_names():
        raise TeacherImportError(
            f"ood_domain must be one of {', '.join(domain_names())} (got {ood_domain!r})"
        )
    if not replace and _read_card(tid) is not None:
        raise TeacherImportError(
            f"a teacher {tid!r} is already imported; choose another --id (or replace it)"
        )
    try:
        test = load_dataset(dataset, "test")
    except UnknownNameError as exc:
        raise TeacherImportError(str(exc)) from None
    state, fmt = read_state_dict(path)
    if num_classes is None:
        fc = state.get("fc.weight")
        num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else test.num_classes
    if num_classes != test.num_classes:
        raise TeacherImportError(
            f"the teacher outputs {num_classes} classes but {dataset} has {test.num_classes}"
        )
    mean, std = parse_normalization(normalization, test.shape[0], (test.mean, test.std))
    try:
        model = create_model(arch, num_classes=num_classes, in_shape=test.shape, mean=mean, std=std)
    except (ValueError, RuntimeError) as exc:
        raise TeacherImportError(
            f"{arch} does not take {dataset}'s {test.shape} images ({_sentence(exc)})"
        ) from None
    checked = check_state_dict(state, model)
    model.load_state_dict(checked, strict=True)
    model.eval().requires_grad_(False)
    with torch.inference_mode():
        probe = model(test.x[:256])
    if not bool(torch.isfinite(probe).all()):
        raise TeacherImportError(
            "the teacher's outputs on real test images hold NaN or infinite values"
        )
    info = {"dataset": dataset, "ood_domain": ood_domain, "trigger": None, "target": None}
    metrics = evaluate_teacher(model, info)
    warnings = []
    if metrics["id_acc"] < 2.0 / num_classes:
        warnings.append(
            f"its accuracy on {dataset} is {metrics['id_acc']:.1%}, near chance: check --dataset "
            "and --normalization"
        )
    data = path.read_bytes()
    with _locked(tid):
        existing = _read_card(tid)
        if existing is not None and not replace:
            raise TeacherImportError(
                f"a teacher {tid!r} is already imported; choose another --id (or replace it)"
            )
        wpath, cpath = weights_path(tid), card_path(tid)
        c = {
            "id": tid,
            "dataset": dataset,
            "arch": arch,
            "kind": "user",
            "default": False,
            "ood_domain": ood_domain,
            "trigger": None,
            "target": None,
            **metrics,
            "seed": None,
            "train_s": None,
            "weights": str(wpath),
            "num_classes": num_classes,
            "in_shape": list(test.shape),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "description": f"Imported from {Path(filename).name[:80]}.",
            "source": {
                "filename": Path(filename).name[:200],
                "format": fmt,
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
            "warnings": warnings,
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        try:
            with atomic_path(wpath) as tmp:
                save_file(checked, str(tmp), metadata={"arch": arch, "id": tid})
            write_json(cpath, c, indent=2)
        except OSError as exc:
            cpath.unlink(missing_ok=True)
            wpath.unlink(missing_ok=True)
            raise TeacherImportError(f"could not write the teacher ({_sentence(exc)})") from None
    return card(tid)


def delete_teacher(teacher_id: str) -> None:
    """Remove an imported (``kind: user``) teacher from the zoo.

    Raises:
        TeacherImportError: a zoo teacher (retrain or keep it) or an unknown id.
    """
    if teacher_id in {s.id for s in specs()}:
        raise TeacherImportError(f"{teacher_id!r} is a zoo teacher; only imported ones are deleted")
    if not ID_RE.match(teacher_id) or _read_card(teacher_id) is None:
        raise TeacherImportError(f"no imported teacher {teacher_id[:70]!r}")
    with _locked(teacher_id):
        card_path(teacher_id).unlink(missing_ok=True)  # the card first: no half-listed teacher
        weights_path(teacher_id).unlink(missing_ok=True)
    (card_path(teacher_id).parent / f".{teacher_id}.lock").unlink(missing_ok=True)
