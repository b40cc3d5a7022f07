"""The benchmark harness: the official-style reference loop, timing, FLOP and memory counters,
CPU shares, the matmul peak, the outcome checks and the problem the benchmarks time
(benchmarks/perf.py, tests/perf/). The library's own batch-size rule is falco/batch_size.py."""
