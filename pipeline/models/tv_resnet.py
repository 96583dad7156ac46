"""ResNet-18/34/50/101 for 224x224 images, laid out so torchvision checkpoints load without torchvision.

The module tree (and therefore every state_dict key and shape) follows torchvision's `resnet*`:
`conv1`, `bn1`, `layer1`..`layer4` of blocks with `conv1/bn1/conv2/bn2[/conv3/bn3]` and a
`downsample` Sequential(conv, bn) where the shape changes, then `fc`. Bottleneck blocks downsample
in their 3x3 convolution ("ResNet v1.5"), as torchvision's do, so pretrained weights behave as trained.
A user's `torchvision.models.resnet50()` state_dict therefore loads with `load_state_dict(strict=True)`.
With `in_channels != 3` only `conv1.weight` differs in shape (the rest of a checkpoint still fits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

# Blocks per stage, from the ResNet paper (and torchvision's constructors).
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual add (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)  # out-of-place add: safe for tracing, export and pruning


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, residual add (ResNet-50/101)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """7x7/2 stem and 3x3/2 max-pool, four stages (64, 128, 256, 512 planes), global pool, `fc`."""

    def __init__(self, block: Block, blocks: Sequence[int], num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), blocks, strict=True)):
            stage, cin = _stage(block, cin, planes, n, 1 if i == 0 else 2)
            setattr(self, f"layer{i + 1}", stage)  # names layer1..layer4, as torchvision's keys
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stage(block: Block, cin: int, planes: int, n: int, stride: int) -> tuple[nn.Sequential, int]:
    cout = planes * block.expansion
    down = None
    if stride != 1 or cin != cout:
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    layers = [block(cin, planes, stride, down)] + [block(cout, planes) for _ in range(n - 1)]
    return nn.Sequential(*layers), cout


def _init(model: nn.Module) -> None:
    # He init for convolutions, unit BatchNorm: the usual recipe when training from scratch.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def resnet(depth: int, num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """Build a torchvision-layout ResNet of the given depth.

    Args:
        depth: 18, 34, 50 or 101.
        num_classes: outputs of `fc` (1000 for ImageNet checkpoints).
        in_channels: image channels (3 for torchvision checkpoints).
    Returns:
        A `ResNet` mapping (N, in_channels, H, W) to (N, num_classes) logits.
    Raises:
        ValueError: an unsupported depth or a non-positive size.
    """
    if depth not in DEPTHS:
        raise ValueError(f"resnet depth = {depth!r}: allowed: {', '.join(map(str, DEPTHS))}")
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"resnet{depth}: {name} = {v!r}: must be an integer >= 1")
    kind, blocks = DEPTHS[depth]
    return ResNet(BasicBlock if kind == "basic" else Bottleneck, blocks, num_classes, in_channels)


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-18 (11,689,512 parameters at 1000 classes), torchvision's state_dict layout."""
    return resnet(18, num_classes, in_channels)


def resnet34(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-34 (21,797,672 parameters at 1000 classes), torchvision's state_dict layout."""
    return resnet(34, num_classes, in_channels)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-50 (25,557,032 parameters at 1000 classes), torchvision's state_dict layout."""
    return resnet(50, num_classes, in_channels)


def resnet101(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """ResNet-101 (44,549,160 parameters at 1000 classes), torchvision's state_dict layout."""
    return resnet(101, num_classes, in_channels)
