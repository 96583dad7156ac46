"""`edgepipe deploy` without a device: the summary, the finishing instructions, argument refusals."""

from __future__ import annotations

import json

from pipeline.cli import main


def test_without_device_prints_summary_and_exact_finishing_commands(make_run, tmp_path, capsys):
    dist = tmp_path / "dist" / "agx"
    rc = main(["deploy", "--run", str(make_run("jetson-agx-orin")), "--target", "jetson-agx-orin",
               "--dist", str(dist), "--json", str(tmp_path / "s.json")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(out)
    assert summary == json.loads((tmp_path / "s.json").read_text())
    assert summary["device"] is None and summary["bundle"] == str(dist) and summary["runtime"] == "tensorrt"
    assert summary["files"] == len(json.loads((dist / "manifest.json").read_text())["files"])
    assert f"scp -r {dist}/. user@device:edgepipe/jetson-agx-orin/" in err
    assert "ssh user@device 'cd edgepipe/jetson-agx-orin && python3 device_runner.py --out results.json'" in err
    assert "--dla-core 0" in err  # the AGX Orin's DLA is offered
    assert f"edgepipe deploy --bundle {dist} --device user@device" in err


def test_argument_refusals(make_run, tmp_path, capsys):
    run = str(make_run("jetson-orin-nano"))
    base = ["deploy", "--run", run, "--target", "jetson-orin-nano", "--dist", str(tmp_path / "d")]
    assert main([*base, "--dla-core", "0", "--device", "u@h"]) == 2
    assert "has 0 DLA cores" in capsys.readouterr().err
    assert main([*base, "--dla-core", "0"]) == 2
    assert "give --device" in capsys.readouterr().err
    assert main([*base, "--device", "u@h", "--port", "70000"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main([*base, "--device", "u@h", "--identity", str(tmp_path / "nope")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert not (tmp_path / "d").exists(), "nothing is bundled when the arguments are wrong"
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "manifest.json").write_text('{"format": "something else"}')
    assert main(["deploy", "--bundle", str(tmp_path / "fake"), "--device", "u@h"]) == 2
    assert "not an edgepipe bundle manifest" in capsys.readouterr().err
