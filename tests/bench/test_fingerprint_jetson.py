"""The benchmark fingerprint on a fake Jetson tree filled with real boards' outputs
(tests/fixtures/jetson/SOURCES.md), with `nvpmodel` and `jetson_clocks` as scripts on PATH."""

import os
import stat
from pathlib import Path

import pytest

from pipeline.bench.fingerprint import differences, jetson_info

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "jetson"


def _tree(tmp_path, model, release):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes((FIX / model).read_text().strip().encode() + b"\x00")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text((FIX / release).read_text())
    return tmp_path


def _tools(tmp_path, monkeypatch, nvpmodel=None, nvpmodel_rc=0, clocks=None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool, fixture, rc in (("nvpmodel", nvpmodel, nvpmodel_rc), ("jetson_clocks", clocks, 0)):
        if fixture:
            exe = bin_dir / tool
            exe.write_text(f"#!/bin/sh\ncat '{FIX / fixture}'\nexit {rc}\n")
            exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    # only our scripts: a real nvpmodel on the test machine must not leak in
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")


@pytest.mark.parametrize("release, expected", [
    ("nv_tegra_release_r32_7_1_nano.txt", "32.7.1"),
    ("nv_tegra_release_r35_4_1_agx.txt", "35.4.1"),
    ("nv_tegra_release_r36_4_3_orin_nano.txt", "36.4.3"),
])
def test_l4t_release(tmp_path, monkeypatch, release, expected):
    _tools(tmp_path, monkeypatch)
    j = jetson_info(_tree(tmp_path, "device_tree_model_nano.txt", release))
    assert j["l4t_release"] == expected and j["model"] == "NVIDIA Jetson Nano Developer Kit"
    assert j["l4t_raw"].startswith(f"# R{expected.split('.')[0]} (release)")
    assert j["nvpmodel"] is None and j["jetson_clocks"] == "unknown"


def test_nano_without_sudo(tmp_path, monkeypatch):
    """`nvpmodel -q` without sudo on a Nano prints the mode, then NVPM ERROR lines: the mode is kept
    even if it exits non-zero; no sysfs cpufreq here, so the clocks come from `jetson_clocks --show`."""
    _tools(tmp_path, monkeypatch, "nvpmodel_q_nano_5w_no_sudo.txt", 1, "jetson_clocks_show_nano_5w_before.txt")
    j = jetson_info(_tree(tmp_path, "device_tree_model_nano.txt", "nv_tegra_release_r32_7_1_nano.txt"))
    assert (j["nvpmodel"], j["nvpmodel_id"], j["jetson_clocks"]) == ("5W", 1, "off")


def test_orin_nano_verbose_nvpmodel(tmp_path, monkeypatch):
    """The mode sits inside `NVPM VERB: Current mode: NV Power Mode: 25W` (the old code kept
    "Current mode: NV Power Mode: 25W" as the mode's name)."""
    _tools(tmp_path, monkeypatch, "nvpmodel_q_verbose_orin_nano_super_25w.txt", 0,
           "jetson_clocks_show_orin_nano_super_25w.txt")
    j = jetson_info(_tree(tmp_path, "device_tree_model_orin_nano_super.txt", "nv_tegra_release_r36_4_3_orin_nano.txt"))
    assert (j["nvpmodel"], j["nvpmodel_id"], j["jetson_clocks"], j["l4t_release"]) == ("25W", 1, "off", "36.4.3")


def test_pinned_clocks_and_mode_change_show_in_differences(tmp_path, monkeypatch):
    _tools(tmp_path, monkeypatch, "nvpmodel_q_orin_nano_15w.txt", 0, "jetson_clocks_show_nano_5w_after.txt")
    a = {"jetson": jetson_info(_tree(tmp_path, "device_tree_model_nano.txt", "nv_tegra_release_r32_7_1_nano.txt"))}
    assert a["jetson"]["jetson_clocks"] == "on" and a["jetson"]["nvpmodel"] == "15W"
    b = {"jetson": dict(a["jetson"], nvpmodel="MAXN", jetson_clocks="off")}
    d = differences(a, b)
    assert any("power mode" in x and "'MAXN'" in x for x in d) and any("jetson_clocks" in x for x in d)


def test_sysfs_wins_over_jetson_clocks(tmp_path, monkeypatch):
    """Readable cpufreq/devfreq (no root needed) decide; jetson_clocks --show is only the fallback."""
    _tools(tmp_path, monkeypatch, None, 0, "jetson_clocks_show_nano_5w_after.txt")  # would say "on"
    root = _tree(tmp_path, "device_tree_model_nano.txt", "nv_tegra_release_r32_7_1_nano.txt")
    d = root / "sys/devices/system/cpu/cpu0/cpufreq"
    d.mkdir(parents=True)
    (d / "scaling_min_freq").write_text("102000")
    (d / "scaling_max_freq").write_text("1428000")
    assert jetson_info(root)["jetson_clocks"] == "off"
