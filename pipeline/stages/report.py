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
    a = inputs.artifacts
    tt, di, pr, ex, qu = (a[k].metrics for k in ("train_teacher", "distill", "prune", "export", "quantize"))
    bench = a["benchmark"].metrics if "benchmark" in a else None

    def lat(label):
        return bench.at(label) if bench else None

    out = [
        dict(stage="train_teacher", model="teacher (FP32)", acc=tt.accuracy, params=tt.params, macs=tt.macs,
             file=a["export"].files["teacher"], lat=lat("teacher_fp32")),
        dict(stage="distill", model="student, KD", acc=di.accuracy, params=di.params, macs=di.macs,
             file=a["distill"].files["model"], lat=None),
    ]
    if di.scratch_accuracy is not None:
        out.append(dict(stage="distill", model="student, scratch (same budget)", acc=di.scratch_accuracy,
                        params=di.params, macs=di.macs, file=a["distill"].files.get("scratch"), lat=None))
    out += [
        dict(stage="prune", model=f"student, pruned {pr.ratio:.0%} + KD fine-tune", acc=pr.accuracy,
             params=pr.params, macs=pr.macs, file=a["prune"].files["model"], lat=None),
        dict(stage="export", model="student (FP32 ONNX)", acc=ex.accuracy, params=pr.params, macs=pr.macs,
             file=a["export"].files["model"], lat=lat("student_fp32")),
        dict(stage="quantize", model="student (INT8 QDQ ONNX) — final", acc=qu.accuracy, params=pr.params,
             macs=pr.macs, file=a["quantize"].files["model"], lat=lat("final_int8")),
    ]
    return out


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
        f"Data: {inputs.data.description}. Accuracy is top-1 on the held-out split "
        f"({inputs.data.count('test')} images). Latency: ONNX Runtime on this machine's CPU, batch {b}, "
        "models interleaved in one run (see benchmark/benchmark.json for every batch and the environment).", "",
        "| stage | model | accuracy | params | MACs | file | p50 ms | p90 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        lat = f"{r['lat'].p50:.3f} | {r['lat'].p90:.3f}" if r["lat"] else "— | —"
        lines.append(f"| {r['stage']} | {r['model']} | {_pct(r['acc'])} | {_num(r['params'])} | {_num(r['macs'])} | "
                     f"{_size(r['file'])} | {lat} |")
    lines += _distillation(a["distill"].metrics) + _versus_teacher(rs, b) + [_scheme(a["quantize"].metrics)]
    if "build" in a:
        lines += ["", "## Build for the target", "", f"- {a['build'].status}: {a['build'].metrics.note}"]
    lines += ["", "![accuracy against latency](report.png)", ""]
    report = write_text(workdir / "report.md", "\n".join(lines))
    plot = _plot(rs, workdir / "report.png", b)
    return Artifact({"report": report, "plot": plot}, "report", ReportMetrics(rows=len(rs)))


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
    lines.append(f"- Accuracy: {_pct(final['acc'])} vs {_pct(teacher['acc'])} "
                 f"({(final['acc'] - teacher['acc']) * 100:+.2f} points).")
    if final["lat"] and teacher["lat"]:
        lines.append(f"- Latency p50 (batch {b}): {final['lat'].p50:.3f} ms vs {teacher['lat'].p50:.3f} ms "
                     f"({teacher['lat'].p50 / final['lat'].p50:.1f}x faster).")
    if final["file"] and teacher["file"]:
        fs, ts = final["file"].stat().st_size, teacher["file"].stat().st_size
        lines.append(f"- File size: {fs / 1e3:.1f} kB vs {ts / 1e6:.2f} MB ({ts / fs:.0f}x smaller).")
    return lines


def _scheme(q) -> str:
    s = q.scheme
    kept = f"; kept in float: {', '.join(q.excluded_nodes)}" if q.excluded_nodes else ""
    return (f"- INT8 scheme: {s.activation_type} activations, {s.weight_type} weights, "
            f"{'per-channel' if s.per_channel else 'per-tensor'}, calibration {q.method} on "
            f"{q.calibration_samples} images{kept}.")


def _plot(rs: list[dict], path: Path, batch: int) -> Path:
    """Accuracy against p50 latency (log x axis with a few plain-number ticks; y axis at most 100 %)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    pts = [r for r in rs if r["lat"]]
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
    ax.set_ylabel("held-out top-1 accuracy, %")
    ax.set_title("accuracy against latency across stages")
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
