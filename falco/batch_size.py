"""How many images to optimize at once so that a run fits the machine it runs on.

The rule (README "Performance"):

    images in flight = clamp(floor((HEADROOM * available - fixed) / per_image), 1, CAP)

- available: memory free now (CPU: /proc/meminfo MemAvailable; GPU: free device memory);
- per_image, fixed: the optimization's memory in flight per image and its batch-independent
  part, measured by benchmarks/perf.py (peak resident memory above the level before the batch,
  linear fit over batch sizes) for each generator and precision, below;
- HEADROOM: the share of the free memory a batch may take, leaving room for other processes,
  the stage networks, the writer and allocator fragmentation;
- CAP: beyond a few images per batch the CPU gets no faster (the 1024 px layers already fill it),
  and every image in flight is lost work on a preemption.
Memory does not depend on the dataset size (one batch is in flight at a time), only on this.
"""

from __future__ import annotations

import math

import torch

MB = 2**20
HEADROOM = 0.5
CAP = 16
# (generator class, resolution, precision) -> (per image, fixed) MB in flight, measured on
# 2 CPU cores (benchmarks/perf.py, torch 2.14). fp16 is taken as bf16 (same element size).
MEASURED_MB = {
    ("GenforceStyleGAN2", 1024, "bf16"): (740, 620),  # fixed part: includes the bf16 copies of the weights
    ("GenforceStyleGAN2", 1024, "fp32"): (1500, 400),
    ("DCGANGenerator", 64, "bf16"): (8, 30),
    ("DCGANGenerator", 64, "fp32"): (10, 30),
}
UNKNOWN_FACTOR = 2.0  # other generators: the StyleGAN2 figure scaled by pixels, times this margin
REFERENCE = ("GenforceStyleGAN2", 1024)


def precision_of(device: torch.device | str) -> str:
    """'bf16' / 'fp32' from the autocast state on `device` ('fp16' counts as 'bf16')."""
    kind = torch.device(device).type
    return "bf16" if torch.is_autocast_enabled(kind) else "fp32"


def memory_per_image(generator: torch.nn.Module, precision: str) -> tuple[int, int]:
    """(per image, fixed) bytes in flight for this generator's optimization."""
    name, res = type(generator).__name__, int(getattr(generator, "resolution", 1024))
    if (name, res, precision) in MEASURED_MB:
        per, fixed = MEASURED_MB[(name, res, precision)]
        return per * MB, fixed * MB
    per, fixed = MEASURED_MB[(*REFERENCE, precision)]
    scale = UNKNOWN_FACTOR * (res / REFERENCE[1]) ** 2
    return max(int(per * scale * MB), MB), fixed * MB


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def free_memory(device: torch.device | str) -> int:
    device = torch.device(device)
    if device.type == "cuda":  # unverified here (no GPU on the development machine)
        return int(torch.cuda.mem_get_info(device)[0])
    return available_bytes()


def images_that_fit(generator: torch.nn.Module, precision: str, device: torch.device | str = "cpu",
                    available: int | None = None, headroom: float = HEADROOM, cap: int = CAP) -> int:
    """The rule above: how many images to optimize at once."""
    per, fixed = memory_per_image(generator, precision)
    free = free_memory(device) if available is None else available
    return max(1, min(cap, math.floor((headroom * free - fixed) / per)))
