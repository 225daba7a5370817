"""Bring your own teacher: import untrusted weight files into the zoo, validated, never unpickled.

A teacher file is **data, never code**. Two encodings are read:

- **safetensors** (preferred): an 8-byte little-endian header length, a JSON header, raw tensor
  bytes. The header is checked here (length, JSON object, sane entries) before the safetensors
  library parses the tensors.
- a **torch.save file** (zip or legacy format), read with ``torch.load(weights_only=True)``:
  PyTorch's restricted unpickler, which builds tensors and plain containers (dicts, lists, tuples,
  sets, ``OrderedDict``, ``Counter``, strings, numbers) only and refuses any other global
  (``os.system``, ``argparse.Namespace``, a pickled ``nn.Module``…) before it is called. The zip's
  directory is checked first (uncompressed size at most :data:`MAX_TEACHER_BYTES`), and the loaded
  object is walked once (iteratively, each container once) with depth and size limits
  (:data:`MAX_DEPTH`, :data:`MAX_ITEMS`). Anything else — a bare pickle, a NumPy file — is
  rejected without being unpickled.

**Layouts** of a torch.save file (recorded on the card as ``source_format``), tried in this order:

==========================  ====================================================================
``raw-state-dict``          a name → tensor dict (TA-DFKD's ``CIFAR10_9546.pt``, ``torch.save(
                            model.state_dict())``)
``cmi-dict``                CMI / Fast-Datafree ``train_scratch.py``: ``{'epoch', 'arch',
                            'state_dict', 'best_acc1', 'optimizer', 'scheduler'}``; the
                            optimizer / scheduler entries are read (plain containers) and ignored
``state-dict-entry``        ``{'state_dict': sd}`` without CMI's other entries (ABD reads these)
``abd-model``               ABD's checkpoints: ``{'model': sd, ...}``
``model-state-dict-entry``  ``{'model_state_dict': sd, ...}`` (PyTorch's checkpoint tutorial)
``safetensors``             a safetensors file
==========================  ====================================================================

The first of ``state_dict``, ``model``, ``model_state_dict`` holding a dict is taken (ABD's order).
A dict with none of them that is not a state_dict is refused, naming the keys it has. When *every*
key starts with ``module.`` (the model was wrapped in ``DataParallel`` /
``DistributedDataParallel``, as CMI's ``train_scratch.py`` does without ``--gpu``), the prefix is
removed and the card says ``source.dataparallel: true``; a partial prefix is left alone (and then
fails the architecture check, naming the key).

**Architecture.** ``--arch`` when given; else the checkpoint's own ``arch`` entry when it is a
registered name (CMI's names are registered); else the one registered architecture whose state
dict has exactly the file's names and shapes for the dataset's image shape and classes (found on
PyTorch's ``meta`` device, no memory). A checkpoint whose registered ``arch`` contradicts
``--arch`` is refused (an unregistered ``arch`` entry, e.g. another codebase's ``WRN-16-2``, is
only recorded).

**Reported accuracy.** CMI's ``best_acc1`` is a *percentage* (``TopkAccuracy`` × 100, e.g.
``95.7``). The card keeps it as the file says (``best_acc1``) and as a fraction like every other
accuracy of the card (``reported_acc`` = ``best_acc1 / 100``; a value in [0, 1] is taken as a
fraction already — a 1 %-accurate teacher is not worth importing — and a value outside [0, 100]
is dropped with a warning). ``id_acc`` next to it is what *we* measure on the dataset's test
split; a gap of more than :data:`REPORTED_GAP` gets a warning (usually a wrong ``--dataset`` or
``--normalization``).

Then every tensor is checked against the architecture (names, shapes, dtypes, dense CPU tensors),
NaN / Inf values and negative BN variances are refused, and the teacher's accuracy on the chosen
dataset's test split is measured (and its outputs checked for NaN). Only then are a re-serialised
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
import zipfile
from dataclasses import dataclass, field
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

MAX_TEACHER_BYTES = 256 * 1024 * 1024
"""Largest teacher file accepted (bytes): a CMI ``train_scratch.py`` checkpoint of a ResNet-34
(21.3 M parameters plus as many SGD momentum values) is ~170 MB. The app's upload limit
(``server.maxUploadSize`` in ``.streamlit/config.toml``) is the same 256 MiB."""
MAX_HEADER_BYTES = 1024 * 1024
"""Largest safetensors JSON header accepted (bytes): a few hundred tensors need a few KB."""
MAX_TENSORS = 4096
"""Most tensors in a state_dict (ResNet-110 has ~660, MobileNetV2 ~310)."""
MAX_DEPTH = 32
"""Deepest container nesting of a torch.save file (a CMI checkpoint nests 4 deep)."""
MAX_ITEMS = 1_000_000
"""Most container entries in a torch.save file, all containers together (keys count too)."""
MAX_ZIP_MEMBERS = 100_000
REPORTED_GAP = 0.10
"""A reported accuracy further than this from the measured one (fractions) gets a warning."""
ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80  # torch.save's legacy (non-zip) format starts with a pickle protocol opcode
STATE_KEYS = ("state_dict", "model", "model_state_dict")
"""Entries of a checkpoint dict that may hold the state_dict, in the order they are tried."""
CMI_KEYS = frozenset({"epoch", "arch", "best_acc1", "optimizer", "scheduler"})
"""The entries CMI / Fast-Datafree's ``train_scratch.py`` saves next to ``state_dict``."""
_LAYOUT = {
    "state_dict": "state-dict-entry",
    "model": "abd-model",
    "model_state_dict": "model-state-dict-entry",
}


class TeacherImportError(DfkdVizError):
    """A teacher file or an import option was rejected (the message is one sentence)."""


@dataclass
class Checkpoint:
    """What :func:`read_checkpoint` found in a teacher file.

    Attributes:
        state: the state_dict (names with any all-keys ``module.`` prefix removed).
        format: the encoding, ``"safetensors"`` or ``"torch"``.
        layout: ``raw-state-dict``, ``cmi-dict``, ``state-dict-entry``, ``abd-model``,
            ``model-state-dict-entry`` or ``safetensors`` (see the module docstring).
        dataparallel: every key had the ``module.`` prefix (removed).
        arch: the checkpoint's ``arch`` entry (a string), if any.
        best_acc1: the checkpoint's ``best_acc1`` as a float, if any (a percentage for CMI).
        epoch: the checkpoint's ``epoch`` entry, if an integer.
        entries: the top-level keys of a checkpoint dict (sorted; empty for a bare state_dict).
    """

    state: dict[str, torch.Tensor]
    format: str
    layout: str
    dataparallel: bool = False
    arch: str | None = None
    best_acc1: float | None = None
    epoch: int | None = None
    entries: list[str] = field(default_factory=list)


def _sentence(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:160] + "…") if len(text) > 160 else text or type(exc).__name__


def default_id(filename: str) -> str:
    """A teacher id derived from an uploaded file's name: lower case, ``[a-z0-9_.-]`` only,
    at most 64 characters, never a path (``"../../My Net.pt"`` → ``"my-net"``)."""
    stem = Path(str(filename).replace("\\", "/")).name
    for suffix in (".safetensors", ".pth.tar", ".pth", ".pt", ".ckpt", ".bin"):
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


def _check_zip(path: Path) -> None:
    """Refuse a zip whose directory promises more than :data:`MAX_TEACHER_BYTES` uncompressed
    (torch.save stores records uncompressed; a deflated member could be a decompression bomb)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception as exc:  # BadZipFile, struct.error, … on a damaged directory
        raise TeacherImportError(
            f"the file is not a readable PyTorch checkpoint (its zip directory is damaged: "
            f"{_sentence(exc)})"
        ) from None
    if len(infos) > MAX_ZIP_MEMBERS:
        raise TeacherImportError(
            f"the checkpoint's zip holds {len(infos)} records (at most {MAX_ZIP_MEMBERS})"
        )
    total = sum(i.file_size for i in infos)
    if total > MAX_TEACHER_BYTES:
        raise TeacherImportError(
            f"the checkpoint's zip unpacks to {total / 2**20:.0f} MiB, more than the "
            f"{MAX_TEACHER_BYTES // 2**20} MiB allowed for a teacher"
        )


def _read_torch(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise for a user
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        full = " ".join(str(exc).split())
        # torch wraps every refusal of its restricted unpickler in a long "Weights only load
        # failed ... WeightsUnpickler error: <detail> ..." text: keep the detail
        detail = full.split("WeightsUnpickler error:", 1)[-1].split(" Check the documentation")[0]
        if re.search(r"Unsupported (global|operand)|GLOBAL", detail):
            found = re.search(r"GLOBAL ([A-Za-z0-9_.]{1,80})", detail)
            what = f" (it asks for {found.group(1)})" if found else ""
            raise TeacherImportError(
                f"the file is a pickle that would run code or build objects other than tensors"
                f"{what}; only safetensors files and torch.save files of tensors, numbers, "
                "strings and plain containers (state_dicts, checkpoint dicts) are accepted"
            ) from None
        raise TeacherImportError(
            f"the file is not a readable PyTorch state_dict ({_sentence(ValueError(detail))})"
        ) from None


def _check_structure(obj: Any) -> None:
    """Walk what ``torch.load(weights_only=True)`` built, each container once (shared references
    are not re-walked, so a pickle's memo cannot make this exponential), without recursion.

    Raises:
        TeacherImportError: nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_ITEMS`
            container entries in total.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(obj, 0)]
    items = 0
    while stack:
        o, depth = stack.pop()
        if not isinstance(o, (dict, list, tuple, set, frozenset)) or id(o) in seen:
            continue
        seen.add(id(o))
        if depth >= MAX_DEPTH:
            raise TeacherImportError(
                f"the file nests containers more than {MAX_DEPTH} levels deep; a checkpoint "
                "needs a handful"
            )
        children = [*o.keys(), *o.values()] if isinstance(o, dict) else list(o)
        items += len(children)
        if items > MAX_ITEMS:
            raise TeacherImportError(
                f"the file holds more than {MAX_ITEMS:,} container entries; a checkpoint holds "
                "a few thousand"
            )
        stack.extend((c, depth + 1) for c in children)


def _describe_keys(d: dict) -> str:
    keys = sorted((repr(k)[:40] for k in d), key=str)
    shown = ", ".join(keys[:8])
    return shown + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")


def _is_state_dict(d: Any) -> bool:
    return (
        isinstance(d, dict)
        and bool(d)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())
    )


def _as_state_dict(d: dict, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(d, dict) or not d:
        raise TeacherImportError(f"{where} is not a state_dict (a name → tensor mapping)")
    if len(d) > MAX_TENSORS:
        raise TeacherImportError(f"{where} holds {len(d)} entries (at most {MAX_TENSORS} tensors)")
    for k, v in d.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise TeacherImportError(
                f"entry {str(k)[:60]!r} of {where} is not a tensor (it is a {type(v).__name__})"
            )
    return d


def _unwrap(obj: Any) -> tuple[dict[str, torch.Tensor], str, dict]:
    """``(state_dict, layout, the checkpoint dict or {})`` of what torch.load returned."""
    if not isinstance(obj, dict):
        raise TeacherImportError(
            f"the file holds a {type(obj).__name__}, not a state_dict or a checkpoint dict"
        )
    if _is_state_dict(obj):
        return obj, "raw-state-dict", {}
    key = next((k for k in STATE_KEYS if isinstance(obj.get(k), dict)), None)
    if key is None:
        values = obj.values()
        if any(isinstance(v, torch.Tensor) for v in values) and not any(
            isinstance(v, dict) for v in values
        ):  # a state_dict with a stray entry: name it
            return _as_state_dict(obj, "the state_dict"), "raw-state-dict", {}
        raise TeacherImportError(
            f"the file holds a dict with keys {_describe_keys(obj) or 'none'} but no state_dict: "
            "expected a state_dict (name → tensor) or a checkpoint with one under "
            + ", ".join(repr(k) for k in STATE_KEYS)
        )
    state = _as_state_dict(obj[key], f"the file's {key!r} entry")
    layout = "cmi-dict" if key == "state_dict" and CMI_KEYS & obj.keys() else _LAYOUT[key]
    return state, layout, obj


def _number(v: Any) -> float | None:
    if isinstance(v, torch.Tensor):  # some forks save best_acc1 as a 0-d tensor
        try:
            v = v.item() if v.numel() == 1 and not v.is_complex() else None
        except Exception:  # e.g. a meta tensor: no value
            return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read an untrusted teacher file: a safetensors file, a state_dict or a checkpoint dict
    (layouts in the module docstring), never unpickling anything but tensors and plain
    containers.

    Raises:
        TeacherImportError: missing, empty, oversized, truncated or malformed file; a pickle with
            anything but tensors and plain containers; nesting or sizes over the limits; a dict
            without a state_dict; a non-tensor entry in the state_dict.
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
    with open(path, "rb") as fh:
        head = fh.read(9)
    # safetensors first: its 8-byte little-endian header length may start with 0x80 (the pickle
    # protocol opcode) whenever that length is 128 modulo 256; neither torch.save format has "{"
    # at byte 8 (a header length past the file's end is reported by the safetensors check)
    safetensors = len(head) == 9 and head[8:9] == b"{" and head[:4] != _ZIP_MAGIC
    if not safetensors and (head[:4] == _ZIP_MAGIC or head[0] == _PICKLE_PROTO):
        if head[:4] == _ZIP_MAGIC:
            _check_zip(path)
        obj = _read_torch(path)
        _check_structure(obj)
        state, layout, ckpt = _unwrap(obj)
        fmt = "torch"
    elif safetensors or len(head) < 9:
        state = _as_state_dict(_read_safetensors(path.read_bytes()), "the file")
        fmt = layout = "safetensors"
        ckpt = {}
    else:
        raise TeacherImportError(
            f"{path.name} is neither a safetensors file nor a PyTorch state_dict"
        )
    dataparallel = all(k.startswith("module.") for k in state)
    if dataparallel:
        state = {k.removeprefix("module."): v for k, v in state.items()}
    arch = ckpt.get("arch")
    epoch = ckpt.get("epoch")
    return Checkpoint(
        state=dict(state),
        format=fmt,
        layout=layout,
        dataparallel=dataparallel,
        arch=arch[:80] if isinstance(arch, str) else None,
        best_acc1=_number(ckpt.get("best_acc1")),
        epoch=epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None,
        entries=sorted(str(k)[:40] for k in ckpt)[:20],
    )


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """``(state_dict, format)`` of a teacher file (:func:`read_checkpoint` without the rest)."""
    ckpt = read_checkpoint(path)
    return ckpt.state, ckpt.format


def _head_key(model: torch.nn.Module) -> str | None:
    """The state-dict name of ``model``'s final linear layer (``fc``, ``linear``, ``classifier``,
    ``classifier.1`` … in the CIFAR zoo), or None."""
    fc = getattr(model, "fc", None)
    return next((n for n, m in model.named_modules() if m is fc and n), None)


def matching_archs(
    state: dict[str, torch.Tensor], num_classes: int, in_shape, mean, std
) -> list[str]:
    """Registered architectures whose state_dict for ``num_classes`` and ``in_shape`` has exactly
    the names and shapes of ``state`` (built on the ``meta`` device: no memory, ~0.3 s for all)."""
    want = {k: tuple(v.shape) for k, v in state.items()}
    out = []
    for name in MODELS.names():
        try:
            with torch.device("meta"):
                ref = create_model(
                    name, num_classes=num_classes, in_shape=in_shape, mean=mean, std=std
                ).state_dict()
        except Exception:  # an architecture that does not take this input shape
            continue
        if ref.keys() == want.keys() and all(tuple(v.shape) == want[k] for k, v in ref.items()):
            out.append(name)
    return out


def check_state_dict(
    state: dict[str, torch.Tensor], model: torch.nn.Module, hint: str = ""
) -> dict:
    """Match ``state`` against ``model.state_dict()`` and return it converted to the model's dtypes.

    Checks every name (missing / unexpected), shape, dtype kind (floating tensors for floating
    parameters, integers for counters), layout (dense CPU tensors only), finiteness, and BN
    ``running_var`` ≥ 0. ``hint`` is appended to a name or shape mismatch (e.g. which
    architectures the weights do fit).

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
            f"the tensors do not match the architecture: {' and '.join(parts)}; check --arch{hint}"
        )
    out = {}
    for k, ref in expected.items():
        t = state[k]
        if t.layout != torch.strided or t.device.type != "cpu" or t.is_quantized:
            raise TeacherImportError(
                f"tensor {k!r} is not a dense CPU tensor ({t.layout}, {t.device.type})"
            )
        if tuple(t.shape) != tuple(ref.shape):
            raise TeacherImportError(
                f"tensor {k!r} has shape {tuple(t.shape)}, the architecture needs {tuple(ref.shape)}"
                f" (check --arch, --num-classes and --dataset){hint}"
            )
        if ref.is_floating_point() != t.is_floating_point() or t.is_complex():
            raise TeacherImportError(f"tensor {k!r} has dtype {t.dtype}, expected {ref.dtype}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise TeacherImportError(f"tensor {k!r} holds NaN or infinite values")
        if k.endswith("running_var") and bool((t < 0).any()):
            raise TeacherImportError(f"tensor {k!r} holds negative BN variances")
        out[k] = t.detach().to(ref.dtype).contiguous().clone()
    return out


def _fit_hint(ckpt: Checkpoint, arch: str, num_classes: int, in_shape, mean, std) -> str:
    fits = [a for a in matching_archs(ckpt.state, num_classes, in_shape, mean, std) if a != arch]
    return f" (the weights fit {' and '.join(fits)})" if fits else ""


def _resolve_arch(
    arch: str | None, ckpt: Checkpoint, dataset: str, test, mean, std
) -> tuple[str, str]:
    """``(architecture, where it came from: "option" | "file" | "weights")``."""
    file_arch = ckpt.arch if ckpt.arch in MODELS.names() else None
    if arch is not None:
        if file_arch is not None and file_arch != arch:
            raise TeacherImportError(
                f"the checkpoint says it is a {file_arch} but --arch is {arch}: drop --arch to "
                f"use the checkpoint's, or check the file"
            )
        return arch, "option"
    if file_arch is not None:
        return file_arch, "file"
    fits = matching_archs(ckpt.state, test.num_classes, test.shape, mean, std)
    if len(fits) == 1:
        return fits[0], "weights"
    named = f" and its 'arch' entry {ckpt.arch!r} is not a registered name" if ckpt.arch else ""
    if fits:
        raise TeacherImportError(
            f"the weights fit {', '.join(fits)}{named}; choose one with --arch"
        )
    raise TeacherImportError(
        f"the weights fit no registered architecture for {dataset} "
        f"({'×'.join(map(str, test.shape))} images, {test.num_classes} classes){named}; "
        f"give --arch (one of {', '.join(MODELS.names())}) to see what differs"
    )


def _reported(best_acc1: float | None) -> tuple[float | None, list[str]]:
    """``(reported_acc as a fraction, warnings)`` from a checkpoint's ``best_acc1``."""
    if best_acc1 is None:
        return None, []
    if 0.0 <= best_acc1 <= 1.0:
        return best_acc1, []
    if 1.0 < best_acc1 <= 100.0:
        return round(best_acc1 / 100.0, 8), []  # 95.7 → 0.957, not 0.9570000000000001
    return None, [f"its best_acc1 entry ({best_acc1:g}) is not an accuracy; it was ignored"]


def _sha256(path: Path) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def import_teacher(
    path: str | Path,
    arch: str | None,
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
        path: the file — safetensors, a ``torch.save``-d state_dict or a checkpoint dict of CMI /
            Fast-Datafree, ABD… (see the module docstring) — at most :data:`MAX_TEACHER_BYTES`.
        arch: a registered architecture (:func:`dfkd_viz.models.list_models`), or None: the
            checkpoint's ``arch`` entry if registered, else the one architecture the weights fit.
        dataset: the dataset the teacher classifies (built-in or imported with
            :func:`dfkd_viz.data.user.import_dataset`); its test split measures the accuracy.
        teacher_id: the new id (``[a-z0-9][a-z0-9_.-]{0,63}``); default: from the file name.
        num_classes: K, which must be the dataset's (default: the rows of the weights' final
            layer, checked against the dataset's).
        normalization: see :func:`parse_normalization` (default: the dataset's statistics, e.g.
            CIFAR-10's (0.4914, 0.4822, 0.4465) / (0.2023, 0.1994, 0.2010), which CMI uses).
        ood_domain: the domain its card's OOD accuracy is measured on (None: none).
        replace: overwrite an earlier imported teacher of the same id (never a zoo teacher).
        filename: the original file name (for the card and the default id; uploads).

    Returns:
        The new teacher card: ``id_acc`` / ``ood_acc`` fractions in [0, 1] (measured here);
        ``reported_acc`` (a fraction) and ``best_acc1`` (as the file says) or None;
        ``source_format`` (the layout, e.g. ``cmi-dict``); ``source`` with the file's name,
        encoding, size, SHA-256, ``dataparallel``, its own ``arch`` and ``epoch`` entries, its
        top-level ``entries`` and ``arch_from`` (``option`` / ``file`` / ``weights``);
        ``warnings``.

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
    if arch is not None and arch not in MODELS:
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
    k = test.num_classes
    if num_classes is not None and num_classes != k:
        raise TeacherImportError(f"the teacher outputs {num_classes} classes but {dataset} has {k}")
    mean, std = parse_normalization(normalization, test.shape[0], (test.mean, test.std))
    ckpt = read_checkpoint(path)
    arch, arch_from = _resolve_arch(arch, ckpt, dataset, test, mean, std)
    try:
        model = create_model(arch, num_classes=k, in_shape=test.shape, mean=mean, std=std)
    except (ValueError, RuntimeError) as exc:
        raise TeacherImportError(
            f"{arch} does not take {dataset}'s {test.shape} images ({_sentence(exc)})"
        ) from None
    head = ckpt.state.get(f"{_head_key(model)}.weight")
    if head is not None and head.ndim == 2 and head.shape[0] != k:
        raise TeacherImportError(
            f"the teacher outputs {head.shape[0]} classes but {dataset} has {k}"
        )
    try:
        checked = check_state_dict(ckpt.state, model)
    except TeacherImportError as exc:
        hint = _fit_hint(ckpt, arch, k, test.shape, mean, std)
        if not hint:
            raise
        raise TeacherImportError(f"{exc}{hint}") from None
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
    reported_acc, warns = _reported(ckpt.best_acc1)
    if metrics["id_acc"] < 2.0 / k:
        warns.append(
            f"its accuracy on {dataset} is {metrics['id_acc']:.1%}, near chance: check --dataset "
            "and --normalization"
        )
    if reported_acc is not None and abs(reported_acc - metrics["id_acc"]) > REPORTED_GAP:
        warns.append(
            f"the file reports {reported_acc:.1%} (best_acc1) but it measures "
            f"{metrics['id_acc']:.1%} on {dataset}'s {len(test)} test images: check --dataset "
            "and --normalization"
        )
    sha, nbytes = _sha256(path)
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
            "reported_acc": reported_acc,
            "best_acc1": ckpt.best_acc1,
            "seed": None,
            "train_s": None,
            "weights": str(wpath),
            "num_classes": k,
            "in_shape": list(test.shape),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "description": f"Imported from {Path(filename).name[:80]}.",
            "source_format": ckpt.layout,
            "source": {
                "filename": Path(filename).name[:200],
                "format": ckpt.format,
                "bytes": nbytes,
                "sha256": sha,
                "dataparallel": ckpt.dataparallel,
                "arch": ckpt.arch,
                "arch_from": arch_from,
                "epoch": ckpt.epoch,
                "entries": ckpt.entries,
            },
            "warnings": warns,
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
