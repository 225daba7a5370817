"""Mixed precision (``--precision``): validation, the bf16 engine path, checkpoints, the CLI.

bf16 is forced on (``cpu_has_bf16`` patched to True) where a test exercises the autocast path, so
the tests mean the same on a CPU without native bf16 (emulated: slower, same semantics)."""

import json

import pytest
import torch
from conftest import run_cli
from test_engine import _engine

from dfkd_viz.distill import precision
from dfkd_viz.distill.precision import Precision
from dfkd_viz.errors import ConfigError
from dfkd_viz.runs.config import parse_config, validate_config


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)


def _one_sentence(msg: str) -> bool:
    return "\n" not in msg and msg.count(". ") == 0 and len(msg) < 200


def test_fp16_on_the_cpu_is_refused_in_one_sentence():
    base = {"teacher": "mnist-clean", "method": "dfq", "device": "cpu"}
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU") as exc:
        validate_config({**base, "precision": "fp16"}, check_teacher=False)
    assert _one_sentence(str(exc.value))
    if not torch.cuda.is_available():  # auto means the CPU here
        with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
            validate_config({**base, "device": "auto", "precision": "fp16"}, check_teacher=False)
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        Precision("fp16", "cpu")
    assert validate_config({**base, "precision": "bf16"}, check_teacher=False).precision == "bf16"
    assert validate_config(base, check_teacher=False).precision == "fp32"


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match=r"precision must be one of .*\(got 'fp8'\)") as exc:
        parse_config({"teacher": "mnist-clean", "method": "dfq", "precision": "fp8"})
    assert _one_sentence(str(exc.value))
    with pytest.raises(ConfigError, match="precision must be one of"):
        Precision("int8", "cpu")


def test_bf16_without_native_support_falls_back_with_a_warning(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    p = Precision("bf16", "cpu")
    assert p.name == "fp32" and not p.enabled and "fp32" in p.warning
    assert _engine(steps=1, precision="bf16").amp.warning


def test_bf16_engine_run_is_finite_and_keeps_fp32_weights(native_bf16):
    eng = _engine("dfq", steps=3, precision="bf16")
    assert eng.amp.name == "bf16" and eng.amp.warning is None
    seen = set()
    hook = eng.student.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    records, evals = [], []
    eng.add_callback("on_step", lambda e, p: records.append(p["terms"]))
    eng.add_callback("on_eval", lambda e, p: evals.append(p))
    before = [p.detach().clone() for p in eng.student.parameters()]
    final = eng.run()
    hook.remove()
    assert torch.bfloat16 in seen  # the student's forward did run under autocast
    assert final["status"] == "finished" and final["step"] == 3
    assert {"g_adv", "g_bn", "g_oh", "g_bal", "s_kd"} <= set(records[0])
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in records)
    assert evals and all(0.0 <= e["id_acc"] <= 1.0 for e in evals)
    assert any(not torch.equal(a, b) for a, b in zip(before, eng.student.parameters()))
    for mod in (eng.student, eng.generator, eng.teacher):
        assert {p.dtype for p in mod.parameters()} == {torch.float32}
        assert all(b.dtype in (torch.float32, torch.int64) for b in mod.buffers())
    for st in eng.opt_s.state.values():
        assert st["exp_avg"].dtype == torch.float32
    # the replay memory holds fp32 samples and logits
    assert eng.memory.x.dtype == torch.float32 and eng.memory.t.dtype == torch.float32


def test_bf16_zskt_attention_transfer_is_finite(native_bf16):
    eng = _engine("zskt", steps=2, precision="bf16")
    rec = []
    eng.add_callback("on_step", lambda e, p: rec.append(p["terms"]))
    eng.run()
    assert "s_at" in rec[-1] and all(
        torch.isfinite(torch.tensor(list(r.values()))).all() for r in rec
    )


def test_bf16_checkpoint_resume_continues(native_bf16):
    a = _engine(steps=2, precision="bf16")
    a.run()
    tensors, meta = a.state_dict()
    assert meta["precision"] == "bf16" and "amp" not in meta
    assert all(v.dtype != torch.bfloat16 for v in tensors.values())
    b = _engine(steps=4, precision="bf16")
    b.load_state_dict(tensors, meta)
    assert b.step == 2
    for p, q in zip(a.student.parameters(), b.student.parameters()):
        assert torch.equal(p, q)
    steps = []
    b.add_callback("on_step", lambda e, p: steps.append(p["step"]))
    final = b.run()
    assert steps == [3, 4] and final["status"] == "finished"
    assert 0.0 <= final["id_acc"] <= 1.0


def test_fp16_loss_scalers_are_checkpointed(monkeypatch):
    """The CUDA fp16 path, forced onto the CPU (torch's CPU autocast and GradScaler take fp16):
    one scaler per optimiser, their state in the checkpoint's meta and back."""
    monkeypatch.setattr(precision, "check_precision", lambda p, d: None)
    a = _engine("dfq", steps=2, precision="fp16")
    assert a.amp.name == "fp16"
    rec = []
    a.add_callback("on_step", lambda e, p: rec.append(p["terms"]))
    a.run()
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in rec)
    tensors, meta = a.state_dict()
    assert set(meta["amp"]) == {"opt_g", "opt_s"}
    json.dumps(meta)  # the checkpoint's meta stays JSON
    b = _engine("dfq", steps=3, precision="fp16")
    b.load_state_dict(tensors, meta)
    assert b.amp.state_dict() == a.amp.state_dict()
    assert b.run()["step"] == 3


def test_bf16_augkd_engine_runs_its_three_stages(native_bf16):
    """AuG-KD subclasses the engine: its data-free stage gets the autocast phases, its own
    anchor and mixup steps stay fp32; every stage's terms stay finite."""
    from test_augkd import _student_data

    from dfkd_viz.data import load_dataset, load_domain
    from dfkd_viz.distill import Budget, EngineSettings, EvalSuite, create_method
    from dfkd_viz.distill.augkd import AugKDEngine
    from dfkd_viz.models import Generator, create_model

    torch.manual_seed(0)
    teacher = create_model("lenet5x2").eval()
    eng = AugKDEngine(
        teacher,
        create_model("lenet5"),
        Generator(nz=16, ngf=8),
        create_method("augkd", {"df_steps": 1, "anchor_steps": 1, "mix_steps": 1}),
        None,
        EvalSuite(
            load_dataset("mnist", "test").subset(slice(0, 100)),
            student_test=load_domain("mnist-m", "mnist", "test").subset(slice(0, 100)),
        ),
        Budget(steps=3),
        EngineSettings(
            batch_size=16, nz=16, eval_every=1, snapshot_every=3, snapshot_size=8, precision="bf16"
        ),
        student_data=_student_data(),
    )
    phases, terms = [], []
    eng.add_callback("on_step", lambda e, p: (phases.append(e.ctx.phase), terms.append(p["terms"])))
    final = eng.run()
    assert phases == ["data-free", "anchor", "mixup"] and final["status"] == "finished"
    assert all(torch.isfinite(torch.tensor(list(t.values()))).all() for t in terms)
    assert {p.dtype for p in eng.student.parameters()} == {torch.float32}


@pytest.mark.slow
def test_cli_run_with_precision_bf16(trained_home):
    r = run_cli(
        "run",
        "--preset",
        "clean-dfq",
        "--precision",
        "bf16",
        "--steps",
        "2",
        "--batch-size",
        "32",
        "--threads",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["steps"] == 2 and out["precision"] == "bf16"
    assert 0.0 <= out["id_acc"] <= 1.0


def test_cli_refuses_fp16_on_the_cpu():
    r = run_cli("run", "--preset", "clean-dfq", "--device", "cpu", "--precision", "fp16")
    assert r.returncode == 2
    assert "fp16 needs a CUDA GPU" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch):
    """``auto``: bf16 on a CPU with native bf16, fp32 on one without and on CUDA — never a
    warning; the clean-dfq preset (Start demo) uses it."""
    from dfkd_viz.runs.presets import preset_config

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    p = Precision("auto", "cpu")
    assert (p.requested, p.name, p.dtype, p.warning) == ("auto", "bf16", torch.bfloat16, None)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    p = Precision("auto", "cpu")
    assert (p.name, p.dtype, p.warning) == ("fp32", None, None)
    assert preset_config("clean-dfq")["precision"] == "auto"
    assert validate_config(preset_config("clean-dfq"), check_teacher=False).precision == "auto"
