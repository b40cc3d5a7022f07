"""The precision a run uses: `trainer.precision: auto` picks it from the hardware.

bf16 pays only where the hardware computes it natively. x86 CPUs with AVX512-BF16 or AMX
run bf16 through oneDNN several times faster than fp32; on other CPUs (AVX2 only, most
laptops and older servers) PyTorch emulates bf16 by converting to fp32 and back, about 50x
SLOWER than fp32 (measured on an AVX2 CPU: 1024x1024 matmul 0.6 GFLOP/s in bf16 vs 27 in
fp32, 3x3 convolution 0.5 vs 38). CUDA GPUs compute bf16 natively from Ampere on; older
ones get fp16 with a GradScaler instead.

    auto -> bf16-mixed  CUDA GPU with native bf16; CPU with AVX512-BF16 or AMX
            16-mixed    CUDA GPU without native bf16
            32-true     any other CPU; any other accelerator (no rule for it here)

An explicit precision is used as given. An explicit bf16 one (`bf16-mixed`, `bf16-true`) on a
CPU without native bf16 is honoured with a warning that gives the slowdown, measured on the
spot with a small matmul.

Environment: FALCO_CPU_BF16=native|emulated overrides the CPU detection (for tests, or a
virtual machine that hides its CPU flags). The detection reads the `flags` of /proc/cpuinfo;
where there is none (macOS, Windows) it asks PyTorch's CPU feature probes, and without those
it assumes emulated bf16.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ENV = "FALCO_CPU_BF16"  # native | emulated: overrides the CPU's bf16 detection
CPUINFO = Path("/proc/cpuinfo")
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
TYPICAL_SLOWDOWN = 50  # bf16 vs fp32 time on CPUs without them (matmul and convolution, measured on AVX2)
PROBE_SIZE = 256  # the on-the-spot measurement: a (256 x 256) @ (256 x 256) product, a few ms in fp32
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of each reduced precision


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str  # what the config asked for ('auto' or a Lightning precision)
    precision: str  # what the Trainer gets
    accelerator: str  # the device kind the choice was made for: cpu, cuda, mps, ...
    reason: str  # one line for people: why this precision

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def cpu_flags(path: Path | None = None) -> set[str] | None:
    """The CPU feature flags of /proc/cpuinfo (its `flags` lines), None without the file."""
    try:
        text = (path or CPUINFO).read_text()
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return flags


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 natively (FALCO_CPU_BF16 first, then the CPU's flags)."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced:
        if forced not in ("native", "emulated"):
            raise ValueError(f"{ENV}={os.environ[ENV]!r}: use 'native' or 'emulated' (or unset it to detect)")
        return forced == "native"
    flags = cpu_flags()
    if flags is not None:
        return any(f in flags for f in CPU_BF16_FLAGS)
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(p() for p in probes if p is not None)


def cuda_bf16_native() -> bool:
    """Whether the current CUDA device computes bf16 natively (Ampere or newer); emulation does not count."""
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def device_kind(accelerator: str) -> str:
    """Lightning's accelerator name -> the device kind it will run on ('auto' and 'gpu' as Lightning picks)."""
    name = str(accelerator).lower()
    if name in ("auto", "gpu"):
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu" if name == "auto" else "cuda"  # 'gpu' without one: Lightning itself reports that
    return name


def bf16_slowdown(size: int = PROBE_SIZE, repeats: int = 3) -> float:
    """Time of a (size x size) matmul in bf16 over its time in fp32 on this CPU (best of `repeats`)."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        x @ y  # warm-up: kernel selection
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            x @ y
            times.append(time.perf_counter() - start)
        return min(times)

    return best(a.bfloat16(), b.bfloat16()) / max(best(a, b), 1e-9)


def emulated_bf16_warning(precision: str) -> str:
    """The warning for an explicit bf16 precision on a CPU without native bf16, with the measured slowdown."""
    try:
        measured = (f"a {PROBE_SIZE}x{PROBE_SIZE} matmul took {bf16_slowdown():.2g}x as long in bf16 as in fp32 "
                    f"here (typically ~{TYPICAL_SLOWDOWN}x)")
    except RuntimeError as e:  # a build without CPU bf16 matmul: the typical figure only
        measured = f"typically ~{TYPICAL_SLOWDOWN}x slower than fp32 (measuring failed: {e})"
    return (f"trainer.precision={precision} on a CPU without AVX512-BF16/AMX: bf16 is emulated, {measured}. "
            f"Use trainer.precision=auto or 32-true for speed ({ENV}=native if this CPU does have them).")


def resolve_precision(requested: str | int, accelerator: str = "auto") -> PrecisionChoice:
    """The precision for `accelerator`: 'auto' by the rule of this module, anything else as given
    (with a warning for bf16 on a CPU that emulates it)."""
    req, kind = str(requested), device_kind(accelerator)
    if req != "auto":
        reason = f"{req} as configured"
        if req.startswith("bf16") and kind == "cpu" and not cpu_bf16_native():
            reason = emulated_bf16_warning(req)
            warnings.warn(reason, stacklevel=2)
        return PrecisionChoice(req, req, kind, reason)
    if kind == "cuda":
        if cuda_bf16_native():
            return PrecisionChoice(req, "bf16-mixed", kind, "auto -> bf16-mixed: this GPU computes bf16 natively")
        return PrecisionChoice(req, "16-mixed", kind,
                               "auto -> 16-mixed: this GPU has no native bf16 (pre-Ampere); fp16 with a GradScaler")
    if kind == "cpu":
        if cpu_bf16_native():
            return PrecisionChoice(req, "bf16-mixed", kind,
                                   "auto -> bf16-mixed: this CPU has AVX512-BF16/AMX, bf16 is native")
        return PrecisionChoice(req, "32-true", kind, "auto -> 32-true: this CPU has no AVX512-BF16/AMX, "
                               f"bf16 would be emulated (~{TYPICAL_SLOWDOWN}x slower)")
    return PrecisionChoice(req, "32-true", kind, f"auto -> 32-true: no mixed-precision rule for accelerator {kind!r}")


def precision_name(trainer_precision: str) -> str:
    """Lightning's precision ('bf16-mixed', '16-mixed', '32-true', ...) -> bf16 | fp16 | fp32."""
    p = str(trainer_precision)
    return "bf16" if p.startswith("bf16") else "fp16" if p.startswith("16") else "fp32"


def autocast(device: str | torch.device, precision: str):
    """The autocast region of `precision` (bf16 | fp16 | fp32) on `device` (none for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of fp32, {', '.join(DTYPES)}; got {precision!r}")
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])
