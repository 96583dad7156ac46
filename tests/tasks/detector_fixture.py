"""A small detector written for the tests: generated images of shapes, a conv backbone with SiLU, two heads.

The model is an anchor-free grid detector (one prediction per stride-8 cell, as in YOLO/FCOS): the box
head's raw outputs are decoded in the graph (sigmoid offsets + the cell grid, times the stride; exp of
the size), the score head ends in a per-class sigmoid. The backbone uses SiLU (x * sigmoid(x)), so a
rule that kept every Sigmoid in float would also hit the backbone: head-scoped exclusions must not.

`map50(predict, data)` is a user evaluation function as `eval: "module:function"` names one: mAP@0.5
over the classes, on held-out images whose boxes come from the data itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLASSES = ("square", "disc", "triangle")
STRIDE = 8
SIZE = 48  # image side (px); the detector accepts other sizes that are multiples of the stride


def make_images(n: int, seed: int, size: int = SIZE) -> dict[str, Any]:
    """`n` RGB images (NCHW float32 in [0, 1]) with 1-3 shapes each and their boxes.

    Args:
        n: number of images.
        seed: RNG seed (different seeds: disjoint data sets).
        size: image side in pixels.
    Returns:
        {"x": (n, 3, size, size) float32, "boxes": list of (k, 4) xyxy px arrays, "labels": list of (k,) int}.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    x = np.empty((n, 3, size, size), np.float32)
    all_boxes, all_labels = [], []
    for i in range(n):
        img = rng.uniform(0.0, 0.35, (3, 1, 1)) + rng.normal(0, 0.06, (3, size, size))
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, 4))):
            for _try in range(20):  # rejection: objects apart, so each stride cell holds at most one centre
                s = float(rng.uniform(9, 20))
                cx, cy = rng.uniform(s / 2, size - s / 2, 2)
                box = np.array([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2])
                if all(_iou(box, b) == 0 and abs(cx - (b[0] + b[2]) / 2) + abs(cy - (b[1] + b[3]) / 2) > 10
                       for b in boxes):
                    break
            else:
                continue
            k = int(rng.integers(len(CLASSES)))
            dx, dy = xx - cx, yy - cy
            mask = [np.maximum(abs(dx), abs(dy)) <= s / 2,  # square
                    dx**2 + dy**2 <= (s / 2) ** 2,  # disc
                    (dy >= -s / 2) & (dy <= s / 2) & (abs(dx) <= (dy + s / 2) / 2)][k]  # triangle, apex up
            color = rng.uniform(0.55, 1.0, 3)
            img[:, mask] = color[:, None] + rng.normal(0, 0.03, (3, int(mask.sum())))
            boxes.append(box)
            labels.append(k)
        x[i] = np.clip(img, 0, 1)
        all_boxes.append(np.array(boxes, np.float32).reshape(-1, 4))
        all_labels.append(np.array(labels, np.int64))
    return {"x": x, "boxes": all_boxes, "labels": all_labels}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def make_detector(num_classes: int = len(CLASSES), width: int = 24, concat: bool = False) -> Any:
    """The detector (untrained): backbone (3 stride-2 convs, BN, SiLU) -> box head and score head.

    Args:
        num_classes: score channels.
        width: backbone channels.
        concat: return one (N, A, 4 + C) "detections" tensor, boxes and scores concatenated (the layout of
            YOLO-style exports) instead of two outputs; the weights are the same either way.
    Returns:
        nn.Module: x (N, 3, H, W) -> (boxes (N, A, 4) xyxy px, scores (N, A, num_classes) in [0, 1]),
        A = (H / 8) * (W / 8); `output_names` = ("boxes", "scores").
    """
    import torch
    import torch.nn as nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Detector(nn.Module):
        output_names = ("detections",) if concat else ("boxes", "scores")

        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(block(3, width, 2), block(width, width, 1), block(width, 2 * width, 2),
                                          block(2 * width, 2 * width, 2), block(2 * width, 2 * width, 1))
            self.box_head = nn.Sequential(block(2 * width, width, 1), nn.Conv2d(width, 4, 1))
            self.cls_head = nn.Sequential(block(2 * width, width, 1), nn.Conv2d(width, num_classes, 1))

        def forward(self, x):
            f = self.backbone(x)
            raw = self.box_head(f)  # (N, 4, h, w): tx, ty, tw, th
            n, _, h, w = raw.shape
            # the cell grid from the feature map's own shape, so other input sizes decode correctly
            gy = torch.arange(h, dtype=x.dtype).view(1, h, 1).expand(1, h, w).reshape(1, h * w)
            gx = torch.arange(w, dtype=x.dtype).view(1, 1, w).expand(1, h, w).reshape(1, h * w)
            raw = raw.flatten(2)  # (N, 4, A)
            cx = (torch.sigmoid(raw[:, 0]) + gx) * STRIDE
            cy = (torch.sigmoid(raw[:, 1]) + gy) * STRIDE
            bw = torch.exp(raw[:, 2].clamp(max=4.0)) * STRIDE
            bh = torch.exp(raw[:, 3].clamp(max=4.0)) * STRIDE
            boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], dim=2)  # (N, A, 4)
            scores = torch.sigmoid(self.cls_head(f)).flatten(2).transpose(1, 2)  # (N, A, C)
            return torch.cat([boxes, scores], dim=2) if concat else (boxes, scores)

    return Detector()


def _targets(data: dict[str, Any], grid: int, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cell training targets: class one-hot (N, A, C), box (N, A, 4) and a positive mask (N, A)."""
    n = len(data["x"])
    cls = np.zeros((n, grid * grid, num_classes), np.float32)
    box = np.zeros((n, grid * grid, 4), np.float32)
    pos = np.zeros((n, grid * grid), bool)
    for i, (bs, ls) in enumerate(zip(data["boxes"], data["labels"], strict=True)):
        for b, k in zip(bs, ls, strict=True):
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            a = int(cy // STRIDE) * grid + int(cx // STRIDE)
            cls[i, a, k], box[i, a], pos[i, a] = 1.0, b, True
    return cls, box, pos


def train_detector(data: dict[str, Any], epochs: int = 30, seed: int = 0) -> Any:
    """Train the detector on `make_images` data: focal-weighted BCE on scores, L1 on decoded boxes.

    Args:
        data: the training images and boxes.
        epochs: passes over the data (batch 32, AdamW).
        seed: torch seed.
    Returns:
        The trained model, in eval mode.
    """
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = make_detector()
    grid = data["x"].shape[-1] // STRIDE
    cls_t, box_t, pos_t = (torch.from_numpy(a) for a in _targets(data, grid, len(CLASSES)))
    x_all = torch.from_numpy(data["x"])
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=1e-4)
    steps = epochs * -(-len(x_all) // 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x_all), generator=gen).split(32):
            boxes, scores = model(x_all[idx])
            p, c = pos_t[idx], cls_t[idx]
            # focal weighting: most cells are background, the few object cells must not drown
            bce = F.binary_cross_entropy(scores.clamp(1e-6, 1 - 1e-6), c, reduction="none")
            pt = torch.where(c > 0, scores, 1 - scores)
            loss_cls = (bce * (1 - pt) ** 2).sum() / max(1, int(p.sum()))
            loss_box = (F.l1_loss(boxes[p], box_t[idx][p], reduction="sum") / max(1, int(p.sum()))) / STRIDE
            loss = loss_cls + loss_box
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.5) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best score first."""
    order = list(np.argsort(-scores))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if _iou(boxes[i], boxes[j]) < iou]
    return keep


class ShapesDataset:
    """The images as a map-style dataset (what a `data: {factory: ...}` returns): item i is (x, label of its
    first object); the boxes stay on the dataset, where the user's eval function reads them."""

    def __init__(self, n: int, seed: int):
        self.data = make_images(n, seed)
        self.targets = [int(lb[0]) for lb in self.data["labels"]]
        self.classes = list(CLASSES)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        return torch.from_numpy(self.data["x"][i]), self.targets[i]


def shapes_data(train: int = 600, val: int = 64, test: int = 200) -> dict[str, ShapesDataset]:
    """A data factory (`data: {factory: "detector_fixture:shapes_data"}`): disjoint train/val/test images."""
    return {"train": ShapesDataset(train, 1), "val": ShapesDataset(val, 3), "test": ShapesDataset(test, 2)}


def map50(predict: Any, data: Any) -> float:
    """mAP@0.5 (VOC all-point AP, mean over classes) of `predict` on `data`: the user's eval function.

    Args:
        predict: x (N, 3, H, W) float32 -> [boxes (N, A, 4), scores (N, A, C)], or [detections (N, A, 4 + C)].
        data: {"x", "boxes", "labels"} as `make_images` returns (the held-out images), or a `ShapesDataset`.
    Returns:
        mAP@0.5 in [0, 1].
    """
    data = getattr(data, "data", data)
    outs = predict(data["x"])
    boxes_all, scores_all = (outs[0][..., :4], outs[0][..., 4:]) if len(outs) == 1 else outs[:2]
    aps = []
    for k in range(len(CLASSES)):
        dets, n_gt = [], 0  # (score, image, box)
        for i in range(len(data["x"])):
            s, b = scores_all[i, :, k], boxes_all[i]
            sel = np.flatnonzero(s > 0.05)
            for j in nms(b[sel], s[sel]):
                dets.append((float(s[sel[j]]), i, b[sel[j]]))
            n_gt += int((data["labels"][i] == k).sum())
        if n_gt == 0:
            continue
        dets.sort(key=lambda d: -d[0])
        used = [np.zeros(len(lb), bool) for lb in data["labels"]]
        tp = np.zeros(len(dets))
        for r, (_, i, b) in enumerate(dets):
            pairs = zip(data["boxes"][i], data["labels"][i], strict=True)
            gts = [(g, _iou(b, gb)) for g, (gb, gl) in enumerate(pairs) if gl == k and not used[i][g]]
            if gts:
                g, best = max(gts, key=lambda t: t[1])
                if best >= 0.5:
                    used[i][g], tp[r] = True, 1
        cum_tp = np.cumsum(tp)
        recall = cum_tp / n_gt
        precision = cum_tp / np.arange(1, len(dets) + 1)
        # all-point interpolation: precision made monotone, integrated over recall
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        for j in range(len(mpre) - 2, -1, -1):
            mpre[j] = max(mpre[j], mpre[j + 1])
        steps = np.flatnonzero(mrec[1:] != mrec[:-1])
        aps.append(float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1])))
    return float(np.mean(aps)) if aps else 0.0
