"""``teachers import`` on checkpoints saved exactly the way the DFKD codebases save them: CMI /
Fast-Datafree's ``train_scratch.py`` dict (DataParallel ``module.`` keys, SGD and MultiStepLR
state), ABD's ``{'model': sd}``, ``{'state_dict': sd}``, TA-DFKD's raw state dicts and
safetensors, imported onto a tiny CIFAR-10 in the official binary layout."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CLI
from safetensors.torch import save_file

from dfkd_viz.data import load_dataset
from dfkd_viz.models import create_model
from dfkd_viz.models.cifar import CIFAR10_MEAN, CIFAR10_STD
from dfkd_viz.teachers import importer, load_teacher
from dfkd_viz.teachers.importer import TeacherImportError, import_teacher, read_checkpoint

SMALL = ("wrn16_1", "resnet8")
PER_BATCH, N_TEST = 8, 64  # records per train batch file (5 files) and in test_batch.bin


def _clear_data_caches() -> None:
    from dfkd_viz.data.datasets import _cached
    from dfkd_viz.data.domains import _load_domain

    _cached.cache_clear()
    _load_domain.cache_clear()


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> Path:
    """A CIFAR-10 in the official binary layout: ``cifar-10-batches-bin/data_batch_1..5.bin`` and
    ``test_batch.bin``, records of 3,073 bytes (label, 1,024 R, 1,024 G, 1,024 B)."""
    root = tmp_path_factory.mktemp("cifar")
    d = root / "cifar-10-batches-bin"
    d.mkdir()
    rng = np.random.default_rng(0)
    files = [(f"data_batch_{i}.bin", PER_BATCH) for i in range(1, 6)] + [("test_batch.bin", N_TEST)]
    for name, n in files:
        labels = rng.integers(0, 10, (n, 1), dtype=np.uint8)
        pixels = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        (d / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    return root


@pytest.fixture(autouse=True)
def cifar10(cifar_root, monkeypatch):
    """Point DFKD_VIZ_DATA at the tiny CIFAR-10 (and keep it out of other tests' caches)."""
    monkeypatch.setenv("DFKD_VIZ_DATA", str(cifar_root))
    _clear_data_caches()
    yield load_dataset("cifar10", "test")
    _clear_data_caches()


def _normalize(x: torch.Tensor) -> torch.Tensor:
    """CMI's ``transforms.Normalize`` with the CIFAR-10 statistics."""
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def cmi_train(name: str, steps: int = 2, num_classes: int = 10, seed: int = 0):
    """A model as CMI's ``train_scratch.py`` holds it: the reference layout fed normalised inputs
    (mean 0 / std 1 inside), wrapped in DataParallel (trained without ``--gpu``), SGD with
    momentum and weight decay, MultiStepLR; a few steps so that the momentum buffers and the BN
    running statistics are not trivial. Returns ``(DataParallel model, optimizer, scheduler)``."""
    torch.manual_seed(seed)
    net = create_model(name, num_classes=num_classes, mean=(0.0,) * 3, std=(1.0,) * 3)
    model = torch.nn.DataParallel(net)  # no GPU here: a plain wrapper, but the keys get module.
    optimizer = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[120, 150, 180], gamma=0.1
    )
    train = load_dataset("cifar10", "train")
    model.train()
    for _ in range(steps):
        y = train.y % num_classes
        loss = F.cross_entropy(model(_normalize(train.x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return model.eval(), optimizer, scheduler


def save_cmi(path: Path, name: str, model, optimizer, scheduler, best_acc1=95.7, epoch=199):
    """Exactly ``train_scratch.py``'s ``save_checkpoint``."""
    torch.save(
        {
            "epoch": epoch + 1,
            "arch": name,
            "state_dict": model.state_dict(),
            "best_acc1": float(best_acc1),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def trained() -> dict:
    """``{name: (DataParallel model, optimizer, scheduler)}`` for the small architectures (the
    module's data fixture is function-scoped, so the models are built lazily)."""
    return {}


def _model(trained: dict, name: str):
    if name not in trained:
        trained[name] = cmi_train(name)
    return trained[name]


def _reference(model, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.module(_normalize(x))


def _assert_same_teacher(tid: str, model, test) -> dict:
    """The imported teacher gives the original's logits on the same pixels; returns its card."""
    teacher, c = load_teacher(tid)
    with torch.inference_mode():
        got = teacher(test.x)
    ref = _reference(model, test.x)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert c["id_acc"] == pytest.approx(float((ref.argmax(1) == test.y).float().mean()))
    return c


def _teacher_files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "teachers").glob("*") if not p.name.startswith("."))


# --------------------------------------------------------------------------- the layouts


@pytest.mark.parametrize("name", SMALL)
def test_cmi_checkpoint_with_dataparallel_optimizer_and_scheduler(name, trained, cifar10, tmp_path):
    model, opt, sch = _model(trained, name)
    p = save_cmi(tmp_path / f"cifar10_{name}.pth", name, model, opt, sch)
    raw = torch.load(p, weights_only=True)  # what the file holds: CMI's dict, module. keys
    assert set(raw) == {"epoch", "arch", "state_dict", "best_acc1", "optimizer", "scheduler"}
    assert all(k.startswith("module.") for k in raw["state_dict"])
    assert raw["optimizer"]["state"] and raw["scheduler"]["milestones"]

    c = import_teacher(p, arch=name, dataset="cifar10")
    assert c["id"] == f"cifar10_{name}" and c["arch"] == name and c["kind"] == "user"
    c = _assert_same_teacher(c["id"], model, cifar10)
    assert c["source_format"] == "cmi-dict"
    assert c["best_acc1"] == 95.7 and c["reported_acc"] == pytest.approx(0.957)
    assert 0.0 <= c["id_acc"] <= 1.0 and c["ood_acc"] is not None  # mnist-m on RGB
    src = c["source"]
    assert src["dataparallel"] is True and src["format"] == "torch"
    assert (src["arch"], src["arch_from"], src["epoch"]) == (name, "option", 200)
    assert src["entries"] == sorted(raw) and len(src["sha256"]) == 64
    assert src["bytes"] == p.stat().st_size
    assert c["mean"] == pytest.approx(CIFAR10_MEAN) and c["std"] == pytest.approx(CIFAR10_STD)
    assert c["in_shape"] == [3, 32, 32] and c["num_classes"] == 10
    assert any("reports 95.7%" in w for w in c["warnings"])  # a few steps on noise: far from it


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize(
    ("layout", "save"),
    [
        ("abd-model", lambda sd, p: torch.save({"model": sd}, p)),
        ("state-dict-entry", lambda sd, p: torch.save({"state_dict": sd}, p)),
        ("raw-state-dict", lambda sd, p: torch.save(sd, p)),
        ("safetensors", lambda sd, p: save_file({k: v.contiguous() for k, v in sd.items()}, p)),
    ],
)
def test_abd_raw_and_safetensors_layouts(name, layout, save, trained, cifar10, tmp_path):
    model, _, _ = _model(trained, name)
    p = tmp_path / f"{layout}.pt"
    save(model.module.state_dict(), str(p))
    c = import_teacher(p, arch=name, dataset="cifar10", teacher_id="t", ood_domain=None)
    c = _assert_same_teacher("t", model, cifar10)
    assert c["source_format"] == layout and c["source"]["dataparallel"] is False
    assert c["reported_acc"] is None and c["best_acc1"] is None


def test_abd_model_with_dataparallel_keys(trained, cifar10, tmp_path):
    model, _, _ = _model(trained, "resnet8")
    p = tmp_path / "best_clean_acc.pth"
    torch.save({"model": model.state_dict(), "epoch": 120}, p)
    c = import_teacher(p, arch="resnet8", dataset="cifar10", ood_domain=None)
    assert c["id"] == "best_clean_acc" and c["source_format"] == "abd-model"
    assert c["source"]["dataparallel"] is True and c["source"]["epoch"] == 120
    _assert_same_teacher(c["id"], model, cifar10)


def test_arch_from_the_checkpoint_or_from_the_weights(trained, cifar10, tmp_path):
    model, opt, sch = _model(trained, "wrn16_1")
    cmi = save_cmi(tmp_path / "cmi.pth", "wrn16_1", model, opt, sch)
    c = import_teacher(cmi, arch=None, dataset="cifar10", teacher_id="a", ood_domain=None)
    assert (c["arch"], c["source"]["arch_from"]) == ("wrn16_1", "file")
    raw = tmp_path / "CIFAR10_9546.pt"  # TA-DFKD's teachers: raw state dicts, no arch entry
    torch.save(_model(trained, "resnet8")[0].module.state_dict(), raw)
    c = import_teacher(raw, arch=None, dataset="cifar10", teacher_id="b", ood_domain=None)
    assert (c["arch"], c["source"]["arch_from"]) == ("resnet8", "weights")
    # another codebase's name in 'arch' is only recorded: the weights decide
    other = tmp_path / "other.pth"
    save_cmi(other, "WRN-16-1", model, opt, sch)
    c = import_teacher(other, arch=None, dataset="cifar10", teacher_id="c", ood_domain=None)
    assert (c["arch"], c["source"]["arch"], c["source"]["arch_from"]) == (
        "wrn16_1",
        "WRN-16-1",
        "weights",
    )
    c = import_teacher(other, arch="wrn16_1", dataset="cifar10", teacher_id="d", ood_domain=None)
    assert c["source"]["arch_from"] == "option"


def test_reported_accuracy_forms(trained, tmp_path):
    model, opt, sch = _model(trained, "resnet8")
    for given, raw, frac in ((95.7, 95.7, 0.957), (torch.tensor(91.25), 91.25, 0.9125)):
        p = save_cmi(tmp_path / "r.pth", "resnet8", model, opt, sch, best_acc1=0.0)
        obj = torch.load(p, weights_only=True)
        obj["best_acc1"] = given
        torch.save(obj, p)
        ck = read_checkpoint(p)
        assert ck.best_acc1 == pytest.approx(raw) and ck.layout == "cmi-dict"
        assert importer._reported(ck.best_acc1)[0] == pytest.approx(frac)
    assert importer._reported(0.9)[0] == 0.9  # already a fraction
    value, warns = importer._reported(957.0)
    assert value is None and "not an accuracy" in warns[0]


# --------------------------------------------------------------------------- rejections


def test_rejections_are_one_sentence_and_write_nothing(home, trained, tmp_path):
    model, opt, sch = _model(trained, "wrn16_1")
    small, _, _ = _model(trained, "resnet8")
    cmi = save_cmi(tmp_path / "cmi.pth", "wrn16_1", model, opt, sch)
    unknown = tmp_path / "unknown.pth"
    torch.save({"net": model.module.state_dict(), "acc": 93.1, "epoch": 3}, unknown)
    other = tmp_path / "other.pt"
    torch.save(small.module.state_dict(), other)
    partial = tmp_path / "partial.pt"
    sd = model.module.state_dict()
    torch.save({("module." + k if i % 2 else k): v for i, (k, v) in enumerate(sd.items())}, partial)
    wide = tmp_path / "c100.pt"
    torch.save(create_model("wrn16_1", num_classes=100).state_dict(), wide)
    nested = tmp_path / "nested.pt"
    deep: list = []
    for _ in range(40):
        deep = [deep]
    torch.save({"state_dict": sd, "scheduler": {"x": deep}}, nested)
    cases = [
        (cmi, "resnet8", "checkpoint says it is a wrn16_1 but --arch is resnet8"),
        (unknown, "wrn16_1", "dict with keys 'acc', 'epoch', 'net' but no state_dict"),
        (other, "wrn16_1", r"check --arch \(the weights fit resnet8\)"),
        (other, None, None),  # detected: accepted (deleted below)
        (partial, "wrn16_1", "unexpected \\(e.g. 'module."),
        (wide, "wrn16_1", "outputs 100 classes but cifar10 has 10"),
        (wide, None, "fit no registered architecture for cifar10 \\(3×32×32 images, 10 classes\\)"),
        (nested, "wrn16_1", "more than 32 levels deep"),
    ]
    for path, arch, needle in cases:
        if needle is None:
            c = import_teacher(path, arch=arch, dataset="cifar10", teacher_id="ok", ood_domain=None)
            importer.delete_teacher(c["id"])
            continue
        with pytest.raises(TeacherImportError, match=needle) as err:
            import_teacher(path, arch=arch, dataset="cifar10", ood_domain=None)
        assert "\n" not in str(err.value) and len(str(err.value)) < 400, str(err.value)
    assert _teacher_files(home) == []


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_entries_next_to_the_state_dict_are_never_run(home, trained, tmp_path, monkeypatch):
    model, opt, sch = _model(trained, "resnet8")
    sd = model.state_dict()
    marker = tmp_path / "PWNED"
    for extra, needle in (
        ({"args": argparse.Namespace(lr=0.1)}, "it asks for argparse.Namespace"),
        ({"optimizer": {"state": {0: _Payload(marker)}}}, "pickle that would run code"),
    ):
        p = tmp_path / "ckpt.pth"
        torch.save({"arch": "resnet8", "state_dict": sd, **extra}, p)
        with pytest.raises(TeacherImportError, match=needle):
            import_teacher(p, arch=None, dataset="cifar10", ood_domain=None)
    assert not marker.exists()
    # the walk is bounded (shared references are walked once, entries are counted)
    p = save_cmi(tmp_path / "big.pth", "resnet8", model, opt, sch)
    monkeypatch.setattr(importer, "MAX_ITEMS", 50)
    with pytest.raises(TeacherImportError, match="more than 50 container entries"):
        read_checkpoint(p)
    monkeypatch.setattr(importer, "MAX_ITEMS", 1_000_000)
    shared: list = [0]
    for _ in range(30):  # 2**30 paths, 31 lists
        shared = [shared, shared]
    torch.save({"state_dict": model.module.state_dict(), "x": shared}, p)
    assert read_checkpoint(p).layout == "state-dict-entry"
    # a deflated zip member promising more than the limit (torch.save never compresses)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", b"\0" * (3 << 20))
    p.write_bytes(buf.getvalue())
    monkeypatch.setattr(importer, "MAX_TEACHER_BYTES", 2 << 20)
    with pytest.raises(TeacherImportError, match="unpacks to 3 MiB"):
        read_checkpoint(p)
    assert _teacher_files(home) == []


# --------------------------------------------------------------------------- the command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=180, env=os.environ.copy()
    )


@pytest.mark.slow
def test_cli_imports_a_cmi_checkpoint_and_rejects_in_one_sentence(home, trained, tmp_path):
    r = _cli("teachers", "import", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for arch in ("lenet5x2", "resnet8s", "resnet18", "resnet8,", "wrn40_2", "vgg13", "mobilenetv2"):
        assert arch in text, arch

    model, opt, sch = _model(trained, "wrn16_1")
    cmi = save_cmi(tmp_path / "cifar10_wrn16_1.pth", "wrn16_1", model, opt, sch)
    unknown = tmp_path / "unknown.pth"
    torch.save({"net": model.module.state_dict(), "acc": 93.1}, unknown)
    other = tmp_path / "other.pt"
    torch.save(_model(trained, "resnet8")[0].module.state_dict(), other)
    for path, arch, needle in (
        (cmi, "resnet8", "says it is a wrn16_1 but --arch is resnet8"),
        (unknown, "wrn16_1", "keys 'acc', 'net' but no state_dict"),
        (other, "wrn16_1", "the weights fit resnet8"),
    ):
        r = _cli("teachers", "import", str(path), "--arch", arch, "--dataset", "cifar10")
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
        assert r.stdout == ""
    assert _teacher_files(home) == []

    r = _cli("teachers", "import", str(cmi), "--arch", "wrn16_1", "--dataset", "cifar10", "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert c["id"] == "cifar10_wrn16_1" and c["arch"] == "wrn16_1" and c["dataset"] == "cifar10"
    assert c["source_format"] == "cmi-dict" and c["source"]["dataparallel"] is True
    assert c["best_acc1"] == 95.7 and c["reported_acc"] == pytest.approx(0.957)
    assert c["id_acc"] is not None and c["trained"] and c["available"]
    _assert_same_teacher(c["id"], model, load_dataset("cifar10", "test"))


@pytest.mark.slow
def test_resnet18_cmi_checkpoint(home, cifar10, tmp_path):
    """CMI's ResNet-18 (11.2 M parameters): the checkpoint with its momentum buffers is ~90 MB,
    over the old 64 MiB limit."""
    model, opt, sch = cmi_train("resnet18", steps=1)
    p = save_cmi(tmp_path / "cifar10_resnet18.pth", "resnet18", model, opt, sch, best_acc1=95.3)
    assert p.stat().st_size > 64 * 2**20
    c = import_teacher(p, arch=None, dataset="cifar10", ood_domain=None)
    assert (c["arch"], c["source"]["arch_from"], c["source_format"]) == (
        "resnet18",
        "file",
        "cmi-dict",
    )
    _assert_same_teacher(c["id"], model, cifar10)


@pytest.mark.slow
def test_dfq_from_an_imported_wrn16_2_into_a_wrn16_1(home, cifar10, tmp_path):
    """The issue's end-to-end path: a CMI ``wrn16_2`` checkpoint imported from the command line
    onto CIFAR-10 (binary layout), then ``run --student wrn16_1 --method dfq --steps 2``."""
    model, opt, sch = cmi_train("wrn16_2", steps=1)
    p = save_cmi(tmp_path / "cifar10_wrn16_2.pth", "wrn16_2", model, opt, sch, best_acc1=95.2)
    r = _cli("teachers", "import", str(p), "--arch", "wrn16_2", "--dataset", "cifar10", "--json")
    assert r.returncode == 0, r.stderr
    tid = json.loads(r.stdout)["id"]
    _assert_same_teacher(tid, model, cifar10)
    r = _cli(
        "run", "--teacher", tid, "--student", "wrn16_1", "--method", "dfq", "--steps", "2",
        "--batch-size", "16", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["steps"] == 2, out
    cfg = json.loads((home / "runs" / out["run_id"] / "config.json").read_text())
    assert (cfg["teacher"], cfg["student"], cfg["method"]) == (tid, "wrn16_1", "dfq")


def test_safetensors_whose_header_length_starts_like_a_pickle(tmp_path):
    """A safetensors header length of 128 modulo 256 makes byte 0 0x80, the pickle protocol
    opcode: such a file is still read as safetensors."""
    from safetensors.torch import save

    sd = create_model("resnet8", num_classes=10).state_dict()
    for pad in range(512):
        blob = save({k: v.contiguous() for k, v in sd.items()}, metadata={"pad": "x" * pad})
        if blob[0] == 0x80:
            break
    else:
        pytest.fail("no padding gave a header length of 128 modulo 256")
    p = tmp_path / "teacher.safetensors"
    p.write_bytes(blob)
    ck = read_checkpoint(p)
    assert (ck.format, ck.layout) == ("safetensors", "safetensors")
    assert set(ck.state) == set(sd)
