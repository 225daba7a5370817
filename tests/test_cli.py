"""CLI smoke tests: the real console script in a subprocess."""

import json
import subprocess

import pytest
from conftest import CLI
from conftest import run_cli as run


def test_teachers_list_json_is_one_line():
    r = run("teachers", "list", "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    cards = json.loads(lines[0])
    assert any(c["id"] == "mnist-clean" and c["trained"] is False for c in cards)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("teachers", "show", "nope"), "unknown teacher 'nope'"),
        (("teachers", "train", "nope"), "unknown teacher 'nope'"),
        (("teachers", "train"), "--all"),
        (("run", "--steps", "3"), "--teacher is required"),
        (
            ("run", "--teacher", "mnist-clean", "--method", "dfq", "--steps", "-1"),
            "steps must be ≥ 1",
        ),
        (("run", "--preset", "nope"), "unknown preset"),
        (("runs", "show", "nope"), "no run 'nope'"),
        (("run", "--frobnicate"), "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_sentence_and_exit_2(args, needle):
    r = run(*args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_presets_json():
    r = run("presets", "--json")
    names = {p["name"] for p in json.loads(r.stdout)}
    assert {"clean-dfq", "clean-dfad", "clean-zskt"} <= names


@pytest.mark.slow
def test_run_json_and_runs_commands(trained_home):
    r = run(
        "run",
        "--preset",
        "clean-dfq",
        "--steps",
        "3",
        "--batch-size",
        "32",
        "--eval-every",
        "1",
        "--threads",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    for key in (
        "run_id",
        "teacher",
        "method",
        "defense",
        "seed",
        "steps",
        "wall_s",
        "id_acc",
        "ood_acc",
        "asr",
        "teacher_id_acc",
    ):
        assert key in out
    assert (
        out["steps"] == 3
        and out["status"] == "finished"
        and out["asr"] is None
        and 0 < out["teacher_id_acc"] <= 1
    )
    listed = json.loads(run("runs", "list", "--json").stdout)
    assert listed[0]["run_id"] == out["run_id"]
    shown = json.loads(run("runs", "show", out["run_id"], "--json").stdout)
    assert shown["status"] == "finished" and shown["pid"] is None and "id_acc" in shown


@pytest.mark.slow
def test_background_run_and_stop(trained_home):
    r = run(
        "run",
        "--preset",
        "clean-dfq",
        "--steps",
        "5000",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--background",
        "--json",
    )
    run_id = json.loads(r.stdout)["run_id"]
    shown = json.loads(run("runs", "show", run_id, "--json").stdout)
    assert shown["status"] in ("queued", "running") and shown["pid"]
    r = run("runs", "stop", run_id, "--wait", "30")
    assert r.returncode == 0 and "stopped" in r.stderr


@pytest.mark.slow
def test_foreground_run_sigint_stops_its_worker(trained_home):
    import signal
    import time

    p = subprocess.Popen(
        [
            *CLI,
            "run",
            "--preset",
            "clean-dfq",
            "--steps",
            "5000",
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "stopped"
