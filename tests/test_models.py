import pytest
import torch

from dfkd_viz.errors import UnknownNameError
from dfkd_viz.models import Generator, create_model, list_models

# the CIFAR zoo's big networks (≥ 1 M parameters) are checked in the slow set; their layouts
# and logits against the reference code are tests/test_cifar_zoo.py's subject
BIG = {"resnet18", "resnet34", "resnet56", "resnet110", "resnet8x4", "resnet32x4", "wrn40_2"}
BIG |= {"vgg8", "vgg11", "vgg13", "mobilenetv2"}
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in list_models()]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_classifiers_shapes(name, shape):
    c = shape[0]
    m = create_model(name, num_classes=7, in_shape=shape, mean=(0.5,) * c, std=(0.25,) * c)
    x = torch.rand(5, *shape)
    f = m.forward_features(x)
    assert f.logits.shape == (5, 7)
    assert f.penultimate.shape == (5, m.feature_dim)
    assert all(b.shape[0] == 5 for b in f.blocks)
    assert torch.allclose(m(x), f.logits, atol=1e-5)
    # normalisation is not a learned tensor: weight files hold learned tensors only
    assert not any(k in ("mean", "std") for k in m.state_dict())
    # BN everywhere convs are: the teacher carries BN statistics for DeepInversion-style synthesis
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())


def test_forward_from_matches_forward():
    m = create_model("lenet5x2").eval()
    x = torch.rand(4, 1, 28, 28)
    h = m.stages[0](m.normalize(x))
    assert torch.allclose(m.forward_from(h, 0).logits, m(x), atol=1e-5)


def test_student_is_half_the_teacher_width():
    s, t = create_model("lenet5"), create_model("lenet5x2")
    assert s.feature_dim * 2 == t.feature_dim


def test_unknown_model_and_bad_shape():
    with pytest.raises(UnknownNameError, match="unknown architecture"):
        create_model("vgg99")
    with pytest.raises(ValueError, match="28×28 or 32×32"):
        create_model("lenet5", in_shape=(1, 20, 20))


@pytest.mark.parametrize("out", ["bn", "sigmoid"])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_generator_outputs(out, shape):
    c = shape[0]
    g = Generator(nz=16, ngf=8, img_shape=shape, out=out, mean=(0.3,) * c, std=(0.2,) * c)
    with torch.no_grad():
        x = g(torch.randn(64, 16))
    assert x.shape == (64, *shape)
    if out == "sigmoid":
        assert float(x.min()) >= 0 and float(x.max()) <= 1
    else:  # the BN head gives each batch the data's per-channel mean and spread
        assert torch.allclose(x.mean((0, 2, 3)), torch.full((c,), 0.3), atol=1e-3)
        assert torch.allclose(x.std((0, 2, 3)), torch.full((c,), 0.2), atol=1e-2)


def test_generator_rejects_bad_config():
    with pytest.raises(ValueError):
        Generator(img_shape=(1, 30, 30))
    with pytest.raises(ValueError):
        Generator(out="tanh")


@pytest.mark.parametrize("name", ["lenet5x2", "resnet8s"])
def test_fold_bn_computes_the_same_function_without_bn(name):
    from dfkd_viz.models import fold_bn

    torch.manual_seed(0)
    model = create_model(name)
    for m in model.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    folded = fold_bn(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a copy
    with pytest.raises(ValueError, match="eval-mode"):
        fold_bn(model.train())


def test_fold_bn_returns_an_untraceable_model_unchanged():
    from dfkd_viz.models import fold_bn

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.bn = torch.nn.BatchNorm2d(2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.bn(self.conv(x))
            return self.conv(x)

    m = Branchy().eval()
    assert fold_bn(m) is m
