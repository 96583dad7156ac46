"""In-memory images and labels as a map-style dataset (the builtin digits, tests, small npz arrays)."""

from __future__ import annotations

from typing import Any


class ArrayDataset:
    """In-memory images and labels (numpy or torch) as a map-style dataset that also serves whole batches.

    `dataset[i]` gives one `(x, y, has_label)`; `dataset[[i, j, ...]]` gives a stacked batch in one
    indexing operation, which `make_loader` uses
    (`batched = True`: per-sample collation costs more than a small model's step).
    """

    batched = True  # `make_loader` fetches whole batches with one `dataset[indices]`

    def __init__(self, x: Any, y: Any = None, has_label: Any = None):
        """Args:
            x: images (N, C, H, W), float32 numpy array or tensor.
            y: labels (N,) integer, or None when there are none (all unlabeled).
            has_label: (N,) bool: which labels may be used; None = all of them (labels < 0 never count).
        Raises:
            ValueError: lengths differ.
        """
        import torch

        self.x = torch.as_tensor(x)
        n = len(self.x)
        self.y = torch.full((n,), -1, dtype=torch.int64) if y is None else torch.as_tensor(y).long()
        has = torch.ones(n, dtype=torch.bool) if has_label is None else torch.as_tensor(has_label).bool()
        for name, v in (("y", self.y), ("has_label", has)):
            if len(v) != n:
                raise ValueError(f"ArrayDataset: {name} has {len(v)} entries, x has {n} images; they must match")
        self.has_label = has & (self.y >= 0)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: Any) -> tuple[Any, Any, Any]:
        import torch

        if not isinstance(index, int):
            index = torch.as_tensor(index, dtype=torch.int64)
        return self.x[index], self.y[index], self.has_label[index]
