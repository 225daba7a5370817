"""Scenario pairs: the registry (two presets that differ only in what the pair compares), the
CLI (``presets --pairs``, ``run --pair``) and Home's "Run the pair" cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli as run
from streamlit.testing.v1 import AppTest

from dfkd_viz.errors import ConfigError, UnknownNameError
from dfkd_viz.runs import manager
from dfkd_viz.runs.config import validate_config
from dfkd_viz.runs.presets import (
    PAIRS,
    PRESETS,
    ScenarioPair,
    compare_path,
    config_difference,
    get_pair,
    pair_configs,
    register_pair,
)

ROOT = Path(__file__).resolve().parent.parent

# what each pair is about (issue 24): the one field its two presets may differ in
EXPECTED = {
    "ntl-trap-vs-clean": ("teacher",),
    "ntl-trap-vs-atesc": ("defense",),
    "backdoor-vs-abd": ("defense",),
    "collapse-dfq-vs-tadfkd": ("method",),
    "ood-augkd-vs-ce": ("method",),
}


def test_every_pair_differs_only_in_what_it_is_about():
    assert set(PAIRS) == set(EXPECTED)
    for name, pair in PAIRS.items():
        first, second = pair.presets
        assert first in PRESETS and second in PRESETS and first != second
        assert config_difference(first, second) == EXPECTED[name] == pair.differs_in
        assert pair.title and pair.look_for and "TODO" not in pair.look_for
        # and the validated configs (defaults filled in) differ in nothing else either
        a, b = (validate_config(c, check_teacher=False).model_dump() for c in pair_configs(name))
        changed = {k for k in a if a[k] != b[k]} - {"preset"}
        implied = {"defense"} if pair.differs_in == ("method",) else set()  # the method's own
        assert set(pair.differs_in) <= changed <= set(pair.differs_in) | implied, (name, changed)


def test_what_to_look_for_states_the_measured_runs():
    """Each text states its pair's seed-0 runs of benchmarks/results/pairs.json (final ID
    accuracy; ASR and student-domain accuracy where the runs have them): rerunning
    ``make bench-pairs`` with other results fails here until the texts are rewritten."""
    rows = json.loads((ROOT / "benchmarks" / "results" / "pairs.json").read_text())["rows"]
    for name, pair in PAIRS.items():
        row = next(r for r in rows if r["pair"] == name and r["seed"] == 0)
        assert "seed 0" in pair.look_for and "docs/results/pairs.md" in pair.look_for
        for m, preset in zip(row["runs"], pair.presets, strict=True):
            assert m["preset"] == preset and m["status"] == "finished", (name, m["run_id"])
            for key in ("id_acc", "asr", "student_domain_acc"):
                if m[key] is not None:
                    assert f"{100 * m[key]:.1f} %" in pair.look_for, (name, preset, key)


@pytest.mark.parametrize(
    ("presets", "differs_in", "needle"),
    [
        (("ntl-trap", "nope"), ("teacher",), "no preset 'nope'"),
        (("ntl-trap", "ntl-trap"), ("teacher",), "both halves"),
        (("ntl-trap", "ntl-trap-atesc"), ("teacher",), "differ in defense, not in teacher"),
        (("backdoor", "ntl-trap"), ("teacher",), "differ in ood_domain, teacher"),
        (("ntl-trap", "ntl-trap-atesc"), (), "not in nothing"),
    ],
)
def test_register_pair_refuses_a_bad_pair(presets, differs_in, needle):
    with pytest.raises(ValueError, match=needle):
        register_pair(ScenarioPair("x-test", "X", presets, differs_in, "text"))
    assert "x-test" not in PAIRS
    with pytest.raises(ValueError, match="already registered"):
        register_pair(
            ScenarioPair("backdoor-vs-abd", "X", ("backdoor", "backdoor-abd"), ("defense",), "t")
        )


def test_pair_configs_share_overrides_and_the_cores():
    a, b = pair_configs(
        "backdoor-vs-abd", {"seed": 3, "steps": 7, "teacher": "mnist-clean"}, cores=8
    )
    assert a["preset"] == "backdoor" and b["preset"] == "backdoor-abd"
    for c in (a, b):
        assert c["seed"] == 3 and c["steps"] == 7 and c["teacher"] == "mnist-clean"
        assert c["threads"] == 4  # half of 8: both runs go at once
    assert pair_configs("backdoor-vs-abd", cores=1)[0]["threads"] == 1
    assert pair_configs("backdoor-vs-abd", {"threads": 2}, cores=8)[1]["threads"] == 2
    with pytest.raises(ConfigError, match="defense is what the pair backdoor-vs-abd compares"):
        pair_configs("backdoor-vs-abd", {"defense": "none"})
    with pytest.raises(UnknownNameError, match="unknown scenario pair 'nope'; known: ntl-trap"):
        get_pair("nope")
    assert compare_path(["A-1", "B.2"]) == "/compare?runs=A-1,B.2"


def test_cli_presets_pairs_json():
    r = run("presets", "--pairs", "--json")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    items = json.loads(lines[0])
    assert [p["name"] for p in items] == list(PAIRS)
    for p in items:
        assert set(p) == {"name", "title", "presets", "differs_in", "look_for", "tags"}
        assert p["presets"] == list(PAIRS[p["name"]].presets)
    text = run("presets", "--pairs")
    assert text.returncode == 0 and "ntl-trap vs ntl-trap-atesc" in text.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "--pair", "nope"), "unknown scenario pair 'nope'"),
        (("run", "--pair", "ntl-trap-vs-clean", "--teacher", "mnist-clean"), "teacher is what"),
        (("run", "--pair", "ntl-trap-vs-clean", "--preset", "ntl-trap"), "not allowed with"),
    ],
)
def test_cli_run_pair_bad_input_starts_nothing(args, needle, home):
    r = run(*args)
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


@pytest.mark.slow
def test_cli_run_pair_starts_both_runs(trained_home):
    r = run(
        "run",
        "--pair",
        "ood-augkd-vs-ce",
        "--seed",
        "1",
        "--steps",
        "4",
        "--batch-size",
        "32",
        "--eval-every",
        "2",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    a, b = out["run_ids"]
    assert out["pair"] == "ood-augkd-vs-ce" and out["presets"] == ["ood-augkd", "ood-ce"]
    assert out["compare"] == f"/compare?runs={a},{b}"
    for run_id, preset, method in ((a, "ood-augkd", "augkd"), (b, "ood-ce", "ce")):
        st = manager.wait(run_id, timeout_s=120)
        assert st["state"] == "finished", st
        info = manager.run_info(run_id)
        cfg = info["config"]
        assert (cfg["preset"], cfg["method"], cfg["seed"], cfg["steps"]) == (preset, method, 1, 4)
        assert info["student_domain_acc"] is not None and info["step"] == 4
    # the plain-text form: one line per run, then the Compare path
    r = run("run", "--pair", "ood-augkd-vs-ce", "--steps", "2", "--batch-size", "32")
    lines = r.stdout.strip().splitlines()
    assert r.returncode == 0 and len(lines) == 3 and lines[0].endswith("ood-augkd")
    assert lines[2] == compare_path([lines[0].split()[0], lines[1].split()[0]])
    for line in lines[:2]:
        manager.wait(line.split()[0], timeout_s=120)


def test_home_shows_the_pairs_and_run_the_pair_starts_both(home, monkeypatch):
    """The button goes through the run manager (here its launch creates the runs without a
    worker) and switches to Compare with both run ids."""
    import streamlit as st

    launched: list[str] = []
    switched: list[tuple] = []

    def launch(cfg):
        run_id = manager.create_run(cfg)
        launched.append(run_id)
        return run_id

    monkeypatch.setattr(manager, "launch", launch)
    monkeypatch.setattr(st, "switch_page", lambda page, **kw: switched.append((page, kw)))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    subheaders = [s.value for s in at.subheader]
    assert subheaders.index("Scenario pairs") < subheaders.index("Scenarios")
    text = " ".join(m.value for m in at.markdown)
    for pair in PAIRS.values():
        assert pair.title in text and pair.look_for.replace(" %", "\u00a0%") in text
    buttons = [b for b in at.button if b.label == "Run the pair"]
    assert len(buttons) == len(PAIRS)
    at.button(key="pair_ntl-trap-vs-atesc").click().run()
    assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
    assert len(launched) == 2
    presets = [manager.run_info(r)["config"]["preset"] for r in launched]
    assert presets == ["ntl-trap", "ntl-trap-atesc"]
    assert switched == [("pages/compare.py", {"query_params": {"runs": ",".join(launched)}})]


def test_run_the_pair_opens_compare_on_both_runs(home, monkeypatch):
    """The real page switch: the app lands on Compare with ``?runs=A,B`` (runs without a
    worker, queued)."""
    launched: list[str] = []

    def launch(cfg):
        launched.append(manager.create_run(cfg))
        return launched[-1]

    monkeypatch.setattr(manager, "launch", launch)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.button(key="pair_backdoor-vs-abd").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(launched) == 2
    assert at.query_params["runs"] == ",".join(launched)
    assert at.title[0].value == "Compare runs"


def test_run_the_pair_shows_an_error_and_starts_nothing(home, monkeypatch):
    import dfkd_viz.runs.presets as presets

    launched: list = []
    monkeypatch.setattr(manager, "launch", lambda cfg: launched.append(cfg))
    # a pair whose second run cannot be validated: neither run may start
    bad = ScenarioPair("ntl-trap-vs-atesc", "T", ("ntl-trap", "ntl-trap-atesc"), ("defense",), "t")
    monkeypatch.setitem(presets.PAIRS, bad.name, bad)
    monkeypatch.setitem(
        presets.PRESETS,
        "ntl-trap-atesc",
        presets.Preset(
            "ntl-trap-atesc", "T", "d", {**PRESETS["ntl-trap-atesc"].config, "steps": -1}
        ),
    )
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.button(key="pair_ntl-trap-vs-atesc").click().run()
    assert not at.exception
    assert any("steps must be ≥ 1" in e.value for e in at.error)
    assert launched == []
