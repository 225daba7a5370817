"""ATEsc's mechanics on small, certain cases, and its premise on a real NTL teacher."""

import pytest
import torch

from dfkd_viz.data import load_dataset, load_domain
from dfkd_viz.distill import (
    Budget,
    Engine,
    EngineSettings,
    EvalSuite,
    create_defense,
    create_method,
)
from dfkd_viz.distill.defenses.atesc import (
    ATEscParams,
    adversarial_robustness,
    split_fragile,
    split_per_class,
)
from dfkd_viz.distill.defenses.base import uniform_forgetting
from dfkd_viz.distill.defenses.oracle import train_domain_classifier
from dfkd_viz.errors import DfkdVizError
from dfkd_viz.models import Generator, create_model


@pytest.fixture(scope="module")
def ntl_and_clean_teachers(tmp_path_factory):
    """A digits-NTL teacher and a clean one, trained briefly (3 epochs each) on real MNIST."""
    import os

    home = tmp_path_factory.mktemp("atesc_zoo")
    old = os.environ.get("DFKD_VIZ_HOME")
    os.environ["DFKD_VIZ_HOME"] = str(home)
    try:
        from dfkd_viz.teachers import RECIPES, get_spec

        out = {}
        for tid in ("mnist-ntl-digits", "mnist-clean"):
            spec = get_spec(tid).model_copy(update={"epochs": 3})
            out[tid] = RECIPES.get(spec.kind)(spec, None).requires_grad_(False)
        return out
    finally:
        os.environ.pop("DFKD_VIZ_HOME") if old is None else os.environ.__setitem__(
            "DFKD_VIZ_HOME", old
        )


def test_premise_ntl_teacher_is_more_robust_on_its_ood_domain(ntl_and_clean_teachers):
    """The paper's premise on real data: an NTL teacher's predictions survive an attack more often
    on its OOD domain than on ID data; a clean teacher shows the reverse."""
    torch.manual_seed(0)
    x_id = load_dataset("mnist", "test").x[:300]
    x_ood = load_domain("digits", "mnist", "test").x[:300]
    ntl, clean = ntl_and_clean_teachers["mnist-ntl-digits"], ntl_and_clean_teachers["mnist-clean"]
    r_id, _ = adversarial_robustness(ntl, x_id, 0.05, 3)
    r_ood, _ = adversarial_robustness(ntl, x_ood, 0.05, 3)
    assert r_ood.mean() > r_id.mean() + 0.1
    c_id, flip_id = adversarial_robustness(clean, x_id, 0.05, 3)
    c_ood, flip_ood = adversarial_robustness(clean, x_ood, 0.05, 3)
    assert c_ood.mean() < c_id.mean() and flip_ood.float().mean() > flip_id.float().mean()


def test_attack_respects_the_budget_and_margin_score():
    torch.manual_seed(0)
    t = create_model("lenet5").eval().requires_grad_(False)
    x = torch.rand(16, 1, 28, 28)
    conf, flipped = adversarial_robustness(t, x, 0.05, 2)
    assert conf.shape == (16,) and ((conf >= 0) & (conf <= 1)).all() and flipped.dtype == torch.bool
    margin, _ = adversarial_robustness(t, x, 0.05, 2, score="margin")
    assert margin.shape == (16,)
    # a zero budget cannot flip anything: the confidence is the clean one
    clean_conf, flipped0 = adversarial_robustness(t, x, 1e-12, 1)
    assert not flipped0.any()
    assert torch.allclose(clean_conf, torch.softmax(t(x), 1).amax(1), atol=1e-5)


def test_split_rules():
    s = torch.cat([torch.full((30,), 0.1), torch.full((10,), 0.9)]) + torch.linspace(0, 0.01, 40)
    keep, thr = split_fragile(s, "quantile", keep_fraction=0.5)
    assert int(keep.sum()) == 20 and (s[keep] <= thr).all()
    keep, thr = split_fragile(s, "gmm")  # two planted modes: keep exactly the low one
    assert int(keep.sum()) == 30 and keep[:30].all()
    keep, _ = split_fragile(s, "threshold", threshold=0.5)
    assert int(keep.sum()) == 30
    flat = torch.full((10,), 0.5)
    keep, _ = split_fragile(flat, "gmm", keep_fraction=0.5)  # no modes: falls back to the quantile
    assert keep.dtype == torch.bool


def test_atesc_in_the_engine_scores_once_and_forgets(ntl_and_clean_teachers):
    teacher = ntl_and_clean_teachers["mnist-ntl-digits"]
    torch.manual_seed(0)
    student = create_model("lenet5")
    gen = Generator(nz=16, ngf=8)
    defense = create_defense("atesc", {"steps": 1})
    calls = []
    orig = defense.select
    defense.select = lambda x, t, ctx: calls.append(len(x)) or orig(x, t, ctx)
    eng = Engine(
        teacher,
        student,
        gen,
        create_method("dfq", {"s_steps": 4}),
        defense,
        EvalSuite(load_dataset("mnist", "test").subset(slice(0, 100))),
        Budget(steps=3),
        EngineSettings(batch_size=32, nz=16, eval_every=3, snapshot_every=3, snapshot_size=8),
    )
    rec, snaps = [], []
    eng.add_callback("on_step", lambda e, p: rec.append(p["terms"]))
    eng.add_callback("on_samples", lambda e, p: snaps.append(p))
    eng.run()
    assert all(0.3 <= r["kept_frac"] <= 0.7 for r in rec)
    assert all("s_forget" in r and r["s_forget"] >= 0 for r in rec)
    # once per generator batch (plus the first memory fill and the snapshots), not per student step
    assert len([c for c in calls if c == 32]) <= 3 + 1
    snap = snaps[-1]
    assert snap.keep.dtype == bool and ((snap.score >= 0) & (snap.score <= 1)).all()
    assert snap.threshold is not None


def test_params_are_validated():
    with pytest.raises(ValueError):
        ATEscParams(epsilon=0)
    with pytest.raises(ValueError):
        ATEscParams(split="median")


def test_split_per_class_splits_within_each_predicted_class():
    # class 0 is robust overall, class 1 fragile overall: a batch-wide split would reject all of
    # class 0; within classes, each loses its own most robust half
    score = torch.cat(
        [torch.linspace(0.6, 0.9, 8), torch.linspace(0.0, 0.3, 8), torch.tensor([0.99])]
    )
    label = torch.tensor([0] * 8 + [1] * 8 + [2])
    keep, thr = split_per_class(score, label, ATEscParams(group="class", keep_fraction=0.5))
    assert keep[:4].all() and not keep[4:8].any() and keep[8:12].all() and not keep[12:16].any()
    assert keep[16] and thr is None  # a class with < 4 samples is kept whole
    batch_keep, _ = split_fragile(score, "quantile", 0.5)
    assert int(batch_keep[:8].sum()) <= 1  # a batch-wide split rejects (almost) all of class 0


def test_uniform_forgetting_pushes_towards_no_opinion():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    t = uniform_forgetting(logits, torch.tensor([True, False]), 0.5)["s_forget"]
    assert t > 0
    t.backward()
    assert logits.grad[0, 0] > 0 and logits.grad[1].abs().sum() == 0  # lowers the confident logit
    flat = uniform_forgetting(torch.zeros(2, 3), torch.tensor([True, True]), 1.0)["s_forget"]
    assert abs(float(flat)) < 1e-6
    assert uniform_forgetting(logits, torch.tensor([False, False]), 1.0)["s_forget"] == 0
    assert uniform_forgetting(logits, torch.tensor([True, True]), 0.0) == {}


def test_domain_oracle_separates_real_domains_and_rejects_ood_like_samples():
    clf = train_domain_classifier("mnist", "watermark", epochs=1)
    x_id = load_dataset("mnist", "test").x[:200]
    x_ood = load_domain("watermark", "mnist", "test").x[:200]
    with torch.no_grad():
        acc = (
            (clf(x_id).argmax(1) == 0).float().mean() + (clf(x_ood).argmax(1) == 1).float().mean()
        ) / 2
    assert acc > 0.95
    oracle = create_defense("domain-oracle", {"epochs": 1})
    oracle.clf = clf
    sel = oracle.select(torch.cat([x_id[:10], x_ood[:10]]), torch.zeros(20, 10), None)
    assert sel.keep[:10].float().mean() >= 0.9 and (~sel.keep[10:]).float().mean() >= 0.9
    assert ((sel.score >= 0) & (sel.score <= 1)).all() and sel.threshold == 0.5


def test_domain_oracle_needs_an_ood_domain():
    torch.manual_seed(0)
    with pytest.raises(DfkdVizError, match="needs an OOD domain"):
        Engine(
            create_model("lenet5").eval(),
            create_model("lenet5"),
            Generator(nz=16, ngf=8),
            create_method("dfq"),
            create_defense("domain-oracle"),
            EvalSuite(load_dataset("mnist", "test").subset(slice(0, 50)), dataset="mnist"),
            Budget(steps=1),
            EngineSettings(batch_size=16, nz=16),
        )
