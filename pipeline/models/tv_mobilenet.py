"""MobileNetV2 for 224x224 images, laid out so torchvision checkpoints load without torchvision.

The module tree follows torchvision's `mobilenet_v2`: `features.0` is a Sequential(conv, bn, ReLU6)
stem, `features.1`..`features.17` are inverted residuals whose layers sit in `.conv`
(`conv.0` expand Sequential when t != 1, then the depthwise Sequential, the 1x1 projection conv and
its BatchNorm), `features.18` is the 1x1 head, and `classifier` is Sequential(Dropout, Linear), so
keys read `features.1.conv.0.0.weight` ... `classifier.1.weight` and a torchvision state_dict loads
with `load_state_dict(strict=True)`. Channel counts are rounded to multiples of 8 as torchvision does.
"""

from __future__ import annotations

import torch
import torch.nn as nn

# (expansion t, output channels c, repeats n, first stride s): the MobileNetV2 paper's table 2.
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM, HEAD = 32, 1280


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never more than 10 % below `v`.

    This is the rounding of the MobileNet reference implementation; it decides every channel count
    under a width multiplier, so it must match for checkpoints to fit.
    """
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


class ConvBNReLU6(nn.Sequential):
    """Conv (no bias) + BatchNorm + ReLU6; children named 0, 1, 2 as in torchvision."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t == 1), 3x3 depthwise, 1x1 linear projection; residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, t: int):
        super().__init__()
        hidden = int(round(cin * t))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = [] if t == 1 else [ConvBNReLU6(cin, hidden, 1)]
        layers += [ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Stem (stride 2), 17 inverted residuals, 1x1 head, global average pool, dropout + linear."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        cin = make_divisible(STEM * width_mult)
        self.last_channel = make_divisible(HEAD * max(1.0, width_mult))  # the head never shrinks below 1280
        feats: list[nn.Module] = [ConvBNReLU6(in_channels, cin, 3, 2)]
        for t, c, n, s in SETTING:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        feats.append(ConvBNReLU6(cin, self.last_channel, 1))
        self.features = nn.Sequential(*feats)
        self.pool = nn.AdaptiveAvgPool2d((1, 1))  # no parameters: adds no state_dict key
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _init(model: nn.Module) -> None:
    # The reference initialisation: He (fan_out) convolutions, unit BatchNorm, small normal classifier.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 dropout: float = 0.2) -> MobileNetV2:
    """Build MobileNetV2 with torchvision's state_dict layout (3,504,872 parameters at 1000 classes, width 1).

    Args:
        num_classes: outputs of the classifier (1000 for ImageNet checkpoints).
        in_channels: image channels (3 for torchvision checkpoints; otherwise only
            `features.0.0.weight` differs from a torchvision checkpoint).
        width_mult: channel multiplier (torchvision's `width_mult`), > 0.
        dropout: dropout probability before the classifier, 0 <= p < 1.
    Returns:
        A `MobileNetV2` mapping (N, in_channels, H, W) to (N, num_classes) logits.
    Raises:
        ValueError: a size or multiplier out of range.
    """
    for name, v in (("num_classes", num_classes), ("in_channels", in_channels)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"mobilenet_v2: {name} = {v!r}: must be an integer >= 1")
    if not width_mult > 0:
        raise ValueError(f"mobilenet_v2: width_mult = {width_mult!r}: must be > 0")
    if not 0 <= dropout < 1:
        raise ValueError(f"mobilenet_v2: dropout = {dropout!r}: must be in [0, 1)")
    return MobileNetV2(num_classes, in_channels, float(width_mult), dropout)
