"""MobileNetV2 (Sandler et al., 2018), the mobile baseline. Table 2 of the paper is the `t, c, n, s` list below.

With default options the state_dict keys and shapes are torchvision's (3,504,872 parameters at width 1.0).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

# t: expansion factor, c: output channels, n: repeats, s: stride of the first repeat
INVERTED_RESIDUAL_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never going down by more than 10% (as the reference code does)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    def __init__(self, inp: int, oup: int, kernel_size: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(oup),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6), 3x3 depthwise (ReLU6), linear 1x1 projection; residual when stride 1 and shapes match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        width: float = 1.0,
        stem: Literal["imagenet", "small"] = "imagenet",
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if stem not in ("imagenet", "small"):
            raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}")
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        # "small" keeps full resolution for 28-32 px inputs: stride 1 in the first conv and the first s=2 row.
        first_stride = 2 if stem == "imagenet" else 1
        input_channel = make_divisible(32 * width)
        self.last_channel = make_divisible(1280 * max(1.0, width))
        features: list[nn.Module] = [ConvBNReLU6(in_channels, input_channel, stride=first_stride)]
        self.row_ends: list[int] = [0]  # index in `features` closing each row of the table (for stages())
        for row, (t, c, n, s) in enumerate(INVERTED_RESIDUAL_SETTING):
            output_channel = make_divisible(c * width)
            if stem == "small" and row == 1:
                s = 1
            for i in range(n):
                features.append(InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t))
                input_channel = output_channel
            self.row_ends.append(len(features) - 1)
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.row_ends.append(len(features) - 1)
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward_head(self, x: Tensor) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The rows of the paper's Table 2, as modules applied in order."""
        rows: list[tuple[str, nn.Module]] = [("conv2d", self.features[0])]
        for row in range(len(INVERTED_RESIDUAL_SETTING)):
            start, end = self.row_ends[row] + 1, self.row_ends[row + 1] + 1
            rows.append((f"bottleneck{row + 1}", self.features[start:end]))
        rows.append(("conv2d 1x1", self.features[-1]))
        rows.append(("pool+fc", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), self.classifier)))
        return rows


def mobilenet_v2(**options) -> MobileNetV2:
    return MobileNetV2(**options)
