"""Model definitions: pure torch, no I/O. `build_model(name, **options)` is the registry."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .mobilenet_v2 import InvertedResidual, MobileNetV2, mobilenet_v2
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101, resnet152

MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "mobilenet_v2": mobilenet_v2,
}


def build_model(name: str, **options) -> nn.Module:
    """Build a registered model, e.g. build_model("resnet18", num_classes=10, in_channels=1, stem="small")."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](**options)


__all__ = [
    "MODELS",
    "build_model",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "InvertedResidual",
    "MobileNetV2",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "mobilenet_v2",
]
