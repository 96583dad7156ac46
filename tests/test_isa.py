"""pipeline.isa: INT8 instruction-set facts read from /proc/cpuinfo texts of five kinds of machine.

The texts are trimmed to the fields the parser reads, with flag lists in the shape Linux prints them
(one `processor` block is enough; a second block checks that only the first is read).
"""

from __future__ import annotations

import pytest

from pipeline.isa import FLAG_NAMES, int8_facts, parse_cpuinfo

# Intel Core i7-6700 (Skylake client): AVX2, no AVX-512, no VNNI.
AVX2_INTEL = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 94
model name\t: Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse \
sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid pni \
pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor \
lahf_lm abm 3dnowprefetch fsgsbase bmi1 hle avx2 smep bmi2 erms invpcid rtm rdseed adx smap clflushopt \
xsaveopt xsavec xgetbv1 xsaves arat

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz
flags\t\t: fpu avx512f avx512_vnni
"""

# AMD EPYC 9354 (Zen 4) in a VM: AVX-512 with VNNI (the kind of machine this project's CI runs on).
EPYC_VNNI = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9354 32-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse \
sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm rep_good nopl cpuid extd_apicid pni pclmulqdq ssse3 \
fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy \
avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni \
avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 avx512vbmi umip pku ospke avx512_vbmi2 gfni \
vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm
"""

# Intel Xeon Platinum 8480+ (Sapphire Rapids): AVX-512 VNNI, AVX-VNNI and AMX.
SAPPHIRE_RAPIDS = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c \
avx2 bmi2 avx512f avx512dq avx512ifma avx512cd avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi \
avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 rdpid \
bus_lock_detect cldemote movdiri movdir64b enqcmd fsrm md_clear serialize tsxldtrk pconfig \
arch_lbr ibt amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities
"""

# A Cortex-A78 phone/SBC core (Armv8.2: dot product, no I8MM).
CORTEX_A78 = """\
processor\t: 0
BogoMIPS\t: 52.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd41
CPU revision\t: 0
"""

# Jetson AGX Orin: Cortex-A78AE, generic model name, board name in the device tree.
JETSON_ORIN = """\
processor\t: 0
model name\t: ARMv8 Processor rev 1 (v8l)
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop \
asimddp uscat ilrcpc flagm paca pacg
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd42
CPU revision\t: 1
"""
ORIN_BOARD = "NVIDIA Jetson AGX Orin Developer Kit\x00"


def _root(tmp_path, cpuinfo: str, board: str | None = None):
    """A fake file-system root holding proc/cpuinfo (and the device-tree model when given)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cpuinfo").write_text(cpuinfo)
    if board is not None:
        (proc / "device-tree").mkdir()
        (proc / "device-tree" / "model").write_bytes(board.encode())
    return str(tmp_path)


def _on(facts: dict) -> set:
    return {k for k, v in facts["flags"].items() if v}


def test_avx2_only_intel_saturates_and_wants_reduce_range(tmp_path):
    f = int8_facts(_root(tmp_path, AVX2_INTEL))
    assert f["arch"] == "x86_64"
    assert f["cpu_model"] == "Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz"
    # the second processor block's flags are not read
    assert _on(f) == {"avx2"}
    assert not f["vnni"] and not f["int8_dot_product"]
    assert f["u8s8_saturates"] and f["recommended_reduce_range"]
    assert f["int8_kernel"] == "avx2"


def test_epyc_avx512_vnni_does_not_saturate(tmp_path):
    f = int8_facts(_root(tmp_path, EPYC_VNNI))
    assert f["cpu_model"] == "AMD EPYC 9354 32-Core Processor"
    assert _on(f) == {"avx2", "avx512f", "avx512bw", "avx512_vnni"}
    assert f["vnni"] and f["int8_dot_product"]
    assert not f["u8s8_saturates"] and not f["recommended_reduce_range"]
    assert f["int8_kernel"] == "avx512_vnni"
    assert f["board"] == ""


def test_sapphire_rapids_has_amx(tmp_path):
    f = int8_facts(_root(tmp_path, SAPPHIRE_RAPIDS))
    assert _on(f) == {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8"}
    assert f["vnni"] and not f["u8s8_saturates"]
    assert f["int8_kernel"] == "amx_int8"


def test_cortex_a78_dot_product(tmp_path):
    f = int8_facts(_root(tmp_path, CORTEX_A78))
    assert f["arch"] == "aarch64"
    assert f["cpu_model"] == "Cortex-A78"
    assert _on(f) == {"asimddp"}
    # "vnni" is the x86 instruction; ARM's dot product is reported separately
    assert not f["vnni"] and f["int8_dot_product"]
    assert not f["u8s8_saturates"] and not f["recommended_reduce_range"]
    assert f["int8_kernel"] == "asimddp"


def test_jetson_orin_core_and_board(tmp_path):
    f = int8_facts(_root(tmp_path, JETSON_ORIN, ORIN_BOARD))
    assert f["arch"] == "aarch64"
    assert f["cpu_model"] == "Cortex-A78AE"
    assert f["board"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert _on(f) == {"asimddp"}
    assert not f["u8s8_saturates"]


@pytest.mark.parametrize("spelling", ["avx512vnni", "avx512_vnni"])
def test_vnni_spellings(tmp_path, spelling):
    f = int8_facts(_root(tmp_path, f"processor\t: 0\nflags\t\t: sse avx2 {spelling}\n"))
    assert f["flags"]["avx512_vnni"] and f["vnni"]


def test_i8mm_preferred_over_dot_product(tmp_path):
    f = int8_facts(_root(tmp_path, "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm sve\n"))
    assert f["int8_kernel"] == "i8mm" and f["int8_dot_product"]


def test_missing_cpuinfo_is_not_an_error(tmp_path):
    f = int8_facts(str(tmp_path))
    assert f["arch"] == "unknown" and f["cpu_model"] == "unknown"
    assert set(f["flags"]) == set(FLAG_NAMES) and not any(f["flags"].values())
    assert not f["u8s8_saturates"]


def test_parse_cpuinfo_reads_first_block_only():
    fields = parse_cpuinfo("\nprocessor : 0\nflags : a b\n\nprocessor : 1\nflags : c\n")
    assert fields == {"processor": "0", "flags": "a b"}


def test_this_host_has_every_key():
    f = int8_facts()
    assert set(f) >= {"arch", "cpu_model", "flags", "vnni", "u8s8_saturates", "recommended_reduce_range"}
    assert f["recommended_reduce_range"] == f["u8s8_saturates"]
