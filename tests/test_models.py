import pytest
import torch

from models import MODELS, build_model
from models.resnet import ZeroPadShortcut

TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "mobilenet_v2": 3_504_872,
}
DEPTHS = {
    "resnet18": ("basic", [2, 2, 2, 2]),
    "resnet34": ("basic", [3, 4, 6, 3]),
    "resnet50": ("bottleneck", [3, 4, 6, 3]),
    "resnet101": ("bottleneck", [3, 4, 23, 3]),
    "resnet152": ("bottleneck", [3, 8, 36, 3]),
}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def _bn(name, c):
    return {
        f"{name}.weight": (c,),
        f"{name}.bias": (c,),
        f"{name}.running_mean": (c,),
        f"{name}.running_var": (c,),
        f"{name}.num_batches_tracked": (),
    }


def torchvision_resnet_keys(block: str, layers: list[int], num_classes: int = 1000) -> dict:
    """torchvision's ResNet state_dict, written out from its source: keys and shapes."""
    exp = 1 if block == "basic" else 4
    keys = {"conv1.weight": (64, 3, 7, 7), **_bn("bn1", 64)}
    inplanes = 64
    for li, (planes, n) in enumerate(zip([64, 128, 256, 512], layers, strict=True)):
        for b in range(n):
            p = f"layer{li + 1}.{b}"
            stride = 2 if (li > 0 and b == 0) else 1
            if block == "basic":
                keys |= {
                    f"{p}.conv1.weight": (planes, inplanes, 3, 3),
                    **_bn(f"{p}.bn1", planes),
                    f"{p}.conv2.weight": (planes, planes, 3, 3),
                    **_bn(f"{p}.bn2", planes),
                }
            else:
                keys |= {
                    f"{p}.conv1.weight": (planes, inplanes, 1, 1),
                    **_bn(f"{p}.bn1", planes),
                    f"{p}.conv2.weight": (planes, planes, 3, 3),
                    **_bn(f"{p}.bn2", planes),
                    f"{p}.conv3.weight": (planes * 4, planes, 1, 1),
                    **_bn(f"{p}.bn3", planes * 4),
                }
            if b == 0 and (stride != 1 or inplanes != planes * exp):
                keys |= {
                    f"{p}.downsample.0.weight": (planes * exp, inplanes, 1, 1),
                    **_bn(f"{p}.downsample.1", planes * exp),
                }
            inplanes = planes * exp
    keys |= {"fc.weight": (num_classes, 512 * exp), "fc.bias": (num_classes,)}
    return keys


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_parameter_counts_equal_torchvision(name):
    assert n_params(build_model(name)) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name", list(DEPTHS))
def test_resnet_state_dict_is_torchvision_format(name):
    model = build_model(name)
    expected = torchvision_resnet_keys(*DEPTHS[name])
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected
    # a torchvision-format weights file loads strictly
    weights = {k: torch.randn(s) if s else torch.tensor(0) for k, s in expected.items()}
    model.load_state_dict(weights, strict=True)
    assert torch.equal(model.fc.weight, weights["fc.weight"])


def test_mobilenet_v2_torchvision_keys():
    sd = {k: tuple(v.shape) for k, v in build_model("mobilenet_v2").state_dict().items()}
    assert sd["features.0.0.weight"] == (32, 3, 3, 3)
    assert sd["features.1.conv.0.0.weight"] == (32, 1, 3, 3)  # t=1: depthwise first, no expansion
    assert sd["features.1.conv.1.weight"] == (16, 32, 1, 1)  # linear projection
    assert sd["features.2.conv.0.0.weight"] == (96, 16, 1, 1)  # t=6 expansion
    assert sd["features.2.conv.1.0.weight"] == (96, 1, 3, 3)
    assert sd["features.17.conv.2.weight"] == (320, 960, 1, 1)
    assert sd["features.18.0.weight"] == (1280, 320, 1, 1)
    assert sd["classifier.1.weight"] == (1000, 1280)
    assert len([k for k in sd if k.startswith("features.") and k.endswith(".conv.0.0.weight")]) == 17


def test_mobilenet_v2_residual_only_when_shapes_match():
    blocks = [m for m in build_model("mobilenet_v2").features if hasattr(m, "use_res_connect")]
    assert sum(b.use_res_connect for b in blocks) == 10  # 17 blocks less the 7 rows' first blocks


def test_shortcut_a_has_no_parameters():
    for name in ("resnet18", "resnet50"):
        model = build_model(name, shortcut="A")
        shortcuts = [m for m in model.modules() if isinstance(m, ZeroPadShortcut)]
        assert len(shortcuts) == (3 if name == "resnet18" else 4)
        assert all(n_params(s) == 0 for s in shortcuts)
        assert not any("downsample" in k for k, _ in model.named_parameters())
    b, a = build_model("resnet18"), build_model("resnet18", shortcut="A")
    projection = sum(p.numel() for k, p in b.named_parameters() if "downsample" in k)
    assert n_params(b) - n_params(a) == projection == (64 * 128 + 128 * 256 + 256 * 512) + 2 * (128 + 256 + 512)


def test_zero_pad_shortcut_subsamples_and_pads():
    x = torch.randn(2, 4, 8, 8)
    y = ZeroPadShortcut(4, 10, 2)(x)
    assert y.shape == (2, 10, 4, 4)
    assert torch.equal(y[:, :4], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, 4:]) == 0


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("stem", ["imagenet", "small"])
def test_every_model_runs_small_grayscale(name, stem):
    options = {"num_classes": 10, "in_channels": 1, "width": 0.25, "stem": stem}
    model = build_model(name, **options).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_small_stem_keeps_resolution():
    model = build_model("resnet18", stem="small", in_channels=1, num_classes=10).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 1, 28, 28)).shape == (1, 512, 4, 4)


def test_width_multiplier_scales_channels():
    model = build_model("resnet50", width=0.5, num_classes=7)
    assert model.conv1.out_channels == 32 and model.fc.in_features == 1024 and model.fc.out_features == 7


def test_zero_init_residual():
    model = build_model("resnet18", zero_init_residual=True)
    assert all(float(b.bn2.weight.detach().abs().sum()) == 0 for layer in (model.layer1, model.layer4) for b in layer)


def test_bad_options_name_the_value():
    with pytest.raises(ValueError, match="shortcut"):
        build_model("resnet18", shortcut="C")
    with pytest.raises(ValueError, match="resnet19"):
        build_model("resnet19")
