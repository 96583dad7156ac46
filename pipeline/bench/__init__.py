"""Benchmark harness, latency statistics, environment fingerprint, trtexec import and the regression gate.

Modules: `harness` (BenchConfig, measure, measure_interleaved), `stats` (LatencyStats), `fingerprint`,
`result` (the result JSON document), `compare` (bootstrap regression gate), `trtexec` / `trtexec_log`
(run trtexec and parse its logs), `plots`, `cli` (`edgepipe bench ...`) and `pytest_plugin`.
Nothing heavy is imported here.
"""
