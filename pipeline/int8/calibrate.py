"""Activation statistics collected ONCE, then turned into ranges for every calibration candidate.

ONNX Runtime's calibrators (`create_calibrator` -> `collect_data` -> `compute_data`) each run the
calibration images again: on a 224 px network the histogram pass is most of a quantize call (about 45 s
of 50 s for EfficientNet-Lite0 on 2 cores). Here one `HistogramCalibrater` pass builds ORT's own
`HistogramCollector` histograms, copies are kept after each sample count the search tries (histograms
only ever add up, so a copy after 32 images is exactly a 32-image calibration), and MinMax, entropy and
percentile ranges all come from those histograms through the collector's own `compute_collection_result`.
The ranges are saved in ORT's calibration-cache format (`save_tensors_data`), which `quantize_static`
reads through `calibration_cache_path` instead of calibrating again.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_BINS = 2048  # histogram bins: percentile thresholds need the resolution, entropy's search grows with it
ENTROPY_QUANTIZED_BINS = 128  # ORT's default for entropy (the 8-bit range's half)
# ORT's entropy search is quadratic in the bin count (~1 s per tensor at 2048 bins): it reads histograms
# merged 4:1 (512 bins, still 4x its 128 quantized bins), ~16x faster; percentile keeps the fine ones.
ENTROPY_BIN_MERGE = 4


@dataclass(frozen=True)
class CalibCandidate:
    """One way to turn the statistics into ranges: method, its percentile, the sample count."""

    method: str  # "minmax" | "entropy" | "percentile"
    samples: int
    percentile: float | None = None

    @property
    def label(self) -> str:
        """e.g. "percentile 99.99 @128"."""
        p = f" {self.percentile:g}" if self.percentile is not None else ""
        return f"{self.method}{p} @{self.samples}"


class ActivationStats:
    """Histograms of every tensor ORT would calibrate, after each of `sample_counts` images.

    Args:
        model_path: the (pre-processed) FP32 ONNX.
        calib_x: calibration inputs, batch first (the first max(sample_counts) are used).
        sample_counts: the counts to keep a copy after.
        workdir: scratch folder for ORT's augmented model.
        input_name: the model's input.
        batch: images per ORT run (memory: one batch of every activation).
    """

    def __init__(self, model_path: Path, calib_x: np.ndarray, sample_counts: Sequence[int], workdir: Path,
                 input_name: str, batch: int = 16) -> None:
        from onnxruntime.quantization import CalibrationMethod, create_calibrator

        counts = sorted({min(int(n), len(calib_x)) for n in sample_counts if n > 0})
        self.snapshots: dict[int, object] = {}
        aug = workdir / "augmented_for_calibration.onnx"
        with contextlib.redirect_stdout(io.StringIO()):  # ORT prints progress: not for `--json -`
            # Entropy's collector keeps signed-value histograms (ORT's `collect_value`), which percentile
            # (asymmetric) and MinMax (the histogram's min/max) read as well: one pass serves all three.
            cal = create_calibrator(model_path, None, augmented_model_path=str(aug),
                                    calibrate_method=CalibrationMethod.Entropy,
                                    extra_options={"num_bins": NUM_BINS,
                                                   "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
            x = np.ascontiguousarray(calib_x[: counts[-1]], dtype=np.float32)
            done = 0
            for n in counts:
                while done < n:
                    step = min(batch, n - done)
                    # one batch per collect_data call: ORT keeps every output of a call in memory until it ends
                    cal.collect_data(_OneBatch({input_name: x[done:done + step]}))
                    done += step
                self.snapshots[n] = copy.deepcopy(cal.collector)
        aug.unlink(missing_ok=True)
        self.sample_counts = counts

    def ranges(self, cand: CalibCandidate):
        """ORT `TensorsData` (tensor -> lowest/highest) for one candidate."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        col = copy.copy(self.snapshots[cand.samples])
        if cand.method == "entropy":
            col.histogram_dict = {k: _coarser(h, ENTROPY_BIN_MERGE) for k, h in col.histogram_dict.items()}
        with contextlib.redirect_stdout(io.StringIO()):
            if cand.method == "minmax":
                # the histogram's recorded min/max are the exact extremes MinMaxCalibrater would find
                data = {k: TensorData(lowest=np.asarray(h[2], np.float32), highest=np.asarray(h[3], np.float32))
                        for k, h in col.histogram_dict.items()}
                return TensorsData(CalibrationMethod.MinMax, data)
            col.method = cand.method
            if cand.percentile is not None:
                col.percentile = cand.percentile
            result = col.compute_collection_result()
        method = CalibrationMethod.Entropy if cand.method == "entropy" else CalibrationMethod.Percentile
        data = {k: TensorData(lowest=np.asarray(v[0], np.float32), highest=np.asarray(v[1], np.float32))
                for k, v in result.items()}
        return TensorsData(method, data)

    def write_cache(self, cand: CalibCandidate, path: Path):
        """Save a candidate's ranges as ORT's calibration cache; returns the ORT CalibrationMethod to pass."""
        from onnxruntime.quantization.calibrate import save_tensors_data

        td = self.ranges(cand)
        save_tensors_data(td, path)
        return td.calibration_method


def _coarser(h: tuple, k: int) -> tuple:
    """A `collect_value` histogram (hist, edges, min, max, threshold; symmetric about 0) with k bins merged."""
    hist, edges, lo, hi, thr = h
    pad = (-len(hist)) % (2 * k) // 2  # the same on both sides keeps the histogram symmetric about 0
    if pad:
        step = edges[1] - edges[0]
        hist = np.concatenate([np.zeros(pad, hist.dtype), hist, np.zeros(pad, hist.dtype)])
        edges = np.concatenate([edges[0] - step * np.arange(pad, 0, -1), edges,
                                edges[-1] + step * np.arange(1, pad + 1)])
    if len(hist) % k:
        return h
    merged = hist.reshape(-1, k).sum(1)
    new_edges = edges[::k].astype(edges.dtype)
    return merged, new_edges, lo, hi, np.asarray(new_edges[-1], dtype=np.asarray(thr).dtype)


class _OneBatch:
    """An ORT CalibrationDataReader that yields one feed dict, then None."""

    def __init__(self, feed: dict) -> None:
        self._feed: dict | None = feed

    def get_next(self) -> dict | None:
        feed, self._feed = self._feed, None
        return feed
