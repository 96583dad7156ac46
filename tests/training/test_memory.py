"""Bounded memory: one batch at a time; nothing per-sample accumulates over an epoch."""

from __future__ import annotations

import os
import tracemalloc

import pytest
import torch
import torch.nn as nn

from pipeline.training import fit

# 64 x 1000 float32 logits = 256 kB per batch: keeping each model's logits would add 41 MB over the
# 160 batches measured, against the 16 MB asserted.
CLASSES = 1000


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Stream:
    """`n` synthetic batches made on the fly (196 kB of images each); measures memory as they are drawn."""

    def __init__(self, n: int, marks: tuple[int, ...]):
        self.n, self.marks, self.rss, self.py = n, marks, {}, {}

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in range(self.n):
            if i in self.marks:
                self.rss[i], self.py[i] = _rss(), tracemalloc.get_traced_memory()[0]
            yield torch.randn(64, 3, 16, 16, generator=g), torch.randint(0, CLASSES, (64,), generator=g)


def _net(width: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, CLASSES))


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads RSS from /proc (Linux)")
def test_memory_does_not_grow_with_the_number_of_batches():
    torch.manual_seed(0)
    student, teacher = _net(8), _net(16)
    stream = Stream(200, marks=(40, 199))
    tracemalloc.start()
    try:
        stats = fit(student, stream, epochs=1, steps_per_epoch=200, lr=1e-3, teacher=teacher,
                    features=[("0", "0", 1.0)], device="cpu", quiet=True)
    finally:
        tracemalloc.stop()
    grew_rss = stream.rss[199] - stream.rss[40]
    grew_py = stream.py[199] - stream.py[40]
    print(f"160 batches (31 MB of images, 41 MB of logits per model): RSS +{grew_rss / 1e6:.2f} MB, "
          f"Python heap +{grew_py / 1e3:.1f} kB")
    assert stats["history"][0]["images_per_s"] > 0
    assert grew_rss < 16e6, grew_rss
    assert grew_py < 64e3, grew_py
