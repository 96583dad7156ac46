"""Pruning tools behind the `prune` stage: latency measurement on the host, per-layer latency profiles,
the budget search (prune until a latency / speed-up / MACs / params budget holds), per-group sensitivity
curves and the allocation built on them, and 2:4 sparsity.

Torch-Pruning stays the engine for dependency-aware channel removal and torch.ao.pruning makes the 2:4
masks; these modules decide how much to prune where, and measure what it bought.
"""
