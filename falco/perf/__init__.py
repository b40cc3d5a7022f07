"""Measuring the optimization: the official-style reference loop, FLOP and memory counters,
the CPU's matmul peak, and the default batch-size rule (benchmarks/perf.py, tests/perf/)."""
