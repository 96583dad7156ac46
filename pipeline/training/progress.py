"""Per-epoch progress: a rich progress bar (images/s, ETA) on a terminal, one log line per epoch always."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


class EpochProgress:
    """A transient progress bar for one epoch at a time, drawn on stderr.

    Drawn only when `enabled` (the caller passes: not quiet, rank 0) and stderr is a terminal, so logs
    and CI output get the per-epoch log lines and no control characters. rich is imported only then.
    """

    def __init__(self, tag: str, epochs: int, steps: int | None, enabled: bool):
        """Args:
            tag: label of the run ("distill").
            epochs: the number of epochs planned.
            steps: batches per epoch (None when unknown: the bar then shows no ETA).
            enabled: whether a bar may be drawn at all.
        """
        self.tag, self.epochs, self.steps = tag, epochs, steps
        self._bar: Any = None
        self._task: Any = None
        self._images, self._t0 = 0, 0.0
        if enabled and sys.stderr.isatty():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            except ImportError:  # rich is optional outside the package's own install
                return
            self._bar = Progress(
                TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[ips]} img/s"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )

    def start(self, epoch: int) -> None:
        """Begin epoch `epoch` (1-based)."""
        self._images, self._t0 = 0, time.perf_counter()
        if self._bar is not None:
            if self._task is None:
                self._bar.start()
                self._task = self._bar.add_task("", total=self.steps, ips="-")
            self._bar.reset(self._task, total=self.steps, description=f"[{self.tag}] epoch {epoch}/{self.epochs}",
                            ips="-")

    def advance(self, images: int) -> None:
        """One batch of `images` done (on this rank)."""
        self._images += images
        if self._bar is not None:
            rate = self._images / max(1e-9, time.perf_counter() - self._t0)
            self._bar.update(self._task, advance=1, ips=f"{rate:,.0f}")

    def close(self) -> None:
        """Remove the bar (idempotent)."""
        if self._bar is not None and self._task is not None:
            self._bar.stop()
        self._bar = None


def epoch_line(tag: str, epoch: int, epochs: int, loss: float, val_acc: float | None, ips: float,
               feature_loss: float | None = None) -> str:
    """`[tag] epoch k/N loss … val_acc …% img/s …`: the line logged at the end of every epoch."""
    parts = [f"[{tag}] epoch {epoch}/{epochs} loss {loss:.4f}"]
    if feature_loss is not None:
        parts.append(f"hint {feature_loss:.4f}")
    if val_acc is not None:
        parts.append(f"val_acc {val_acc * 100:.1f}%")
    parts.append(f"img/s {ips:,.0f}")
    return " ".join(parts)


def no_log(_msg: str) -> None:
    """The default log callback: discard."""


Log = Callable[[str], None]
