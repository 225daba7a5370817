"""TA-DFKD's mechanics: the GMM selection on planted mixtures, its loss terms, the method in the
engine (selection on the generator's terms and the student's batch), and the config default."""

import numpy as np
import pytest
import torch

from dfkd_viz.data import load_dataset
from dfkd_viz.distill import Budget, Engine, EngineSettings, EvalSuite, create_method, losses
from dfkd_viz.distill.defenses import create_defense
from dfkd_viz.distill.defenses.lenient import gmm_select, teacher_self_loss
from dfkd_viz.models import Generator, create_model
from dfkd_viz.runs.config import validate_config


def _logits_with_loss(losses_: np.ndarray, k: int = 10) -> torch.Tensor:
    """Logits whose self-CE (loss to their own argmax) equals ``losses_`` exactly: the top class
    has probability exp(−loss), the rest share the remainder evenly."""
    p_top = np.exp(-losses_)
    p = np.tile(((1 - p_top) / (k - 1))[:, None], (1, k))
    p[:, 0] = p_top
    assert (p_top > 1.0 / k).all()
    return torch.log(torch.tensor(p, dtype=torch.float32))


def test_teacher_self_loss_matches_construction():
    want = np.array([0.05, 0.5, 1.2])
    got = teacher_self_loss(_logits_with_loss(want)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_gmm_selection_picks_the_clean_component_of_a_planted_mixture():
    rng = np.random.default_rng(0)
    clean = rng.normal(0.1, 0.03, 90).clip(0.01)  # verified by the teacher: low self-loss
    noisy = rng.normal(1.5, 0.15, 38)  # the teacher is unsure of these
    loss = np.concatenate([clean, noisy])
    perm = rng.permutation(len(loss))
    sp = gmm_select(_logits_with_loss(loss[perm]))
    truth = perm < 90
    assert sp.keep.dtype == bool and sp.keep.shape == (128,)
    assert (sp.keep == truth).mean() >= 0.98
    assert sp.means[0] < sp.means[1] and np.isclose(sp.weights.sum(), 1.0)
    assert sp.norm_loss.min() == 0.0 and np.isclose(sp.norm_loss.max(), 1.0)
    assert ((sp.posterior >= 0) & (sp.posterior <= 1)).all()
    # a stricter threshold keeps a subset
    strict = gmm_select(_logits_with_loss(loss[perm]), threshold=0.99)
    assert (strict.keep <= sp.keep).all()


def test_gmm_selection_degenerate_batches_keep_everything():
    same = gmm_select(_logits_with_loss(np.full(16, 0.3)))
    assert same.keep.all() and np.isnan(same.means).all()
    tiny = gmm_select(_logits_with_loss(np.array([0.1, 1.0, 2.0])))
    assert tiny.keep.all()


def test_js_divergence_and_tv_norm():
    a = torch.randn(8, 10)
    assert float(losses.js_divergence(a, a)) == pytest.approx(0.0, abs=1e-7)
    far = losses.js_divergence(torch.eye(10)[:8] * 30, torch.eye(10)[1:9] * 30)
    # clipped probabilities and a per-entry mean: far below the clamp at 1 for K = 10
    assert 0.1 < float(far) < 0.2
    back = losses.js_divergence(torch.eye(10)[1:9] * 30, torch.eye(10)[:8] * 30)
    assert float(far) == pytest.approx(float(back))  # symmetric
    flat = torch.ones(2, 1, 8, 8)
    assert float(losses.tv_norm(flat)) == 0.0
    assert float(losses.tv_norm(torch.rand(2, 1, 8, 8))) > 0


def test_bn_hook_loss_respects_the_mask():
    net = create_model("lenet5").eval().requires_grad_(False)
    hook = losses.BNStatsHook(net)
    x = torch.cat([torch.zeros(8, 1, 28, 28), torch.rand(8, 1, 28, 28)])
    hook.enabled = True
    net(x)
    hook.enabled = False
    all_ = hook.loss()
    hook.enabled = True
    net(x)
    hook.enabled = False
    mask = torch.arange(16) >= 8
    half = hook.loss(mask)
    assert float(all_) != pytest.approx(float(half))
    hook.enabled = True
    net(x[8:])
    hook.enabled = False
    assert float(half) == pytest.approx(float(hook.loss()), rel=1e-5)
    assert float(hook.loss()) == 0.0  # nothing kept since the last call


def _engine(defense="ta-select", steps=3, params=None):
    torch.manual_seed(0)
    teacher = create_model("lenet5x2").eval()
    with torch.no_grad():
        teacher.train()
        teacher(load_dataset("mnist", "train").x[:256])
        teacher.eval()
    test = load_dataset("mnist", "test").subset(slice(0, 100))
    return Engine(
        teacher,
        create_model("lenet5"),
        Generator(nz=16, ngf=8),
        create_method("tadfkd", params),
        create_defense(defense),
        EvalSuite(test),
        Budget(steps=steps),
        EngineSettings(batch_size=32, nz=16, eval_every=2, snapshot_every=2, snapshot_size=16),
    )


def test_tadfkd_trains_with_selection_and_records_decisions():
    eng = _engine()
    terms, kept, snaps = [], [], []
    eng.add_callback(
        "on_step", lambda e, p: (terms.append(p["terms"]), kept.append(p["terms"]["kept_frac"]))
    )
    eng.add_callback("on_samples", lambda e, p: snaps.append(p))
    g0 = [p.detach().clone() for p in eng.generator.parameters()]
    final = eng.run()
    assert final["status"] == "finished"
    assert {"g_adv", "g_bn", "g_tv", "g_l2", "s_kd"} <= set(terms[-1])
    assert "g_oh" not in terms[-1] and "g_bal" not in terms[-1]  # no class prior
    assert all(0.0 < k < 1.0 for k in kept)  # the GMM always rejects some, keeps some
    assert any(not torch.equal(a, b) for a, b in zip(g0, eng.generator.parameters()))
    snap = snaps[-1]
    assert snap.keep is not None and snap.score.min() >= 0 and snap.score.max() <= 1
    assert (snap.keep == (snap.score > 0.5)).all()
    art = snap.artifacts
    assert art["ta_norm_loss"].shape == (16,) and art["ta_gmm"].shape == (3, 2)


def test_tadfkd_student_batch_holds_only_kept_samples():
    eng = _engine(steps=2)
    seen = []
    orig = eng.method.student_terms

    def spy(ctx, x, t_logits, s, t_blocks=None):
        seen.append(len(x))
        return orig(ctx, x, t_logits, s, t_blocks)

    eng.method.student_terms = spy
    eng.run()
    # memory draws are full batches of kept samples (no rejected quarter for this defense)
    assert seen[1:] and all(n == 32 for n in seen[1:10])
    assert seen[0] < 32  # the generator's own batch, minus what the teacher rejected


def test_tadfkd_generator_terms_use_kept_samples_only():
    """The adversarial term sees only kept samples: with selection off, it changes."""
    on = _engine(steps=1)
    off = _engine(steps=1, params={"select": False})
    rec_on, rec_off = [], []
    on.add_callback("on_step", lambda e, p: rec_on.append(p["terms"]))
    off.add_callback("on_step", lambda e, p: rec_off.append(p["terms"]))
    on.run()
    off.run()
    assert rec_on[0]["g_tv"] == pytest.approx(rec_off[0]["g_tv"])  # same images, all samples
    assert rec_on[0]["g_bn"] != pytest.approx(rec_off[0]["g_bn"])


def test_config_gives_tadfkd_its_selection_unless_told_otherwise(trained_home):
    cfg = validate_config({"teacher": "mnist-clean", "method": "tadfkd"})
    assert cfg.defense == "ta-select"
    assert validate_config({"teacher": "mnist-clean", "method": "dfq"}).defense == "none"
    explicit = validate_config({"teacher": "mnist-clean", "method": "tadfkd", "defense": "none"})
    assert explicit.defense == "none"
    # the selection as a defense on another method
    assert (
        validate_config({"teacher": "mnist-clean", "method": "dfq", "defense": "ta-select"}).defense
        == "ta-select"
    )
