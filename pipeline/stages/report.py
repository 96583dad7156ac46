"""Stage `report`: `report.md` with one row per stage and a plot of accuracy against latency.

Every number in the report is read from the stages' recorded metrics of this run; nothing is typed in.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.fileio import atomic_path, write_text
from pipeline.stages.base import Artifact, StageInputs
from pipeline.stages.metrics import ReportMetrics


def _pct(v):
    return "—" if v is None else f"{v * 100:.2f} %"


def _num(v):
    if v is None:
        return "—"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= div:
            return f"{v / div:.2f} {unit}"
    return str(v)


def _bytes(b: int) -> str:
    return f"{b / 1e6:.2f} MB" if b >= 1e6 else f"{b / 1e3:.1f} kB"


def _size(p: Path | None):
    """File size; for ONNX also the bytes of weights alone (small graphs are mostly names and scales)."""
    if p is None or not p.exists():
        return "—"
    text = _bytes(p.stat().st_size)
    if p.suffix == ".onnx":
        import onnx

        m = onnx.load(str(p), load_external_data=False)
        weights = sum(len(t.raw_data) or 0 for t in m.graph.initializer)
        text += f" ({_bytes(weights)} weights)"
    return text


def rows(inputs: StageInputs) -> list[dict]:
    """The report's rows: one per model the stages produced, with the metrics each stage recorded.

    Args:
        inputs: every earlier stage's artifact (benchmark optional).
    Returns:
        Dicts with stage, model, acc, params, macs, file (Path or None) and lat (LatencySummary or None).
    """
    a = {k: v for k, v in inputs.artifacts.items() if _own(k, v)}  # stand-ins for skipped stages are not rows
    bench = a["benchmark"].metrics if "benchmark" in a else None

    def lat(label):
        return bench.at(label) if bench else None

    tt, di, pr = (a[k].metrics if k in a else None for k in ("train_teacher", "distill", "prune"))
    size = pr or di or tt  # the model that was exported: pruned, distilled, or the one given
    given = getattr(inputs.config, "model", None) is not None
    ex = inputs.artifacts.get("export")  # the exported ONNX, or the ONNX `model:` standing in for it
    out = []
    if tt is not None:
        out.append(dict(stage="train_teacher", model="model given (FP32)" if given else "teacher (FP32)",
                        acc=tt.accuracy, params=tt.params, macs=tt.macs,
                        file=ex.files.get("teacher") if ex is not None else None, lat=lat("teacher_fp32")))
    if di is not None:
        out.append(dict(stage="distill", model="student, KD", acc=di.accuracy, params=di.params, macs=di.macs,
                        file=a["distill"].files["model"], lat=None))
        if di.scratch_accuracy is not None:
            out.append(dict(stage="distill", model="student, scratch (same budget)", acc=di.scratch_accuracy,
                            params=di.params, macs=di.macs, file=a["distill"].files.get("scratch"), lat=None))
    if pr is not None:
        out.append(dict(stage="prune", model=f"student, pruned {pr.ratio:.0%} + KD fine-tune", acc=pr.accuracy,
                        params=pr.params, macs=pr.macs, file=a["prune"].files["model"], lat=None))
    params, macs = getattr(size, "params", None), getattr(size, "macs", None)
    if ex is not None:
        name = "student (FP32 ONNX)" if "export" in a else "model given (FP32 ONNX)"
        out.append(dict(stage="export" if "export" in a else "model", model=name,
                        acc=getattr(ex.metrics, "accuracy", None) if ex.metrics is not None
                        else getattr(getattr(a.get("quantize"), "metrics", None), "accuracy_fp32", None),
                        params=params, macs=macs,
                        file=ex.files["model"], lat=lat("student_fp32")))
    if "quantize" in a:
        q = a["quantize"].metrics
        shipped = {"fp32": "FP32 ONNX, INT8 not faster", "fp16": "FP16 ONNX"}.get(getattr(q, "decision", None),
                                                                                 "INT8 QDQ ONNX")
        out.append(dict(stage="quantize", model=f"student ({shipped}) — final", acc=a["quantize"].metrics.accuracy,
                        params=params, macs=macs, file=a["quantize"].files["model"], lat=lat("final_int8")))
    elif out:
        out[-1] = dict(out[-1], model=out[-1]["model"] + " — final (quantize skipped)")
    return out


def _own(stage: str, art: Artifact) -> bool:
    """Whether `art` is stage `stage`'s own output (not an earlier artifact standing in for a skipped stage)."""
    from pipeline.stages import STAGES

    entry = next((e for e in STAGES if e.name == stage), None)
    return entry is not None and art.status != "source" and isinstance(art.metrics, entry.metrics)


def run(inputs: StageInputs, cfg, workdir: Path) -> Artifact:
    """Produce `report.md` and `report.png`.

    Args:
        inputs: every earlier stage's artifact.
        cfg: unused (the report has no settings).
        workdir: this stage's folder.
    Returns:
        Artifact with `report` = report.md, `plot` = report.png; ReportMetrics.
    """
    a, t = inputs.artifacts, inputs.target
    rs = rows(inputs)
    b = a["benchmark"].metrics.batch if "benchmark" in a else 1
    lines = [
        f"# edgepipe report: {inputs.config.name} → {t.name}", "",
        f"Data: {inputs.data.description}. Accuracy is "
        f"{_metric_name(inputs.config)} on the held-out split "
        f"({inputs.data.count('test')} images). Latency: ONNX Runtime on this machine's CPU, batch {b}, "
        "models interleaved in one run (see benchmark/benchmark.json for every batch and the environment).", "",
        "| stage | model | accuracy | params | MACs | file | p50 ms | p90 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        lat = f"{r['lat'].p50:.3f} | {r['lat'].p90:.3f}" if r["lat"] else "— | —"
        lines.append(f"| {r['stage']} | {r['model']} | {_pct(r['acc'])} | {_num(r['params'])} | {_num(r['macs'])} | "
                     f"{_size(r['file'])} | {lat} |")
    own = {k for k, v in a.items() if _own(k, v)}
    lines += _distillation(a["distill"].metrics) if "distill" in own else []
    lines += _versus_teacher(rs, b) if len(rs) > 1 else []
    lines += [_scheme(a["quantize"].metrics)] if "quantize" in own else []
    lines += _skipped(inputs)
    if "build" in a:
        lines += ["", "## Build for the target", "", f"- {a['build'].status}: {a['build'].metrics.note}"]
    lines += ["", "![accuracy against latency](report.png)", ""]
    report = write_text(workdir / "report.md", "\n".join(lines))
    plot = _plot(rs, workdir / "report.png", b)
    return Artifact({"report": report, "plot": plot}, "report", ReportMetrics(rows=len(rs)))


def _skipped(inputs: StageInputs) -> list[str]:
    """The stages this config skipped, with the reasons (the same the manifest records)."""
    from pipeline.stages.plan import skipped_stages

    skipped = skipped_stages(inputs.config)
    if not skipped:
        return []
    return ["", "## Skipped stages", ""] + [f"- {name}: {why}." for name, why in skipped.items()]


def _distillation(di) -> list[str]:
    lines = ["", "## What distillation gained", ""]
    if di.scratch_accuracy is not None:
        lines.append(f"- Labels on {di.labeled_images} of {di.images} training images: KD {_pct(di.accuracy)}, "
                     f"scratch {_pct(di.scratch_accuracy)} ({di.kd_gain_pp:+.2f} points).")
    ls = di.label_scarce
    if ls:
        lines.append(f"- Labels on only {ls.labeled_images} images ({ls.labeled_fraction:.0%}), the teacher "
                     f"labelling the rest: KD {_pct(ls.kd_accuracy)}, scratch {_pct(ls.scratch_accuracy)} "
                     f"({ls.kd_gain_pp:+.2f} points).")
    return lines


def _versus_teacher(rs: list[dict], b: int) -> list[str]:
    final, teacher = rs[-1], rs[0]
    lines = ["", "## Final model against the teacher", ""]
    if final["acc"] is not None and teacher["acc"] is not None:
        lines.append(f"- Accuracy: {_pct(final['acc'])} vs {_pct(teacher['acc'])} "
                     f"({(final['acc'] - teacher['acc']) * 100:+.2f} points).")
    if final["lat"] and teacher["lat"]:
        lines.append(f"- Latency p50 (batch {b}): {final['lat'].p50:.3f} ms vs {teacher['lat'].p50:.3f} ms "
                     f"({teacher['lat'].p50 / final['lat'].p50:.1f}x faster).")
    if final["file"] and teacher["file"]:
        fs, ts = final["file"].stat().st_size, teacher["file"].stat().st_size
        lines.append(f"- File size: {fs / 1e3:.1f} kB vs {ts / 1e6:.2f} MB ({ts / fs:.0f}x smaller).")
    return lines


def _metric_name(config) -> str:
    """What the accuracy column means: top-1, or the user's `eval:` score."""
    spec = getattr(config, "eval", None)
    return f"the score of `{spec}` (eval:, higher is better, x 100)" if spec else "top-1"


def _heads(q) -> list[str]:
    """The head decode kept in float, and what INT8 there would cost (same recipe with and without)."""
    lines = []
    if getattr(q, "head_exclusions", None):
        lines.append(f"- Head decode kept in float ({len(q.head_exclusions)} nodes, scoped to the heads; scored by "
                     f"{q.scored_by}):")
        lines += [f"  - `{h['name']}` ({h['op_type']}): {h['why']}." for h in q.head_exclusions]
    e = getattr(q, "head_exclusions_effect", None)
    if e:
        lines.append(f"- Without the head exclusions (same calibration and float layers otherwise): "
                     f"{_pct(e['score_without'])} vs {_pct(e['score_with'])} with them "
                     f"({e['drop_pp_without_vs_with']:.2f} points worse).")
    return lines


def _scheme(q) -> str:
    """The quantize section: scheme, the search's decision, and which layers stayed in float, why, at what cost."""
    if q.decision == "fp16":
        return "\n".join([f"- Shipped: FP16 ({q.reason}); score {_pct(q.accuracy)} vs FP32 {_pct(q.accuracy_fp32)} "
                          f"({-q.drop_pp:+.2f} points).", *_heads(q)])
    s = q.scheme
    kept = f"; kept in float: {', '.join(q.excluded_nodes)}" if q.excluded_nodes else ""
    lines = [f"- INT8 scheme: {s.activation_type} activations, {s.weight_type} weights, "
             f"{'per-channel' if s.per_channel else 'per-tensor'}, calibration {q.method} on "
             f"{q.calibration_samples} images{kept}."]
    if q.decision is None:  # a record from before the search
        return lines[0]
    lines.append(f"- Calibration chosen by the search: {q.calibration}; reduce_range {str(s.reduce_range).lower()}.")
    stopped = " (stopped by quantize.search_seconds)" if q.search_timed_out else ""
    lines.append(f"- Shipped: {q.decision.upper()} ({q.reason}); search {q.search_seconds:.0f} s over "
                 f"{len(q.attempts)} candidates{stopped}.")
    if q.isa:
        lines.append(f"- reduce_range: {q.isa.get('reduce_range')}.")
    for step in ("equalize", "bias_correction"):
        st = (q.steps or {}).get(step)
        if st:
            lines.append(f"- {step.replace('_', ' ')}: {'kept' if st.get('kept') else 'not kept'} ({st.get('why')}).")
    if q.float_layers_precision:
        lines.append(f"- Layers left in float run on the device as {q.float_layers_precision}.")
    for f in q.float_layers or []:
        cost = "" if f.get("cost_ms") is None else f", about {f['cost_ms']:.3f} ms of latency"
        lines.append(f"  - `{f['name']}` stayed in float: {f['why']}{cost}.")
    return "\n".join(lines + _heads(q))


def _plot(rs: list[dict], path: Path, batch: int) -> Path:
    """Accuracy against p50 latency (log x axis with a few plain-number ticks; y axis at most 100 %)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    pts = [r for r in rs if r["lat"] and r["acc"] is not None]
    markers = "osD^v<>"
    for i, r in enumerate(pts):
        # a legend, not annotations: student FP32 and INT8 often sit on top of each other
        ax.scatter(r["lat"].p50, r["acc"] * 100, s=70, marker=markers[i % len(markers)], alpha=0.8, clip_on=False,
                   label=f"{r['model']}: {r['lat'].p50:.3f} ms, {r['acc'] * 100:.2f} %")
    ax.legend(loc="best", fontsize=7)
    ax.set_xscale("log")
    if pts:
        xs, ys = [r["lat"].p50 for r in pts], [r["acc"] * 100 for r in pts]
        margin = max(0.5, 0.15 * (max(ys) - min(ys)))
        ax.set_ylim(max(0.0, min(ys) - margin), min(100.0, max(ys) + margin))
        ax.set_xlim(min(xs) / 1.5, max(xs) * 1.5)
    ax.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=6))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(f"p50 latency, ms (ONNX Runtime CPU, batch {batch}, log scale)")
    ax.set_ylabel("held-out accuracy (top-1 or the eval: score), %")
    ax.set_title("accuracy against latency across stages")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
