"""`edgepipe bench ...`: benchmark a model, compare two results, import or run trtexec.

    edgepipe bench MODEL [--shape S] [--batch N] [--threads N] [--warmup N | --warmup-seconds S]
                         [--iterations N | --duration S] [--reference REF] [--json OUT] [--plot PNG]
    edgepipe bench compare NEW.json [BASELINE.json] [--max-regression 10%] [--metrics p50,p90] [--json OUT] [--plot PNG]
    edgepipe bench import-trtexec LOG [--times F.json] [--batch N] --json OUT
    edgepipe bench trtexec ENGINE [--shapes S] [--duration S] ... --json OUT   (needs trtexec)

`bench` takes the rest of the command line and dispatches on its first word, so a model file named
like a subcommand must be given as ./compare.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pipeline.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse that raises UserError (exit 2 with one clear line) instead of exiting itself."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def register(subparsers: Any) -> None:
    """Add `bench` to the top-level parser."""
    p = subparsers.add_parser(
        "bench", add_help=False, help="benchmark a model; compare results; import trtexec logs",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # add_help=False + our own flag: the model parser below owns -h for `bench MODEL -h`
    p.add_argument("-h", "--help", dest="bench_help", action="store_true", help="show this help")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=dispatch)


def dispatch(args: argparse.Namespace) -> int:
    """Route `bench` to the model benchmark or one of its subcommands."""
    rest = list(args.rest)
    if getattr(args, "bench_help", False):
        rest = ["--help"]
    if not rest or rest[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if rest else 2
    if rest[0] == "compare":
        return _compare(_compare_parser().parse_args(rest[1:]))
    if rest[0] == "import-trtexec":
        return _import(_import_parser().parse_args(rest[1:]))
    if rest[0] == "trtexec":
        return _trtexec(_trtexec_parser().parse_args(rest[1:]))
    return _bench(_bench_parser().parse_args(rest))


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return v


def _bench_parser() -> _Parser:
    p = _Parser(prog="edgepipe bench", description="Measure a model's latency.")
    p.add_argument("model", help=".onnx, .engine/.plan, .pt2, or module:function")
    p.add_argument("--runtime", help="onnxruntime (ort, onnxrt, onnx), tensorrt (trt) or pytorch (torch, pt); "
                   "default: from the extension")
    p.add_argument("--shape", action="append", default=[],
                   help="input shape, 1x3x224x224 or name:1x3x224x224 (repeatable)")
    p.add_argument("--batch", type=_positive_int, help="fill a dynamic batch dimension")
    p.add_argument("--threads", type=_positive_int, help="intra-op threads (ORT) / torch threads")
    p.add_argument("--providers", help="ONNX Runtime providers, comma-separated, in priority order")
    p.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch)")
    p.add_argument("--weights", help="weights for a module:function model (.safetensors or a state dict)")
    p.add_argument("--transfers", choices=["included", "excluded"],
                   help="TensorRT: whether the device time spans the host<->device copies (default: included)")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--warmup", type=int, default=20, help="warm-up iterations (default 20)")
    w.add_argument("--warmup-seconds", type=_positive_float, help="warm up for this many seconds instead")
    n = p.add_mutually_exclusive_group()
    n.add_argument("--iterations", type=_positive_int, default=200, help="timed iterations (default 200)")
    n.add_argument("--duration", type=_positive_float, help="time for this many seconds instead")
    p.add_argument("--reference", help="a reference model measured interleaved (for drift-free compares)")
    p.add_argument("--json", dest="json_out", help="write the result document here")
    p.add_argument("--plot", help="write a latency histogram + CDF PNG here")
    p.add_argument("--quiet", action="store_true", help="print nothing but warnings")
    return p


def _bench(a: argparse.Namespace) -> int:
    from pipeline.bench.api import bench_model
    from pipeline.bench.harness import BenchConfig, parse_shape
    from pipeline.runtimes.base import canonical_runtime

    runtime = canonical_runtime(a.runtime, "--runtime") if a.runtime is not None else None
    shapes = dict(parse_shape(s) for s in a.shape)
    cfg = BenchConfig(warmup=a.warmup, warmup_seconds=a.warmup_seconds, iterations=a.iterations,
                      duration_s=a.duration, threads=a.threads)
    providers = [x.strip() for x in a.providers.split(",") if x.strip()] if a.providers else None
    doc = bench_model(a.model, runtime=runtime, threads=a.threads, providers=providers, device=a.device,
                      weights=a.weights, shapes=shapes or None, batch=a.batch, cfg=cfg, reference=a.reference,
                      transfers=a.transfers)
    _emit(doc, a.json_out, a.plot, a.quiet)
    return 0


def _emit(doc: dict, json_out: Any, plot: Any, quiet: bool) -> None:
    from pipeline.bench.result import summary_lines
    from pipeline.fileio import write_json

    if json_out:
        write_json(json_out, doc)
    if plot:
        from pipeline.bench.plots import plot_latency

        plot_latency(doc, plot)
    for line in summary_lines(doc):
        if line.startswith("WARNING: "):
            print("edgepipe: warning: " + line[len("WARNING: "):], file=sys.stderr)
        elif not quiet:
            print(line)


def _compare_parser() -> _Parser:
    p = _Parser(prog="edgepipe bench compare", description="Gate NEW against BASELINE: exit 1 on a regression.")
    p.add_argument("new", help="result JSON of the new run")
    p.add_argument("baseline", nargs="?", help="baseline result JSON (omitted: NEW's own --reference measurement, "
                   "i.e. a same-run A/B compare)")
    p.add_argument("--max-regression", default="10%", help="allowed slowdown, e.g. 10%% (default)")
    p.add_argument("--metrics", default="p50,p90", help="quantiles to gate on (default p50,p90)")
    p.add_argument("--timing", default="host", choices=["host", "device"], help="host (default) or device time")
    p.add_argument("--confidence", type=float, default=0.95, help="two-sided CI level (default 0.95)")
    p.add_argument("--bootstrap", type=_positive_int, default=2000, help="bootstrap resamples (default 2000)")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--reference", dest="use_reference", action="store_true", default=None,
                   help="require normalising by the reference model stored in both results")
    r.add_argument("--no-reference", dest="use_reference", action="store_false", help="ignore reference measurements")
    p.add_argument("--json", dest="json_out", help="write the verdict JSON here")
    p.add_argument("--plot", help="write a comparison PNG here")
    return p


def _compare(a: argparse.Namespace) -> int:
    from pipeline.bench.compare import compare_docs, parse_budget, verdict_lines
    from pipeline.bench.result import load_result
    from pipeline.fileio import write_json

    new = load_result(a.new, "new result")
    if a.baseline is None:
        from pipeline.bench.compare import reference_as_baseline

        new, base = reference_as_baseline(new)
        a.use_reference = False
    else:
        base = load_result(a.baseline, "baseline")
    metrics = [m.strip() for m in a.metrics.split(",") if m.strip()]
    v = compare_docs(new, base, budget=parse_budget(a.max_regression), metrics=metrics, timing=a.timing,
                     confidence=a.confidence, n_boot=a.bootstrap, use_reference=a.use_reference)
    v["new"], v["baseline"] = str(a.new), str(a.baseline or f"{a.new} (reference measured in the same run)")
    if a.json_out:
        write_json(a.json_out, v)
    if a.plot:
        from pipeline.bench.plots import plot_compare

        plot_compare(new, base, v, a.plot)
    for line in verdict_lines(v):
        print(line, file=sys.stderr if line.startswith("WARNING") else sys.stdout)
    return v["exit_code"]


def _import_parser() -> _Parser:
    p = _Parser(prog="edgepipe bench import-trtexec", description="Turn a trtexec log into a result JSON.")
    p.add_argument("log", help="the saved trtexec output")
    p.add_argument("--times", help="the --exportTimes JSON of the same run")
    p.add_argument("--batch", type=_positive_int, help="samples per inference (default: from the log's command line)")
    p.add_argument("--json", dest="json_out", required=True, help="write the result document here")
    p.add_argument("--plot", help="write a latency plot PNG here")
    p.add_argument("--quiet", action="store_true")
    return p


def _import(a: argparse.Namespace) -> int:
    from pipeline.bench.trtexec_log import import_trtexec

    doc = import_trtexec(a.log, a.times, a.batch)
    _emit(doc, a.json_out, a.plot, a.quiet)
    return 0


def _trtexec_parser() -> _Parser:
    p = _Parser(prog="edgepipe bench trtexec", description="Run trtexec on an engine and record the result.")
    p.add_argument("engine")
    p.add_argument("--trtexec", help="trtexec path (default: PATH, then /usr/src/tensorrt/bin/trtexec)")
    p.add_argument("--shapes", help="trtexec --shapes, e.g. input:1x3x224x224")
    p.add_argument("--warmup-ms", type=int, default=500)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--iterations", type=_positive_int, default=100)
    p.add_argument("--avg-runs", type=_positive_int, default=10)
    p.add_argument("--cuda-graph", action="store_true")
    p.add_argument("--no-spin-wait", action="store_true")
    p.add_argument("--exclude-transfers", action="store_true", help="time without H2D/D2H copies")
    p.add_argument("--out-dir", default="trtexec_run", help="where the log and times JSON are kept")
    p.add_argument("--print-command", metavar="TRT_VERSION", help="only print the argv for this TensorRT version")
    p.add_argument("--json", dest="json_out", help="write the result document here")
    p.add_argument("--plot")
    p.add_argument("--quiet", action="store_true")
    return p


def _trtexec(a: argparse.Namespace) -> int:
    from pipeline.bench.trtexec import TrtexecSettings, run_trtexec, trtexec_bench_argv

    s = TrtexecSettings(warmup_ms=a.warmup_ms, duration_s=a.duration, iterations=a.iterations, avg_runs=a.avg_runs,
                        cuda_graph=a.cuda_graph, spin_wait=not a.no_spin_wait,
                        include_transfers=not a.exclude_transfers, shapes=a.shapes)
    if a.print_command:
        try:
            version = tuple(int(x) for x in a.print_command.split("."))
        except ValueError:
            raise UserError(f"--print-command {a.print_command!r}: expected a TensorRT version like 10.3") from None
        print(" ".join(trtexec_bench_argv(a.engine, version, s, exe=a.trtexec or "trtexec")))
        return 0
    doc = run_trtexec(a.engine, a.out_dir, s, exe=a.trtexec)
    _emit(doc, a.json_out, a.plot, a.quiet)
    return 0
