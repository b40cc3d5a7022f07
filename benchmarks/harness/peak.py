"""The machine's measured matmul throughput, the yardstick for "effective FLOP/s".

A large square matrix product is the best case for the CPU's matrix units (AMX/AVX512-BF16
through oneDNN/MKL on x86), so its rate, measured in the same process as the benchmark and
under the same load, is the peak an iteration's FLOP rate is compared with.
"""

from __future__ import annotations

import time

import torch

SIZES = (1024, 2048, 3072)  # square sizes tried; the best rate counts (small ones can beat big ones)


def matmul_rate(dtype: torch.dtype, size: int, seconds: float = 0.6, device: str = "cpu") -> float:
    """FLOP/s of repeated (size x size) @ (size x size) products in `dtype`."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(2):  # warm-up: kernel selection, page faults
        a @ b
    sync(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        sync(device)
    return 2 * size**3 * runs / (time.perf_counter() - start)


def sync(device: str) -> None:
    """Wait for queued GPU work (no-op on CPU, where ops run synchronously)."""
    if device != "cpu":
        torch.cuda.synchronize()


def matmul_peak(dtype: torch.dtype = torch.bfloat16, device: str = "cpu", seconds: float = 0.6) -> dict[str, float]:
    """{'flops': best rate over SIZES, 'size': the size that reached it}. A size is skipped when one
    product of it would outlast the `seconds` window at the best rate so far: where bf16 is
    emulated (no AVX512-BF16/AMX, ~0.6 GFLOP/s) a 3072 product alone takes ~100 s."""
    rates: dict[int, float] = {}
    for n in SIZES:
        if rates and 2 * n**3 / max(rates.values()) > seconds:
            break
        rates[n] = matmul_rate(dtype, n, seconds, device=device)
    best = max(rates, key=lambda n: rates[n])
    return {"flops": rates[best], "size": float(best)}
