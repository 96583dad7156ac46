"""INT8 quantization: calibration statistics, graph equalization, bias correction, per-layer sensitivity,
the accuracy-aware search, and QAT with KD."""
