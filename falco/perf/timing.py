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

from ..backbones.autocast_weights import autocast_weights
from ..latent import LatentCode
from ..optimize import Result, compute_targets, optimize_latents
from .compile import compiled
from .flops import count_flops
from .memory import measure_peak
from .official_loop import official_style_optimize
from .problem import Batch, Problem

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(precision: str, device: str = "cpu"):
    """torch.autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=DTYPES[precision])


class StepClock:
    """on_step hook: records when each step ends. With `call()` as the start, interval 0 holds
    the set-up and the first step; the following ones are single steps."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []

    def __call__(self, step: int) -> None:
        self.ends.append(time.perf_counter())

    def steps(self) -> list[float]:
        """Durations of the steps after the first."""
        return [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]

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
    per_iter = median(clock.steps())
    return {"batch": 1, "s_per_iter": per_iter, "step_times": clock.steps(), "steps_run": iters + 1,
            "images_per_s": 1.0 / (problem.knobs.steps * per_iter), "flops_per_iter": flops, "warmup_s": warmup,
            "mem_in_flight": mem.in_flight, "mem_in_flight_per_image": mem.in_flight, "peak_rss": mem.peak,
            "latents": latents}


def ours(problem: Problem, batch: Batch, steps: int, precision: str, on_step=None) -> Result:
    """(b) on `batch`, as AnonymizerModule.predict_step runs it (targets, then the loop)."""
    with autocast_for(precision):
        targets = compute_targets(problem.identity, problem.attributes, batch.originals, batch.theta_id,
                                  batch.thetas_attr)
        return optimize_latents(problem.generator, problem.identity, problem.attributes, targets, batch.init,
                                batch.fixed, **problem.knobs.loop_kwargs(steps), on_step=on_step)


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
    step = median(clock.steps())  # one Adam step of the whole batch
    setup = max(clock.first() - step, 0.0)
    return {"batch": b, "precision": precision, "compile": compile_step, "s_per_iter": step / b,
            "s_per_step": step, "step_times": clock.steps(), "setup_s": setup,
            "images_per_s": b / (setup + problem.knobs.steps * step),
            "flops_per_iter": None if flops is None else flops / b, "warmup_s": warmup,
            "mem_in_flight": mem.in_flight, "mem_in_flight_per_image": mem.in_flight / b, "peak_rss": mem.peak}


def latent_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def outcomes(problem: Problem, batch: Batch, latents: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image, in float32: identity distance to the original, attribute loss, the named
    attributes (embedded: age, P(male)) and their change from the original's."""
    with torch.no_grad():
        images = problem.generator.synthesize(latents).float()
        targets = compute_targets(problem.identity, problem.attributes, batch.originals, batch.theta_id,
                                  batch.thetas_attr)
        d = problem.identity.distance(problem.identity.embed(images, batch.theta_id).float(), targets.identity)
        diff = (problem.attributes.features(images, batch.thetas_attr).float() - targets.attributes).abs()
        out = {"distance": d, "attr_loss": diff.mean(-1).sum(-1) if diff.ndim == 3 else diff.mean(-1)}
        before = problem.attributes.predict(batch.originals, batch.thetas_attr)
        for k, v in problem.attributes.predict(images, batch.thetas_attr).items():
            out[k], out[f"{k}_change"] = v.float(), (v.float() - before[k].float()).abs()
    return out


def aggregates(o: dict[str, torch.Tensor], same_below: float) -> dict[str, float]:
    """What a run's summary reports: means over the images, share past the same-person rule."""
    out = {f"mean_{k}": float(v.mean()) for k, v in o.items()}
    out["share_past_rule"] = float((o["distance"] >= same_below).float().mean())
    return out


def compare(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor], same_below: float) -> dict:
    """Per-image largest absolute differences, flipped same-person decisions, and `other`'s aggregates."""
    out = {f"max_abs_{k}": float((other[k] - ref[k]).abs().max()) for k in ref if not k.endswith("_change")}
    out["decision_flips"] = int(((ref["distance"] < same_below) != (other["distance"] < same_below)).sum())
    return {**out, "aggregates": aggregates(other, same_below)}


def outcome_tolerance(problem: Problem, official_run: dict, precision: str, steps: int, images: int,
                      jitter: float = 1e-4) -> dict:
    """Batch invariance in float32 ((b) at batch 2 and 1 vs (a), same steps as (a)'s timed run);
    then, on `images` images after `steps` steps, (b) in `precision` vs (b) in float32, next to
    the optimization's own sensitivity: float32 started from latents moved by `jitter`
    (embedded: also (a) vs (b) in float32)."""
    run = official_run["steps_run"]
    b32 = ours(problem, problem.batch([0, 1]), run, "fp32").latents
    b32_alone = ours(problem, problem.batch([0]), run, "fp32").latents
    checks: dict = {"fp32_b_vs_a_batch2_max_abs": latent_gap(b32[:1], official_run["latents"]),
                    "fp32_b_vs_a_batch1_max_abs": latent_gap(b32_alone, official_run["latents"]),
                    "latent_scale": float(official_run["latents"].abs().max()), "check_steps": run}
    batch = problem.batch(list(range(min(images, problem.originals.shape[0]))))
    same = problem.identity.same_person_below
    ref = outcomes(problem, batch, ours(problem, batch, steps, "fp32").latents)
    runs = {f"{precision}_vs_fp32": ours(problem, batch, steps, precision).latents}
    moved = Batch(**{**vars(batch), "init": batch.init + jitter * torch.randn(
        batch.init.shape, generator=torch.Generator().manual_seed(0))})
    runs[f"fp32_jitter{jitter:g}_vs_fp32"] = ours(problem, moved, steps, "fp32").latents
    if problem.name == "embedded":  # the whole official-style run is affordable on the small nets
        runs["a_vs_fp32_b"] = official(problem, batch, steps)
    n = batch.originals.shape[0]
    for key, latents in runs.items():
        checks[key] = {"images": n, "steps": steps, **compare(ref, outcomes(problem, batch, latents), same)}
    checks["fp32_aggregates"] = aggregates(ref, same)
    return checks
