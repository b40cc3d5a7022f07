"""Benchmarks and the GPU check: scripts run from the repository root (python benchmarks/perf.py),
and the measuring harness they share (benchmarks/harness/). Not part of the library: a job runs
nothing from here."""
