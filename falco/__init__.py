"""FALCO face-dataset anonymization (the library every job, test and benchmark imports)."""

import os

import torch

# MKL's conditional numerical reproducibility: its float32 GEMM otherwise picks code paths by the
# memory alignment of its operands, so the same product can differ in the last bit from one call
# to the next (seen: method.batch_invariant runs stopped matching the official per-image loop
# after unrelated allocations). AUTO keeps the CPU's best instruction set and fixes that
# ("AUTO,STRICT" does too, but put a 2-process run's latents 7.6e-5 (relative) from the
# 1-process run's, beyond the scale tests' 1e-5). No speed cost measured on a 64x4096x512 matmul
# (AMX Xeon). MKL reads it at its first call, so setting it after importing torch is in time;
# a user's own MKL_CBWR wins.
os.environ.setdefault("MKL_CBWR", "AUTO")

# Subnormal floats are flushed to zero (FTZ/DAZ) in every process that uses the library: CPUs
# compute them in microcode, and the attribute nets' gradients produce them. Measured on an AVX2
# CPU, one 3x3 convolution's backward (64 images of 64 channels at 14 px) took 0.22 s with them and
# 0.01 s without; a whole optimization step 1.8 s vs 1.3 s. Values below 1.2e-38 carry nothing
# an fp32 result keeps. Set at import, before the first parallel region starts its threads.
torch.set_flush_denormal(True)
