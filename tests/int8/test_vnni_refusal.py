"""A full-range (reduce_range false) U8S8 model is refused on an x86 device without VNNI."""

from __future__ import annotations

from pipeline.deploy.device.device_runner import full_range_refusal

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_vnni\n"


def _manifest(reduce_range, activation="uint8", decided=None):
    m = {"target": {"quantization": {"activation_type": activation, "reduce_range": reduce_range}}}
    if decided is not None:
        m["quantization"] = {"reduce_range": decided}
    return m


def test_full_range_on_avx2_only_is_refused_with_the_fix():
    msg = full_range_refusal(_manifest(False), AVX2_ONLY, "x86_64")
    assert msg and "VNNI" in msg and "reduce_range: true" in msg


def test_the_stage_decision_wins_over_the_target_auto():
    assert full_range_refusal(_manifest("auto", decided=False), AVX2_ONLY, "x86_64")
    assert full_range_refusal(_manifest("auto", decided=True), AVX2_ONLY, "x86_64") is None


def test_allowed_with_vnni_with_reduce_range_on_arm_and_for_s8s8():
    assert full_range_refusal(_manifest(False), VNNI, "x86_64") is None
    assert full_range_refusal(_manifest(True), AVX2_ONLY, "x86_64") is None
    assert full_range_refusal(_manifest(False), "Features\t: asimd\n", "aarch64") is None
    assert full_range_refusal(_manifest(False, "int8"), AVX2_ONLY, "x86_64") is None
