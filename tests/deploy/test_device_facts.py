"""device_facts (the standalone file that runs on the device) on Jetson outputs posted from real
boards (tests/fixtures/jetson/SOURCES.md)."""

import ast
import os
import stat
from pathlib import Path

import pytest

from pipeline import device_facts as df

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "jetson"
SRC = Path(df.__file__)


def _read(name):
    return (FIX / name).read_text()


@pytest.mark.parametrize("name, mode, mode_id", [
    ("nvpmodel_q_nano_5w_no_sudo.txt", "5W", 1),
    ("nvpmodel_q_thor_maxn.txt", "MAXN", 0),
    ("nvpmodel_q_orin_nano_15w.txt", "15W", 0),
    ("nvpmodel_q_verbose_orin_nano_super_25w.txt", "25W", 1),
])
def test_nvpmodel(name, mode, mode_id):
    assert df.parse_nvpmodel(_read(name)) == {"name": mode, "id": mode_id}


def test_nvpmodel_other_spellings():
    assert df.parse_nvpmodel("NV Power Mode[2]: MAXN_SUPER") == {"name": "MAXN_SUPER", "id": 2}  # jtop's line
    assert df.parse_nvpmodel("") == {"name": None, "id": None}
    assert df.parse_nvpmodel("bash: nvpmodel: command not found") == {"name": None, "id": None}


@pytest.mark.parametrize("name, state, soc, power_mode, gpu_max, emc_override", [
    ("jetson_clocks_show_orin_nano_super_25w.txt", "off", "tegra234", "25W", 918000000, False),
    ("jetson_clocks_show_orin_nano_15w_snap.txt", "off", "tegra234", None, 624750000, False),
    ("jetson_clocks_show_nano_5w_before.txt", "off", "tegra210", "5W", 614400000, False),
    ("jetson_clocks_show_nano_5w_after.txt", "on", "tegra210", "5W", 614400000, True),
    ("jetson_clocks_show_nano_maxn.txt", "off", "tegra210", "MAXN", 921600000, False),
    ("jetson_clocks_show_tx1_pinned.txt", "on", "tegra210", None, 998400000, True),
])
def test_jetson_clocks(name, state, soc, power_mode, gpu_max, emc_override):
    jc = df.parse_jetson_clocks(_read(name))
    assert (jc["state"], jc["soc"], jc["power_mode"], jc["gpu"]["max"], jc["emc_override"]) == (
        state, soc, power_mode, gpu_max, emc_override)


def test_jetson_clocks_details():
    before = df.parse_jetson_clocks(_read("jetson_clocks_show_nano_5w_before.txt"))
    # the 5W mode alone pins the two online CPUs; the GPU still scales, so jetson_clocks is off
    assert before["cpus_pinned"] is True and before["gpu"] == {"min": 76800000, "max": 614400000, "current": 460800000}
    orin = df.parse_jetson_clocks(_read("jetson_clocks_show_orin_nano_super_25w.txt"))
    assert orin["machine"] == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    assert orin["cpus_pinned"] is False
    # without root jetson_clocks prints an error, nothing to read: unknown, never "off"
    assert df.parse_jetson_clocks("Error: Run jetson_clocks as root")["state"] == "unknown"


@pytest.mark.parametrize("name, release, major, board", [
    ("nv_tegra_release_r32_7_1_nano.txt", "32.7.1", 32, "t210ref"),
    ("nv_tegra_release_r35_4_1_agx.txt", "35.4.1", 35, "t186ref"),
    ("nv_tegra_release_r36_4_3_orin_nano.txt", "36.4.3", 36, "generic"),
])
def test_l4t(name, release, major, board):
    assert df.parse_l4t(_read(name)) == {"release": release, "major": major, "board": board}


def test_summary_of_a_real_orin_nano():
    s = df.jetson_summary(_read("device_tree_model_orin_nano_super.txt").strip(),
                          _read("nv_tegra_release_r36_4_3_orin_nano.txt"),
                          _read("nvpmodel_q_verbose_orin_nano_super_25w.txt"),
                          _read("jetson_clocks_show_orin_nano_super_25w.txt"))
    assert s == {"model": "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
                 "l4t_release": "36.4.3", "power_mode": "25W", "power_mode_id": 1, "jetson_clocks": "off"}
    assert df.jetson_summary("", "", "", "") == {}


def test_collect_runs_the_real_commands(tmp_path, monkeypatch):
    """collect() runs `nvpmodel -q` and `jetson_clocks --show` (here: scripts on PATH that print a
    real Nano's output, nvpmodel exiting 1 as it may without sudo)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, fixture, rc in (("nvpmodel", "nvpmodel_q_nano_5w_no_sudo.txt", 1),
                              ("jetson_clocks", "jetson_clocks_show_nano_5w_after.txt", 0)):
        exe = bin_dir / tool
        exe.write_text(f"#!/bin/sh\ncat '{FIX / fixture}'\nexit {rc}\n")
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    facts = df.collect("onnxruntime")
    assert facts["nvpmodel"].startswith("NV Power Mode: 5W")
    assert facts["jetson"]["power_mode"] == "5W" and facts["jetson"]["power_mode_id"] == 1
    assert facts["jetson"]["jetson_clocks"] == "on"


def test_standalone_and_python38():
    """The file is copied alone onto the device: stdlib imports only, and Python 3.8 syntax."""
    tree = ast.parse(SRC.read_text(), feature_version=(3, 8))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    # numpy only inside try/except ImportError, for its version
    assert imported <= {"__future__", "os", "platform", "re", "shutil", "subprocess", "sys", "numpy"}
    assert not any(isinstance(n, ast.NamedExpr) for n in ast.walk(tree))
