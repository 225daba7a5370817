import pytest
import torch

from dfkd_viz.data import load_dataset
from dfkd_viz.distill import (
    DEFENSES,
    METHODS,
    Budget,
    Defense,
    Engine,
    EngineSettings,
    EvalSuite,
    Selection,
    create_method,
    losses,
)
from dfkd_viz.models import Generator, create_model


def _engine(method="dfq", steps=3, defense=None, seed=0, params=None, **settings):
    torch.manual_seed(seed)
    teacher = create_model("lenet5x2").eval()
    # give the random teacher non-trivial BN statistics, as a trained one would have
    with torch.no_grad():
        teacher.train()
        teacher(load_dataset("mnist", "train").x[:256])
        teacher.eval()
    student = create_model("lenet5")
    gen = Generator(nz=16, ngf=8)
    test = load_dataset("mnist", "test").subset(slice(0, 200))
    s = EngineSettings(
        batch_size=16, nz=16, eval_every=2, snapshot_every=2, snapshot_size=8, seed=seed, **settings
    )
    return Engine(
        teacher,
        student,
        gen,
        create_method(method, params),
        defense,
        EvalSuite(test),
        Budget(steps=steps),
        s,
    )


@pytest.mark.parametrize("method", METHODS.names())
def test_each_method_trains_a_few_steps_and_moves_the_student(method):
    eng = _engine(method)
    before = [p.detach().clone() for p in eng.student.parameters()]
    g_before = [p.detach().clone() for p in eng.generator.parameters()]
    records = []
    eng.add_callback("on_step", lambda e, p: records.append(p["terms"]))
    final = eng.run()
    assert final["status"] == "finished" and final["step"] == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, eng.student.parameters()))
    if eng.p.g_steps:
        assert any(not torch.equal(a, b) for a, b in zip(g_before, eng.generator.parameters()))
    assert all(torch.isfinite(torch.tensor(list(r.values()))).all() for r in records)
    assert "s_kd" in records[-1]
    # the teacher never changes
    assert not any(p.requires_grad for p in eng.teacher.parameters())


def test_method_terms_follow_their_weights():
    rec = []
    eng = _engine("dfq")
    eng.add_callback("on_step", lambda e, p: rec.append(p["terms"]))
    eng.run()
    assert {"g_adv", "g_bn", "g_oh", "g_bal", "s_kd"} <= set(rec[0])
    rec.clear()
    eng = _engine("zskt")
    eng.add_callback("on_step", lambda e, p: rec.append(p["terms"]))
    eng.run()
    assert {"g_adv", "s_kd", "s_at"} <= set(rec[0]) and "g_bn" not in rec[0]


def test_callbacks_eval_snapshot_checkpoint():
    seen = {"eval": [], "samples": [], "ckpt": [], "end": []}
    eng = _engine(steps=4, checkpoint_every=2)
    eng.add_callback("on_eval", lambda e, p: seen["eval"].append(p))
    eng.add_callback("on_samples", lambda e, p: seen["samples"].append(p))
    eng.add_callback("on_checkpoint", lambda e, p: seen["ckpt"].append(p["step"]))
    eng.add_callback("on_end", lambda e, p: seen["end"].append(p))
    eng.run()
    assert [p["step"] for p in seen["eval"]] == [1, 2, 4]  # the first step, then every eval_every
    assert all(0 <= p["id_acc"] <= 1 for p in seen["eval"])
    snap = seen["samples"][0]
    assert snap.images.shape == (8, 1, 28, 28) and snap.images.dtype.name == "uint8"
    assert ((snap.confidence >= 0.1) & (snap.confidence <= 1)).all()
    assert snap.keep is None  # no selecting defense
    assert seen["ckpt"][:2] == [2, 4] and seen["end"][0]["status"] == "finished"
    with pytest.raises(ValueError, match="unknown event"):
        eng.add_callback("on_nothing", print)


def test_request_stop_ends_at_a_step_boundary():
    eng = _engine(steps=50)
    eng.add_callback("on_step", lambda e, p: e.request_stop() if p["step"] == 2 else None)
    final = eng.run()
    assert final["status"] == "stopped" and final["step"] == 2


def test_checkpoint_roundtrip_continues_step_numbers():
    a = _engine(steps=2)
    a.run()
    tensors, meta = a.state_dict()
    b = _engine(steps=4)
    b.load_state_dict(tensors, meta)
    assert b.step == 2
    for p, q in zip(a.student.parameters(), b.student.parameters()):
        assert torch.equal(p, q)
    steps = []
    b.add_callback("on_step", lambda e, p: steps.append(p["step"]))
    b.run()
    assert steps == [3, 4]


def test_same_seed_same_metrics():
    r1 = _engine(seed=3).run()
    r2 = _engine(seed=3).run()
    assert r1["id_acc"] == r2["id_acc"]


def test_seconds_budget():
    eng = _engine(steps=1)
    eng.budget = Budget(seconds=0.5)
    final = eng.run()
    assert final["status"] == "finished" and final["wall_s"] >= 0.5 and final["step"] >= 1


class _KeepConfident(Defense):
    name = "test-keep-confident"
    score_name = "teacher confidence"

    def select(self, x, t_logits, ctx):
        conf = torch.softmax(t_logits, 1).amax(1)
        thr = float(conf.median())
        return Selection(conf, conf >= thr, thr)

    def student_loss_extra(self, ctx, x, t_logits, s_logits, sel):
        return {"s_extra": 0.0 * s_logits.sum()}


def test_defense_hooks_select_and_extra_terms():
    rec, snaps = [], []
    eng = _engine(defense=_KeepConfident())
    eng.add_callback("on_step", lambda e, p: rec.append(p["terms"]))
    eng.add_callback("on_samples", lambda e, p: snaps.append(p))
    eng.run()
    assert 0.4 <= rec[-1]["kept_frac"] <= 0.7 and "s_extra" in rec[-1]
    assert snaps[0].keep.dtype == bool and snaps[0].threshold is not None


def test_defense_registry_has_identity():
    assert "none" in DEFENSES and DEFENSES.get("none") is Defense


def test_losses_basics():
    t = torch.randn(8, 10)
    assert losses.kd_kl(t, t).abs() < 1e-6
    assert losses.balance(torch.zeros(8, 10)).abs() < 1e-6
    assert losses.balance(torch.eye(10)[[0] * 8] * 20) > 2.0
    assert losses.adversarial(t + 1, t, "l1") < 0
    a = [torch.rand(4, 3, 5, 5)]
    assert losses.attention_transfer(a, a) < 1e-9
    with pytest.raises(ValueError):
        losses.attention_transfer(a, [torch.rand(4, 3, 4, 4)])


def test_engine_rejects_mismatched_models():
    t = create_model("lenet5x2")
    s = create_model("lenet5", num_classes=5)
    with pytest.raises(ValueError, match="classes"):
        Engine(
            t,
            s,
            Generator(),
            create_method("dfq"),
            None,
            EvalSuite(load_dataset("mnist", "test")),
            Budget(steps=1),
        )


def test_evaluation_uses_a_copy_and_matches_the_plain_accuracy():
    """The evaluation's channels-last inference copy gives the plain accuracy and leaves the
    student as it was (training mode, default layout, same weights)."""
    from dfkd_viz.analysis import accuracy

    torch.manual_seed(0)
    test = load_dataset("mnist", "test")
    student = create_model("lenet5").train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    out = EvalSuite(test, ood_test=test).evaluate(student)
    assert student.training
    assert student.input_format == torch.contiguous_format
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert out["id_acc"] == pytest.approx(accuracy(student, test), abs=1e-3)
    assert out["ood_acc"] == out["id_acc"]
