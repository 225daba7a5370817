"""Sweeps on Ray: the executor choice, moving runs as bytes, the sweep record of remote cells, the
app and CLI without Ray, and a real two-process Ray setup (a ``ray start --head`` node that cannot
see the driver's home, the sweep as its driver) inside private namespaces: a 2 × 1 × 2 sweep with a
killed Ray worker, stop and resume, a GPU no node has."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli
from streamlit.testing.v1 import AppTest

from dfkd_viz.errors import ConfigError, DfkdVizError
from dfkd_viz.jobs import process_start_time
from dfkd_viz.runs import manager
from dfkd_viz.runs import sweep as sw
from dfkd_viz.runs.config import validate_config
from dfkd_viz.runs.executors import ExecutorSpec, parse_executor, ray_installed
from dfkd_viz.runs.executors.transfer import (
    finish_run,
    new_run_dir,
    pack_run,
    teacher_bundle,
    unpack_run,
    write_bundle,
)
from dfkd_viz.runs.store import RunReader, RunWriter
from dfkd_viz.util.io import write_json

ROOT = Path(__file__).resolve().parent.parent


def _fake_run(runs: Path, run_id: str, tiny_run: dict) -> Path:
    cfg = validate_config(
        {"teacher": "mnist-clean", "method": "dfq", "steps": 4, **tiny_run}, check_teacher=False
    )
    d = new_run_dir(runs, run_id, cfg.to_json())
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "step-0000002.safetensors").write_bytes(b"weights")
    w = RunWriter(d)
    w.add_checkpoint(2, str(d / "checkpoints" / "step-0000002.safetensors"), 1.0)
    w.add_metrics(2, 1.0, {"id_acc": 0.5}, commit=True)
    w.set_status(state="stopped", step=2)
    w.close()
    return d


# ------------------------------------------------------------------------ without Ray at all
def test_everything_but_the_ray_executor_works_without_ray(tmp_path):
    """With ``ray`` unimportable: every library module imports, the Sweeps page renders, a Ray
    sweep is refused in one sentence and a local one is created."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        sys.modules["ray"] = None  # as if Ray were not installed
        import dfkd_viz
        names = [m.name for m in pkgutil.walk_packages(dfkd_viz.__path__, "dfkd_viz.")
                 if not m.name.endswith("__main__")]
        for name in names:
            importlib.import_module(name)
        assert "dfkd_viz.runs.executors.ray" in names
        from dfkd_viz.runs import sweep as sw
        from dfkd_viz.runs.executors import ray_installed
        from dfkd_viz.errors import ConfigError
        assert not ray_installed()
        spec = {"teachers": ["mnist-clean"], "methods": ["dfq"], "seeds": [0], "steps": 2}
        try:
            sw.create_sweep(spec, {"name": "ray"})
            raise SystemExit("a ray sweep was created without ray")
        except ConfigError as exc:
            print("refused:", exc)
        print("local:", sw.create_sweep(spec))
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file("app.py", default_timeout=60)
        at.run()
        at.switch_page("pages/sweeps.py")
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert "ray" not in sys.modules or sys.modules["ray"] is None
        print("modules:", len(names))
        """
    )
    env = {**os.environ, "DFKD_VIZ_HOME": str(tmp_path / "home")}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (
        "refused: the ray executor needs Ray on this machine: pip install -e '.[ray]' in the "
        "dfkd-viz checkout" in r.stdout
    )
    assert "local: sw-" in r.stdout


# ------------------------------------------------------------------------ the executor choice
def test_executor_choices_are_validated_in_one_sentence():
    assert parse_executor(None) == ExecutorSpec(name="local")
    with pytest.raises(ConfigError, match=r"^name: must be one of local, ray \(got 'slurm'\)$"):
        parse_executor({"name": "slurm"})
    for bad in (0, 0.00005, -1, 2000, float("nan")):
        with pytest.raises(ConfigError, match=r"^cpus_per_run: must be between 0.0001 and 1024"):
            parse_executor({"name": "local", "cpus_per_run": bad})
    with pytest.raises(ConfigError, match=r"Ray schedules shares of a GPU in steps of 0.0001"):
        parse_executor({"name": "local", "gpus_per_run": 0.00001})
    assert parse_executor({"cpus_per_run": 0.0001, "gpus_per_run": 0.5}).cpus_per_run == 0.0001
    with pytest.raises(ConfigError, match="address must look like HOST:PORT"):
        parse_executor({"name": "local", "address": "host:1; rm -rf /"})


def test_cli_ray_options_need_the_ray_executor(trained_home):
    r = run_cli("sweep", "--teachers", "mnist-clean", "--methods", "dfq", "--cpus-per-run", "2")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "dfkd-viz: error: --ray-address, --cpus-per-run and --gpus-per-run need --executor ray"
    )
    assert not list(sw.sweeps_dir().iterdir())


@pytest.mark.skipif(not ray_installed(), reason="Ray is not installed (pip install '.[ray]')")
def test_a_ray_sweep_stores_its_executor_and_can_change_it(trained_home, tiny_run):
    spec = {"teachers": ["mnist-clean"], "methods": ["dfq"], "seeds": [0], "steps": 2}
    ex = {"name": "ray", "address": "10.0.0.1:6379", "cpus_per_run": 2}
    sweep_id = sw.create_sweep(spec, ex)
    assert sw.sweep_executor(sweep_id).model_dump() == {
        "name": "ray",
        "address": "10.0.0.1:6379",
        "cpus_per_run": 2.0,
        "gpus_per_run": 0.0,
    }
    assert sw.sweep_status(sweep_id)["executor"] == "ray"
    sw.set_executor(sweep_id, {"name": "local"})
    assert sw.sweep_executor(sweep_id).name == "local"
    old = sw.create_sweep(spec)
    meta = json.loads((sw.sweep_dir(old) / "sweep.json").read_text())
    del meta["executor"]  # a sweep from before executors: local
    write_json(sw.sweep_dir(old) / "sweep.json", meta)
    assert sw.sweep_executor(old).name == "local"


# ------------------------------------------------------------------------ runs as bytes
def test_a_packed_run_unpacks_elsewhere_with_its_checkpoints(tmp_path, tiny_run):
    src = _fake_run(tmp_path / "node" / "runs", "20260101-000000-dfq-ab12", tiny_run)
    data = pack_run(src)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = tf.getnames()
    assert "run.db" in names and "config.json" in names
    assert not any(n.endswith(("-wal", "-shm")) or n.startswith(("/", "..")) for n in names)
    dest_runs = tmp_path / "driver" / "runs"
    d = unpack_run(data, dest_runs, "20260101-000000-dfq-ab12")
    assert d == dest_runs / "20260101-000000-dfq-ab12"
    with RunReader(d) as r:
        assert r.status()["state"] == "stopped" and r.latest()["id_acc"] == 0.5
        (ck,) = r.checkpoints()
    assert Path(ck["path"]) == (d / "checkpoints" / "step-0000002.safetensors").resolve()
    assert Path(ck["path"]).read_bytes() == b"weights"
    # a second arrival of the same run replaces the first whole, and nothing is left beside it
    w = RunWriter(src)
    w.set_status(state="finished", step=4)
    w.close()
    unpack_run(pack_run(src), dest_runs, "20260101-000000-dfq-ab12")
    with RunReader(d) as r:
        assert r.status()["state"] == "finished"
    assert sorted(p.name for p in dest_runs.iterdir()) == ["20260101-000000-dfq-ab12"]


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def test_a_hostile_archive_is_refused_and_leaves_nothing(tmp_path, tiny_run):
    runs = tmp_path / "runs"
    link = tarfile.TarInfo("config.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    other = pack_run(_fake_run(tmp_path / "n" / "runs", "20260101-000000-dfq-0001", tiny_run))
    cases = {
        "../escape": _tar([_file("../escape")]),
        "/abs": _tar([_file("/tmp/abs")]),
        "link": _tar([(link, None)]),
        "empty": _tar([_file("notes.txt")]),
        "garbage": b"not a tar at all",
        "another run": other,
    }
    for what, data in cases.items():
        with pytest.raises(DfkdVizError):
            unpack_run(data, runs, "20260101-000000-dfq-ab12")
        assert not [p for p in runs.iterdir()], what  # no half-unpacked directory
    with pytest.raises(DfkdVizError, match="not a valid run id"):
        unpack_run(other, runs, "../x")
    assert not (tmp_path / "escape").exists()


def test_teacher_bundles_carry_weights_and_card_and_write_only_into_the_zoo(trained_home, tmp_path):
    files = teacher_bundle("mnist-clean", [{"teacher": "mnist-clean"}])
    assert set(files) == {"teachers/mnist-clean.safetensors", "teachers/mnist-clean.json"}
    node = tmp_path / "node-home"
    write_bundle(node, files)
    assert (node / "teachers" / "mnist-clean.safetensors").read_bytes() == (
        trained_home / "teachers" / "mnist-clean.safetensors"
    ).read_bytes()
    for bad in ("runs/x", "teachers/../x", "../x", "teachers/a/b", "/etc/x"):
        with pytest.raises(DfkdVizError, match="may not write"):
            write_bundle(node, {bad: b""})
    with pytest.raises(DfkdVizError, match="not trained on this machine"):
        teacher_bundle("mnist-lenet-short", [])


def test_a_run_whose_worker_died_is_recorded_failed_before_shipping(tmp_path, tiny_run):
    cfg = validate_config(
        {"teacher": "mnist-clean", "method": "dfq", "steps": 4}, check_teacher=False
    )
    d = new_run_dir(tmp_path, "20260101-000000-dfq-dead", cfg.to_json())
    st = finish_run(d, -9)
    assert st["state"] == "failed" and "exit code -9" in st["error"]


# ------------------------------------------------------------------------ the sweep record
def test_remote_cells_show_their_reported_step_while_the_runner_lives(trained_home, tiny_run):
    spec = {"teachers": ["mnist-clean"], "methods": ["dfq"], "seeds": [0, 1], "steps": 50}
    sweep_id = sw.create_sweep({**spec, "base": {k: v for k, v in tiny_run.items()}})
    d = sw.sweep_dir(sweep_id)
    cells = json.loads((d / "cells.json").read_text())
    cells[0]["run_id"] = "20260101-000000-dfq-r000"
    write_json(d / "cells.json", cells)
    live = {
        "0": {"cell_id": "c0000", "run_id": cells[0]["run_id"], "state": "running", "step": 17},
        "1": {"cell_id": "c0001", "run_id": None, "state": "failed", "error": "boom"},
    }
    write_json(d / "cell_progress.json", live)
    # no runner: the reports are history (the running cell's run never arrived: it waits for a
    # resume; the cell that failed before it had a run is failed, with its sentence)
    df = sw.sweep_results(sweep_id)
    assert list(df["status"]) == ["pending", "failed"] and not df["remote"].any()
    assert [e if isinstance(e, str) else None for e in df["error"]] == [None, "boom"]
    # a live runner (this process stands in for it): status and step are the cell's report
    write_json(
        d / "runner.json",
        {
            "kind": "sweep",
            "job_id": sweep_id,
            "state": "running",
            "pid": os.getpid(),
            "pid_start": process_start_time(os.getpid()),
        },
    )
    df = sw.sweep_results(sweep_id)
    assert list(df["status"]) == ["running", "failed"]
    assert df.iloc[0]["step"] == 17 and df.iloc[0]["remote"] and df.iloc[0]["executor"] == "ray"
    st = sw.sweep_status(sweep_id, df)
    assert st["state"] == "running" and st["current"] is None  # nothing here to watch live
    rep = json.loads(run_cli("sweeps", "show", sweep_id, "--json").stdout.splitlines()[-1])
    assert [(r["run_id"], r["status"], r["error"]) for r in rep["rows"]] == [
        ("20260101-000000-dfq-r000", "running", None),
        (None, "failed", "boom"),
    ]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/sweeps.py")
    at.query_params["sweep"] = sweep_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (flying,) = [f.value for f in at.dataframe if "step" in f.value and len(f.value) == 1]
    (failed,) = [f.value for f in at.dataframe if "error" in f.value]
    assert list(failed["error"]) == ["boom"]
    assert list(flying["step"]) == [17] and list(flying["status"]) == ["running"]


@pytest.mark.slow
def test_local_runs_record_their_executor_and_node(trained_home, tiny_run):
    run_id = manager.launch({"teacher": "mnist-clean", "method": "dfq", "steps": 2, **tiny_run})
    manager.wait(run_id, timeout_s=120)
    info = manager.run_info(run_id)
    assert (info["executor"], info["node"]) == ("local", socket.gethostname())
    assert "ray_node_id" not in info


# ------------------------------------------------------------------------ a real Ray cluster
def _namespaces_unavailable() -> str | None:
    if not ray_installed():
        return "Ray is not installed (pip install '.[ray]'; make test installs it)"
    if os.geteuid() != 0:
        return "needs root for private network, PID and mount namespaces (unshare)"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"needs {tool} for private namespaces"
    return None


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(_namespaces_unavailable() is not None, reason=str(_namespaces_unavailable()))
def test_sweeps_on_a_real_ray_cluster(trained_home, tmp_path):
    """tests/_ray_scenario.py in a network namespace with only loopback and a PID namespace that
    ends every Ray process with it; a head node that cannot see the driver's home."""
    out = tmp_path / "scenario.json"
    script = ROOT / "tests" / "_ray_scenario.py"
    cmd = [
        "unshare",
        "--net",
        "--pid",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
        f"ip link set lo up && exec '{sys.executable}' '{script}' --home '{trained_home}' "
        f"--out '{out}'",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1100, cwd=ROOT)
    assert out.exists(), r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["ok"], json.dumps({k: res.get(k) for k in ("error", "runner_logs")}, indent=1)
    print("phases (s):", res["phases"])

    # the node could not see the driver's files; a driver without the token is refused
    assert res["node_sees_home"] == [] and "teachers" in res["driver_sees_home"]
    assert res["no_token"]["rc"] != 0 and "token" in res["no_token"]["tail"].lower()

    # 2 teachers × 1 method × 2 seeds: four ordinary runs in the driver's store, made on Ray
    rep = res["sweep1_report"]
    assert rep["state"] == "finished" and rep["done"] == rep["total"] == 4
    assert {r["status"] for r in rep["rows"]} == {"finished"}
    run_ids = [r["run_id"] for r in rep["rows"]]
    assert len(set(run_ids)) == 4 and set(run_ids) <= set(res["runs_list"])
    for rid, info in res["sweep1_runs"].items():
        assert info["executor"] == "ray" and info["node"] == socket.gethostname(), rid
        assert info["ray_node_id"] and info["status"] == "finished" and info["step"] == 12
        with RunReader(trained_home / "runs" / rid) as rd:
            ck = rd.checkpoints()[-1]["path"]
        assert ck.startswith(str(trained_home)) and Path(ck).is_file()  # relocated, arrived
    assert {t for t in ("mnist-clean", "mnist-lenet-short")} == {r["teacher"] for r in rep["rows"]}
    assert (trained_home / "teachers" / "mnist-lenet-short.json").exists()  # trained by the driver
    # an arrived run is an ordinary run: it exports, and the pages show it
    rid = run_ids[0]
    for fmt in ("html", "safetensors"):
        dest = tmp_path / f"export.{fmt}"
        r = run_cli("runs", "export", rid, "--format", fmt, "--out", str(dest))
        assert r.returncode == 0 and dest.stat().st_size > 0, r.stderr
    for page in ("pages/live.py", "pages/runs.py", "pages/decisions.py"):
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.run()
        at.switch_page(page)
        at.query_params["run"] = rid
        at.run()
        assert not at.exception and not at.error, (page, at.exception, at.error)
    # the killed Ray worker's cell ran again, the others once
    attempts = {k: e["attempts"] for k, e in res["sweep1_progress"].items()}
    assert attempts.pop(res["killed"]["cell"]) == 2 and set(attempts.values()) == {1}

    # stop: the running cells ship their runs back, stopped; resume continues them on Ray
    stopped = res["sweep2_stopped"]
    assert stopped["state"] == "stopped", stopped
    before = {r["run_id"]: r["step"] for r in stopped["rows"]}
    assert all(r["status"] == "stopped" and r["step"] >= 2 for r in stopped["rows"]), before
    assert res["resume"]["rc"] == 0, res["resume"]["stderr"]
    resumed = res["sweep2_resumed"]
    assert resumed["state"] == "finished"
    assert {r["run_id"]: r["status"] for r in resumed["rows"]} == dict.fromkeys(before, "finished")
    for row in resumed["rows"]:
        assert row["step"] > before[row["run_id"]] and row["executor"] == "ray"
        with RunReader(trained_home / "runs" / row["run_id"]) as rd:
            events = " | ".join(rd.events()["message"])
        assert f"resumed from the checkpoint at step {before[row['run_id']]}" in events

    # a GPU on a CPU-only cluster: one sentence, at once
    gpu = res["gpu"]
    last = gpu["stderr"].strip().splitlines()[-1]
    assert gpu["rc"] == 2 and last.startswith("dfkd-viz: error: sweep sw-")
    assert "can give a run 1 GPU(s) (it has no GPU)" in last and gpu["seconds"] < 90


# ------------------------------------------------------------------------ run ids
class _Clock:
    """The ``time`` module, stopped at one second (for :func:`manager.new_run_id` only)."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def strftime(fmt, *args):
        return "20260101-000000"


def test_new_run_ids_skip_the_store_and_the_ids_already_given(monkeypatch, tiny_run):
    """Two cells in the same second never share an id: the store and ``taken`` are checked and
    the suffix is drawn again."""
    cfg = validate_config({"teacher": "mnist-clean", "method": "dfq"}, check_teacher=False)
    monkeypatch.setattr(manager, "time", _Clock())
    draws = iter(["0000", "0000", "abcd", "abcd", "ef01"])
    monkeypatch.setattr(manager, "secrets", SimpleNamespace(token_hex=lambda n: next(draws)))
    from dfkd_viz.paths import runs_dir

    (runs_dir() / "20260101-000000-dfq-0000").mkdir(parents=True)
    first = manager.new_run_id(cfg)
    assert first == "20260101-000000-dfq-abcd"
    assert manager.new_run_id(cfg, {first}) == "20260101-000000-dfq-ef01"
    monkeypatch.setattr(manager, "secrets", SimpleNamespace(token_hex=lambda n: "0000"))
    with pytest.raises(DfkdVizError, match="no free run id"):
        manager.new_run_id(cfg)


# ------------------------------------------------------------------------ limits on arrival
def test_oversized_archives_are_refused_from_their_headers(tmp_path):
    """A run archive whose members add up to more than MAX_RUN_BYTES, or that has more than
    MAX_RUN_MEMBERS members, is refused in one sentence before anything is written."""
    from dfkd_viz.runs.executors import transfer

    runs = tmp_path / "runs"
    big = tarfile.TarInfo("run.db")
    big.size = transfer.MAX_RUN_BYTES + 1  # a header that claims it; no data follows
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        gz.write(big.tobuf(format=tarfile.GNU_FORMAT))
    many = _tar([_file(f"f{i:05d}", b"") for i in range(transfer.MAX_RUN_MEMBERS + 1)])
    for data in (buf.getvalue(), many):
        with pytest.raises(DfkdVizError, match="too large to unpack") as err:
            unpack_run(data, runs, "20260101-000000-dfq-ab12")
        assert len(str(err.value).splitlines()) == 1
        assert not list(runs.iterdir())


def test_hard_links_and_fifos_in_an_archive_are_refused(tmp_path, tiny_run):
    ok = pack_run(_fake_run(tmp_path / "n" / "runs", "20260101-000000-dfq-ab12", tiny_run))
    with tarfile.open(fileobj=io.BytesIO(ok)) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None) for m in tf]
    hard = tarfile.TarInfo("extra")
    hard.type, hard.linkname = tarfile.LNKTYPE, "config.json"
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    runs = tmp_path / "runs"
    for odd in (hard, fifo):
        with pytest.raises(DfkdVizError, match="not a regular file"):
            unpack_run(_tar([*members, (odd, None)]), runs, "20260101-000000-dfq-ab12")
        assert not list(runs.iterdir())
    assert unpack_run(_tar(members), runs, "20260101-000000-dfq-ab12").is_dir()


def test_teacher_bundles_are_size_limited(trained_home, tmp_path, monkeypatch):
    from dfkd_viz.runs.executors import transfer

    monkeypatch.setattr(transfer, "MAX_BUNDLE_BYTES", 1000)
    with pytest.raises(DfkdVizError, match="a teacher bundle may hold at most"):
        teacher_bundle("mnist-clean", [])
    with pytest.raises(DfkdVizError, match="a teacher bundle may hold at most"):
        write_bundle(tmp_path / "node", {"teachers/x.safetensors": b"0" * 1001})
    assert not (tmp_path / "node").exists()


def test_teacher_bundles_carry_the_map_of_every_domain_the_configs_map(trained_home):
    """Every config is scanned (not the first 50); the driver's stored map of the teacher for the
    run's domain travels to ``maps/`` under the name the node's worker looks for."""
    from dfkd_viz.teachers.maps import map_file, teacher_digest
    from dfkd_viz.teachers.zoo import card

    digest = teacher_digest("mnist-clean")
    own = card("mnist-clean").get("ood_domain")
    map_file(digest, own).write_bytes(b"own map")
    map_file(digest, "svhn-like").write_bytes(b"another domain")
    cfgs = [{"teacher": "mnist-clean", "seed": s} for s in range(60)]
    assert not any(k.startswith("maps/") for k in teacher_bundle("mnist-clean", cfgs))
    files = teacher_bundle("mnist-clean", [*cfgs, {"embedding": True}])
    assert {k: v for k, v in files.items() if k.startswith("maps/")} == {
        f"maps/{map_file(digest, own).name}": b"own map"
    }
    files = teacher_bundle("mnist-clean", [*cfgs, {"embedding": True, "ood_domain": "svhn-like"}])
    assert files[f"maps/{map_file(digest, 'svhn-like').name}"] == b"another domain"


# ------------------------------------------------------------------------ the driver, faked Ray
class _Ref:
    def __init__(self, fn):
        self.fn = fn


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, *args):
        return _Ref(lambda: self.fn(*args))


class _FakeRay:
    """Just enough of Ray's API for RayExecutor._run, in this process: tasks run when their
    result is asked for; the board's snapshot fails like a dead actor's."""

    def __init__(self, make_result):
        import ray.exceptions

        self.exceptions = ray.exceptions
        self.make_result = make_result
        self.options: list[dict] = []
        self.board_options: dict = {}

    def nodes(self):
        return [{"Alive": True, "Resources": {"CPU": 2.0}}]

    def get_runtime_context(self):
        return type("Ctx", (), {"get_node_id": lambda self: "ab" * 28})()

    def remote(self, *args, **kw):
        fake = self
        if args:  # ray.remote(run_cell)

            class Task:
                def options(self, **opts):
                    fake.options.append(opts)
                    return _Method(lambda job, bundle, run_tar, board: fake.make_result(job))

            return Task()

        def actor(cls):  # ray.remote(num_cpus=0)(CellBoard)
            class Actor:
                def options(self, **opts):
                    fake.board_options = opts
                    return self

                def remote(self):
                    board = cls()

                    def dead():
                        raise fake.exceptions.RayActorError()

                    h = type("Handle", (), {})()
                    h.stop, h.snapshot = _Method(board.stop), _Method(dead)
                    return h

            return Actor()

        return actor

    def put(self, value):
        return _Ref(lambda: value)

    def wait(self, refs, num_returns=1, timeout=None):
        return list(refs), []

    def get(self, ref, timeout=None):
        return ref.fn()

    def cancel(self, ref, force=False):
        pass


@pytest.mark.skipif(not ray_installed(), reason="Ray is not installed (pip install '.[ray]')")
def test_a_cell_that_cannot_be_submitted_fails_alone_with_its_sentence(
    trained_home, tiny_run, monkeypatch, tmp_path
):
    """Cell 0's stored run cannot be packed, cell 2's id is taken by another run while it runs,
    the board never answers: those cells fail with one sentence each (in ``sweeps show --json``
    and on the Sweeps page), cell 1 arrives, the sweep ends ``incomplete`` — nothing kills it."""
    import sqlite3

    from dfkd_viz.paths import runs_dir
    from dfkd_viz.runs.executors import ray as rayex

    sweep_id = sw.create_sweep(
        {"teachers": ["mnist-clean"], "methods": ["dfq"], "seeds": [0, 1, 2], "steps": 4},
        {"name": "ray"},
    )
    d = sw.sweep_dir(sweep_id)
    spec, cells = sw.load_sweep(sweep_id)
    damaged = _fake_run(runs_dir(), "20260101-000000-dfq-0000", tiny_run)  # stopped
    cells[0]["run_id"] = damaged.name
    write_json(d / "cells.json", cells)
    real_pack = rayex.pack_run

    def pack(run_dir):
        if Path(run_dir) == damaged:
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real_pack(run_dir)

    monkeypatch.setattr(rayex, "pack_run", pack)
    monkeypatch.setattr(manager, "time", _Clock())
    draws = iter(["0000", "abcd", "abcd", "ef01"])  # cell 1: 0000 is in the store; cell 2: abcd
    monkeypatch.setattr(manager, "secrets", SimpleNamespace(token_hex=lambda n: next(draws)))
    node = tmp_path / "node" / "runs"

    def result(job):
        src = _fake_run(node, job["run_id"], tiny_run)
        w = RunWriter(src)
        w.set_status(state="finished", step=4)
        w.close()
        if job["key"] == "2":  # meanwhile another process gave a run the same id
            _fake_run(runs_dir(), job["run_id"], tiny_run)
        return {"run_id": job["run_id"], "state": "finished", "step": 4, "run": pack_run(src)}

    fake = _FakeRay(result)
    monkeypatch.setattr(rayex, "_REMOTE", {})
    out = rayex.RayExecutor(ExecutorSpec(name="ray"))._run(
        fake, d, spec, cells, None, lambda: False
    )
    assert out == "incomplete"
    assert fake.board_options["max_restarts"] == -1 and fake.board_options["max_task_retries"] == -1
    assert fake.board_options["scheduling_strategy"].soft
    assert len(fake.options) == 2  # cells 1 and 2 were submitted
    stored = json.loads((d / "cells.json").read_text())
    assert [c["run_id"] for c in stored] == [damaged.name, "20260101-000000-dfq-abcd", None]
    with RunReader(runs_dir() / "20260101-000000-dfq-ef01") as r:  # the other run, untouched
        assert r.status()["state"] == "stopped"
    live = sw.cell_progress(sweep_id)
    assert live["0"]["state"] == "failed"
    assert live["0"]["error"] == "DatabaseError: database disk image is malformed"
    assert live["1"]["state"] == "finished" and live["1"]["error"] is None
    assert live["2"]["state"] == "failed" and "was taken in this store" in live["2"]["error"]

    rep = json.loads(run_cli("sweeps", "show", sweep_id, "--json").stdout.splitlines()[-1])
    assert [(r["status"], r["error"]) for r in rep["rows"]] == [
        ("failed", "DatabaseError: database disk image is malformed"),
        ("finished", None),
        ("failed", live["2"]["error"]),
    ]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/sweeps.py")
    at.query_params["sweep"] = sweep_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (failed,) = [f.value for f in at.dataframe if "error" in f.value and len(f.value) == 2]
    assert list(failed["error"]) == [r["error"] for r in rep["rows"] if r["error"]]


@pytest.mark.skipif(not ray_installed(), reason="Ray is not installed (pip install '.[ray]')")
def test_a_cell_takes_no_answer_from_the_board_as_do_not_stop():
    import ray.exceptions

    from dfkd_viz.runs.executors import ray as rayex

    class Ray:
        def get(self, ref, timeout=None):
            raise ray.exceptions.RayActorError()

    assert rayex._answer(Ray(), object()) is False

    class Broken:
        def remote(self, *args):
            raise ray.exceptions.RayActorError()

    assert rayex._tell(Broken(), "0", {}) is None


def test_the_local_ray_instance_gets_the_cpus_this_process_may_use(monkeypatch):
    from dfkd_viz.runs.executors import ray as rayex

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert rayex._local_cpus() == 3


def test_resuming_a_local_sweep_with_ray_options_is_refused(trained_home):
    spec = {"teachers": ["mnist-clean"], "methods": ["dfq"], "seeds": [0], "steps": 2}
    sweep_id = sw.create_sweep(spec)
    r = run_cli("sweep", "--resume", sweep_id, "--cpus-per-run", "2")
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "dfkd-viz: error: --ray-address, --cpus-per-run and --gpus-per-run need --executor ray "
        f"(sweep {sweep_id} runs on the local executor)"
    )
    assert sw.sweep_executor(sweep_id).name == "local" and sw.runner_progress(sweep_id) is None


def test_executor_names_come_from_the_registry(monkeypatch):
    from dfkd_viz.cli import build_parser
    from dfkd_viz.runs.executors import EXECUTORS

    monkeypatch.setitem(EXECUTORS._items, "slurm", lambda spec: None)
    assert parse_executor({"name": "slurm"}).name == "slurm"
    args = build_parser().parse_args(["sweep", "--executor", "slurm", "--resume", "sw-x"])
    assert args.executor == "slurm"


def test_sweeps_stop_says_when_the_runner_is_still_stopping(trained_home):
    """A runner that outlives ``--wait`` (this test's own process stands in for it, and ignores
    the SIGTERM it is sent): exit code 1 and a sentence that says so."""
    sweep_id = sw.create_sweep(
        {"teachers": ["mnist-clean"], "methods": ["dfq"], "seeds": [0], "steps": 2}
    )
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sleeper.stdout.readline().strip() == "ready"
        write_json(
            sw.sweep_dir(sweep_id) / "runner.json",
            {
                "kind": "sweep",
                "job_id": sweep_id,
                "state": "running",
                "pid": sleeper.pid,
                "pid_start": process_start_time(sleeper.pid),
            },
        )
        r = run_cli("sweeps", "stop", sweep_id, "--wait", "0.5")
        assert r.returncode == 1, r.stderr
        assert f"sweep {sweep_id} is still stopping after 0.5 s" in r.stdout
    finally:
        sleeper.kill()
        sleeper.wait()
    r = run_cli("sweeps", "stop", "--help")
    assert "default 90" in r.stdout


def test_a_cell_ships_the_teachers_map_and_starts_no_map_job(trained_home, monkeypatch):
    """``run_cell`` writes the bundle's map into the cell's home (``maps/``) and starts the worker
    with ``DFKD_VIZ_MAP_JOBS=0`` and that home (faked Ray, the worker replaced by a stub)."""
    from dfkd_viz.runs.executors import ray as rayex
    from dfkd_viz.teachers.maps import map_file, teacher_digest
    from dfkd_viz.teachers.zoo import card

    path = map_file(teacher_digest("mnist-clean"), card("mnist-clean").get("ood_domain"))
    path.write_bytes(b"the driver's map")
    bundle = teacher_bundle("mnist-clean", [{"teacher": "mnist-clean", "embedding": True}])
    seen: dict = {}

    class Proc:
        returncode = 0

        def poll(self):
            return 0

    def spawn(cmd, log, cwd=None, env=None):
        home = Path(env["DFKD_VIZ_HOME"])
        seen.update(env=env, maps={p.name: p.read_bytes() for p in (home / "maps").iterdir()})
        return Proc()

    class Board:
        started = report = _Method(lambda *a: False)

    fake = SimpleNamespace(get_runtime_context=lambda: SimpleNamespace(get_node_id=lambda: "n1"))
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(rayex, "spawn_attached", spawn)
    monkeypatch.setattr(rayex, "_clean_stale_cells", lambda: None)  # others' cells: not ours
    cfg = validate_config(
        {"teacher": "mnist-clean", "method": "dfq", "steps": 2, "embedding": True},
        check_teacher=False,
    )
    job = {"key": "0", "run_id": "20260101-000000-dfq-map0", "config": cfg.to_json()}
    res = rayex.run_cell(job, bundle, None, Board())
    assert seen["env"]["DFKD_VIZ_MAP_JOBS"] == "0"
    assert seen["maps"] == {path.name: b"the driver's map"}
    assert res["state"] == "failed"  # the stub recorded no end: failed, and shipped back
