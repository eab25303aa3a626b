"""Benchmark suite (pytest-benchmark): training steps, inference and kernels per backend."""
