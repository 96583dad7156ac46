"""Environment fingerprint against a fake /proc, /sys and /etc tree (a Jetson and a plain box)."""

from pipeline.bench.fingerprint import differences, fingerprint, jetson_clocks_state


def _write(root, rel, text):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_plain_x86(tmp_path):
    _write(tmp_path, "proc/cpuinfo",
           "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse4_2 avx2 fma avx512f\n")
    fp = fingerprint(threads=2, root=tmp_path)
    assert fp["cpu"]["model"] == "Test CPU 9000"
    assert fp["cpu"]["flags"] == ["avx2", "avx512f", "fma", "sse4_2"]
    assert fp["threads_used"] == 2 and fp["jetson"] is None
    assert fp["versions"]["python"] and fp["os"]["system"]


def test_jetson(tmp_path):
    _write(tmp_path, "proc/cpuinfo", "processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU part\t: 0xd42\n")
    _write(tmp_path, "proc/device-tree/model", "NVIDIA Jetson AGX Orin Developer Kit\x00")
    _write(tmp_path, "etc/nv_tegra_release",
           "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
           "DATE: Tue Aug  1 19:57:35 UTC 2023\n")
    for c in (0, 1):
        _write(tmp_path, f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_min_freq", "2201600")
        _write(tmp_path, f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_max_freq", "2201600")
    _write(tmp_path, "sys/class/devfreq/17000000.gpu/min_freq", "1300500000")
    _write(tmp_path, "sys/class/devfreq/17000000.gpu/max_freq", "1300500000")
    fp = fingerprint(root=tmp_path)
    j = fp["jetson"]
    assert j["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert j["l4t_release"] == "35.4.1"
    assert j["jetson_clocks"] == "on"
    assert fp["cpu"]["flags"] == ["asimd", "asimddp"]
    # GPU clock left to scale: not pinned
    _write(tmp_path, "sys/class/devfreq/17000000.gpu/min_freq", "306000000")
    assert jetson_clocks_state(tmp_path) == "off"


def test_unknown_clocks(tmp_path):
    assert jetson_clocks_state(tmp_path) == "unknown"


def test_differences():
    a = {"cpu": {"model": "X", "usable_cores": 4}, "threads_used": 2, "jetson": {"nvpmodel": "MAXN"}}
    b = {"cpu": {"model": "X", "usable_cores": 4}, "threads_used": 4, "jetson": {"nvpmodel": "15W"}}
    d = differences(a, b)
    assert any("threads" in x for x in d) and any("power mode" in x for x in d)
    assert not any("CPU model" in x for x in d)
    assert differences(a, a) == []
