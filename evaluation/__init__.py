"""Evaluation suite of evaluate.py: the evaluation of a run directory (run_eval), the keyed
mode's metrics, offline baselines, the search objective, tables and plots.

It reads run directories through the library's reader (falco/rundir.py) and measures with the
library's detector, re-identification and held-out judges (falco/), as the run's own summary
does; the training side (train.py, falco/) imports nothing from here at module import time.
Submodules are imported on use so that importing `evaluation` stays cheap (no matplotlib, no
Inception).
"""
