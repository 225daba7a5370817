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
from dfkd_viz.distill.defenses.atesc import ATEscParams, adversarial_robustness, split_fragile
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
    assert snap["keep"].dtype == bool and ((snap["score"] >= 0) & (snap["score"] <= 1)).all()
    assert snap["threshold"] is not None


def test_params_are_validated():
    with pytest.raises(ValueError):
        ATEscParams(epsilon=0)
    with pytest.raises(ValueError):
        ATEscParams(split="median")
