"""Teacher audit on planted cases: small teachers trained here (2 epochs) with a planted backdoor
shortcut (BadNets grid → class 3) and a planted NTL trap (scikit-learn's digits domain), beside a
clean one. The audit sees only the weights; the tests check its verdicts against what the real
data says about each teacher (its ASR, the class its OOD domain goes to)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import home_env
from streamlit.testing.v1 import AppTest

from dfkd_viz.audit import (
    AuditParams,
    audit_model,
    audit_teacher,
    audits_dir,
    cached_report,
    weights_digest,
)
from dfkd_viz.errors import DfkdVizError

ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("dfkd-viz"))
FAST = AuditParams(generator_steps=120, samples=192, trigger_samples=48)

PLANTED = {
    "t-clean": {"kind": "clean"},
    "t-backdoor": {"kind": "backdoor", "trigger": "badnet_grid", "target": 3},
    "t-ntl": {"kind": "ntl", "ood_domain": "digits"},
}


@pytest.fixture(scope="module")
def planted_home(tmp_path_factory) -> Path:
    """A home with the three planted teachers trained (≈15 s once per module)."""
    from dfkd_viz.teachers import train_teacher
    from dfkd_viz.teachers.zoo import _EXTRA, TeacherSpec, register_teacher

    with home_env(tmp_path_factory.mktemp("planted")) as home:
        for tid, kw in PLANTED.items():
            if tid not in _EXTRA:
                register_teacher(TeacherSpec(id=tid, epochs=2, default=False, **kw))
            train_teacher(tid)
    yield home
    for tid in PLANTED:
        _EXTRA.pop(tid, None)


@pytest.fixture
def planted(home: Path, planted_home: Path) -> Path:
    shutil.copytree(planted_home / "teachers", home / "teachers", dirs_exist_ok=True)
    return home


@pytest.fixture(scope="module")
def reports(planted_home: Path) -> dict:
    from dfkd_viz.teachers import load_teacher

    out = {}
    with home_env(planted_home):
        for tid in PLANTED:
            model, card = load_teacher(tid)
            out[tid] = (audit_model(model, tid, card["arch"], FAST), card)
    return out


def test_planted_backdoor_is_found_with_its_target(reports):
    rep, card = reports["t-backdoor"]
    clean, _ = reports["t-clean"]
    assert card["asr"] > 0.9  # the shortcut is really there
    assert rep.backdoor.target == 3
    assert rep.verdict["backdoor"] in ("suspicious", "high")
    assert rep.backdoor.shortcut_gain > clean.backdoor.shortcut_gain + 1.0
    assert rep.backdoor.gain[3] == max(rep.backdoor.gain)
    assert rep.verdict["ntl"] == "low"
    assert any("abd" in s for s in rep.suggestions)


def test_planted_ntl_trap_lures_bn_only_synthesis_to_its_ood_class(reports, planted):
    from dfkd_viz.analysis import predict
    from dfkd_viz.data import load_domain
    from dfkd_viz.teachers import load_teacher

    rep, card = reports["t-ntl"]
    clean, _ = reports["t-clean"]
    assert card["ood_acc"] < 0.3  # the trap is really there
    model, _ = load_teacher("t-ntl")
    ood_class = int(
        torch.bincount(predict(model, load_domain("digits", "mnist", "test").x).argmax(1)).argmax()
    )
    assert rep.ntl.lure_class == ood_class
    assert rep.ntl.lure_share > clean.ntl.lure_share + 0.2
    assert rep.ntl.robust_mass > clean.ntl.robust_mass + 0.1
    assert rep.ntl.robust_lure > rep.ntl.robust_other  # the lure class is the robust mode
    assert rep.verdict["ntl"] in ("suspicious", "high")
    assert any("atesc" in s for s in rep.suggestions)


def test_clean_teacher_is_low_on_every_risk(reports):
    rep, _ = reports["t-clean"]
    assert rep.verdict == {"ntl": "low", "backdoor": "low", "collapse": "low"}
    assert rep.suggestions == []
    assert rep.collapse.classes_covered == 10
    # the report is self-consistent and JSON-serialisable
    s = json.loads(json.dumps(rep.summary()))
    assert set(s["verdict"]) == {"ntl", "backdoor", "collapse"}
    assert len(rep.ntl.robustness) == FAST.samples
    assert len(rep.backdoor.gain) == 10 and len(rep.backdoor.triggers) == 10
    assert (
        torch.tensor(rep.backdoor.triggers).flatten(1).norm(dim=1).max()
        <= rep.backdoor.radius + 1e-4
    )
    assert torch.tensor(rep.backdoor.trigger).shape == (1, 28, 28)


def test_audit_is_deterministic_and_reads_only_the_weights(planted, monkeypatch):
    """An imported copy (kind: user, another id, another file) gets the same report; a second
    audit of the same weights is read back from the store."""
    import dfkd_viz.audit.store as audit
    from dfkd_viz.teachers import load_teacher
    from dfkd_viz.teachers.importer import import_teacher
    from dfkd_viz.teachers.zoo import weights_path

    monkeypatch.setattr(audit, "AuditParams", lambda: FAST)  # the store keys on default params
    a = audit_teacher("t-ntl", params=FAST)
    card = import_teacher(
        weights_path("t-ntl"), arch="lenet5x2", dataset="mnist", teacher_id="mine"
    )
    assert card["kind"] == "user"
    b = audit_teacher("mine", params=FAST, use_cache=False)
    assert a.summary()["verdict"] == b.summary()["verdict"]
    assert a.summary()["scores"] == b.summary()["scores"]
    assert weights_digest(load_teacher("mine")[0]) == a.weights_sha256
    stored = cached_report("mine")
    assert stored is not None and stored.teacher == "mine"
    assert stored.summary()["scores"] == a.summary()["scores"]
    assert len(list(audits_dir().glob("*.json"))) == 1


def test_digest_changes_with_the_weights(planted):
    from dfkd_viz.teachers import load_teacher

    model, _ = load_teacher("t-clean")
    d0 = weights_digest(model)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    assert weights_digest(model) != d0


def test_cli_audit_json_and_errors(planted):
    out = subprocess.run(
        [CLI, "audit", "t-backdoor", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert set(s["verdict"]) == {"ntl", "backdoor", "collapse"}
    assert s["verdict"]["backdoor"] in ("suspicious", "high")
    assert s["scores"]["backdoor"]["target"] == 3
    bad = subprocess.run(
        [CLI, "audit", "no-such-teacher"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "unknown teacher" in bad.stderr


def _store(report) -> None:
    (audits_dir() / f"{report.weights_sha256}.json").write_text(report.model_dump_json())


def test_audit_and_setup_pages_show_the_verdict_and_evidence(planted, reports):
    _store(reports["t-ntl"][0])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/audit.py")
    at.query_params["teacher"] = "t-ntl"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="audit_teacher").value == "t-ntl"
    assert any(m.label == "robust lure mass" for m in at.metric)
    assert any("atesc" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) >= 4
    assert any(b.label == "Audit again" for b in at.button)

    at.switch_page("pages/setup.py")
    at.run()
    t_box = next(s for s in at.selectbox if s.label == "Teacher")
    t_box.set_value("t-ntl").run()
    assert not at.exception, [e.value for e in at.exception]
    use = [b for b in at.button if b.label.startswith("Use the suggested defense")]
    assert use and "atesc" in use[0].label
    use[0].click().run()
    assert next(s for s in at.selectbox if s.label == "Defense").value == "atesc"


@pytest.mark.slow
def test_the_audit_runs_as_a_background_job_and_stores_its_report(planted):
    """The Audit page's path: start_audit → a detached job reporting progress → a stored report."""
    from dfkd_viz.audit import audit_progress, start_audit
    from dfkd_viz.audit.job import _record
    from dfkd_viz.jobs import wait_job

    assert cached_report("t-clean") is None and audit_progress("t-clean") is None
    pid = start_audit("t-clean")
    assert start_audit("t-clean") == pid  # a running audit is reused, not doubled
    end = wait_job(_record("t-clean"), timeout_s=240)
    assert end.state == "done", end.error
    rep = cached_report("t-clean")
    assert rep is not None and end.result["weights_sha256"] == rep.weights_sha256
    assert end.result["verdict"] == dict(rep.verdict)
    with pytest.raises(DfkdVizError, match="unknown teacher"):
        start_audit("no-such-teacher")
