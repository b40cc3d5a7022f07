"""Speed, memory, FLOP share and reduced-precision outcomes of the optimization on one device.

The loop is the run's (falco/optimize.py: targets once per batch, then `optimize_latents`), on a
benchmark problem (benchmarks/perf_problem.py) moved to the device, under torch.autocast of the
device's kind for bf16/fp16 (fp16 with a GradScaler, as a `16-mixed` run), fp32 without autocast.
Step times are taken with the device synchronized at every step (benchmarks/harness/timing.py StepClock);
memory is the peak above the level before the call: torch.cuda.max_memory_allocated on CUDA, the
process's resident size on the CPU (benchmarks/harness/memory.py).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from benchmarks.harness.checks import compare, outcomes
from benchmarks.harness.flops import count_flops
from benchmarks.harness.memory import measure_peak
from benchmarks.harness.peak import matmul_peak, matmul_rate
from benchmarks.harness.problem import Batch, Problem
from benchmarks.harness.timing import StepClock
from falco.estimate import sync
from falco.optimize import Result, compute_targets, optimize_latents
from falco.precision import autocast, cpu_bf16_native, cuda_bf16_native

PRECISIONS = ("bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GPU_SIZES = (4096, 8192)  # square matmul sizes of a GPU's peak (the CPU's are benchmarks/harness/peak.py SIZES)
AGREE_SHARE = 0.1  # agreement bound: distances within this share of the recognizer's same-person threshold
JITTER = 1e-4  # the optimization's own sensitivity: fp32 from latents moved by this much


def native(precision: str, device: str) -> str | None:
    """None when `device` computes `precision` natively, else why it is skipped."""
    kind = torch.device(device).type
    if precision == "fp32":
        return None
    if kind == "cuda":
        if precision == "bf16" and not cuda_bf16_native():
            return "this GPU has no native bf16 (pre-Ampere): it would be emulated"
        return None
    if precision == "bf16":
        return None if cpu_bf16_native() else ("this CPU has no AVX512-BF16/AMX: bf16 would be emulated, "
                                                "~50x slower than fp32 (falco/precision.py)")
    return f"fp16 is for GPUs: on {kind} its autocast is not accelerated and a 16-mixed run needs CUDA's GradScaler"


def to_device(problem: Problem, device: str) -> Problem:
    """The problem with its networks and tensors on `device`."""
    for net in (problem.generator, problem.identity, problem.attributes):
        net.to(device)
    move = {k: getattr(problem, k).to(device) for k in ("originals", "landmarks", "init")}
    return replace(problem, **move, fixed=None if problem.fixed is None else problem.fixed.to(device))


def optimize(problem: Problem, batch: Batch, steps: int, precision: str, device: str, on_step=None) -> Result:
    """Targets, then the Adam loop, as AnonymizerModule runs them in `precision`."""
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    with autocast(device, precision):
        targets = compute_targets(problem.identity, problem.attributes, batch.originals, batch.theta_id,
                                  batch.thetas_attr)
        return optimize_latents(problem.generator, problem.identity, problem.attributes, targets, batch.init,
                                batch.fixed, **problem.knobs.loop_kwargs(steps), scaler=scaler, on_step=on_step)


def device_peak(precision: str, device: str, seconds: float) -> dict[str, float]:
    """The device's measured matmul FLOP/s in `precision` (benchmarks/harness/peak.py; larger sizes on a GPU)."""
    if torch.device(device).type == "cpu":
        return matmul_peak(DTYPES[precision], "cpu", seconds)
    rates = {n: matmul_rate(DTYPES[precision], n, seconds, device=device) for n in GPU_SIZES}
    best = max(rates, key=lambda n: rates[n])
    return {"flops": rates[best], "size": float(best)}


def flops_per_iter(problem: Problem, device: str) -> int:
    """FLOPs of one Adam step of one image (two steps' count less one step's: the set-up cancels)."""
    one = problem.batch([0])
    return count_flops(lambda: optimize(problem, one, 2, "fp32", device)) - count_flops(
        lambda: optimize(problem, one, 1, "fp32", device))


def in_flight(work, device: str) -> tuple[int, int]:
    """(peak bytes above the level before `work`, peak bytes) on `device`."""
    if torch.device(device).type != "cuda":
        mem = measure_peak(work)[1]
        return mem.in_flight, mem.peak
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    work()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device)
    return max(peak - before, 0), peak


def measure(problem: Problem, b: int, precision: str, iters: int, device: str) -> dict:
    """One warm-up step, then iters + 1 steps at batch b: the median step, the set-up, memory."""
    batch = problem.batch(list(range(b)))
    optimize(problem, batch, 1, precision, device)  # warm-up: kernel selection, allocations
    clock = StepClock()

    def step_done(step: int) -> None:
        sync(device)
        clock(step)

    mem, peak = in_flight(lambda: optimize(problem, batch, iters + 1, precision, device, step_done), device)
    step, quiet = clock.step_time()
    setup = max(clock.first() - step, 0.0)
    return {"precision": precision, "batch": b, "s_per_iter": step / b, "s_per_step": step, "setup_s": setup,
            "images_per_s": b / (setup + problem.knobs.steps * step), "quiet": quiet,
            "memory_per_image": mem / b, "memory_in_flight": mem, "memory_peak": peak,
            "memory_kind": "cuda_max_allocated" if torch.device(device).type == "cuda" else "process_rss"}


def speed(problem: Problem, sizes: list[int], precisions: list[str], iters: int, device: str,
          peaks: dict[str, dict], flops: int) -> list[dict]:
    """measure() per precision and batch size, with the effective FLOP/s as a share of the peak;
    a batch that does not fit the device's memory is recorded as such."""
    rows = []
    for precision in precisions:
        for b in sizes:
            print(f"[speed] {precision}, batch {b} ...", flush=True)
            try:
                row = measure(problem, b, precision, iters, device)
            except torch.cuda.OutOfMemoryError as e:
                rows.append({"precision": precision, "batch": b, "skipped": f"out of memory: {str(e)[:200]}"})
                torch.cuda.empty_cache()
                continue
            row["flops_per_iter"] = flops
            row["peak_share"] = flops / row["s_per_iter"] / peaks[precision]["flops"]
            rows.append(row)
    return rows


def agreement(problem: Problem, skipped: dict[str, str | None], steps: int, images: int, device: str,
              bounded: bool = True) -> dict:
    """bf16/fp16 vs fp32 outcomes (benchmarks/harness/checks.py) after `steps` steps on `images`
    images, beside fp32 from jittered latents (the optimization's own sensitivity). bounded: each is
    within the bound when its largest distance gap is under AGREE_SHARE of the same-person threshold;
    unbounded (networks with the fixture weights, whose outcomes mean nothing) the figures only."""
    batch = problem.batch(list(range(images)))
    same = problem.identity.same_person_below
    ref = outcomes(problem, batch, optimize(problem, batch, steps, "fp32", device).latents)
    bound = AGREE_SHARE * same
    moved = replace(batch, init=batch.init + JITTER * torch.randn(
        batch.init.shape, generator=torch.Generator().manual_seed(0)).to(batch.init.device))
    runs = {f"{p}_vs_fp32": (batch, p) for p in ("bf16", "fp16")}
    runs[f"fp32_jitter{JITTER:g}_vs_fp32"] = (moved, "fp32")
    out: dict = {"problem": problem.name, "bounded": bounded, "same_person_below": same,
                 **({"bound_max_abs_distance": bound} if bounded else {})}
    for key, (b, precision) in runs.items():
        if skipped.get(precision):
            out[key] = {"skipped": skipped[precision]}
            continue
        print(f"[agreement] {problem.name}: {key} ...", flush=True)
        figures = compare(ref, outcomes(problem, batch, optimize(problem, b, steps, precision, device).latents), same)
        out[key] = {"images": images, "steps": steps, **figures}
        if bounded:
            out[key]["within_bounds"] = bool(figures["max_abs_distance"] <= bound)
    return out
