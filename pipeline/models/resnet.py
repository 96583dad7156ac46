"""A ResNet-family teacher sized for small images (CIFAR-style: 3x3 stem, no max-pool)."""

from __future__ import annotations

import torch.nn as nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual add (1x1 projection when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetTeacher(nn.Module):
    """Stem, three stages of BasicBlocks (stride 2 between stages), global pool, linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, blocks=(2, 2, 2)):
        super().__init__()
        chans = [max(8, int(round(c * width))) for c in (64, 128, 256)]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, chans[0], 3, 1, 1, bias=False), nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)
        )
        layers, cin = [], chans[0]
        for i, (cout, n) in enumerate(zip(chans, blocks, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


def make_resnet_teacher(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, blocks=(2, 2, 2)):
    """Build the ResNet teacher.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        width: channel multiplier (1.0 = 64/128/256 channels).
        blocks: BasicBlocks per stage.
    Returns:
        A `ResNetTeacher` mapping (N, in_channels, H, W) to (N, num_classes) logits.
    """
    return ResNetTeacher(num_classes, in_channels, width, tuple(blocks))
