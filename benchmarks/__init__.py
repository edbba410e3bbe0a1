"""Benchmarks: `python -m benchmarks` (see benchmarks/run.py); benchmarks/ablation.py trains variants."""
