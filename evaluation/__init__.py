"""Evaluation suite: privacy and utility metrics, offline baselines, tables and plots.

Everything here is a pure function on tensors (embeddings, labels, images in [-1, 1] NCHW,
landmarks); reading a run directory is `evaluate.py`'s job. Submodules are imported on use so
that importing `evaluation` stays cheap (no matplotlib, no Inception).
"""
