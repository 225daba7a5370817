"""The CIFAR zoo against zju-vipa/CMI's own model definitions.

Fixtures (``tests/fixtures/cifar_zoo/``), made by running CMI's ``datafree/models/classifiers/``
(commit 9e79fa9) outside this repository:

- ``layouts.json``: per architecture, the reference state dict's keys (in order), shapes and
  dtypes, and the ``num_classes`` / dataset statistics used;
- ``golden.safetensors``: two pixel-unit input images and, per architecture, the reference's logits,
  penultimate features and per-stage channel means, computed with the weights of
  :func:`seeded_state_dict` (a function of each key's name and shape only, so it does not depend on
  the order in which either implementation builds its modules).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dfkd_viz.models import MODELS, create_model, fold_bn, list_models
from dfkd_viz.models.cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFAR_MODELS,
    Chain,
)

FIXTURES = Path(__file__).parent / "fixtures" / "cifar_zoo"
STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}
BIG = {"resnet34", "resnet18", "resnet110", "resnet32x4", "wrn40_2", "vgg11", "vgg13"}
DTYPES = {"torch.float32": torch.float32, "torch.int64": torch.int64}


def seeded_tensor(key: str, shape, dtype: torch.dtype) -> torch.Tensor:
    """A deterministic tensor for state-dict entry ``key``, seeded by the key's name: conv/linear
    weights ~ N(0, 1/fan_in), biases and BN shifts ~ N(0, 0.1²), BN scales U(0.75, 1.25), running
    means N(0, 0.1²), running variances U(0.5, 1.5), ``num_batches_tracked`` 0."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1
    g = torch.Generator().manual_seed(seed)
    leaf = key.rsplit(".", 1)[-1]
    shape = tuple(shape)
    if dtype != torch.float32:
        return torch.zeros(shape, dtype=dtype)
    if leaf == "running_var":
        return torch.rand(shape, generator=g) + 0.5
    if leaf in ("running_mean", "bias"):
        return 0.1 * torch.randn(shape, generator=g)
    if leaf == "weight" and len(shape) == 1:  # BN scale
        return 0.75 + 0.5 * torch.rand(shape, generator=g)
    fan_in = math.prod(shape[1:])
    return torch.randn(shape, generator=g) / math.sqrt(fan_in)


def seeded_state_dict(layout: dict) -> dict[str, torch.Tensor]:
    """:func:`seeded_tensor` for every key of a ``layouts.json`` entry."""
    return {k: seeded_tensor(k, shape, DTYPES[dt]) for k, shape, dt in layout["keys"]}


@pytest.fixture(scope="module")
def layouts() -> dict:
    return json.loads((FIXTURES / "layouts.json").read_text())["archs"]


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "golden.safetensors"))


def build(name: str, layout: dict, **kw):
    mean, std = STATS[layout["dataset"]]
    return create_model(name, num_classes=layout["num_classes"], mean=mean, std=std, **kw)


def test_every_cmi_name_is_registered(layouts):
    assert set(CIFAR_MODELS) == set(layouts)
    assert set(CIFAR_MODELS) <= set(list_models())
    assert "resnet8s" in list_models()  # this project's 28×28 ResNet-8, renamed
    assert MODELS.get("resnet8") is CIFAR_MODELS["resnet8"]


@pytest.mark.parametrize("name", sorted(CIFAR_MODELS))
def test_state_dict_layout_is_the_reference(name, layouts):
    layout = layouts[name]
    model = build(name, layout)
    ours = [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]
    assert ours == layout["keys"]  # same keys, same order, same shapes and dtypes
    model.load_state_dict(seeded_state_dict(layout), strict=True)
    assert model.num_parameters == layout["num_parameters"]
    assert model.fc.out_features == layout["num_classes"]
    assert model.feature_dim == model.fc.in_features
    # fc is the reference's final linear layer, not a second registration of it
    assert [n for n, m in model.named_modules() if m is model.fc] == [layout["keys"][-2][0][:-7]]


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in sorted(CIFAR_MODELS)],
)
def test_logits_equal_the_reference(name, layouts, golden):
    layout = layouts[name]
    model = build(name, layout).eval()
    model.load_state_dict(seeded_state_dict(layout), strict=True)
    x = golden["input"]
    with torch.no_grad():
        f = model.forward_features(x)
        logits = model(x)

    def close(a, b):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))

    close(f.logits, golden[f"logits.{name}"])
    close(logits, golden[f"logits.{name}"])
    close(f.penultimate, golden[f"penultimate.{name}"])
    assert len(f.blocks) == layout["num_stages"]
    for i, b in enumerate(f.blocks):
        close(b.mean((2, 3)), golden[f"stage{i}.{name}"])


@pytest.mark.parametrize("name", ["resnet8", "wrn16_1", "vgg8", "mobilenetv2"])
def test_stages_views_and_forward_from(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        h = model.stages[0](model.normalize(x))
        f = model.forward_from(h, 0)
        ref = model.forward_features(x)
        torch.testing.assert_close(f.logits, model(x))
        torch.testing.assert_close(f.logits, model.fc(model.head(ref.blocks[-1])))
        for i in range(len(model.stages) - 1):  # every stage view continues the previous one
            torch.testing.assert_close(model.stages[i + 1](ref.blocks[i]), ref.blocks[i + 1])
    # the views add no state-dict key, and all the model's parameters belong to a stage, the head
    # or fc
    assert all(not k.startswith(("stages", "head", "_")) for k in model.state_dict())
    owned = {id(p) for s in [*model.stages, model.head, model.fc] for p in s.parameters()}
    assert owned == {id(p) for p in model.parameters()}
    assert not any(isinstance(m, Chain) for m in model.modules())  # views are not registered
    # train/eval reaches the views, copies keep them tied to the copy's modules
    model.train()
    assert all(s.training for s in model.stages)
    twin = copy.deepcopy(model).eval()
    assert {id(p) for p in twin.stages[0].parameters()} <= {id(p) for p in twin.parameters()}
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model.eval()(x))
        torch.testing.assert_close(pickle.loads(pickle.dumps(model))(x), model(x))
        cl = twin.set_memory_format(torch.channels_last)
        torch.testing.assert_close(cl(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["resnet8", "wrn16_1", "vgg8", pytest.param("mobilenetv2", marks=pytest.mark.slow)]
)
def test_fold_bn_traces_the_zoo(name):
    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    folded = fold_bn(model)
    assert folded is not model
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_statistics_and_channels():
    # CMI's checkpoints see normalised inputs: the model normalises pixel inputs itself, with the
    # CIFAR-10 statistics unless told otherwise (test_models.py runs every name on 28×28 too)
    model = create_model("wrn16_1")
    assert torch.allclose(model.mean.flatten(), torch.tensor(CIFAR10_MEAN))
    model = create_model("wrn16_1", num_classes=100, mean=CIFAR100_MEAN, std=CIFAR100_STD)
    assert torch.allclose(model.std.flatten(), torch.tensor(CIFAR100_STD))
    assert not {"mean", "std"} & set(model.state_dict())
    gray = create_model("resnet8", in_shape=(1, 28, 28), mean=(0.5,), std=(0.25,))
    assert gray.conv1.in_channels == 1
    assert create_model("mobilenetv2").classifier[0].p == 0  # the reference's 0.2 on request
    assert create_model("mobilenetv2", dropout=0.2).classifier[0].p == 0.2
    for name in CIFAR_MODELS:  # no CIFAR-10 defaults for one-channel inputs
        with pytest.raises(ValueError, match="mean and std"):
            create_model(name, in_shape=(1, 28, 28))


def test_shapes_an_arch_cannot_take():
    with pytest.raises(ValueError, match="at most 32×32"):
        create_model("resnet20", in_shape=(3, 64, 64))
    with pytest.raises(ValueError, match="at least 8×8"):
        create_model("vgg8", in_shape=(3, 6, 6))
    with pytest.raises(ValueError, match="at least 8×8"):
        create_model("vgg8", in_shape=(3, 64, 8))
    with pytest.raises(ValueError, match="positive"):
        create_model("wrn16_1", in_shape=(3, 0, 32))
    # 64×64 (Tiny-ImageNet size): VGG applies the reference's extra pool3
    vgg = create_model("vgg8", in_shape=(3, 64, 64)).eval()
    with torch.no_grad():
        assert [b.shape[-1] for b in vgg.forward_features(torch.rand(1, 3, 64, 64)).blocks] == [
            64,
            32,
            16,
            8,
            4,
        ]
