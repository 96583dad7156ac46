"""Shared fixtures for the benchmark tests: a tiny ONNX model built in code."""

import pytest


@pytest.fixture
def tiny_model(tmp_path, make_tiny_onnx):
    return make_tiny_onnx(tmp_path / "m.onnx")
