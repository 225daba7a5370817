"""CIFAR-10 / CIFAR-100 loaders (dfkd_viz.data.cifar) on small hand-made archives in every
official layout: binary and Python folders, and their .tar.gz, plus hostile and broken files."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from dfkd_viz.data import DATASETS, dataset_available, load_dataset
from dfkd_viz.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    CIFAR_URL,
    CifarFileError,
    SafeUnpickler,
    UnsafePickleError,
)
from dfkd_viz.errors import DataUnavailableError, DfkdVizError

N = 20  # records per batch file (the official files hold 10,000)
LAYOUTS = ("bin", "py", "bin-tar", "py-tar")
FOLDER = {
    ("cifar10", "bin"): "cifar-10-batches-bin",
    ("cifar10", "py"): "cifar-10-batches-py",
    ("cifar100", "bin"): "cifar-100-binary",
    ("cifar100", "py"): "cifar-100-python",
}
ARCHIVE = {
    ("cifar10", "bin"): "cifar-10-binary.tar.gz",
    ("cifar10", "py"): "cifar-10-python.tar.gz",
    ("cifar100", "bin"): "cifar-100-binary.tar.gz",
    ("cifar100", "py"): "cifar-100-python.tar.gz",
}


@pytest.fixture(autouse=True)
def _no_outside_data(monkeypatch):
    # only the tmp dirs a test passes (and the per-test DFKD_VIZ_HOME) are searched
    monkeypatch.delenv("DFKD_VIZ_DATA", raising=False)


# ---------------------------------------------------------------------------------------------
# writers of the official formats


class Py2Pickler(pickle._Pickler):
    """Pickles like Python 2's cPickle did for the official files: protocol 2, every str / bytes
    as a (SHORT_)BINSTRING (Python 3's protocol 2 would add a ``_codecs.encode`` global)."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_str8(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # numpy < 2 (which wrote the archives) names the module numpy.core.multiarray
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def planted(n: int, seed: int) -> np.ndarray:
    """(n, 3, 32, 32) uint8 random images; image 0 carries a marker that tells the planes and
    the row-major order apart: R=255 only at row 0 col 1, G=255 only at row 1 col 0, B=77 only
    at row 31 col 30."""
    img = np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    img[0] = 0
    img[0, 0, 0, 1] = 255
    img[0, 1, 1, 0] = 255
    img[0, 2, 31, 30] = 77
    return img


def binary_records(img: np.ndarray, fine: np.ndarray, coarse: np.ndarray | None) -> bytes:
    cols = [] if coarse is None else [coarse[:, None]]
    cols += [fine[:, None], img.reshape(len(img), -1)]
    return np.concatenate([c.astype(np.uint8) for c in cols], axis=1).tobytes()


def cifar_files(name: str, kind: str, seed: int = 0, meta: bool = True):
    """``({file name: bytes}, expected {split: (images, labels)}, class names)`` of a small
    archive of ``name`` in layout ``kind`` (``"bin"`` or ``"py"``)."""
    rng = np.random.default_rng(seed + 100)
    k = 10 if name == "cifar10" else 100
    classes = tuple(f"class_{i}" for i in range(k))  # differ from the built-in ones on purpose
    if name == "cifar10":
        layout = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        per_file = N
    else:
        layout = {"train": ["train"], "test": ["test"]}
        per_file = 2 * N
    files, expected = {}, {}
    for split, stems in layout.items():
        imgs, labs = [], []
        for j, stem in enumerate(stems):
            img = planted(per_file, seed + 10 * j + (split == "test"))
            lab = rng.integers(0, k, per_file).astype(np.uint8)
            lab[: min(k, per_file)] = np.arange(min(k, per_file))  # low labels all show up
            coarse = lab // 5 if name == "cifar100" else None
            if kind == "bin":
                files[f"{stem}.bin"] = binary_records(img, lab, coarse)
            else:
                d = {
                    "batch_label": f"{split} batch {j + 1} of 5",
                    "data": img.reshape(per_file, -1),
                    "filenames": [f"img_{i}.png" for i in range(per_file)],
                }
                if name == "cifar10":
                    d["labels"] = [int(v) for v in lab]
                else:
                    d["fine_labels"] = [int(v) for v in lab]
                    d["coarse_labels"] = [int(v) for v in coarse]
                files[stem] = py2_pickle(d)
            imgs.append(img)
            labs.append(lab.astype(np.int64))
        expected[split] = (np.concatenate(imgs), np.concatenate(labs))
    if meta:
        if kind == "bin":
            meta_name = "batches.meta.txt" if name == "cifar10" else "fine_label_names.txt"
            files[meta_name] = ("\n".join(classes) + "\n\n").encode()
        elif name == "cifar10":
            files["batches.meta"] = py2_pickle(
                {"label_names": list(classes), "num_cases_per_batch": N, "num_vis": 3072}
            )
        else:
            files["meta"] = py2_pickle(
                {
                    "fine_label_names": list(classes),
                    "coarse_label_names": [f"super_{i}" for i in range(20)],
                }
            )
    return files, expected, classes


def write_dir(root: Path, name: str, kind: str, files: dict[str, bytes]) -> Path:
    d = root / FOLDER[(name, kind)]
    d.mkdir(parents=True, exist_ok=True)
    for fname, data in files.items():
        (d / fname).write_bytes(data)
    return d


def write_tar(root: Path, name: str, kind: str, files: dict[str, bytes], extra=()) -> Path:
    """The .tar.gz as downloaded: a folder member, a readme, then the files; ``extra`` are
    additional TarInfo (with their data or None) appended first."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ARCHIVE[(name, kind)]
    folder = FOLDER[(name, kind)]
    with tarfile.open(path, "w:gz") as tf:
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
        d = tarfile.TarInfo(folder)
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        for fname, data in {"readme.html": b"<html></html>", **files}.items():
            info = tarfile.TarInfo(f"{folder}/{fname}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def make(root: Path, name: str, layout: str, seed: int = 0, meta: bool = True):
    kind = layout.split("-")[0]
    files, expected, classes = cifar_files(name, kind, seed, meta)
    if layout.endswith("-tar"):
        write_tar(root, name, kind, files)
    else:
        write_dir(root, name, kind, files)
    return expected, classes


# ---------------------------------------------------------------------------------------------
# reading every layout


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_every_layout_reads_pixels_labels_and_meta(tmp_path, name, layout):
    expected, classes = make(tmp_path, name, layout)
    k = 10 if name == "cifar10" else 100
    for split in ("train", "test"):
        ds = load_dataset(name, split, data_dir=tmp_path)
        img, lab = expected[split]
        assert ds.name == name and ds.split == split
        assert ds.x.shape == (len(img), 3, 32, 32) and ds.x.dtype == torch.float32
        assert ds.y.shape == (len(img),) and ds.y.dtype == torch.int64
        assert ds.x.is_contiguous()
        assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
        # exactly uint8 / 255, in the file's R, G, B plane and row-major order
        assert torch.equal(ds.x, torch.from_numpy(img).float() / 255.0)
        assert torch.equal(ds.y, torch.from_numpy(lab))
        assert ds.num_classes == k and ds.classes == classes
        assert len(ds.mean) == len(ds.std) == 3
    n_train, n_test = (5 * N, N) if name == "cifar10" else (2 * N, 2 * N)
    assert len(load_dataset(name, "train", data_dir=tmp_path)) == n_train
    assert len(load_dataset(name, "test", data_dir=tmp_path)) == n_test


@pytest.mark.parametrize("layout", ["bin", "py"])
def test_planted_pattern_lands_on_the_right_channel_row_and_column(tmp_path, layout):
    make(tmp_path, "cifar10", layout)
    x = load_dataset("cifar10", "test", data_dir=tmp_path).x[0]
    assert x[0, 0, 1] == 1.0 and x[0].sum() == 1.0  # R: row 0, column 1 only
    assert x[1, 1, 0] == 1.0 and x[1].sum() == 1.0  # G: row 1, column 0 only
    assert x[2, 31, 30] == pytest.approx(77 / 255) and x[2, 31, 31] == 0.0  # B
    # the first train image of every batch file is planted: images 0, N, 2N ...
    train = load_dataset("cifar10", "train", data_dir=tmp_path)
    assert all(train.x[i, 0, 0, 1] == 1.0 for i in range(0, 5 * N, N))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_stats_and_builtin_class_names_without_meta(tmp_path, name):
    make(tmp_path, name, "bin", meta=False)
    ds = load_dataset(name, "test", data_dir=tmp_path)
    if name == "cifar10":
        assert ds.mean == (0.4914, 0.4822, 0.4465) and ds.std == (0.2023, 0.1994, 0.2010)
        assert ds.classes == CIFAR10_CLASSES and ds.classes[0] == "airplane"
        assert ds.classes[-1] == "truck" and len(ds.classes) == 10
    else:
        assert ds.mean == (0.5071, 0.4867, 0.4408) and ds.std == (0.2675, 0.2565, 0.2761)
        assert ds.classes == CIFAR100_CLASSES and len(set(ds.classes)) == 100
        assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)  # the official order is a–z


def test_cifar100_uses_fine_labels(tmp_path):
    expected, _ = make(tmp_path, "cifar100", "bin")
    ds = load_dataset("cifar100", "train", data_dir=tmp_path)
    assert int(ds.y.max()) >= 20  # coarse labels stop at 19
    assert torch.equal(ds.y, torch.from_numpy(expected["train"][1]))


def test_registry_availability_and_env_data_dir(tmp_path, monkeypatch):
    assert "cifar10" in DATASETS and "cifar100" in DATASETS
    assert {"cifar10", "cifar100"} <= set(DATASETS.names())
    assert not dataset_available("cifar10", tmp_path / "nowhere")
    assert not dataset_available("cifar100", tmp_path / "nowhere")
    make(tmp_path / "data", "cifar10", "bin-tar")
    assert dataset_available("cifar10", tmp_path / "data")
    assert not dataset_available("cifar100", tmp_path / "data")
    # found through DFKD_VIZ_DATA too (what the CLI's --data-dir sets)
    monkeypatch.setenv("DFKD_VIZ_DATA", str(tmp_path / "data"))
    assert len(load_dataset("cifar10", "test")) == N


def test_binary_folder_is_preferred_and_pickles_are_then_never_opened(tmp_path):
    make(tmp_path, "cifar10", "bin")
    d = write_dir(tmp_path, "cifar10", "py", {})
    for stem in ("test_batch", "batches.meta"):
        (d / stem).write_bytes(_hostile(b"os", b"system", b"exit 3"))
    assert len(load_dataset("cifar10", "test", data_dir=tmp_path)) == N


def test_explicit_data_dir_comes_first(tmp_path):
    make(tmp_path / "a", "cifar10", "bin", seed=1)
    make(tmp_path / "b", "cifar10", "py", seed=2)
    a = load_dataset("cifar10", "test", data_dir=tmp_path / "a")
    b = load_dataset("cifar10", "test", data_dir=tmp_path / "b")
    assert not torch.equal(a.x, b.x)


# ---------------------------------------------------------------------------------------------
# missing data


def test_missing_dataset_says_where_to_put_which_archive(tmp_path):
    with pytest.raises(DataUnavailableError) as info:
        load_dataset("cifar100", "train", data_dir=tmp_path / "nowhere")
    msg = str(info.value)
    assert CIFAR_URL in msg and str(tmp_path / "nowhere") in msg and "--data-dir" in msg
    assert "cifar-100-binary.tar.gz" in msg and "cifar-100-python.tar.gz" in msg
    assert "cifar-100-binary/" in msg and "cifar-100-python/" in msg
    assert msg.count(". ") == 0 and "\n" not in msg  # one sentence
    assert isinstance(info.value, DfkdVizError)  # the CLI prints it and exits with 2


def test_incomplete_folder_is_named_and_not_available(tmp_path):
    files, _, _ = cifar_files("cifar10", "bin")
    del files["data_batch_4.bin"]
    write_dir(tmp_path, "cifar10", "bin", files)
    with pytest.raises(DataUnavailableError, match=r"lacks data_batch_4\.bin"):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert dataset_available("cifar10", tmp_path)  # the test split is complete


# ---------------------------------------------------------------------------------------------
# hostile pickles


def _hostile(module: bytes, name: bytes, arg: bytes) -> bytes:
    """A protocol-2 pickle calling ``module.name(arg)`` on load."""
    return b"\x80\x02c" + module + b"\n" + name + b"\n" + b"U" + bytes([len(arg)]) + arg + b"\x85R."


@pytest.mark.parametrize(
    ("module", "name", "code"),
    [
        (b"os", b"system", "touch {m}"),
        (b"posix", b"system", "touch {m}"),
        (b"builtins", b"eval", "open({m!r}, 'w').close()"),
        (b"__builtin__", b"eval", "open({m!r}, 'w').close()"),
        (b"subprocess", b"getoutput", "touch {m}"),
        (b"numpy", b"load", "{m}"),
    ],
)
def test_hostile_pickle_is_refused_and_nothing_runs(tmp_path, module, name, code):
    marker = tmp_path / "pwned"
    payload = _hostile(module, name, code.format(m=str(marker)).encode())
    files, _, _ = cifar_files("cifar10", "py")
    files["test_batch"] = payload
    write_dir(tmp_path, "cifar10", "py", files)
    with pytest.raises(UnsafePickleError, match="refused") as info:
        load_dataset("cifar10", "test", data_dir=tmp_path)
    assert f"{module.decode()}.{name.decode()}" in str(info.value)
    assert not marker.exists()
    assert isinstance(info.value, DfkdVizError)
    if module in (b"os", b"builtins"):  # the payload is real: plain pickle would have run it
        pickle.loads(payload)
        assert marker.exists()


def test_hostile_global_inside_a_real_looking_batch_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    img = planted(N, 0)
    raw = pickle.dumps(
        {b"data": img.reshape(N, -1), b"labels": [0] * N, b"extra": Evil()}, protocol=2
    )
    files, _, _ = cifar_files("cifar10", "py")
    files["data_batch_3"] = raw
    write_tar(tmp_path, "cifar10", "py", files)
    with pytest.raises(UnsafePickleError):
        load_dataset("cifar10", "train", data_dir=tmp_path)
    assert not marker.exists()
    # Python 3's own protocol-2 bytes need _codecs.encode, which no official file uses: refused
    with pytest.raises(UnsafePickleError):
        SafeUnpickler(io.BytesIO(pickle.dumps({b"a": 1}, protocol=2)), encoding="bytes").load()


def test_safe_unpickler_reads_numpy_arrays_written_by_numpy_1_and_2():
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for raw in (py2_pickle({"data": arr}), pickle.dumps({"data": arr}, protocol=2)):
        if b"_codecs" in raw:
            raw = py2_pickle({"data": arr}).replace(
                b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n"
            )
        d = SafeUnpickler(io.BytesIO(raw), encoding="bytes").load()
        assert np.array_equal(d[b"data"], arr)


# ---------------------------------------------------------------------------------------------
# truncated and wrong files


def test_truncated_binary_file(tmp_path):
    files, _, _ = cifar_files("cifar10", "bin")
    files["data_batch_2.bin"] = files["data_batch_2.bin"][:-100]
    write_dir(tmp_path, "cifar10", "bin", files)
    with pytest.raises(CifarFileError, match=r"data_batch_2\.bin is truncated.*3,073-byte"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_binary_batch_with_fewer_records_than_its_siblings(tmp_path):
    files, _, _ = cifar_files("cifar10", "bin")
    files["data_batch_5.bin"] = files["data_batch_5.bin"][: 3073 * (N - 3)]
    write_dir(tmp_path, "cifar10", "bin", files)
    with pytest.raises(CifarFileError, match=rf"truncated: it holds {N - 3} records"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_cifar100_binary_size_and_empty_file(tmp_path):
    files, _, _ = cifar_files("cifar100", "bin")
    files["test.bin"] = files["test.bin"][:-1]
    files["train.bin"] = b""
    write_dir(tmp_path, "cifar100", "bin", files)
    for split in ("train", "test"):
        with pytest.raises(CifarFileError, match="3,074-byte"):
            load_dataset("cifar100", split, data_dir=tmp_path)


def test_truncated_pickle_and_fewer_images_than_meta(tmp_path):
    files, _, _ = cifar_files("cifar10", "py")
    files["test_batch"] = files["test_batch"][: len(files["test_batch"]) // 2]
    img = planted(N - 1, 3)
    files["data_batch_1"] = py2_pickle({"data": img.reshape(N - 1, -1), "labels": [1] * (N - 1)})
    write_dir(tmp_path, "cifar10", "py", files)
    with pytest.raises(CifarFileError, match="test_batch is truncated or not a CIFAR pickle"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
    with pytest.raises(CifarFileError, match=rf"truncated: it holds {N - 1} images.*promises {N}"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_truncated_tar_gz(tmp_path):
    files, _, _ = cifar_files("cifar100", "bin")
    path = write_tar(tmp_path, "cifar100", "bin", files)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CifarFileError, match="truncated or not a gzip-compressed tar"):
        load_dataset("cifar100", "test", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        ({"data": np.zeros((N, 3071), np.uint8), "labels": [0] * N}, r"shape \(20, 3071\)"),
        ({"data": np.zeros((N, 3072), np.float32), "labels": [0] * N}, "not a uint8 matrix"),
        ({"data": np.zeros((N, 3072), np.uint8)}, "lacks 'data' or 'labels'"),
        ({"images": np.zeros((N, 3072), np.uint8), "labels": [0] * N}, "lacks 'data'"),
        ({"data": np.zeros((N, 3072), np.uint8), "labels": [0] * (N - 1)}, "19 labels"),
        ({"data": np.zeros((N, 3072), np.uint8), "labels": ["cat"] * N}, "not a list of int"),
        ({"data": np.zeros((N, 3072), np.uint8), "labels": [10] * N}, "label 10 is outside 0–9"),
        ([1, 2, 3], "holds a list"),
    ],
)
def test_wrong_python_batches(tmp_path, batch, match):
    files, _, _ = cifar_files("cifar10", "py", meta=False)
    files["test_batch"] = py2_pickle(batch)
    write_dir(tmp_path, "cifar10", "py", files)
    with pytest.raises(CifarFileError, match=match):
        load_dataset("cifar10", "test", data_dir=tmp_path)


def test_wrong_binary_labels_and_meta(tmp_path):
    files, _, _ = cifar_files("cifar10", "bin")
    rec = bytearray(files["test_batch.bin"])
    rec[3073 * 7] = 12  # label of record 7
    files["test_batch.bin"] = bytes(rec)
    files["batches.meta.txt"] = b"a\nb\nc\n"
    write_dir(tmp_path / "one", "cifar10", "bin", files)
    with pytest.raises(CifarFileError, match="label 12 is outside 0–9"):
        load_dataset("cifar10", "test", data_dir=tmp_path / "one")
    with pytest.raises(CifarFileError, match="names 3 classes, not 10"):
        load_dataset("cifar10", "train", data_dir=tmp_path / "one")
    # a CIFAR-10 file where CIFAR-100 expects its records: not a whole number of 3,074 bytes
    files100, _, _ = cifar_files("cifar100", "bin")
    files100["test.bin"] = files["data_batch_1.bin"] * 2
    write_dir(tmp_path / "two", "cifar100", "bin", files100)
    with pytest.raises(CifarFileError, match="3,074-byte"):
        load_dataset("cifar100", "test", data_dir=tmp_path / "two")


def test_tar_missing_member_is_a_wrong_archive(tmp_path):
    files, _, _ = cifar_files("cifar10", "py")
    del files["data_batch_2"]
    write_tar(tmp_path, "cifar10", "py", files)
    with pytest.raises(CifarFileError, match="lacks the member cifar-10-batches-py/data_batch_2"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# hostile archives


def _member(name: str, kind=tarfile.REGTYPE, target: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    data = b"abc" if kind == tarfile.REGTYPE else None
    info.size = len(data or b"")
    return info, data


@pytest.mark.parametrize(
    ("member", "match"),
    [
        (("cifar-10-batches-bin/test_batch.bin", tarfile.SYMTYPE, "/etc/passwd"), "link or device"),
        (("cifar-10-batches-bin/x", tarfile.LNKTYPE, "/etc/passwd"), "link or device"),
        (("cifar-10-batches-bin/tty", tarfile.CHRTYPE), "link or device"),
        (("cifar-10-batches-bin/fifo", tarfile.FIFOTYPE), "link or device"),
        (("../../escape.bin",), "outside the archive"),
        (("cifar-10-batches-bin/../../escape.bin",), "outside the archive"),
        (("/tmp/abs.bin",), "outside the archive"),
    ],
)
def test_archive_with_links_devices_or_escaping_paths_is_rejected(tmp_path, member, match):
    files, _, _ = cifar_files("cifar10", "bin")
    data = tmp_path / "data"
    data.mkdir()
    write_tar(data, "cifar10", "bin", files, extra=[_member(*member)])
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(CifarFileError, match=match):
        load_dataset("cifar10", "test", data_dir=data)
    assert sorted(tmp_path.rglob("*")) == before  # nothing was extracted anywhere
    assert not Path("/tmp/abs.bin").exists()


def test_archive_member_larger_than_the_official_file_is_rejected(tmp_path):
    files, _, _ = cifar_files("cifar10", "bin")
    path = write_tar(tmp_path, "cifar10", "bin", files)
    # rewrite with a huge (sparse-looking) test batch header without storing the data twice
    big = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
    big.size = 10_000 * 3073 + (9 << 20)
    with tarfile.open(path, "w:gz") as tf:
        tf.addfile(big, io.BytesIO(bytes(big.size)))
    with pytest.raises(CifarFileError, match="more than the official test files"):
        load_dataset("cifar10", "test", data_dir=tmp_path)
