"""ResNet (He et al., 2015, "Deep Residual Learning for Image Recognition"), read against the paper's Table 1.

With default options the modules, state_dict keys and shapes are torchvision's, so a torchvision weights file loads
with strict=True. Like torchvision (ResNet V1.5), Bottleneck strides in its 3x3 conv, not in the first 1x1.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Shortcut = Literal["A", "B"]
Stem = Literal["imagenet", "small"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A of the paper: parameter-free, stride-s subsampling and zero-padded extra channels.

    Computed as a 1x1 convolution, stride s, with a fixed 0/1 selection matrix (a non-persistent buffer, so no
    parameters and no state_dict keys): exactly x[:, :, ::s, ::s] followed by zero channels, in the one op every
    converter handles. (F.pad exports a Pad that onnx2tf applies to the wrong axis after NCHW -> NHWC; x * 0 gets
    constant-folded by onnx2tf into a bare 0.0 it cannot build.)
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        select = torch.zeros(out_planes, in_planes, 1, 1)
        select[torch.arange(in_planes), torch.arange(in_planes)] = 1.0
        self.register_buffer("select", select, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.select, stride=self.stride)


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        # One ReLU module per use (no parameters: torchvision state_dicts still load strictly). A reused module makes
        # PT2E quantizers leave the residual add in float.
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand by 4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu1, self.relu2, self.relu3 = (nn.ReLU(inplace=True) for _ in range(3))  # one per use, as above
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    def __init__(
        self,
        block: Block,
        layers: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        width: float = 1.0,
        shortcut: Shortcut = "B",
        stem: Stem = "imagenet",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if stem not in ("imagenet", "small"):
            raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.shortcut = shortcut
        self.stem = stem
        planes = [max(1, round(p * width)) for p in (64, 128, 256, 512)]
        self.inplanes = planes[0]
        if stem == "imagenet":  # conv1: 7x7, 64, stride 2; then 3x3 max pool, stride 2
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, stride=2, padding=1)
        else:  # for 28-32 px inputs (the paper's CIFAR nets): 3x3 conv, stride 1, no pool
            self.conv1 = nn.Conv2d(in_channels, self.inplanes, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, planes[0], layers[0])  # conv2_x
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)  # conv3_x
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)  # conv4_x
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)  # conv5_x
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[3] * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # each residual branch starts as identity (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        out_planes = planes * block.expansion
        if stride != 1 or self.inplanes != out_planes:  # shape changes: project (B) or zero-pad (A)
            if self.shortcut == "B":
                downsample = nn.Sequential(conv1x1(self.inplanes, out_planes, stride), nn.BatchNorm2d(out_planes))
            else:
                downsample = ZeroPadShortcut(self.inplanes, out_planes, stride)
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out_planes
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_head(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The rows of the paper's Table 1, as modules applied in order."""
        rows: list[tuple[str, nn.Module]] = [("conv1", nn.Sequential(self.conv1, self.bn1, self.relu))]
        if not isinstance(self.maxpool, nn.Identity):
            rows.append(("maxpool", self.maxpool))
        rows += [(f"conv{i + 2}_x", getattr(self, f"layer{i + 1}")) for i in range(4)]
        rows.append(("pool+fc", nn.Sequential(self.avgpool, nn.Flatten(1), self.fc)))
        return rows


def _resnet(block: Block, layers: list[int], **options) -> ResNet:
    return ResNet(block, layers, **options)


def resnet18(**options) -> ResNet:
    return _resnet(BasicBlock, [2, 2, 2, 2], **options)


def resnet34(**options) -> ResNet:
    return _resnet(BasicBlock, [3, 4, 6, 3], **options)


def resnet50(**options) -> ResNet:
    return _resnet(Bottleneck, [3, 4, 6, 3], **options)


def resnet101(**options) -> ResNet:
    return _resnet(Bottleneck, [3, 4, 23, 3], **options)


def resnet152(**options) -> ResNet:
    return _resnet(Bottleneck, [3, 8, 36, 3], **options)
