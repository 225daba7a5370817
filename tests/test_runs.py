"""The worker, the manager and the run lifecycle (real detached processes, tiny budgets)."""

import json
import os
import signal
import time

import pytest
from conftest import wait_until

from dfkd_viz.errors import ConfigError, RunStateError, UnknownNameError
from dfkd_viz.jobs.liveness import pid_alive
from dfkd_viz.runs import manager
from dfkd_viz.runs.config import RunConfig, format_validation_error, validate_config
from dfkd_viz.runs.presets import PRESETS, get_preset, preset_config
from dfkd_viz.runs.store import RunReader
from dfkd_viz.teachers import get_spec

pytestmark = pytest.mark.slow


def test_config_validation_messages():
    with pytest.raises(ConfigError, match=r"steps must be ≥ 1 \(got -5\)"):
        validate_config({"teacher": "mnist-clean", "method": "dfq", "steps": -5})
    with pytest.raises(ConfigError, match="method must be one of"):
        validate_config({"teacher": "mnist-clean", "method": "nope"})
    with pytest.raises(ConfigError, match="teacher"):
        validate_config({"teacher": "nobody", "method": "dfq"})
    with pytest.raises(ConfigError, match=r"method_params\.w_bn must be ≥ 0"):
        validate_config({"teacher": "mnist-clean", "method": "dfq", "method_params": {"w_bn": -1}})
    with pytest.raises(ConfigError, match="not a known option"):
        validate_config({"teacher": "mnist-clean", "method": "dfq", "colour": "red"})
    with pytest.raises(ConfigError, match="either steps or seconds"):
        validate_config({"teacher": "mnist-clean", "method": "dfq", "steps": 3, "seconds": 3})
    cfg = validate_config({"teacher": "mnist-clean", "method": "dfad"})
    assert cfg.steps == 300  # the method's default budget


def test_presets_and_overrides():
    assert {"clean-dfq", "clean-dfad", "clean-zskt"} <= set(PRESETS)
    raw = preset_config("clean-dfq", {"teacher": "mnist-ntl-digits", "seconds": 5})
    assert raw["teacher"] == "mnist-ntl-digits" and raw["seconds"] == 5 and "steps" not in raw
    assert raw["method"] == "dfq" and raw["preset"] == "clean-dfq"
    with pytest.raises(UnknownNameError):
        get_preset("nope")
    for p in PRESETS.values():
        validate_config(preset_config(p.name))
    # paired presets: same teacher, method and budget; only the defense differs
    for base, defended in (("ntl-trap", "ntl-trap-atesc"), ("backdoor", "backdoor-abd")):
        a, b = dict(PRESETS[base].config), dict(PRESETS[defended].config)
        assert a.pop("defense", "none") == "none" and b.pop("defense") != "none"
        assert a == b
    # the collapse pair: same teacher and budget, only the method differs
    a, b = dict(PRESETS["collapse-dfq"].config), dict(PRESETS["collapse-tadfkd"].config)
    assert (a.pop("method"), b.pop("method")) == ("dfq", "tadfkd") and a == b
    assert get_spec(a["teacher"]).default is False  # an extra teacher of the family


def test_worker_runs_and_finishes(trained_home, tiny_run):
    run_id = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 4, **tiny_run})
    st = manager.wait(run_id, timeout_s=120)
    assert st["state"] == "finished", st
    info = manager.run_info(run_id)
    assert info["step"] == 4 and 0 <= info["id_acc"] <= 1 and info["pid"] is None
    with RunReader(manager.run_dir(run_id)) as r:
        assert r.snapshot_steps() == [1, 2, 4]
        names = set(r.metric_names())
        assert {"id_acc", "ood_acc", "g_adv", "g_bn", "s_kd", "agreement", "it_s"} <= names
        assert r.checkpoints() and r.status()["device"] == "cpu"
    assert any(x["run_id"] == run_id for x in manager.list_runs())
    with pytest.raises(RunStateError):
        manager.resume(run_id)


def test_stop_then_resume_continues_steps(trained_home, tiny_run):
    run_id = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 400, **tiny_run})
    assert wait_until(lambda: (manager.run_info(run_id).get("step") or 0) >= 4)
    st = manager.stop(run_id, wait_s=30)
    assert st["state"] == "stopped"
    stopped_at = manager.run_info(run_id)["step"]
    with pytest.raises(RunStateError):
        manager.stop(run_id)
    manager.resume(run_id)
    assert wait_until(lambda: (manager.run_info(run_id).get("step") or 0) > stopped_at + 2)
    manager.stop(run_id, wait_s=30)
    with RunReader(manager.run_dir(run_id)) as r:
        steps = sorted(set(r.metrics(["g_total"])["step"]))
        assert "resumed from the checkpoint" in " ".join(r.events()["message"])
    assert steps == list(range(1, steps[-1] + 1)), "step numbers must be continuous across a resume"


def test_killed_worker_is_failed_and_keeps_its_metrics(trained_home, tiny_run):
    run_id = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 400, **tiny_run})
    assert wait_until(lambda: (manager.run_info(run_id).get("step") or 0) >= 3)
    pid = manager.run_info(run_id)["pid"]
    with RunReader(manager.run_dir(run_id)) as r:
        committed = len(r.metrics(["id_acc"]))
    os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    assert wait_until(lambda: manager.effective_status(run_id)["state"] == "failed", 5.0)
    assert time.time() - t0 < 5.0
    info = manager.run_info(run_id)
    assert "killed or crashed" in info["error"] and not pid_alive(pid)
    with RunReader(manager.run_dir(run_id)) as r:
        assert len(r.metrics(["id_acc"])) >= committed


def test_crashed_run_is_failed_with_its_error(trained_home, tiny_run):
    (trained_home / "teachers" / "mnist-clean.safetensors").write_bytes(b"garbage")
    run_id = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 2, **tiny_run})
    st = manager.wait(run_id, timeout_s=60)
    assert st["state"] == "failed" and "do not load" in st["error"]


def test_run_dir_rejects_path_tricks():
    for bad in ("../etc", "a/b", "", ".hidden"):
        with pytest.raises(UnknownNameError):
            manager.run_dir(bad)


def test_corrupt_run_directory_is_listed_not_raised(home):
    d = home / "runs" / "20260101-000000-dfq-dead"
    d.mkdir(parents=True)
    (d / "run.db").write_bytes(b"garbage" * 50)
    runs = manager.list_runs()
    assert runs[0]["status"] == "corrupt" and "corrupt" in runs[0]["error"]


def test_format_validation_error_is_one_sentence():
    from pydantic import ValidationError

    try:
        RunConfig(teacher="t", method="m", batch_size=1)
    except ValidationError as exc:
        msg = format_validation_error(exc)
    assert msg == "batch_size must be ≥ 2 (got 1)"
    # unset, the defense is the method's own (resolved by validate_config, test_tadfkd.py)
    assert json.loads(RunConfig(teacher="t", method="m").to_json())["defense"] is None


def test_worker_maps_snapshots_into_the_embedding(trained_home, tiny_run, monkeypatch):
    """The worker places every snapshot into the teacher's stored reference map (no UMAP in the
    worker, no map job when the map is there)."""
    import numpy as np

    from dfkd_viz.analysis.embedding import reference_set
    from dfkd_viz.data import load_dataset, load_domain
    from dfkd_viz.teachers import load_teacher
    from dfkd_viz.teachers.maps import ReferenceMap, map_path, maps_dir, save_map

    monkeypatch.setenv("DFKD_VIZ_MAP_POINTS", "200")  # inherited by the worker
    teacher, _ = load_teacher("mnist-clean")
    ref = reference_set(
        teacher,
        load_dataset("mnist", "test"),
        load_domain("mnist-m", "mnist", "test"),
        n_id=200,
        n_ood=200,
    )
    coords = np.random.default_rng(0).normal(size=(400, 2)).astype(np.float32)
    png = [b"\x89PNG-not-decoded-here"] * 400
    save_map(
        map_path("mnist-clean"), ReferenceMap(ref.features, coords, ref.labels, ref.source, png)
    )
    cfg = {**tiny_run, "embedding": True, "snapshot_every": 1}
    run_id = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 3, **cfg})
    st = manager.wait(run_id, timeout_s=300)
    assert st["state"] == "finished", st
    with RunReader(manager.run_dir(run_id)) as r:
        ref_rows = r.reference()
        assert len(ref_rows) == 200 + 200 and set(ref_rows["source"]) == {"id", "ood"}
        assert np.allclose(ref_rows[["emb_x", "emb_y"]].to_numpy(), coords)
        assert r.embedded_steps() == [1, 2, 3]
        xy = r.samples(3)[["emb_x", "emb_y"]].to_numpy()
        assert np.isfinite(xy).all()
        # k-NN placement: a weighted mean of reference points stays inside their hull
        assert (xy.min(0) >= coords.min(0) - 1e-5).all() and (
            xy.max(0) <= coords.max(0) + 1e-5
        ).all()
        like = r.metrics(["ood_likeness"])
        assert len(like) == 3 and like["value"].between(0, 1).all()
    assert not list(maps_dir().glob(".*.progress.json"))  # no job: the map was there
