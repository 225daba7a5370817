"""ABD's mechanics on a small backdoored teacher trained on real MNIST (seconds), and its plumbing
through the engine, checkpoints and the store."""

import copy

import numpy as np
import pytest
import torch

from dfkd_viz.analysis.metrics import accuracy, attack_success_rate
from dfkd_viz.data import load_dataset, make_trigger, triggered_test_set
from dfkd_viz.distill import (
    Budget,
    Engine,
    EngineSettings,
    EvalSuite,
    create_defense,
    create_method,
)
from dfkd_viz.distill.defenses.abd import (
    ABDParams,
    ShuffledEnsemble,
    shuffle_conv_inputs,
    synthesize_universal_trigger,
    tail_share,
)
from dfkd_viz.distill.losses import kd_kl
from dfkd_viz.models import Generator, create_model


@pytest.fixture(scope="module")
def backdoored():
    """The zoo's BadNets-grid teacher recipe (LeNet-5×2, 10 % poison, target 0, 5 epochs, ~5 s)."""
    from dfkd_viz.teachers import RECIPES, get_spec

    spec = get_spec("mnist-backdoor-badnet-grid")
    teacher = RECIPES.get("backdoor")(spec, None).requires_grad_(False)
    return teacher, make_trigger("badnet_grid")


def test_shuffled_teacher_keeps_a_planted_shortcut_but_not_semantics(backdoored):
    teacher, trig = backdoored
    test = load_dataset("mnist", "test").subset(slice(0, 500))
    asr_set = triggered_test_set(test, trig, 0)
    assert attack_success_rate(teacher, test, trig, 0) > 0.9  # the backdoor is planted
    suspect = ShuffledEnsemble(teacher, 3, 5, seed=0)
    with torch.no_grad():
        survive_clean = (suspect(test.x).argmax(1) == teacher(test.x).argmax(1)).float().mean()
        survive_trig = (suspect(asr_set.x).argmax(1) == teacher(asr_set.x).argmax(1)).float().mean()
    assert survive_trig > 0.8 and survive_clean < 0.6
    # a shuffle changes the weights but never the teacher itself
    w = teacher.stages[1][0].weight.clone()
    shuffled = shuffle_conv_inputs(teacher, 5, torch.Generator().manual_seed(1))
    assert torch.equal(teacher.stages[1][0].weight, w)
    assert not torch.equal(shuffled.stages[1][0].weight, w)
    assert torch.equal(shuffled.stages[0][0].weight, teacher.stages[0][0].weight)  # 1 input channel
    with pytest.raises(ValueError):
        shuffle_conv_inputs(torch.nn.Linear(3, 2), 1, torch.Generator())


def test_tail_share_counts_the_low_outliers():
    rng = np.random.default_rng(0)
    bulk = rng.normal(0, 1, 1000)
    assert tail_share(bulk) < 0.01
    assert tail_share(np.r_[bulk, np.full(50, -8.0)]) > 0.04
    assert tail_share(np.zeros(0)) == 0.0


def test_universal_trigger_synthesis_finds_the_backdoor(backdoored):
    teacher, _ = backdoored
    x = load_dataset("mnist", "test").x[:128]
    delta = synthesize_universal_trigger(teacher, x, steps=20, lr=0.5, norm=3.0)
    assert delta.shape == (1, 28, 28) and float(delta.norm()) <= 3.0 + 1e-4
    region = torch.zeros(1, 28, 28, dtype=torch.bool)
    region[:, 22:, 22:] = True  # the 3×3 trigger corner, dilated by 3 pixels
    share = float(delta.abs()[region].sum() / delta.abs().sum())
    assert share > 4 * float(region.float().mean())  # far more mass there than by area
    with torch.no_grad():
        to_target = (teacher(x + delta).argmax(1) == 0).float().mean()
    assert to_target > 0.5  # and it works as a trigger


def test_self_retrospection_unlearns_a_planted_backdoor(backdoored):
    """A student that carries the teacher's backdoor: KD on clean images alone keeps it; KD plus
    SR's unlearning term (δ synthesised on the teacher) removes most of it."""
    teacher, trig = backdoored
    train = load_dataset("mnist", "train")
    test = load_dataset("mnist", "test").subset(slice(0, 500))
    defense = create_defense("abd", {"vaccine": False, "sr_start": 0.0, "sr_steps": 5})
    results = {}
    for use_sr in (False, True):
        torch.manual_seed(0)
        student = copy.deepcopy(teacher).requires_grad_(True).train()
        opt = torch.optim.Adam(student.parameters(), 1e-3)
        ctx = type(
            "Ctx",
            (),
            {"teacher": teacher, "student": student, "progress": 1.0, "num_classes": 10},
        )()
        for step in range(40):
            ctx.step = step
            x = train.x[step * 64 : (step + 1) * 64]
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            loss = kd_kl(s, t)
            if use_sr:
                loss = loss + defense.student_loss_extra(ctx, x, t, s, None)["s_retro"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        results[use_sr] = (
            attack_success_rate(student, test, trig, 0),
            accuracy(student, test),
        )
    (asr_kd, acc_kd), (asr_sr, acc_sr) = results[False], results[True]
    assert asr_kd > 0.8
    assert asr_sr < 0.5 * asr_kd and acc_sr > acc_kd - 0.05


def test_abd_in_the_engine_flags_records_and_resumes(backdoored):
    teacher, trig = backdoored
    torch.manual_seed(0)
    test = load_dataset("mnist", "test").subset(slice(0, 200))

    def engine(steps):
        return Engine(
            teacher,
            create_model("lenet5"),
            Generator(nz=16, ngf=8),
            create_method("dfq", {"s_steps": 2}),
            create_defense(
                "abd", {"check_ignore": 1, "check_batches": 3, "sr_start": 0.5, "sr_steps": 2}
            ),
            EvalSuite(test, trigger=trig, target=0),
            Budget(steps=steps),
            EngineSettings(batch_size=32, nz=16, eval_every=2, snapshot_every=3, snapshot_size=8),
        )

    eng = engine(6)
    rec, snaps = [], []
    eng.add_callback("on_step", lambda e, p: rec.append(p["terms"]))
    eng.add_callback("on_samples", lambda e, p: snaps.append(p))
    final = eng.run()
    assert final["asr"] is not None
    assert {"sv_active", "sr_active", "suspicious_frac"} <= set(rec[-1])
    assert eng.defense.checked and rec[-1]["sr_active"] == 1.0
    assert any("s_retro" in r for r in rec) and not any("s_retro" in r for r in rec[:2])
    if eng.defense.sv_on:
        assert any("g_vaccine" in r for r in rec)
    snap = snaps[-1]
    assert snap.flag.dtype == bool and snap.keep.all()  # ABD flags, it does not reject
    assert snap.artifacts["sr_trigger"].shape == (1, 28, 28)
    # the defense's state goes through a checkpoint: a resumed engine has the same shuffles
    tensors, meta = eng.state_dict()
    eng2 = engine(8)
    eng2.load_state_dict(tensors, meta)
    assert eng2.defense.checked == eng.defense.checked and eng2.defense.sv_on == eng.defense.sv_on
    w1 = eng.defense.suspect.models[0].stages[1][0].weight
    assert torch.equal(eng2.defense.suspect.models[0].stages[1][0].weight, w1)
    assert torch.equal(eng2.defense.delta, eng.defense.delta)


def test_params_are_validated():
    with pytest.raises(ValueError):
        ABDParams(coef=-1)
    with pytest.raises(ValueError):
        ABDParams(sr_start=2)
    with pytest.raises(ValueError):
        ABDParams(shuffle=True)
