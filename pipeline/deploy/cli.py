"""`edgepipe deploy`: run the pipeline (or take a finished run), make the bundle, optionally ship it over SSH.

    edgepipe deploy --config C --target T --out DIR --dist DIST [--force] [--device user@host ...]
    edgepipe deploy --run DIR --target T --dist DIST [--device user@host ...]
    edgepipe deploy --bundle DIST --device user@host ...          (ship an existing bundle as it is)

Exit codes: 0 ok; 1 the device's latency exceeded the target's budget; 2 a user error (bad device string,
unreachable host, host key problem, a bundle the device refused).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from pipeline.deploy.bundle import BUNDLE_FORMAT
from pipeline.errors import BudgetExceeded, UserError
from pipeline.fileio import read_json, sha256_file, write_json


def register(subparsers: Any) -> None:
    """Add the `deploy` subcommand."""
    p = subparsers.add_parser("deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                              help="make the deploy bundle dist/<target>/ and optionally run it on a device over SSH")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="pipeline config: run the pipeline first (cached stages are reused)")
    src.add_argument("--run", help="an existing run directory: bundle it without rerunning the pipeline")
    src.add_argument("--bundle", help="an existing bundle: ship it to --device as it is")
    p.add_argument("--target", help="target name or file (e.g. cpu, arm64-cpu, jetson)")
    p.add_argument("--out", help="run directory for --config (default: runs/<target's canonical name>)")
    p.add_argument("--dist", help="bundle folder to write (default: dist/<target's canonical name>)")
    p.add_argument("--force", action="store_true", help="rerun every pipeline stage")
    ssh = p.add_argument_group("device over SSH")
    ssh.add_argument("--device", help="user@host: copy, verify, build and benchmark the bundle there")
    ssh.add_argument("--port", type=int, help="SSH port")
    ssh.add_argument("--identity", help="SSH private key file")
    ssh.add_argument("--known-hosts", help="known_hosts file to verify the device's host key against")
    ssh.add_argument("--accept-new-host-key", action="store_true",
                     help="trust an unknown host key on first connection (StrictHostKeyChecking=accept-new)")
    ssh.add_argument("--remote-dir",
                     help="bundle folder on the device (default: edgepipe/<target>, under the remote home)")
    ssh.add_argument("--remote-python", default="python3",
                     help="Python on the device (with numpy + onnxruntime or TensorRT)")
    ssh.add_argument("--runs", type=int, default=200, help="timed runs per batch size on the device (>= 200)")
    ssh.add_argument("--no-accuracy", action="store_true", help="skip the accuracy pass on the device")
    ssh.add_argument("--dla-core", type=int, help="TensorRT targets with DLA (AGX Orin, Orin NX): build and run on "
                     "this DLA core, GPU fallback for unsupported layers")
    ssh.add_argument("--results", help="where the device's results.json and build.log go (default: DIST/results)")
    p.add_argument("--json", help="also write the summary JSON to this file")
    p.set_defaults(func=main)


def _ssh_target(args: argparse.Namespace) -> Any:
    from pipeline.deploy.ssh import SshTarget, parse_destination

    if args.port is not None and not (1 <= args.port <= 65535):
        raise UserError(f"--port {args.port} is out of range (allowed: 1..65535)")
    for name in ("identity", "known_hosts"):
        v = getattr(args, name)
        if v and not Path(v).is_file():
            raise UserError(f"--{name.replace('_', '-')} {v}: file not found")
    return SshTarget(destination=parse_destination(args.device), port=args.port,
                     identity=Path(args.identity) if args.identity else None,
                     known_hosts=Path(args.known_hosts) if args.known_hosts else None,
                     accept_new_host_key=args.accept_new_host_key)


def _check_dla(args: argparse.Namespace, target_name: str, dla_cores: int) -> None:
    """Refuse --dla-core without --device, or naming a core the target does not have."""
    if args.dla_core is None:
        return
    if args.device is None:
        raise UserError("--dla-core applies to the run on the device: give --device user@host too "
                        "(or run device_runner.py --dla-core N there)")
    if not 0 <= args.dla_core < dla_cores:
        raise UserError(f"--dla-core {args.dla_core}: target {target_name} has {dla_cores} DLA cores "
                        f"(allowed: {', '.join(map(str, range(dla_cores))) or 'none, omit --dla-core'})")


def _check_phone(args: argparse.Namespace, target_name: str, device_kind: str | None) -> None:
    """Refuse --device for a phone target: an app on Android/iOS runs the bundle's model.ort, not SSH."""
    if args.device is not None and device_kind == "phone":
        raise UserError(f"--device {args.device}: target {target_name} is a phone (device_kind: phone), which "
                        "edgepipe cannot reach over SSH; build the bundle without --device and ship its model.ort "
                        "(with required_operators_and_types.config for a reduced ONNX Runtime build) in your app")


def _make_bundle(args: argparse.Namespace) -> tuple[Path, dict[str, Any], str | None]:
    """Load the target once, run the pipeline if asked, then bundle; returns (bundle dir, manifest, run dir)."""
    from pipeline.deploy.bundle import check_dist, make_bundle
    from pipeline.targets import load_target

    if not args.target:
        raise UserError("--target is required with --config/--run (e.g. --target cpu, arm64-cpu, jetson)")
    target = load_target(args.target)
    _check_dla(args, target.name, target.tensorrt.dla_cores if target.tensorrt else 0)  # before minutes of work
    _check_phone(args, target.name, target.device_kind)
    dist = Path(args.dist or f"dist/{target.name}")
    check_dist(dist)
    if args.config:
        from pipeline.run_loop import run_pipeline

        run_dir = Path(args.out or f"runs/{target.name}")
        run_pipeline(args.config, target=target, out_dir=run_dir, force=args.force)
    else:
        run_dir = Path(args.run)
    return dist, make_bundle(run_dir, target, dist), str(run_dir)


def finish_instructions(dist: Path, manifest: dict[str, Any]) -> str:
    """The exact commands to finish at the device by hand (printed when no --device is given)."""
    name = manifest["target"]["name"]
    if manifest["target"].get("device_kind") == "phone":  # an app loads the model: nothing to run over SSH
        ort = manifest.get("ort_mobile") or {}
        return (f"edgepipe: bundle ready in {dist}. {name} is a phone: add {dist / ort.get('model', 'model.ort')} "
                f"to your app and open it with the providers and session options in {dist / 'manifest.json'} "
                f"(ort_mobile.session); {dist / ort.get('config', 'required_operators_and_types.config')} lists the "
                "operators for a reduced-size ONNX Runtime build.")
    remote = f"edgepipe/{name}"
    q = shlex.quote
    lines = [
        f"edgepipe: bundle ready in {dist}. To finish on the device (replace user@device):",
        f"  ssh user@device mkdir -p {q(remote)}",
        f"  scp -r {q(str(dist))}/. user@device:{q(remote)}/",
        f"  ssh user@device {q(f'cd {q(remote)} && python3 device_runner.py --out results.json')}",
        f"  mkdir -p {q(str(dist / 'results'))} && "
        f"scp user@device:{q(remote)}/results.json {q(str(dist / 'results'))}/",
    ]
    if (manifest.get("build") or {}).get("dla_cores"):
        lines.append("  (on a DLA core with GPU fallback: python3 device_runner.py --dla-core 0 --out results.json)")
    return "\n".join(lines + [
        "or let edgepipe do it over SSH (host key checked against ~/.ssh/known_hosts):",
        f"  edgepipe deploy --bundle {q(str(dist))} --device user@device",
        f"  make deploy TARGET={q(name)} DEVICE=user@device",
    ])


def main(args: argparse.Namespace) -> int:
    """Bundle, then (with --device) run on the device; print a JSON summary. Returns the exit code."""
    ssh_target = _ssh_target(args) if args.device is not None else None  # reject a bad device string before any work
    if args.runs < 200:
        raise UserError(f"--runs {args.runs}: the device benchmark needs at least 200 timed runs")
    from pipeline.targets import load_target

    run_dir = None
    if args.bundle:
        dist = Path(args.bundle)
        manifest = read_json(dist / "manifest.json", "bundle manifest")
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise UserError(f"--bundle {dist}: manifest.json is not an edgepipe bundle manifest ({BUNDLE_FORMAT})")
        _check_dla(args, manifest["target"]["name"], (manifest["target"].get("tensorrt") or {}).get("dla_cores", 0))
        _check_phone(args, manifest["target"]["name"], manifest["target"].get("device_kind"))
        if args.target and load_target(args.target).name != manifest["target"]["name"]:
            raise UserError(f"--bundle {dist} is for target {manifest['target']['name']!r}, not {args.target!r}")
        if ssh_target is None:
            raise UserError("--bundle ships an existing bundle: give --device user@host")
    else:
        dist, manifest, run_dir = _make_bundle(args)
    summary: dict[str, Any] = {"target": manifest["target"]["name"], "runtime": manifest["runtime"],
                               "run_dir": run_dir, "bundle": str(dist), "files": len(manifest["files"]),
                               "latency_budget_ms": manifest["latency_budget"]["ms"], "device": None}
    if ssh_target is None:
        print(finish_instructions(dist, manifest), file=sys.stderr)
        return _emit(summary, args)
    from pipeline.deploy.ssh import deploy

    runner_args = ["--runs", str(args.runs)] + (["--no-accuracy"] if args.no_accuracy else [])
    if args.dla_core is not None:
        runner_args += ["--dla-core", str(args.dla_core)]
    res = deploy(ssh_target, dist, sha256_file(dist / "manifest.json"),
                 remote_dir=args.remote_dir or f"edgepipe/{manifest['target']['name']}",
                 remote_python=args.remote_python, runner_args=runner_args,
                 results_dir=Path(args.results) if args.results else None)
    r = res["results"]
    batch, first = next(iter(r["latency_ms"].items()))  # the smallest batch measured (a DLA engine has one)
    summary["device"] = {
        "destination": args.device, "machine": res["machine"], "model": r["device"].get("model"),
        "remote_dir": res["remote_dir"], "verified": r["verified"], "results": str(res["results_path"]),
        "build_log": str(res["build_log_path"]) if res["build_log_path"] else None,
        "accuracy": (r.get("accuracy") or {}).get("accuracy"),
        "latency_ms": {k: round(first[k], 4) for k in ("p50", "p90", "p99", "mean")}, "latency_batch": first["batch"],
        "budget": r.get("budget"),
    }
    _emit(summary, args)
    budget = r.get("budget") or {}
    if budget.get("exceeded"):
        raise BudgetExceeded(f"{summary['target']} on {args.device}: {budget['percentile']} latency "
                             f"{budget['measured_ms']:.3f} ms at batch {budget['batch']} > budget {budget['ms']} ms "
                             f"(results: {res['results_path']})")
    return 0


def _emit(summary: dict[str, Any], args: argparse.Namespace) -> int:
    print(json.dumps(summary, indent=2, default=str))
    if args.json and args.json != "-":  # "-": stdout only, which always gets it
        write_json(args.json, summary)
    return 0
