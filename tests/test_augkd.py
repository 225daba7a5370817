"""AuG-KD's mechanics on tiny models: the mixup schedule, the energy, the anchor (mask range,
formula, and that training it lowers the teacher's uncertainty), the encoder (it learns to invert
the generator), the distillation loss (the teacher's logits, not the student's), the three stages
in the engine with checkpoints, the ce / kd baselines, the config and the CLI + page end to end."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from dfkd_viz.data import load_dataset, load_domain
from dfkd_viz.distill import Budget, EngineSettings, EvalSuite, create_method
from dfkd_viz.distill.augkd import (
    AnchorNet,
    AugKDEngine,
    LatentEncoder,
    StudentDataEngine,
    anchor_terms,
    encoder_loss,
    energy,
    mixup_distill_loss,
    mixup_weight,
)
from dfkd_viz.errors import ConfigError, DfkdVizError
from dfkd_viz.models import Generator, create_model
from dfkd_viz.runs.config import validate_config
from dfkd_viz.runs.presets import preset_config


def test_mixup_schedule_climbs_linearly_from_b_to_one_by_a():
    assert mixup_weight(0.0) == pytest.approx(0.2)
    assert mixup_weight(0.3) == pytest.approx(0.2 + 0.8 * 0.3 / 0.6)
    assert mixup_weight(0.6) == pytest.approx(1.0)
    assert mixup_weight(0.9) == 1.0 and mixup_weight(1.0) == 1.0
    values = [mixup_weight(p / 20, a=0.5, b=0.0) for p in range(21)]
    assert all(b >= a for a, b in itertools.pairwise(values))  # monotone
    assert values[5] == pytest.approx(0.5)
    for bad in ({"a": 0.0}, {"a": 1.5}, {"b": -0.1}, {"b": 1.1}):
        with pytest.raises(ValueError):
            mixup_weight(0.5, **bad)


def test_energy_is_lower_for_a_confident_teacher():
    flat = torch.zeros(1, 10)
    sure = torch.tensor([[10.0] + [0.0] * 9])
    assert float(energy(flat)) == pytest.approx(-math.log(10))
    assert float(energy(sure)) < float(energy(flat))
    assert float(energy(sure)) == pytest.approx(-float(torch.logsumexp(sure, 1)))


def test_anchor_mask_range_formula_and_class_dependence():
    torch.manual_seed(0)
    anchor = AnchorNet(nz=16, num_classes=10)
    z = torch.randn(40, 16)
    y = torch.arange(40) % 10
    z_a, m = anchor(z, y)
    assert z_a.shape == z.shape == m.shape
    assert float(m.detach().min()) >= 0.0 and float(m.detach().max()) < 1.0 / 3.0
    anchor.eval()
    m1 = anchor.class_mask(y).detach()
    assert torch.allclose(m1[:10], m1[10:20])  # the mask depends on the label only
    f = anchor.mapping((m1 * z).unsqueeze(1))
    z_a, _ = anchor(z, y)
    assert torch.allclose(z_a, m1 * f + (1 - m1) * z, atol=1e-6)
    terms = anchor_terms(torch.randn(40, 10), y, m1, invariant=0.25)
    assert float(terms["a_mask"]) == pytest.approx(
        float((m1.sum(1) - 16 * 0.75).abs().mean()), rel=1e-5
    )


def _tiny_teacher():
    torch.manual_seed(0)
    teacher = create_model("lenet5x2")
    x = load_dataset("mnist", "train").x[:512]
    y = load_dataset("mnist", "train").y[:512]
    opt = torch.optim.Adam(teacher.parameters(), 3e-3)
    for _ in range(30):  # a few steps: confident enough to have an energy landscape
        j = torch.randint(0, 512, (64,))
        loss = torch.nn.functional.cross_entropy(teacher(x[j]), y[j])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return teacher.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def teacher():
    return _tiny_teacher()


def test_encoder_learns_to_invert_the_generator():
    torch.manual_seed(0)
    gen = Generator(nz=16, ngf=8).eval()
    enc = LatentEncoder(16, 10, (1, 28, 28))
    opt = torch.optim.Adam(enc.parameters(), 3e-3)
    y = torch.randint(0, 10, (64,))

    def rec(sample=False):
        z = torch.randn(64, 16)
        with torch.no_grad():
            x = gen(z)
        z_hat, mu, log_var = enc(x, y, sample=sample)
        return z_hat, z, mu, log_var

    with torch.no_grad():
        enc.eval()
        before = float(encoder_loss(*rec()))
    enc.train()
    for _ in range(120):
        loss = encoder_loss(*rec(sample=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        enc.eval()
        after = float(encoder_loss(*rec()))
    assert after < 0.5 * before, (before, after)


def test_training_the_anchor_lowers_the_teachers_energy(teacher):
    torch.manual_seed(1)
    gen = Generator(nz=16, ngf=8).eval()
    anchor = AnchorNet(16, 10)
    opt = torch.optim.Adam(anchor.parameters(), 1e-2)
    z = torch.randn(64, 16)
    y = torch.arange(64) % 10

    def mean_energy():
        anchor.eval()
        with torch.no_grad():
            return float(energy(teacher(gen(anchor(z, y)[0]))).mean())

    before = mean_energy()
    anchor.train()
    for _ in range(60):
        z_a, m = anchor(z, y)
        terms = anchor_terms(teacher(gen(z_a)), y, m)
        loss = sum(terms.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mean_energy()
    assert after < before - 0.15, (before, after)  # seeded: −2.93 → about −3.1


def test_mixup_distill_loss_uses_the_teachers_logits():
    s = torch.randn(8, 10)
    t = torch.randn(8, 10) * 3
    y = torch.randint(0, 10, (8,))
    same = mixup_distill_loss(s, s, y)
    assert float(same["s_kd"]) == pytest.approx(0.0, abs=1e-5)  # the reference's bug: KL(S‖S) = 0
    diff = mixup_distill_loss(s, t, y)
    assert float(diff["s_kd"]) > 0.01
    assert float(diff["s_ce"]) == pytest.approx(
        0.5 * float(torch.nn.functional.cross_entropy(s, y))
    )
    assert set(mixup_distill_loss(s, t, y, u=1.0)) == {"s_ce"}


def _student_data(n=64):
    return load_domain("mnist-m", "mnist", "train").subset(slice(0, n))


def _engine(teacher, method="augkd", steps=9, params=None):
    torch.manual_seed(0)
    test = load_dataset("mnist", "test").subset(slice(0, 100))
    sd_test = load_domain("mnist-m", "mnist", "test").subset(slice(0, 100))
    p = {"df_steps": 3, "anchor_steps": 3, "mix_steps": 3, **(params or {})}
    m = create_method(method, p if method == "augkd" else params)
    cls = AugKDEngine if method == "augkd" else StudentDataEngine
    return cls(
        teacher,
        create_model("lenet5"),
        Generator(nz=16, ngf=8),
        m,
        None,
        EvalSuite(test, student_test=sd_test),
        Budget(steps=steps),
        EngineSettings(batch_size=32, nz=16, eval_every=1, snapshot_every=3, snapshot_size=16),
        student_data=_student_data(),
    )


def test_augkd_engine_runs_the_three_stages_in_order(teacher):
    eng = _engine(teacher)
    phases, terms, evals, snaps = [], [], [], []
    eng.add_callback("on_step", lambda e, p: (phases.append(e.ctx.phase), terms.append(p["terms"])))
    eng.add_callback("on_eval", lambda e, p: evals.append(p))
    eng.add_callback("on_samples", lambda e, p: snaps.append(p))
    state = {}

    def watch(e, p):  # parameters at each stage boundary
        state[p["step"]] = {
            n: [t.detach().clone() for t in getattr(e, n).parameters()]
            for n in ("generator", "student", "anchor", "encoder")
        }

    eng.add_callback("on_step", watch)
    final = eng.run()
    assert final["status"] == "finished" and final["step"] == 9
    assert phases == ["data-free"] * 3 + ["anchor"] * 3 + ["mixup"] * 3
    assert {"g_adv", "g_bn", "g_oh", "g_bal", "s_kd", "e_rec"} <= set(terms[0])
    assert {"a_energy", "a_mask", "a_ce"} <= set(terms[3])
    assert {"s_ce", "s_kd", "mix_s"} <= set(terms[6])
    assert terms[6]["s_kd"] > 0  # the teacher's logits: a real distillation term
    assert [t["mix_s"] for t in terms[6:]] == pytest.approx([mixup_weight(k / 3) for k in range(3)])

    def changed(a, b, name):
        return any(not torch.equal(x, y) for x, y in zip(state[a][name], state[b][name]))

    assert changed(1, 3, "generator") and changed(1, 3, "encoder")
    assert changed(3, 6, "anchor") and not changed(3, 6, "student")  # stage 2: anchor only
    assert not changed(3, 6, "generator") and not changed(6, 9, "generator")
    assert changed(6, 9, "student") and not changed(6, 9, "anchor")
    assert all(e["student_domain_acc"] is not None for e in evals)
    art = snaps[-1].artifacts
    assert art["augkd_progression"].shape == (8, 7, 1, 28, 28)
    assert art["augkd_progression"].dtype == np.uint8
    assert art["augkd_mask"].shape == (10, 16)
    assert art["augkd_energy"].shape == (3, 64)
    # snapshots of stages 2–3 show the mixed images of real student-domain samples
    assert snaps[-1].images.shape == (16, 1, 28, 28)


def test_augkd_checkpoint_restores_every_part(teacher):
    eng = _engine(teacher, steps=9)
    for _ in range(5):  # the engine's loop by hand: into the anchor stage
        eng.set_lr()
        eng.ctx.progress = eng.progress()
        eng.generator_phase()
        eng.student_phase()
        eng.step += 1
    tensors, meta = eng.state_dict()
    assert any(k.startswith("encoder.") for k in tensors)
    assert any(k.startswith("anchor.") for k in tensors)
    assert any(k.startswith("opt_anchor.") for k in tensors)
    other = _engine(teacher, steps=9)
    other.load_state_dict(tensors, meta)
    assert other.step == 5 and other.stage() == "anchor"
    for a, b in zip(eng.anchor.parameters(), other.anchor.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(eng.encoder.parameters(), other.encoder.parameters()):
        assert torch.equal(a, b)


def test_ce_and_kd_baselines_train_on_student_domain_labels(teacher):
    ce = _engine(teacher, "ce", steps=20)
    g0 = [p.detach().clone() for p in ce.generator.parameters()]
    terms = []
    ce.add_callback("on_step", lambda e, p: terms.append(p["terms"]))
    final = ce.run()
    assert set(terms[-1]) >= {"s_ce", "train_acc"} and "s_kd" not in terms[-1]
    assert terms[-1]["train_acc"] > terms[0]["train_acc"]
    assert all(torch.equal(a, b) for a, b in zip(g0, ce.generator.parameters()))
    assert final["student_domain_acc"] is not None
    kd = _engine(teacher, "kd", steps=2)
    terms = []
    kd.add_callback("on_step", lambda e, p: terms.append(p["terms"]))
    kd.run()
    assert terms[-1]["s_kd"] > 0


def test_student_data_engine_needs_data(teacher):
    with pytest.raises(ValueError, match="student-domain"):
        StudentDataEngine(
            teacher,
            create_model("lenet5"),
            Generator(nz=16, ngf=8),
            create_method("ce"),
            None,
            EvalSuite(load_dataset("mnist", "test").subset(slice(0, 10))),
            Budget(steps=1),
            EngineSettings(nz=16),
        )


def test_config_asks_for_a_student_domain(trained_home):
    with pytest.raises(ConfigError, match="student_domain"):
        validate_config({"teacher": "mnist-clean", "method": "augkd"})
    with pytest.raises(ConfigError, match="student_domain must be one of"):
        validate_config({"teacher": "mnist-clean", "method": "ce", "student_domain": "nowhere"})
    with pytest.raises(ConfigError, match="student_domain_samples"):
        validate_config(
            {
                "teacher": "mnist-clean",
                "method": "ce",
                "student_domain": "mnist-m",
                "student_domain_samples": 5,
            }
        )
    with pytest.raises(ConfigError, match="≤ 1437"):  # caught before a worker starts
        validate_config(
            preset_config("ood-augkd", {"student_domain": "digits", "student_domain_samples": 5000})
        )
    cfg = validate_config(preset_config("ood-augkd"))
    assert cfg.method == "augkd" and cfg.student_domain == "mnist-m" and cfg.steps == 600
    # a baseline on the same split and budget: the preset's other settings stay
    base = validate_config(preset_config("ood-augkd", {"method": "ce"}))
    assert (base.student_domain, base.student_domain_samples, base.steps) == ("mnist-m", 300, 600)
    from dfkd_viz.runs.build import student_data

    too_many = cfg.model_copy(update={"student_domain_samples": 100_000})
    with pytest.raises(DfkdVizError, match="≤ 8000"):
        student_data(too_many, {"dataset": "mnist"})
    a = student_data(cfg, {"dataset": "mnist"})
    b = student_data(cfg.model_copy(update={"method": "ce"}), {"dataset": "mnist"})
    assert len(a) == 300 and torch.equal(a.x, b.x)  # same seed → same split
    c = student_data(cfg.model_copy(update={"seed": 1}), {"dataset": "mnist"})
    assert not torch.equal(a.y, c.y)


@pytest.mark.slow
def test_cli_runs_augkd_and_a_baseline_and_the_page_shows_them(trained_home):
    from conftest import run_cli as run
    from test_app import _assert_clean, _run_page  # tests/ is on sys.path (rootdir-less dir)

    common = ["--steps", "6", "--batch-size", "32", "--eval-every", "2", "--threads", "1", "--json"]
    r = run("run", "--preset", "ood-augkd", *common)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["method"] == "augkd" and out["status"] == "finished"
    assert out["student_domain"] == "mnist-m" and 0 <= out["student_domain_acc"] <= 1
    r = run("run", "--preset", "ood-augkd", "--method", "ce", *common)
    assert r.returncode == 0, r.stderr
    ce = json.loads(r.stdout.strip().splitlines()[-1])
    assert ce["method"] == "ce" and ce["student_domain_acc"] is not None
    r = run("run", "--teacher", "mnist-clean", "--method", "augkd", "--steps", "2")
    assert r.returncode == 2 and "student_domain" in r.stderr and "Traceback" not in r.stderr
    at = _run_page("pages/out-of-domain.py", out["run_id"])
    _assert_clean(at)
    assert len(at.get("plotly_chart")) >= 4  # curves, same-split bars, energy, mask
    assert any("G(anchor)" in h.proto.body for h in at.get("html"))
