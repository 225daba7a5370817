import sqlite3
import threading
import time

import numpy as np
import pytest

from dfkd_viz.distill.snapshot import Snapshot
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.runs.store import RunReader, RunWriter
from dfkd_viz.util.io import png_bytes, png_to_array


def _snap(step, n=4, with_defense=True):
    rng = np.random.default_rng(step)
    return Snapshot(
        step=step,
        images=rng.integers(0, 256, (n, 1, 28, 28)).astype(np.uint8),
        teacher_label=rng.integers(0, 10, n),
        confidence=rng.random(n),
        student_label=rng.integers(0, 10, n),
        score=rng.random(n) if with_defense else None,
        keep=(rng.random(n) > 0.5) if with_defense else None,
        threshold=0.5 if with_defense else None,
    )


def test_store_roundtrip(tmp_path):
    d = tmp_path / "run1"
    w = RunWriter(d)
    w.init_status("run1", 10, None)
    w.set_status(state="running", pid=123, step=0)
    for step in range(1, 6):
        w.add_metrics(step, step * 0.1, {"g_adv": -step, "s_kd": 1.0 / step, "skip": None})
    w.add_metrics(5, 0.5, {"id_acc": 0.9, "ood_acc": None}, commit=True)
    w.add_snapshot(_snap(5), 0.5, "confidence")
    w.add_event("hello")
    w.add_checkpoint(5, "/x.safetensors", 0.5)
    w.set_status(state="finished", step=5)
    (d / "config.json").write_text('{"teacher": "t", "method": "dfq"}')
    w.close()

    with RunReader(d) as r:
        st = r.status()
        assert st["state"] == "finished" and st["step"] == 5 and st["total_steps"] == 10
        assert r.config()["method"] == "dfq"
        assert set(r.metric_names()) == {"g_adv", "s_kd", "id_acc"}
        long = r.metrics(["g_adv"])
        assert list(long["step"]) == [1, 2, 3, 4, 5] and list(long["value"]) == [-1, -2, -3, -4, -5]
        wide = r.metrics_wide()
        assert len(wide) == 5 and wide["id_acc"].notna().sum() == 1
        assert r.latest() == {"id_acc": 0.9}
        assert r.snapshot_steps() == [5]
        df = r.samples(5)
        assert len(df) == 4 and df["keep"].isin([0, 1]).all()
        img = png_to_array(df["image"][0])
        assert img.shape == (28, 28)
        assert r.snapshot_info(5)["score_name"] == "confidence"
        assert list(r.events()["message"]) == ["hello"]
        assert r.checkpoints()[0]["step"] == 5
        assert r.decision_counts()["kept"].sum() + r.decision_counts()["rejected"].sum() == 4


def test_png_roundtrip_rgb_and_gray():
    g = np.arange(784, dtype=np.uint8).reshape(1, 28, 28)
    assert (png_to_array(png_bytes(g)) == g[0]).all()
    rgb = np.random.default_rng(0).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    assert (png_to_array(png_bytes(rgb)) == rgb.transpose(1, 2, 0)).all()


def test_reader_does_not_block_a_writer(tmp_path):
    d = tmp_path / "run"
    w = RunWriter(d, commit_every_s=0.0)
    w.init_status("run", None, 5.0)
    stop = threading.Event()
    errors = []

    def write():
        step = 0
        try:
            while not stop.is_set():
                step += 1
                w.add_metrics(step, 0.0, {"x": step}, commit=True)
        except Exception as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    th = threading.Thread(target=write)
    th.start()
    seen = []
    t0 = time.time()
    while time.time() - t0 < 0.5:
        with RunReader(d) as r:
            seen.append(len(r.metrics()))
    stop.set()
    th.join()
    w.close()
    assert not errors and seen[-1] >= seen[0] and max(seen) > 0


def test_unreadable_runs_are_clear_errors(tmp_path):
    with pytest.raises(DfkdVizError, match="no database"):
        RunReader(tmp_path / "nothing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DfkdVizError, match="corrupt"):
        RunReader(bad)


def test_truncate_after(tmp_path):
    w = RunWriter(tmp_path / "r")
    w.init_status("r", 10, None)
    for s in range(1, 8):
        w.add_metrics(s, 0, {"a": s})
    w.add_snapshot(_snap(6), 0)
    w.flush()
    w.truncate_after(4)
    w.close()
    with RunReader(tmp_path / "r") as r:
        assert r.metrics()["step"].max() == 4 and r.snapshot_steps() == []


def test_writer_rejects_unknown_status_fields(tmp_path):
    w = RunWriter(tmp_path / "r")
    w.init_status("r", 1, None)
    with pytest.raises(ValueError):
        w.set_status(colour="red")
    with pytest.raises(ValueError):
        w.set_status(state="exploded")
    w.close()
    with pytest.raises(sqlite3.Error):
        w.con.execute("SELECT 1")
