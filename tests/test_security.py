"""Untrusted input: imported teacher files (hostile pickles, malformed safetensors, a seeded fuzz),
imported datasets, path tricks, and property-based tests of config validation."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import random
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from dfkd_viz.data import load_dataset, load_domain
from dfkd_viz.data.user import DataImportError, delete_dataset, import_dataset, list_datasets
from dfkd_viz.errors import ConfigError
from dfkd_viz.models import create_model
from dfkd_viz.runs.config import RunConfig, validate_config
from dfkd_viz.teachers import card, importer, list_cards, load_teacher
from dfkd_viz.teachers.importer import TeacherImportError, default_id, import_teacher


def _teacher_files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "teachers").glob("*") if not p.name.startswith("."))


def _tiny_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised LeNet-5 (the smallest architecture) for the digits dataset."""
    torch.manual_seed(seed)
    m = create_model("lenet5", num_classes=10, in_shape=(1, 28, 28), mean=(0.1,), std=(0.3,))
    return {k: v.contiguous() for k, v in m.state_dict().items()}


@pytest.fixture
def tiny_st(tmp_path) -> Path:
    p = tmp_path / "tiny.safetensors"
    save_file(_tiny_state(), str(p))
    return p


def _import(path, **kw):
    kw.setdefault("arch", "lenet5")
    kw.setdefault("dataset", "digits")
    kw.setdefault("ood_domain", None)
    return import_teacher(path, **kw)


# --------------------------------------------------------------------------- valid imports


@pytest.mark.slow
def test_imported_copy_of_a_zoo_teacher_matches_its_card(trained_home, tmp_path):
    zoo = card("mnist-clean")
    sd = load_teacher("mnist-clean")[0].state_dict()
    st_path, pt_path = tmp_path / "copy.safetensors", tmp_path / "copy.pt"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st_path))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, pt_path)
    a = import_teacher(st_path, arch="lenet5x2", dataset="mnist", teacher_id="copy-st")
    b = import_teacher(pt_path, arch="lenet5x2", dataset="mnist", teacher_id="copy-pt")
    for c in (a, b):
        assert c["kind"] == "user" and c["trained"] and c["id_acc"] == pytest.approx(zoo["id_acc"])
        assert c["ood_acc"] == pytest.approx(zoo["ood_acc"]) and c["source"]["sha256"]
    assert (a["source"]["format"], b["source"]["format"]) == ("safetensors", "torch")
    model, c = load_teacher("copy-pt")
    assert c["kind"] == "user" and model.num_classes == 10
    assert {"copy-st", "copy-pt"} <= {c["id"] for c in list_cards()}
    # the stored file is ours (re-serialised safetensors), not the uploaded bytes
    assert (trained_home / "teachers" / "copy-pt.safetensors").read_bytes()[8:9] == b"{"
    validate_config({"teacher": "copy-pt", "method": "dfq", "steps": 2})
    with pytest.raises(TeacherImportError, match="already imported"):
        import_teacher(st_path, arch="lenet5x2", dataset="mnist", teacher_id="copy-st")
    with pytest.raises(TeacherImportError, match="zoo teacher"):
        import_teacher(st_path, arch="lenet5x2", dataset="mnist", teacher_id="mnist-clean")
    importer.delete_teacher("copy-st")
    assert "copy-st" not in {c["id"] for c in list_cards()}
    with pytest.raises(TeacherImportError, match="zoo teacher"):
        importer.delete_teacher("mnist-clean")


def test_normalization_and_near_chance_warning(tiny_st):
    c = _import(tiny_st, teacher_id="tiny", normalization="0.2/0.5")
    assert c["mean"] == [0.2] and c["std"] == [0.5] and c["num_classes"] == 10
    assert 0 <= c["id_acc"] <= 1 and c["ood_acc"] is None
    assert c["warnings"] and "near chance" in c["warnings"][0]  # random weights
    for bad, needle in (("0.1", "MEAN/STD"), ("0.1,0.2/0.3", "1 mean"), ("0.1/0", "std must be")):
        with pytest.raises(TeacherImportError, match=needle):
            _import(tiny_st, teacher_id="tiny2", normalization=bad)


# --------------------------------------------------------------------------- hostile files


class _Payload:
    """A pickle payload that would create a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickles_are_rejected_and_never_run(home, tmp_path):
    marker = tmp_path / "PWNED"
    files = {
        "raw.pt": pickle.dumps(_Payload(marker)),
        "raw-proto2.pth": pickle.dumps(_Payload(marker), protocol=2),
    }
    buf = io.BytesIO()
    torch.save({"fc.weight": _Payload(marker)}, buf)  # a zip checkpoint hiding the payload
    files["zipped.pt"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buf)  # a whole pickled module: not a state_dict
    files["module.pt"] = buf.getvalue()
    for name, data in files.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(TeacherImportError) as err:
            _import(p)
        assert "\n" not in str(err.value)
    assert not marker.exists(), "an unpickled payload ran"
    assert _teacher_files(home) == []


def _st_bytes(state) -> bytes:
    from safetensors.torch import save

    return save(state)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda b: b[:5], "truncated"),
        (lambda b: b[: len(b) // 2], "truncated"),
        (lambda b: struct.pack("<Q", 2**40) + b[8:], "header claims"),
        (lambda b: struct.pack("<Q", 16) + b'{"fc.weight": 1}' + b[8:], "malformed header entry"),
        (lambda b: b[:8] + b"{" + b"\xff" * 10 + b[19:], "not valid JSON"),
        (lambda b: b"GIF89a" + bytes(100), "neither a safetensors"),
        (lambda b: b"", "empty"),
    ],
)
def test_malformed_safetensors_are_rejected(home, tmp_path, make, needle):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(make(_st_bytes(_tiny_state())))
    with pytest.raises(TeacherImportError, match=needle):
        _import(p)
    assert _teacher_files(home) == []


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda s: s.update({"fc.weight": torch.zeros(10, 83)}), "has shape \\(10, 83\\)"),
        (lambda s: s.pop("fc.bias"), "missing"),
        (lambda s: s.update({"extra.weight": torch.zeros(3)}), "unexpected"),
        (lambda s: s["fc.weight"].__setitem__((0, 0), float("nan")), "NaN"),
        (lambda s: s["fc.bias"].__setitem__(0, float("inf")), "NaN or infinite"),
        (lambda s: s.update({"fc.bias": torch.zeros(10, dtype=torch.int32)}), "dtype"),
    ],
)
def test_wrong_tensors_are_rejected(home, tmp_path, edit, needle):
    state = _tiny_state()
    edit(state)
    p = tmp_path / "t.safetensors"
    save_file(state, str(p))
    with pytest.raises(TeacherImportError, match=needle):
        _import(p)
    assert _teacher_files(home) == []


def test_negative_bn_variance_wrong_arch_and_size_limit(home, tmp_path, tiny_st, monkeypatch):
    state = _tiny_state()
    key = next(k for k in state if k.endswith("running_var"))
    state[key][0] = -1.0
    p = tmp_path / "neg.safetensors"
    save_file(state, str(p))
    with pytest.raises(TeacherImportError, match="negative BN"):
        _import(p)
    with pytest.raises(TeacherImportError, match="check --arch"):
        _import(tiny_st, arch="lenet5x2")
    with pytest.raises(TeacherImportError, match="arch must be one of"):
        _import(tiny_st, arch="vgg")
    with pytest.raises(TeacherImportError, match="outputs 3 classes but mnist has 10"):
        _import(tiny_st, dataset="mnist", num_classes=3)
    monkeypatch.setattr(importer, "MAX_TEACHER_BYTES", 1000)
    with pytest.raises(TeacherImportError, match="MiB allowed"):
        _import(tiny_st)
    assert _teacher_files(home) == []


def _mutations(rng: random.Random, st_data: bytes, pt_data: bytes):
    """Seeded structural mutations of a valid safetensors and a valid torch zip file."""
    (hlen,) = struct.unpack("<Q", st_data[:8])
    with zipfile.ZipFile(io.BytesIO(pt_data)) as zf:
        infos = zf.infolist()
        pkl = next(i for i in infos if i.filename.endswith("data.pkl"))
        pkl_end = pkl.header_offset + 30 + len(pkl.filename) + len(pkl.extra) + pkl.compress_size
        tail = len(pt_data) - max(
            i.header_offset + 30 + len(i.filename) + len(i.extra) + i.compress_size for i in infos
        )
    header = json.loads(st_data[8 : 8 + hlen])
    while True:
        kind = rng.choice(
            ["truncate", "header-flip", "length", "splice", "nan", "shape", "zip-flip", "zip-cut"]
        )
        b = bytearray(st_data)
        if kind == "truncate":
            yield kind, bytes(b[: rng.randrange(0, len(b) - 1)])
        elif kind == "header-flip":  # corrupt 1–4 bytes of the JSON header's text
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(8, 8 + hlen)
                while b[i] == 0x20:  # the padding spaces are insignificant
                    i = rng.randrange(8, 8 + hlen)
                b[i] = rng.choice([c for c in b'{}[]":,0123456789xyz\x00\xff' if c != b[i]])
            yield kind, bytes(b)
        elif kind == "length":
            yield kind, struct.pack("<Q", rng.choice([0, 1, hlen - 1, hlen + 1, 2**63])) + b[8:]
        elif kind == "splice":  # random bytes inserted into the header or the data
            i = rng.randrange(8, len(b))
            yield kind, bytes(b[:i] + rng.randbytes(rng.randint(1, 64)) + b[i:])
        elif kind == "nan":  # a NaN written over one float32 of a random tensor
            name = rng.choice(
                [k for k, e in header.items() if k != "__metadata__" and e["dtype"] == "F32"]
            )
            lo, hi = header[name]["data_offsets"]
            i = 8 + hlen + lo + 4 * rng.randrange((hi - lo) // 4)
            b[i : i + 4] = struct.pack("<f", float("nan"))
            yield kind, bytes(b)
        elif kind == "shape":  # a header whose shapes or offsets lie
            h = json.loads(json.dumps(header))
            name = rng.choice([k for k in h if k != "__metadata__"])
            if rng.random() < 0.5:
                h[name]["shape"] = [d + rng.randint(1, 3) for d in h[name]["shape"]] or [2]
            else:
                h[name]["data_offsets"][1] += rng.choice([-4, 4, 10**9])
            text = json.dumps(h).encode()
            yield kind, struct.pack("<Q", len(text)) + text + bytes(b[8 + hlen :])
        elif kind == "zip-flip":  # bit flips in the pickle record or the zip's directory
            z = bytearray(pt_data)
            regions = [(0, pkl_end), (len(z) - tail, len(z))]
            for _ in range(rng.randint(1, 8)):
                lo, hi = rng.choice(regions)
                z[rng.randrange(lo, hi)] ^= 1 << rng.randrange(8)
            yield kind, bytes(z)
        else:
            yield kind, pt_data[: rng.randrange(0, len(pt_data) - 1)]


@pytest.mark.slow
def test_fuzzed_teacher_files_are_all_rejected_cleanly(home, tmp_path):
    """240 seeded structural mutations: every one is rejected with a one-line TeacherImportError,
    none crashes or half-writes the zoo. (Bit flips inside a torch zip's tensor records are not
    among them: torch does not checksum those bytes, so such a file is a valid, different
    teacher; a zip flip that lands in bytes torch never reads is allowed to load, and must then
    pass every check.)"""
    state = _tiny_state()
    st_data = _st_bytes(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    rng = random.Random(1234)
    outcomes: dict[str, int] = {}
    gen = _mutations(rng, st_data, buf.getvalue())
    for i in range(240):
        kind, data = next(gen)
        p = tmp_path / f"fuzz-{i}.bin"
        p.write_bytes(data)
        try:
            c = _import(p, teacher_id=f"fuzz-{i}")
        except TeacherImportError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 400, str(exc)
            outcomes[kind + ":rejected"] = outcomes.get(kind + ":rejected", 0) + 1
            continue
        # accepted: only a zip bit flip in bytes torch never reads may get here
        assert kind == "zip-flip", f"a {kind} mutation was accepted"
        importer.delete_teacher(c["id"])
        outcomes["zip-flip:accepted"] = outcomes.get("zip-flip:accepted", 0) + 1
    rejected = sum(v for k, v in outcomes.items() if k.endswith("rejected"))
    assert rejected >= 200, outcomes
    assert len({k.split(":")[0] for k in outcomes}) == 8, outcomes  # every mutation kind ran
    assert _teacher_files(home) == []


def test_cli_import_rejection_is_one_sentence_exit_2(home, tmp_path):
    p = tmp_path / "evil.pt"
    marker = tmp_path / "PWNED"
    p.write_bytes(pickle.dumps(_Payload(marker)))
    r = subprocess.run(
        [*CLI, "teachers", "import", str(p), "--arch", "lenet5", "--dataset", "digits"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "pickle" in r.stderr
    assert not marker.exists() and _teacher_files(home) == []


@pytest.mark.slow
def test_cli_import_success(home, tiny_st):
    r = subprocess.run(
        [
            *CLI,
            "teachers",
            "import",
            str(tiny_st),
            "--arch",
            "lenet5",
            "--dataset",
            "digits",
            "--id",
            "mine",
            "--ood-domain",
            "invert",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["id"] == "mine" and c["kind"] == "user" and c["ood_domain"] == "invert"


# --------------------------------------------------------------------------- paths


def test_user_paths_never_escape(home, tiny_st, tmp_path):
    assert default_id("../../etc/passwd") == "passwd"
    assert default_id("C:\\Users\\me\\My Teacher.safetensors") == "my-teacher"
    assert default_id("....") == "user-teacher"
    for bad in ("../x", "/abs", "a/b", ".hidden", "x" * 65, ""):
        with pytest.raises(TeacherImportError, match="teacher id"):
            _import(tiny_st, teacher_id=bad)
    for bad in ("../x", "a/b", "A", "", ".x"):
        with pytest.raises(DataImportError, match="dataset name"):
            import_dataset(tmp_path, bad)
    with pytest.raises(TeacherImportError, match="no imported teacher"):
        importer.delete_teacher("../teachers/x")
    z = tmp_path / "slip.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a/1.png", _png(np.zeros((8, 8), np.uint8)))
        zf.writestr("../../escaped.png", _png(np.zeros((8, 8), np.uint8)))
    with pytest.raises(DataImportError, match="unsafe member path"):
        import_dataset(z, "slip")
    assert not (tmp_path.parent / "escaped.png").exists()
    assert list((home / "user-data").glob("*.npz")) == []
    assert all(p.parent == home / "teachers" for p in (home / "teachers").rglob("*"))


# --------------------------------------------------------------------------- your own data


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _digits_uint8(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("digits", "train")
    return (ds.x[:n, 0].numpy() * 255).round().astype(np.uint8), ds.y[:n].numpy()


def test_image_folder_and_zip_import(home, tmp_path):
    x, y = _digits_uint8()
    root = tmp_path / "folder"
    for i, (img, lab) in enumerate(zip(x, y)):
        d = root / f"class-{lab}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.png").write_bytes(_png(img))
    (root / "class-0" / "notes.txt").write_text("ignored: not an image")
    meta = import_dataset(root, "my-folder", test_fraction=0.25)
    assert meta["shape"] == [1, 28, 28] and meta["n"] == 60 and meta["n_test"] == 15
    assert meta["classes"] == sorted({f"class-{v}" for v in y})
    train, test = load_dataset("my-folder", "train"), load_dataset("my-folder", "test")
    assert len(train) == 45 and len(test) == 15 and train.x.dtype == torch.float32
    assert float(train.x.min()) >= 0 and float(train.x.max()) <= 1
    # the same images, zipped inside one top-level folder, RGB (colour → 3 channels), resized
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i, (img, lab) in enumerate(zip(x, y)):
            rgb = np.stack([img, img // 2, img], -1)
            zf.writestr(f"top/{lab}/{i}.png", _png(rgb))
    meta = import_dataset(z, "my-zip", size=(32, 32), filename="imgs.zip")
    assert meta["shape"] == [3, 32, 32] and meta["source"]["filename"] == "imgs.zip"
    assert {m["name"] for m in list_datasets()} == {"my-folder", "my-zip"}
    with pytest.raises(DataImportError, match="already imported"):
        import_dataset(root, "my-folder")
    delete_dataset("my-zip")
    assert [m["name"] for m in list_datasets()] == ["my-folder"]
    assert sorted(p.name for p in (home / "user-data").iterdir()) == [
        ".my-folder.lock",
        "my-folder.json",
        "my-folder.npz",
    ]
    with pytest.raises(DataImportError, match="no imported dataset"):
        delete_dataset("mnist")


def test_npz_import_is_usable_as_ood_and_student_domain(trained_home, tmp_path):
    x, y = _digits_uint8(200)
    p = tmp_path / "d.npz"
    np.savez(
        p, x=x[..., None].astype(np.float32) / 255.0, y=y, classes=np.array(list("0123456789"))
    )
    meta = import_dataset(p, "npz-digits")
    assert meta["shape"] == [1, 28, 28] and meta["classes"][3] == "3"
    ood = load_domain("npz-digits", "mnist", "test")
    assert ood.x.shape[1:] == (1, 28, 28) and ood.num_classes == 10
    cfg = validate_config(
        {"teacher": "mnist-clean", "method": "kd", "student_domain": "npz-digits"}
        | {"student_domain_samples": 100, "ood_domain": "npz-digits", "steps": 2}
    )
    assert cfg.student_domain == cfg.ood_domain == "npz-digits"
    with pytest.raises(ConfigError, match="student_domain_samples must be ≤ 160"):
        validate_config(
            {"teacher": "mnist-clean", "method": "kd", "student_domain": "npz-digits"}
            | {"student_domain_samples": 500}
        )


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"x": np.zeros((20, 8, 8), np.uint8)}, "must hold arrays 'x'"),
        ({"x": np.zeros((20, 8, 8), np.uint8), "y": np.arange(19) % 2}, "one label per image"),
        ({"x": np.zeros((20, 8, 8), np.uint8), "y": np.zeros(20, int)}, "two classes"),
        ({"x": np.full((20, 8, 8), 2.0), "y": np.arange(20) % 2}, "within \\[0, 1\\]"),
        ({"x": np.zeros((20, 8, 8), np.uint8), "y": np.arange(20) - 1}, "within \\[0"),
        ({"x": np.zeros((20, 5, 8, 8), np.uint8), "y": np.arange(20) % 2}, "1 or 3 channels"),
        ({"x": np.zeros((20, 4, 4), np.uint8), "y": np.arange(20) % 2}, "each side"),
        ({"x": np.zeros((5, 8, 8), np.uint8), "y": np.arange(5) % 2}, "10…"),
        ({"x": np.zeros((20, 8, 8), np.uint8), "y": np.arange(20) * 0.5}, "integer class"),
        ({"x": np.array([None] * 20, dtype=object), "y": np.arange(20) % 2}, "object arrays"),
    ],
)
def test_bad_npz_is_rejected(home, tmp_path, arrays, needle):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(DataImportError, match=needle):
        import_dataset(p, "bad")
    assert list((home / "user-data").glob("*.npz")) == []


def test_bad_image_folders_are_rejected(home, tmp_path):
    a = tmp_path / "sizes"
    for cls, shape in (("a", (8, 8)), ("b", (9, 9))):
        (a / cls).mkdir(parents=True)
        for i in range(6):
            (a / cls / f"{i}.png").write_bytes(_png(np.zeros(shape, np.uint8)))
    with pytest.raises(DataImportError, match="different sizes"):
        import_dataset(a, "sizes")
    assert import_dataset(a, "sizes", size=(8, 8))["shape"] == [1, 8, 8]
    b = tmp_path / "broken"
    (b / "a").mkdir(parents=True)
    (b / "b").mkdir()
    (b / "a" / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataImportError, match="not a readable image"):
        import_dataset(b, "broken")
    c = tmp_path / "bomb"
    (c / "a").mkdir(parents=True)
    (c / "a" / "big.png").write_bytes(_png(np.zeros((1100, 1100), np.uint8)))
    with pytest.raises(DataImportError, match="pixels, more than"):
        import_dataset(c, "bomb")
    d = tmp_path / "deep16"
    (d / "a").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint16)).save(d / "a" / "x.png")
    with pytest.raises(DataImportError, match="16-bit"):
        import_dataset(d, "deep16")
    with pytest.raises(DataImportError, match="built-in"):
        import_dataset(a, "mnist")
    with pytest.raises(DataImportError, match="does not exist"):
        import_dataset(tmp_path / "nope", "nope")
    assert [m["name"] for m in list_datasets()] == ["sizes"]


# --------------------------------------------------------------------------- config properties

_FIELDS = list(RunConfig.model_fields)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.dictionaries(
        st.one_of(st.sampled_from(_FIELDS), st.text(max_size=8)), _values, max_size=6
    ).map(lambda d: {"teacher": "mnist-clean", "method": "dfq", **d})
)
def test_config_validation_never_crashes(raw):
    """Any dict gives a validated RunConfig or one ConfigError sentence, nothing else."""
    try:
        cfg = validate_config(raw, check_teacher=False)
    except ConfigError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and "Traceback" not in msg
    else:
        assert isinstance(cfg, RunConfig) and (cfg.steps is None) != (cfg.seconds is None)
        assert validate_config(json.loads(cfg.to_json()), check_teacher=False) == cfg


@settings(max_examples=80, deadline=None, derandomize=True, database=None)
@given(st.integers(min_value=-(10**7), max_value=10**7), st.integers(-5, 5000))
def test_config_ranges_name_the_field(steps, batch):
    raw = {"teacher": "mnist-clean", "method": "dfq", "steps": steps, "batch_size": batch}
    ok = 1 <= steps <= 1_000_000 and 2 <= batch <= 4096
    try:
        cfg = validate_config(raw, check_teacher=False)
    except ConfigError as exc:
        assert not ok
        assert ("steps" in str(exc)) if not 1 <= steps <= 1_000_000 else "batch_size" in str(exc)
    else:
        assert ok and (cfg.steps, cfg.batch_size) == (steps, batch)


# --------------------------------------------------------------------------- exposure


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.split(":")
                if int(p, 16) == port and state == "0A":  # 0A = LISTEN
                    out.add(addr)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_the_app_listens_on_localhost_only_by_default(home):
    """`streamlit run app.py` from the repository, with no address option: the project's
    .streamlit/config.toml binds 127.0.0.1 (not 0.0.0.0 / ::) and limits uploads."""
    import socket
    import urllib.request

    tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11

    root = Path(__file__).resolve().parent.parent
    conf = tomllib.loads((root / ".streamlit" / "config.toml").read_text())["server"]
    assert conf["address"] == "127.0.0.1"
    assert conf["maxUploadSize"] * 2**20 <= importer.MAX_TEACHER_BYTES
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("streamlit")),
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(150):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        addrs = _listening(port)
        assert addrs == {"0100007F"}, addrs  # 127.0.0.1, little-endian hex; nothing else
    finally:
        proc.terminate()
        proc.wait(10)
