"""Attribution maps, the trigger-localisation score on a planted backdoor, the saliency figures,
loading a run's student from its checkpoint, and the /saliency page on a real (tiny) run."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from dfkd_viz.analysis.saliency import (
    METHODS,
    attribute,
    local_mask,
    localisation,
    trigger_localisation,
)
from dfkd_viz.data import load_dataset, make_trigger
from dfkd_viz.data.triggers import triggered_test_set
from dfkd_viz.models import create_model
from dfkd_viz.viz.saliency import heat_rgb, localisation_curve, saliency_mosaic, trigger_figure

ROOT = Path(__file__).resolve().parent.parent
BACKDOORED = "mnist-backdoor-badnet-grid"


@pytest.fixture(scope="module")
def bd_home(tmp_path_factory, zoo_home):
    """A home with the clean and the BadNets-grid teachers trained (the zoo recipe, ~5 s)."""
    import os

    home = tmp_path_factory.mktemp("bd_home")
    shutil.copytree(zoo_home / "teachers", home / "teachers")
    old = os.environ.get("DFKD_VIZ_HOME")
    os.environ["DFKD_VIZ_HOME"] = str(home)
    try:
        from dfkd_viz.teachers import train_teacher

        train_teacher(BACKDOORED)
    finally:
        os.environ["DFKD_VIZ_HOME"] = old or ""
        if old is None:
            os.environ.pop("DFKD_VIZ_HOME")
    return home


@pytest.fixture
def bd(bd_home, home):
    shutil.copytree(bd_home / "teachers", home / "teachers", dirs_exist_ok=True)
    from dfkd_viz.teachers import load_teacher

    return load_teacher(BACKDOORED)[0], load_teacher("mnist-clean")[0]


@pytest.mark.parametrize("method", METHODS)
def test_attribute_shapes_and_sign(method):
    torch.manual_seed(0)
    model = create_model("lenet5")
    x = torch.rand(3, 1, 28, 28)
    a = attribute(model, x, method)
    assert a.shape == (3, 28, 28) and a.dtype == np.float32 and (a >= 0).all()
    assert model.training  # mode restored
    assert a.sum() > 0


def test_attribute_rejects_bad_input():
    model = create_model("lenet5")
    with pytest.raises(ValueError, match="unknown attribution method"):
        attribute(model, torch.rand(1, 1, 28, 28), "occlusion")
    with pytest.raises(ValueError, match="N, C, H, W"):
        attribute(model, torch.rand(1, 28, 28))


def test_localisation_share():
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    maps = np.stack([mask.astype(float), np.ones((4, 4)), np.zeros((4, 4))])
    np.testing.assert_allclose(localisation(maps, mask), [1.0, 0.25, 0.0])
    assert local_mask(make_trigger("blend")) is None  # covers the whole image
    assert local_mask(make_trigger("badnet_grid")).mean() < 0.02


def test_backdoored_teacher_looks_at_its_trigger_and_a_clean_one_does_not(bd):
    """The known case: on triggered images the BadNets teacher puts most of its Integrated-Gradients
    mass on the 3×3 corner (1.1 % of the image); the clean teacher, almost none."""
    backdoored, clean = bd
    trig = make_trigger("badnet_grid")
    xt = triggered_test_set(load_dataset("mnist", "test").subset(slice(0, 200)), trig, 0).x[:32]
    loc_bd = trigger_localisation(backdoored, xt, trig)
    loc_clean = trigger_localisation(clean, xt, trig)
    area = float(local_mask(trig).mean())
    assert loc_bd > 20 * area and loc_clean < 3 * area
    assert trigger_localisation(backdoored, xt, make_trigger("blend")) is None


def test_saliency_figures():
    imgs = np.random.default_rng(0).integers(0, 256, (5, 1, 28, 28)).astype(np.uint8)
    maps = {"teacher": np.random.rand(5, 28, 28), "student": np.zeros((5, 28, 28))}
    fig = saliency_mosaic(imgs, maps, [f"c{i}" for i in range(5)])
    z = np.asarray(fig.data[0].z)
    assert z.shape == (3 * 30 + 2, 5 * 30 + 2, 3)
    assert list(fig.layout.yaxis.ticktext) == ["image", "teacher", "student"]
    with pytest.raises(ValueError, match="shape"):
        saliency_mosaic(imgs, {"bad": np.zeros((4, 28, 28))})
    hot = heat_rgb(np.array([[0.0, 1.0]]))
    assert hot[0, 0].sum() < hot[0, 1].sum()  # brighter where attribution is higher
    tf = trigger_figure(np.random.randn(1, 28, 28)).data[0]
    assert tf.zmin == -tf.zmax and np.asarray(tf.z).shape == (28, 28)
    import pandas as pd

    curve = localisation_curve(
        pd.DataFrame({"step": [1, 2], "trigger_loc": [0.5, 0.1]}), teacher=0.6, chance=0.01
    )
    assert list(curve.data[0].y) == [50.0, 10.0] and len(curve.layout.shapes) == 2


@pytest.mark.slow
def test_worker_records_localisation_and_the_page_shows_it(bd, home, tiny_run):
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.build import load_run_models
    from dfkd_viz.runs.config import RunConfig
    from dfkd_viz.runs.store import RunReader

    cfg = {"teacher": BACKDOORED, "method": "dfq", "steps": 4, "embedding": False, **tiny_run}
    run_id = manager.launch(cfg)
    st = manager.wait(run_id, timeout_s=300)
    assert st["state"] == "finished", st
    with RunReader(manager.run_dir(run_id)) as r:
        loc = r.metrics(["trigger_loc"])
        ckpt = r.checkpoints()[-1]
    assert len(loc) >= 2 and loc["value"].between(0, 1).all()
    teacher, student, card = load_run_models(RunConfig(**cfg), ckpt["path"])
    assert card["trigger"] == "badnet_grid" and not (student.training or teacher.training)
    x = load_dataset("mnist", "test").x[:16]
    with torch.no_grad():
        assert student(x).shape == (16, 10)
    from dfkd_viz.runs.export import run_report_html

    report = run_report_html(manager.run_dir(run_id))
    assert "Integrated Gradients on test images + badnet_grid trigger" in report
    assert "Trigger localisation" in report

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/saliency.py")
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) >= 2  # the overlay mosaic and the localisation curve
    labels = [m.label for m in at.metric]
    assert "teacher: mass inside trigger" in labels
    teacher_loc = next(m.value for m in at.metric if m.label.startswith("teacher"))
    assert float(teacher_loc.rstrip("%")) > 20  # the backdoored teacher looks at its trigger
    for method in METHODS:
        at.radio(key="sal_method").set_value(method).run()
        assert not at.exception
    at.radio(key="sal_source").set_value("flagged").run()
    assert not at.exception and any("No flagged" in i.value for i in at.info)
