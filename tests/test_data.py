import gzip
import struct

import numpy as np
import pytest
import torch

from dfkd_viz import paths
from dfkd_viz.data import (
    TRIGGERS,
    load_dataset,
    load_domain,
    make_trigger,
    poison,
    read_idx,
    triggered_test_set,
)
from dfkd_viz.data.datasets import ImageDataset, dataset_available
from dfkd_viz.errors import DataUnavailableError, DfkdVizError, UnknownNameError


@pytest.mark.parametrize(
    ("name", "n_train", "n_test"), [("mnist", 8000, 2000), ("digits", 1437, 360)]
)
def test_bundled_datasets_shapes_dtypes_ranges(name, n_train, n_test):
    tr, te = load_dataset(name, "train"), load_dataset(name, "test")
    assert tr.x.shape == (n_train, 1, 28, 28) and te.x.shape == (n_test, 1, 28, 28)
    assert tr.x.dtype == torch.float32 and tr.y.dtype == torch.int64
    assert float(tr.x.min()) >= 0.0 and float(tr.x.max()) <= 1.0
    assert set(tr.y.unique().tolist()) == set(range(10))
    # every class is present in both splits, in roughly MNIST's proportions
    assert tr.y.bincount().min() > n_train / 20


def test_mnist_split_is_fixed_and_disjoint():
    a, b = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    flat_a = {bytes((x * 255).round().to(torch.uint8).numpy()) for x in a.x[:500]}
    assert not any(bytes((x * 255).round().to(torch.uint8).numpy()) in flat_a for x in b.x)
    # the split order is shuffled (files are stored by label)
    assert len(set(a.y[:50].tolist())) > 5


def test_unknown_dataset_and_split():
    with pytest.raises(UnknownNameError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DfkdVizError, match="split"):
        load_dataset("mnist", "valid")


def _write_idx(path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_loader_reads_a_data_dir(tmp_path, monkeypatch):
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 10)):
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)))
    monkeypatch.setattr(paths, "data_dirs", lambda explicit=None: [tmp_path])
    monkeypatch.setattr("dfkd_viz.data.datasets.data_dirs", lambda explicit=None: [tmp_path])
    ds = load_dataset("fashion-mnist", "test", data_dir=str(tmp_path))
    assert ds.x.shape == (10, 1, 28, 28) and ds.classes[0] == "T-shirt/top"
    arr = read_idx(d / "t10k-labels-idx1-ubyte.gz")
    assert arr.shape == (10,)


def test_missing_idx_data_names_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr("dfkd_viz.data.datasets.data_dirs", lambda explicit=None: [tmp_path])
    with pytest.raises(DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "train", data_dir=str(tmp_path / "nowhere"))
    assert not dataset_available("mnist-full", tmp_path / "nowhere")


def test_corrupt_idx_is_a_clear_error(tmp_path):
    p = tmp_path / "bad-idx"
    p.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 20)
    with pytest.raises(DfkdVizError, match="not a uint8 IDX"):
        read_idx(p)


@pytest.mark.parametrize("domain", ["mnist-m", "watermark", "invert", "digits"])
def test_domains_keep_shape_range_and_labels(domain):
    ds = load_domain(domain, "mnist", "test")
    base = load_dataset("mnist", "test")
    assert ds.x.shape[1:] == base.x.shape[1:]
    assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
    if domain != "digits":
        assert torch.equal(ds.y, base.y)
        assert (ds.x - base.x).abs().mean() > 0.05


def test_mnist_m_differs_between_splits_and_is_seeded():
    a = load_domain("mnist-m", "mnist", "test").x
    from dfkd_viz.data.domains import SHIFTS

    again = SHIFTS.get("mnist-m")(load_dataset("mnist", "test"))
    assert torch.equal(a, again)


@pytest.mark.parametrize("name", TRIGGERS.names())
def test_each_trigger_changes_exactly_its_pixels(name):
    # mid-grey real digits: no pixel already equals a stamped 0 or 1
    x = load_dataset("mnist", "test").x[:64] * 0.5 + 0.25
    trig = make_trigger(name, (1, 28, 28))
    y = trig.apply(x)
    changed = (y != x).any(0)  # (C, H, W): pixels changed in at least one image
    mask = trig.mask()
    assert not (changed & ~mask).any(), "a trigger changed a pixel outside its mask"
    assert changed[mask].all(), "a trigger left part of its mask unchanged"
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_badnet_grid_is_a_3x3_checker_in_the_corner():
    y = make_trigger("badnet_grid").apply(torch.full((1, 1, 28, 28), 0.5))[0, 0]
    corner = y[25:, 25:]
    assert set(corner.flatten().tolist()) == {0.0, 1.0}
    assert (y[:25] == 0.5).all() and (y[:, :25] == 0.5).all()


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.1, 0.3])
def test_poison_rate_and_labels(rate):
    ds = load_dataset("mnist", "train")
    p = poison(ds, make_trigger("badnet_grid"), rate=rate, target=0)
    assert int(p.poisoned.sum()) == int(rate * len(ds))
    assert (p.dataset.y[p.poisoned] == 0).all()
    assert (ds.y[p.poisoned] != 0).all()  # only non-target images are poisoned
    assert torch.equal(p.dataset.x[~p.poisoned], ds.x[~p.poisoned])
    if rate:
        assert len(set(ds.y[p.poisoned].tolist())) == 9  # drawn from every non-target class


def test_clean_label_trigger_poisons_target_images_only():
    ds = load_dataset("mnist", "train")
    p = poison(ds, make_trigger("sig"), rate=0.05, target=3)
    assert (ds.y[p.poisoned] == 3).all()


def test_poison_rejects_bad_arguments():
    ds = load_dataset("mnist", "test")
    with pytest.raises(ValueError, match="rate"):
        poison(ds, make_trigger("blend"), rate=1.5)
    with pytest.raises(ValueError, match="target"):
        poison(ds, make_trigger("blend"), target=10)


def test_triggered_test_set_drops_target_images():
    ds = load_dataset("mnist", "test")
    t = triggered_test_set(ds, make_trigger("blend"), target=0)
    assert len(t) == int((ds.y != 0).sum()) and (t.y == 0).all()


def test_image_dataset_validates_shapes():
    with pytest.raises(ValueError):
        ImageDataset("x", "train", torch.zeros(3, 28, 28), torch.zeros(3, dtype=torch.long))


class _Detector(torch.nn.Module):
    """Predicts ``target`` when the badnet_grid corner is stamped, else ``fallback`` — a model
    whose ASR is known exactly."""

    def __init__(self, target: int, fallback: int, honest: bool = False) -> None:
        super().__init__()
        self.target, self.fallback, self.honest = target, fallback, honest
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        stamped = (x[:, 0, -3:, -3:] > 0.99).flatten(1).float().mean(1) > 0.4
        cls = torch.where(stamped & ~torch.tensor(self.honest), self.target, self.fallback).long()
        return torch.nn.functional.one_hot(cls, 10).float() + 0 * self.w


def test_attack_success_rate_on_known_models():
    from dfkd_viz.analysis.metrics import attack_success_rate

    test = load_dataset("mnist", "test").subset(slice(0, 300))
    trig = make_trigger("badnet_grid")
    assert attack_success_rate(_Detector(0, 5), test, trig, 0) == 1.0  # a perfect backdoor
    assert attack_success_rate(_Detector(0, 5, honest=True), test, trig, 0) == 0.0  # none
    # target-class images are excluded: a model that always answers the target scores 1, not less
    assert attack_success_rate(_Detector(3, 3), test, trig, 3) == 1.0
