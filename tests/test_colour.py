"""32×32 colour end to end: the ``mnistm32`` dataset, triggers and domains at 32×32×3, the
generator's default size, ``--student`` validation, the ``resnet8`` → ``resnet8s`` card migration,
the audit's budget, and a tiny colour run through the Live, Embeddings, Saliency and Decisions pages
and the HTML export. Tiny models (LeNet-5 on 32×32×3), few steps, seeded."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import home_env, run_cli, wait_until
from PIL import Image
from safetensors.torch import save_file

from dfkd_viz.data import TRIGGERS, load_dataset, load_domain, make_trigger
from dfkd_viz.data.mnistm import MNISTM32_MEAN, MNISTM32_STD, load_mnistm32
from dfkd_viz.errors import ConfigError
from dfkd_viz.models import Generator, create_model, default_size, fitting_models, input_fits

ROOT = Path(__file__).resolve().parent.parent
TINY_TEACHER = "test-mnistm32-lenet"


# ---------------------------------------------------------------- the dataset
def test_mnistm32_is_deterministic_colour_digits():
    a, b = load_mnistm32("test"), load_mnistm32("test")  # built twice, bypassing the cache
    assert a.x.shape == (2000, 3, 32, 32) and a.x.dtype == torch.float32
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert float(a.x.min()) >= 0.0 and float(a.x.max()) <= 1.0
    assert torch.equal(a.y, load_dataset("mnist", "test").y)  # the mnist split, same labels
    assert a.num_classes == 10 and a.shape == (3, 32, 32)
    # colour: the channels differ (a grey image would have three equal channels)
    assert float((a.x[:, 0] - a.x[:, 1]).abs().mean()) > 0.02
    train = load_dataset("mnistm32", "train")
    assert len(train) == 8000 and not torch.equal(train.x[:5], a.x[:5])


def test_mnistm32_statistics_match_its_constants():
    x = load_dataset("mnistm32", "train").x
    assert np.allclose(x.mean((0, 2, 3)).numpy(), MNISTM32_MEAN, atol=1e-3)
    assert np.allclose(x.std((0, 2, 3)).numpy(), MNISTM32_STD, atol=1e-3)


# ---------------------------------------------------------------- triggers and domains
@pytest.mark.parametrize("name", sorted(TRIGGERS.names()))
def test_triggers_work_on_colour_images(name):
    t = make_trigger(name, (3, 32, 32))
    x = load_dataset("mnistm32", "test").x[:16]
    y = t.apply(x)
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    mask = t.mask()
    assert mask.shape == (3, 32, 32)
    assert torch.equal(y[:, ~mask], x[:, ~mask])  # nothing outside the mask changes
    assert bool((y != x).any())
    assert all(bool(mask[c].any()) for c in range(3))  # every channel carries it


def test_triggers_keep_their_mnist_size_and_scale_at_32():
    grid28, grid32 = (
        make_trigger("badnet_grid", (1, 28, 28)),
        make_trigger("badnet_grid", (3, 32, 32)),
    )
    assert torch.equal(grid28.mask()[0].nonzero().amin(0), torch.tensor([25, 25]))
    assert int(grid28.mask().sum()) == 9 and int(grid32.mask()[0].sum()) == 9  # ABD's 3×3 on 32
    sq28, sq32 = make_trigger("badnet_sq", (1, 28, 28)), make_trigger("badnet_sq", (3, 32, 32))
    assert int(sq28.mask().sum()) == 16 and int(sq32.mask()[0].sum()) == 25  # 4×4 → 5×5
    assert bool(sq28.mask()[0, 23:27, 23:27].all()) and not bool(sq28.mask()[0, 27].any())
    big = make_trigger("badnet_grid", (3, 64, 64))
    assert int(big.mask()[0].sum()) == 49  # 7×7: the checker scales with the image


def test_domains_work_on_colour_images():
    base = load_dataset("mnistm32", "test")
    for dom in ("mnist-m", "watermark", "invert", "mnist", "digits"):
        d = load_domain(dom, "mnistm32", "test")
        assert d.shape == (3, 32, 32) and d.mean == base.mean
        assert float(d.x.min()) >= 0.0 and float(d.x.max()) <= 1.0
    wm = load_domain("watermark", "mnistm32", "test").x
    assert all(bool((wm[:, c] != base.x[:, c]).any()) for c in range(3))  # every channel
    mm = load_domain("mnist-m", "mnistm32", "test").x  # colour crops: the channels differ
    assert not torch.equal(mm[:, 0], mm[:, 1])
    grey = load_domain("mnist", "mnistm32", "test").x  # plain MNIST repeated over channels
    assert torch.equal(grey[:, 0], grey[:, 2])


# ---------------------------------------------------------------- generator size
def test_generator_default_follows_the_image_shape():
    assert default_size((1, 28, 28)) == (100, 16)
    assert default_size((3, 32, 32)) == (256, 64)
    g = Generator(
        *default_size((3, 32, 32)), img_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3
    )
    assert g.l1.out_features == 128 * 8 * 8  # CMI: Linear nz → 128·8·8
    assert g(torch.randn(4, 256)).shape == (4, 3, 32, 32)


def test_run_generator_size_default_and_override():
    from dfkd_viz.runs.build import generator_size
    from dfkd_viz.runs.config import RunConfig

    cfg = RunConfig(teacher="t", method="dfq")
    assert generator_size(cfg, (3, 32, 32)) == (256, 64)
    assert generator_size(cfg, (1, 28, 28)) == (100, 16)
    over = RunConfig(teacher="t", method="dfq", nz=64, ngf=32)
    assert generator_size(over, (3, 32, 32)) == (64, 32)
    assert generator_size(RunConfig(teacher="t", method="dfq", ngf=8), (1, 28, 28)) == (100, 8)


# ---------------------------------------------------------------- --student
def _fake_teacher(home: Path, teacher_id: str, arch: str, in_shape, state=None, **card) -> None:
    """A teacher card and weights written directly (as an import or an old version would)."""
    c = in_shape[0]
    mean, std = card.get("mean", [0.5] * c), card.get("std", [0.25] * c)
    model = create_model(arch, in_shape=in_shape, mean=mean, std=std)
    d = home / "teachers"
    d.mkdir(parents=True, exist_ok=True)
    sd = state if state is not None else model.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(d / f"{teacher_id}.safetensors"))
    base = {
        "id": teacher_id,
        "dataset": "mnistm32" if c == 3 else "mnist",
        "arch": arch,
        "kind": "user",
        "default": False,
        "num_classes": 10,
        "in_shape": list(in_shape),
        "mean": [0.5] * c,
        "std": [0.25] * c,
        "id_acc": None,
        "weights": str(d / f"{teacher_id}.safetensors"),
    }
    (d / f"{teacher_id}.json").write_text(json.dumps({**base, **card}))


def test_input_fits_lists_the_architectures_for_a_shape():
    assert input_fits("lenet5", (3, 32, 32)) and input_fits("wrn16_1", (3, 32, 32))
    assert not input_fits("lenet5", (3, 64, 64)) and not input_fits("resnet8", (3, 64, 64))
    assert not input_fits("no-such-arch", (1, 28, 28))
    fit = fitting_models((3, 64, 64))
    assert "wrn16_1" in fit and "lenet5" not in fit and "resnet20" not in fit
    state = torch.random.get_rng_state()
    input_fits("wrn16_1", (3, 48, 48))
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is untouched


def test_student_validation_is_one_sentence_listing_the_fitting_ones(home):
    from dfkd_viz.runs.config import validate_config

    _fake_teacher(home, "big-colour", "wrn16_1", (3, 64, 64))
    ok = validate_config({"teacher": "big-colour", "method": "dfq", "student": "wrn16_1"})
    assert ok.student == "wrn16_1"
    with pytest.raises(ConfigError) as e:
        validate_config({"teacher": "big-colour", "method": "dfq", "student": "lenet5"})
    msg = str(e.value)
    assert msg.startswith("student lenet5 does not take the teacher's 3×64×64 images")
    assert "wrn16_1" in msg and "resnet8s" in msg and "lenet5," not in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="student must be one of"):
        validate_config({"teacher": "big-colour", "method": "dfq", "student": "lenet9"})


def test_cli_run_and_sweep_take_student(home):
    _fake_teacher(home, "big-colour", "wrn16_1", (3, 64, 64))
    r = run_cli("run", "--teacher", "big-colour", "--method", "dfq", "--student", "lenet5")
    assert r.returncode == 2
    assert "student lenet5 does not take the teacher's 3×64×64 images" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    s = run_cli("sweep", "--teachers", "big-colour", "--methods", "dfq", "--student", "vgg8x")
    assert s.returncode == 2 and "student must be one of" in s.stderr


# ---------------------------------------------------------------- resnet8 → resnet8s
def test_old_resnet8_card_is_migrated_on_read(home):
    from dfkd_viz.teachers import card, load_teacher

    torch.manual_seed(0)
    old = create_model("resnet8s", mean=(0.5,), std=(0.25,))  # the old ResNetSmall(blocks=1)
    _fake_teacher(home, "old-r8", "resnet8s", (1, 28, 28), state=old.eval().state_dict())
    p = home / "teachers" / "old-r8.json"
    p.write_text(p.read_text().replace('"arch": "resnet8s"', '"arch": "resnet8"'))
    assert json.loads(p.read_text())["arch"] == "resnet8"
    model, c = load_teacher("old-r8")
    assert c["arch"] == "resnet8s" and c["arch_renamed_from"] == "resnet8"
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), old(x), atol=1e-5)
    assert json.loads(p.read_text())["arch"] == "resnet8s"  # rewritten once, atomically
    assert card("old-r8")["arch"] == "resnet8s"
    # a card naming CMI's resnet8 with CMI's layout is left alone
    _fake_teacher(home, "cmi-r8", "resnet8", (3, 32, 32))
    _, c2 = load_teacher("cmi-r8")
    assert c2["arch"] == "resnet8" and "arch_renamed_from" not in c2


def test_zoo_uses_resnet8s_for_the_mnist_resnet8():
    from dfkd_viz.teachers import get_spec

    assert get_spec("mnist-resnet8-ls").arch == "resnet8s"
    spec = get_spec("mnistm32-wrn16_2")
    assert (spec.dataset, spec.arch, spec.kind, spec.default) == (
        "mnistm32",
        "wrn16_2",
        "clean",
        False,
    )


# ---------------------------------------------------------------- the audit's budget
def test_audit_shortcut_budget_scales_with_the_image():
    from dfkd_viz.audit.scores import AuditParams, backdoor_scores

    params = AuditParams(trigger_samples=8, trigger_steps=1, shuffle_copies=1)
    for shape, radius in (((1, 28, 28), 2.0), ((3, 32, 32), 2.0 / 28 * math.sqrt(3072))):
        torch.manual_seed(0)
        c = shape[0]
        t = create_model("lenet5", in_shape=shape, mean=(0.5,) * c, std=(0.25,) * c).eval()
        bd = backdoor_scores(t, torch.rand(8, *shape), params)
        assert bd.radius == pytest.approx(radius, rel=1e-6)
        assert np.asarray(bd.trigger).shape == shape


# ---------------------------------------------------------------- a tiny colour run, end to end
@pytest.fixture(scope="session")
def colour_run(tmp_path_factory) -> tuple[Path, str]:
    """A finished tiny colour run (DFQ + TA-DFKD's selection, 6 steps, LeNet-5 student, the
    default 32×32 generator, the embedding map), run by a real worker process. The teacher is a
    seeded, untrained LeNet-5 (2×) on mnistm32's 3×32×32 images (the pages do not care how good it
    is); its reference map (300 + 300 points) is computed up front, in this process."""
    import os

    with home_env(tmp_path_factory.mktemp("colour_run")) as h:
        from dfkd_viz.data.mnistm import MNISTM32_MEAN, MNISTM32_STD
        from dfkd_viz.runs import manager
        from dfkd_viz.runs.store import RunReader
        from dfkd_viz.teachers.maps import compute_map

        torch.manual_seed(0)
        _fake_teacher(
            h,
            TINY_TEACHER,
            "lenet5x2",
            (3, 32, 32),
            mean=list(MNISTM32_MEAN),
            std=list(MNISTM32_STD),
            ood_domain="mnist",
            description="test: a tiny colour teacher",
        )
        old = os.environ.get("DFKD_VIZ_MAP_POINTS")
        os.environ["DFKD_VIZ_MAP_POINTS"] = "300"  # the worker (a child) reads it too
        try:
            compute_map(TINY_TEACHER)
            run_id = manager.launch(
                {
                    "teacher": TINY_TEACHER,
                    "method": "dfq",
                    "defense": "ta-select",
                    "student": "lenet5",
                    "steps": 6,
                    "seed": 0,
                    "batch_size": 32,
                    "eval_every": 2,
                    "snapshot_every": 2,
                    "snapshot_size": 16,
                    "checkpoint_every": 2,
                    "threads": 1,
                }
            )
            assert wait_until(
                lambda: manager.run_info(run_id)["status"] in ("finished", "failed"), timeout=400
            )
            info = manager.run_info(run_id)
            assert info["status"] == "finished", info.get("error")

            def placed() -> bool:
                with RunReader(manager.run_dir(run_id)) as r:
                    return not r.reference().empty and len(r.embedded_steps()) == 4

            assert wait_until(placed, timeout=120)
        finally:
            if old is None:
                os.environ.pop("DFKD_VIZ_MAP_POINTS", None)
            else:
                os.environ["DFKD_VIZ_MAP_POINTS"] = old
    return h, run_id


@pytest.fixture
def colour_home(colour_run, home) -> tuple[Path, str]:
    src, run_id = colour_run
    for sub in ("teachers", "runs"):
        shutil.copytree(src / sub, home / sub, dirs_exist_ok=True)
    return home, run_id


def _png_modes(html: str) -> set[str]:
    uris = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert uris, "no inline PNG images"
    return {Image.open(io.BytesIO(base64.b64decode(u))).mode for u in uris[:12]}


def _page(page: str, run_id: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(page)
    at.query_params["run"] = run_id
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _html(at) -> str:
    return "".join(el.proto.body for el in at.get("html"))


@pytest.mark.slow
def test_colour_run_records_colour_samples_and_the_default_generator(colour_home):
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.store import RunReader

    _, run_id = colour_home
    with RunReader(manager.run_dir(run_id)) as r:
        df = r.samples(r.snapshot_steps()[-1])
        ref = r.reference()
        ckpt = r.checkpoints()[-1]["path"]
    assert len(df) == 16 and Image.open(io.BytesIO(df["image"].iloc[0])).mode == "RGB"
    assert not ref.empty  # the UMAP map of real colour ID and grey OOD digits
    from safetensors import safe_open

    with safe_open(ckpt, framework="pt") as f:
        assert tuple(f.get_tensor("generator.l1.weight").shape) == (128 * 8 * 8, 256)


@pytest.mark.slow
def test_pages_show_a_colour_run(colour_home):
    _, run_id = colour_home
    live = _page("pages/live.py", run_id)
    assert len(live.get("plotly_chart")) >= 4
    assert _png_modes(_html(live)) == {"RGB"}

    emb = _page("pages/embeddings.py", run_id)
    assert len(emb.get("plotly_chart")) == 2  # the map and the OOD-likeness curve

    sal = _page("pages/saliency.py", run_id)
    mosaic = next(
        c for c in sal.get("plotly_chart") if '"type":"image"' in c.proto.spec.replace(" ", "")
    )
    z = json.loads(mosaic.proto.spec)["data"][0]["z"]
    if isinstance(z, dict):  # plotly's typed-array encoding
        shape = [int(v) for v in z["shape"].split(",")]
        z = np.frombuffer(base64.b64decode(z["bdata"]), np.dtype(z["dtype"])).reshape(shape)
    z = np.asarray(z)
    assert z.ndim == 3 and z.shape[2] == 3
    assert np.abs(z[..., 0].astype(int) - z[..., 1].astype(int)).max() > 30  # in colour

    dec = _page("pages/decisions.py", run_id)
    assert [m.label for m in dec.metric][:2] == ["kept", "rejected"]
    assert _png_modes(_html(dec)) == {"RGB"}


@pytest.mark.slow
def test_html_export_of_a_colour_run(colour_home, tmp_path):
    from dfkd_viz.runs import manager
    from dfkd_viz.runs.export import export_run

    _, run_id = colour_home
    out = export_run(manager.run_dir(run_id), "html", tmp_path / "r.html")
    assert _png_modes(Path(out).read_text()) == {"RGB"}
