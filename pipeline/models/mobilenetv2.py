"""A MobileNetV2-family student sized for small images: inverted residuals, depthwise convolutions."""

from __future__ import annotations

import torch.nn as nn

# (expansion t, output channels c, repeats n, first stride s), as in MobileNetV2 but shallower.
DEFAULT_SETTING = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 1, 1))


def conv_bn(cin: int, cout: int, k: int, s: int, groups: int = 1, act: bool = True) -> list:
    """Conv + BatchNorm (+ ReLU6) layers."""
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return layers


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear bottleneck; residual add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = cin * t
        self.use_res = stride == 1 and cin == cout
        layers = [] if t == 1 else conv_bn(cin, hidden, 1, 1)
        layers += conv_bn(hidden, hidden, 3, stride, groups=hidden)  # depthwise
        layers += conv_bn(hidden, cout, 1, 1, act=False)  # linear bottleneck
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_res else out


class MobileNetV2Student(nn.Module):
    """Stem, inverted-residual stages, 1x1 head, global pool, linear classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: float = 1.0, setting=DEFAULT_SETTING):
        super().__init__()
        stem_c = max(8, int(round(16 * width)))
        feats, cin = conv_bn(in_channels, stem_c, 3, 1), stem_c
        for t, c, n, s in setting:
            cout = max(8, int(round(c * width)))
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = max(32, int(round(128 * width)))
        feats += conv_bn(cin, last, 1, 1)
        self.features = nn.Sequential(*feats)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def make_mobilenetv2_student(num_classes: int = 10, in_channels: int = 1, width: float = 1.0, setting=DEFAULT_SETTING):
    """Build the MobileNetV2-style student.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        width: channel multiplier.
        setting: (t, c, n, s) rows of inverted-residual stages.
    Returns:
        A `MobileNetV2Student` mapping (N, in_channels, H, W) to (N, num_classes) logits.
    """
    return MobileNetV2Student(num_classes, in_channels, width, setting)
