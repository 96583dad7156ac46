#!/usr/bin/env python3
"""Measure online knowledge distillation at real size on a CUDA machine, with edgepipe's own `fit` loop.

    python tools/check_gpu_training.py [--smoke] [--budget-s 210] [--batch 128] [--size 224] [--out r.json]

Teacher ResNet-50, student MobileNetV2 (pipeline/models/tv_*.py), 224x224 synthetic batches generated on
the fly on the training device (random images and labels: the timing covers the models, not a data
pipeline), batch 128. One step = teacher forward (no grad) + student forward/backward + AdamW step.
Prints one JSON document: images/s on CUDA with AMP (bf16, or fp16 + GradScaler) and channels_last,
the same without AMP, on CPU for a few steps (with its thread count), peak GPU memory per run, the
speed-up over CPU, the precision `fit` chose, and whether onnxruntime's CUDAExecutionProvider is
available (if so, a MobileNetV2 ONNX export timed on CUDA vs CPU). Every part is time-bounded: the
batch stream ends an epoch when its deadline passes, and a SIGALRM backstop ends a stuck part.
`--smoke` runs tiny sizes on CPU (and on CUDA when present) so the script itself can be tested anywhere.
Needs only torch (numpy and onnxruntime optional); this repository is put on sys.path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline.models.tv_mobilenet import mobilenet_v2  # noqa: E402
from pipeline.models.tv_resnet import resnet50  # noqa: E402
from pipeline.training.loop import fit  # noqa: E402


def note(msg: str) -> None:
    print(f"[check_gpu_training] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TimeoutError in the main thread after `seconds` (a backstop: the streams stop on their own first)."""
    def on_alarm(_sig, _frame):
        raise TimeoutError(f"ran past its {seconds:.0f} s limit")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(1.0, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def bounded(name: str, seconds: float, fn: Callable[[], dict]) -> dict:
    """Run one part with a time limit; an error or timeout becomes {"error": ...} instead of ending the script."""
    t0 = time.perf_counter()
    try:
        with time_limit(seconds):
            out = fn()
    except Exception as e:  # report and go on: the other parts still measure something
        out = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    out["wall_s"] = round(time.perf_counter() - t0, 2)
    note(f"{name}: {json.dumps(out)}")
    return out


class SyntheticStream:
    """Random (x, y) batches made on `device`: `warmup` batches in the first epoch, `steps` in the second.

    An epoch ends early (after at least one batch) when `deadline` (time.monotonic) passes, which bounds
    each measurement; the caller's SIGALRM limit, set later than the deadline, is the backstop.
    """

    def __init__(self, batch: int, size: int, classes: int, device: Any, warmup: int, steps: int, deadline: float):
        self.batch, self.size, self.classes, self.device = batch, size, classes, device
        self.plan, self.deadline, self.epoch, self.done = [warmup, steps], deadline, 0, []

    def __iter__(self):
        n, self.epoch = self.plan[min(self.epoch, 1)], self.epoch + 1
        self.done.append(0)
        for i in range(n):
            if i > 0 and time.monotonic() > self.deadline:  # the first batch always runs: a measurement, however slow
                return
            x = torch.randn(self.batch, 3, self.size, self.size, device=self.device)
            y = torch.randint(0, self.classes, (self.batch,), device=self.device)
            self.done[-1] += 1
            yield x, y


def kd_speed(teacher, device: str, amp: bool, args, warmup: int, steps: int, seconds: float) -> dict:
    """images/s of online KD with `fit` (second epoch; the first warms up cuDNN and the allocator)."""
    dev = torch.device(device)
    torch.manual_seed(0)
    student = mobilenet_v2(num_classes=args.classes).to(dev)
    teacher.to(dev)
    stream = SyntheticStream(args.batch, args.size, args.classes, dev, warmup, steps,
                             time.monotonic() + seconds * 0.6)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stats = fit(student, stream, epochs=2, steps_per_epoch=max(warmup, steps), lr=0.01, weight_decay=5e-5,
                teacher=teacher, temperature=4.0, alpha=0.3, device=device, amp=amp, quiet=True, seed=0,
                log=note, tag=f"kd-{device}-{'amp' if amp else 'fp32'}")
    measured = stats["history"][-1]
    out = {"images_per_s": round(measured["images_per_s"], 1), "precision": stats["precision"],
           "channels_last": stats["channels_last"], "threads": stats["threads"], "batch": args.batch,
           "warmup_steps": stream.done[0], "measured_steps": stream.done[-1],
           "measured_s": round(measured["seconds"], 3), "final_loss": round(stats["final_loss"], 4)}
    if dev.type == "cuda":
        out["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return out


def ort_speed(args, seconds: float) -> dict:
    """onnxruntime's providers; with CUDAExecutionProvider (or --smoke), a MobileNetV2 export timed per provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"installed": False, "cuda_ep_available": False}
    providers = ort.get_available_providers()
    out = {"installed": True, "version": ort.__version__, "providers": providers,
           "cuda_ep_available": "CUDAExecutionProvider" in providers}
    if not out["cuda_ep_available"] and not args.smoke:
        return out
    deadline = time.monotonic() + seconds * 0.8
    batch = 32 if not args.smoke else 2
    model = mobilenet_v2(num_classes=args.classes).eval()
    x = torch.randn(batch, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "mobilenet_v2.onnx")
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice: no onnxscript needed
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
        feed = {"input": x.numpy()}
        runs = [["CUDAExecutionProvider", "CPUExecutionProvider"]] if out["cuda_ep_available"] else []
        for chain in runs + [["CPUExecutionProvider"]]:
            sess = ort.InferenceSession(path, providers=chain)
            used = sess.get_providers()[0]  # a CUDA EP that fails to load falls back to CPU silently
            for _ in range(3):
                sess.run(None, feed)
            times = []
            while len(times) < 20 and time.monotonic() < deadline:
                t0 = time.perf_counter()
                sess.run(None, feed)
                times.append(time.perf_counter() - t0)
            key = "cuda" if chain[0] == "CUDAExecutionProvider" else "cpu"
            times.sort()
            out[key] = {"provider_used": used, "batch": batch, "runs": len(times),
                        "median_ms": round(times[len(times) // 2] * 1e3, 3) if times else None}
    if out.get("cuda", {}).get("median_ms") and out["cpu"]["median_ms"]:
        out["cuda_speedup_over_cpu"] = round(out["cpu"]["median_ms"] / out["cuda"]["median_ms"], 2)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (32 px, batch 2, 10 classes, 1 step): any CPU")
    p.add_argument("--budget-s", type=float, default=210.0, help="total time budget in seconds (default 210)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128; 2 with --smoke)")
    p.add_argument("--size", type=int, default=None, help="image side (default 224; 32 with --smoke)")
    p.add_argument("--classes", type=int, default=None, help="classes (default 1000; 10 with --smoke)")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = p.parse_args(argv)
    args.batch = args.batch or (2 if args.smoke else 128)
    args.size = args.size or (32 if args.smoke else 224)
    args.classes = args.classes or (10 if args.smoke else 1000)
    t_start, budget = time.monotonic(), args.budget_s
    cuda = torch.cuda.is_available()
    # Fixed shapes: let cuDNN time its kernels once (tens of seconds for two models; not worth it for --smoke).
    torch.backends.cudnn.benchmark = not args.smoke
    result: dict[str, Any] = {
        "torch": torch.__version__, "cuda_available": cuda, "smoke": args.smoke,
        "config": {"teacher": "tv_resnet.resnet50", "student": "tv_mobilenet.mobilenet_v2", "batch": args.batch,
                   "image_size": args.size, "classes": args.classes,
                   "data": "synthetic, generated on the training device each step"},
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        result["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                         "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                         "bf16_supported": torch.cuda.is_bf16_supported(),
                         "tf32_conv": getattr(torch.backends.cudnn, "allow_tf32", None),
                         "tf32_matmul": getattr(torch.backends.cuda.matmul, "allow_tf32", None)}
    torch.manual_seed(0)
    teacher = resnet50(num_classes=args.classes)

    def left() -> float:
        return budget - (time.monotonic() - t_start)

    warm, steps = (1, 1) if args.smoke else (8, 40)

    def on_cuda(amp: bool, share: float) -> dict:
        limit = min(70, left() * share)
        return bounded(f"cuda_{'amp' if amp else 'fp32'}", limit,
                       lambda: kd_speed(teacher, "cuda", amp, args, warm, steps, limit))

    if cuda:
        result["cuda_amp"] = on_cuda(True, 0.35)
        result["cuda_fp32"] = on_cuda(False, 0.45)
        result["precision_chosen"] = result["cuda_amp"].get("precision")
    else:
        result["cuda_amp"] = result["cuda_fp32"] = {"skipped": "no CUDA GPU"}
        result["precision_chosen"] = "fp32"
    cpu_steps, cpu_limit = ((1, 1) if args.smoke else (1, 3)), min(80, left() * 0.6)
    result["cpu"] = bounded("cpu", cpu_limit, lambda: kd_speed(teacher, "cpu", True, args, *cpu_steps, cpu_limit))
    gpu_ips, cpu_ips = result["cuda_amp"].get("images_per_s"), result["cpu"].get("images_per_s")
    result["speedup_cuda_amp_over_cpu"] = round(gpu_ips / cpu_ips, 1) if gpu_ips and cpu_ips else None
    fp32_ips = result["cuda_fp32"].get("images_per_s")
    result["speedup_amp_over_fp32"] = round(gpu_ips / fp32_ips, 2) if gpu_ips and fp32_ips else None
    ort_limit = max(5.0, min(40, left() - 5))
    result["onnxruntime"] = bounded("onnxruntime", ort_limit, lambda: ort_speed(args, ort_limit))
    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    ok = "images_per_s" in result["cpu"] and (not cuda or "images_per_s" in result["cuda_amp"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
