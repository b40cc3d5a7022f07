"""FLOPs of a piece of work, counted by torch's FlopCounterMode (forward and backward).

FlopCounterMode counts the matrix products and convolutions (mm, addmm, bmm, convolution and
its backward, scaled dot-product attention) with 2 FLOPs per multiply-add; elementwise ops are
not counted, the usual convention for "model FLOPs".
"""

from __future__ import annotations

from collections.abc import Callable

from torch.utils.flop_counter import FlopCounterMode


def count_flops(work: Callable[[], object]) -> int:
    """Run `work()` once under the counter; returns its FLOPs (forward + any backward inside)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return int(counter.get_total_flops())


def matmul_flops(m: int, k: int, n: int) -> int:
    """Reference value: an (m,k) @ (k,n) product costs 2*m*k*n FLOPs."""
    return 2 * m * k * n
