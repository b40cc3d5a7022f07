"""Timed runs of the official-style loop (a) and of ours (b), with FLOPs and memory.

Warm-up first (one step: oneDNN creates its kernels for new shapes, torch.compile compiles),
counted with FlopCounterMode and reported, never timed. An iteration is one Adam step of one
image. (b)'s per-batch set-up (targets, fixed layers' synthesis, weight casts) is timed apart
from its steps and charged to images/s over the configured number of steps.
"""

from __future__ import annotations

import contextlib
import time

import torch

from falco.backbones.autocast_weights import autocast_weights
from falco.latent import LatentCode
from falco.optimize import Result, compute_targets, optimize_latents

from .compile import compiled
from .flops import count_flops
from .machine import Share
from .memory import measure_peak
from .official_loop import official_style_optimize
from .problem import Batch, Problem

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# A step counts as quiet when other processes used at most this share of the CPUs meanwhile:
# on 2 cores, one busy neighbour (50%) triples a step (OpenMP threads wait for each other).
QUIET = 0.1


def autocast_for(precision: str, device: str = "cpu"):
    """torch.autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=DTYPES[precision])


class StepClock:
    """on_step hook: records when each step ends and how busy the other processes kept the
    CPUs meanwhile. Interval 0 (from construction) holds the set-up and the first step; the
    following ones are single steps."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []
        self.shares: list[Share] = [Share().start()]
        self.others: list[float] = []  # other processes' CPU share during each interval

    def __call__(self, step: int) -> None:
        self.ends.append(time.perf_counter())
        self.others.append(self.shares[-1].stop()["others_cpu_share"])
        self.shares.append(Share().start())

    def steps(self) -> list[float]:
        """Durations of the steps after the first."""
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]

    def step_time(self) -> tuple[float, bool]:
        """(median step time, whether it is over quiet steps only): steps during which other
        processes used more than QUIET of the CPUs are left out when any quiet one exists."""
        quiet = [t for t, o in zip(self.steps(), self.others[1:], strict=True) if o <= QUIET]
        return (median(quiet), True) if quiet else (median(self.steps()), False)

    def first(self) -> float:
        return self.ends[0] - self.start


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def official(problem: Problem, batch: Batch, steps: int, on_step=None) -> torch.Tensor:
    """(a) on `batch`: per image, float32."""
    return official_style_optimize(problem.generator, problem.identity, problem.attributes, batch.originals,
                                   batch.init, batch.fixed, batch.theta_id, batch.thetas_attr,
                                   **problem.knobs.loop_kwargs(steps), on_step=on_step)


def measure_official(problem: Problem, iters: int) -> dict:
    """(a) at batch 1: FLOPs of one iteration (during the warm-up), then iters + 1 steps, of
    which the last `iters` are timed one by one (median)."""
    batch = problem.batch([0])
    start = time.perf_counter()
    flops = count_flops(lambda: official(problem, batch, 1))
    warmup = time.perf_counter() - start
    clock = StepClock()
    latents, mem = measure_peak(lambda: official(problem, batch, iters + 1, clock))
    per_iter, quiet = clock.step_time()
    return {"batch": 1, "s_per_iter": per_iter, "quiet": quiet, "step_times": clock.steps(),
            "step_others_share": clock.others[1:], "steps_run": iters + 1,
            "images_per_s": 1.0 / (problem.knobs.steps * per_iter), "flops_per_iter": flops, "warmup_s": warmup,
            "mem_in_flight": mem.in_flight, "mem_in_flight_per_image": mem.in_flight, "peak_rss": mem.peak,
            "latents": latents}


def ours(problem: Problem, batch: Batch, steps: int, precision: str, on_step=None, exact: bool = False) -> Result:
    """(b) on `batch`, as AnonymizerModule.predict_step runs it (targets, then the loop).
    exact: the batch-invariant mode (method.batch_invariant): one image at a time, unfolded synthesis."""
    if exact:
        parts = [ours_at_once(problem, batch.part(n), steps, precision, on_step, exact=True)
                 for n in range(batch.init.shape[0])]
        return Result(torch.cat([p.latents for p in parts]), torch.cat([p.history for p in parts], dim=1),
                      torch.cat([p.distance for p in parts], dim=1))
    return ours_at_once(problem, batch, steps, precision, on_step)


def ours_at_once(problem: Problem, batch: Batch, steps: int, precision: str, on_step=None,
                 exact: bool = False) -> Result:
    """The whole batch in one optimization."""
    with autocast_for(precision):
        targets = compute_targets(problem.identity, problem.attributes, batch.originals, batch.theta_id,
                                  batch.thetas_attr)
        return optimize_latents(problem.generator, problem.identity, problem.attributes, targets, batch.init,
                                batch.fixed, **problem.knobs.loop_kwargs(steps), on_step=on_step, exact=exact)


def setup_work(problem: Problem, batch: Batch, precision: str) -> None:
    """What (b) does once per batch before its steps: targets, fixed layers' synthesis, casts."""
    with autocast_for(precision):
        compute_targets(problem.identity, problem.attributes, batch.originals, batch.theta_id, batch.thetas_attr)
        code = LatentCode(problem.generator.layout, batch.init.float(),
                          None if batch.fixed is None else batch.fixed.float())
        with autocast_weights(problem.generator, problem.identity, problem.attributes):
            problem.generator.partial_synthesis(code().detach())


def measure_ours(problem: Problem, b: int, iters: int, precision: str, compile_step: bool = False) -> dict:
    """(b) at batch b: a warm-up step (FLOPs, compilation), then iters + 1 steps; the first
    interval less a step is the per-batch set-up, the last `iters` are timed one by one."""
    batch = problem.batch(list(range(b)))
    flops = None
    with compiled(problem, compile_step):
        start = time.perf_counter()
        if compile_step:  # FlopCounterMode does not trace through compiled code
            ours(problem, batch, 1, precision)
        else:
            flops = count_flops(lambda: ours(problem, batch, 1, precision)) - count_flops(
                lambda: setup_work(problem, batch, precision))
        warmup = time.perf_counter() - start
        clock = StepClock()
        _, mem = measure_peak(lambda: ours(problem, batch, iters + 1, precision, clock))
    step, quiet = clock.step_time()  # one Adam step of the whole batch
    setup = max(clock.first() - step, 0.0)
    return {"batch": b, "precision": precision, "compile": compile_step, "s_per_iter": step / b,
            "s_per_step": step, "quiet": quiet, "step_times": clock.steps(), "step_others_share": clock.others[1:],
            "setup_s": setup,
            "images_per_s": b / (setup + problem.knobs.steps * step),
            "flops_per_iter": None if flops is None else flops / b, "warmup_s": warmup,
            "mem_in_flight": mem.in_flight, "mem_in_flight_per_image": mem.in_flight / b, "peak_rss": mem.peak}
