"""The benchmarks, run from the repository root as ``python -m benchmarks.<name>``; their results stand beside
them (``results.md``, ``fused_head.md``, ...). The harness (memory and child processes) is ``harness.py``."""
