"""How the INT8 search scores a model: an `Evaluator` runs a model's `predict` and returns one score.

A candidate model is judged against the FP32 model on the same data: the search first calls
`bind_reference(fp32_predict)`, then `evaluate(predict)` per candidate. `predict(x) -> list[np.ndarray]`
(every model output, so multi-output detectors work too) is the only way a model is run.

- `ClassificationEvaluator(x, y=None)`: top-1 accuracy when labels exist, and always top-1 agreement
  with the FP32 reference (the usual budget for a user's pretrained net, which has no labels here).
- `FunctionEvaluator(fn, data)`: the user's `fn(predict, data) -> float` in [0, 1], higher is better
  (e.g. a detector's mAP); agreement is not defined there.

`Budget` states what must hold: `max_accuracy_drop` (points of score x 100) and/or `min_top1_agreement`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Predict = Callable[[np.ndarray], list]


@dataclass(frozen=True)
class EvalResult:
    """One model's numbers on an evaluator's data.

    score: accuracy (labels), else top-1 agreement, or the user's function's value; in [0, 1].
    agreement: top-1 agreement with the FP32 reference (None where undefined).
    accuracy: top-1 accuracy (None without labels).
    snr_db: signal-to-noise of the first output against the reference, in dB (None where undefined);
        a finer tie-break than a count of flipped answers.
    """

    score: float
    agreement: float | None = None
    accuracy: float | None = None
    snr_db: float | None = None
    max_abs_diff: float | None = None

    def to_dict(self) -> dict:
        """Rounded JSON-able numbers."""
        return {k: (None if v is None else round(float(v), 5)) for k, v in self.__dict__.items()}


class Evaluator(Protocol):
    """What the search needs from an evaluator."""

    def bind_reference(self, predict: Predict) -> EvalResult:
        """Run the FP32 model once, keep what later comparisons need, return its own result."""

    def evaluate(self, predict: Predict) -> EvalResult:
        """Score a candidate against the bound reference."""

    def split(self, fraction: float) -> tuple[Evaluator, Evaluator]:
        """(search slice, final-check slice): disjoint where the data allow it."""


@dataclass(frozen=True)
class Budget:
    """The accuracy a quantized model must keep; None means that check is off."""

    max_accuracy_drop: float | None = None  # points: (score_fp32 - score) * 100
    min_top1_agreement: float | None = None

    def misses(self, ref: EvalResult, got: EvalResult) -> list[str]:
        """What `got` misses, in words ([] when it meets the budget)."""
        out = []
        drop = (ref.score - got.score) * 100
        if self.max_accuracy_drop is not None and drop > self.max_accuracy_drop + 1e-9:
            out.append(f"drop {drop:.2f} points > max_accuracy_drop {self.max_accuracy_drop}")
        if self.min_top1_agreement is not None and got.agreement is not None \
                and got.agreement < self.min_top1_agreement - 1e-9:
            out.append(f"top-1 agreement {got.agreement:.4f} < min_top1_agreement {self.min_top1_agreement}")
        return out


def _batched(predict: Predict, x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Every output of `predict` over `x`, in batches, concatenated along the batch axis."""
    parts = [predict(x[i:i + batch]) for i in range(0, len(x), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def snr_db(ref: np.ndarray, new: np.ndarray) -> float:
    """10 log10(|ref|^2 / |ref - new|^2), capped at 200 dB for identical outputs."""
    noise = float(np.sum((ref.astype(np.float64) - new) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return 200.0 if noise <= signal * 1e-20 else 10 * np.log10(max(signal, 1e-30) / noise)


class ClassificationEvaluator:
    """Top-1 accuracy (when labels exist) and top-1 agreement with the FP32 model on arrays.

    Args:
        x: inputs, batch first.
        y: integer labels, or None (score = agreement).
        batch: images per `predict` call.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray | None = None, batch: int = 50) -> None:
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.y = None if y is None else np.asarray(y)
        self.batch = batch
        self._ref: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.x)

    def bind_reference(self, predict: Predict) -> EvalResult:
        """See `Evaluator.bind_reference`."""
        self._ref = _batched(predict, self.x, self.batch)[0]
        acc = None if self.y is None else float((self._ref.argmax(1) == self.y).mean())
        return EvalResult(score=1.0 if acc is None else acc, agreement=1.0, accuracy=acc, snr_db=200.0,
                          max_abs_diff=0.0)

    def evaluate(self, predict: Predict) -> EvalResult:
        """See `Evaluator.evaluate`."""
        if self._ref is None:
            raise RuntimeError("bind_reference(fp32_predict) must come first")  # a programming error, not a user's
        out = _batched(predict, self.x, self.batch)[0]
        top1 = out.argmax(1)
        agree = float((top1 == self._ref.argmax(1)).mean())
        acc = None if self.y is None else float((top1 == self.y).mean())
        return EvalResult(score=agree if acc is None else acc, agreement=agree, accuracy=acc,
                          snr_db=snr_db(self._ref, out), max_abs_diff=float(np.abs(self._ref - out).max()))

    def split(self, fraction: float) -> tuple[ClassificationEvaluator, ClassificationEvaluator]:
        """(first `fraction` of the samples, the rest); both keep the labels."""
        k = min(max(1, int(round(len(self.x) * fraction))), len(self.x) - 1) if len(self.x) > 1 else len(self.x)
        ys = (None, None) if self.y is None else (self.y[:k], self.y[k:])
        return (ClassificationEvaluator(self.x[:k], ys[0], self.batch),
                ClassificationEvaluator(self.x[k:] if k < len(self.x) else self.x, ys[1] if k < len(self.x)
                                        else ys[0], self.batch))


class FunctionEvaluator:
    """A user's score: `fn(predict, data) -> float` in [0, 1], higher is better (e.g. mAP).

    Args:
        fn: the scoring function; it calls `predict(x) -> list[np.ndarray]` on its own data.
        data: whatever `fn` reads; when it is an array or a list, `split` slices it.
    """

    def __init__(self, fn: Callable[[Predict, Any], float], data: Any) -> None:
        self.fn, self.data = fn, data

    def _score(self, predict: Predict) -> float:
        from pipeline.errors import UserError

        value = float(self.fn(predict, self.data))
        if not 0.0 <= value <= 1.0 or value != value:
            raise UserError(f"evaluator function returned {value}: it must return a score in [0, 1], higher better")
        return value

    def bind_reference(self, predict: Predict) -> EvalResult:
        """See `Evaluator.bind_reference`."""
        return EvalResult(score=self._score(predict))

    def evaluate(self, predict: Predict) -> EvalResult:
        """See `Evaluator.evaluate`."""
        return EvalResult(score=self._score(predict))

    def split(self, fraction: float) -> tuple[FunctionEvaluator, FunctionEvaluator]:
        """Disjoint halves when `data` is an array or list; otherwise the same data for both."""
        if isinstance(self.data, (np.ndarray, Sequence)) and not isinstance(self.data, str) and len(self.data) > 1:
            k = min(max(1, int(round(len(self.data) * fraction))), len(self.data) - 1)
            return FunctionEvaluator(self.fn, self.data[:k]), FunctionEvaluator(self.fn, self.data[k:])
        return self, self
