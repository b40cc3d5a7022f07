"""Correctness under speed: (b) computes what (a) computes, and reduced precision keeps the outcomes.

- Gradient: the first step's gradient of the trainable latents, (b) in float32 at batch 2 vs
  (a) alone: the same function, so equal up to rounding.
- Latents: after (a)'s timed steps, (b) float32 at batch 1 and 2 vs (a), and the batch-invariant
  mode at batch 2 (one image at a time, unfolded synthesis: 0, bit for bit). Adam's first steps
  move each coordinate by about lr * sign(gradient), so a coordinate whose gradient is within
  rounding of zero can move by ~2 lr on one side only: the gap is either ~rounding or ~lr.
- Outcomes after `steps` steps on several images, in float32: identity distance to the
  original, attribute loss, named attributes; (b) in reduced precision vs (b) in float32, next
  to the optimization's own sensitivity (float32 from latents moved by 1e-4), and (embedded)
  (a) vs (b) over the whole run.
"""

from __future__ import annotations

import torch

from falco.backbones.autocast_weights import autocast_weights
from falco.latent import LatentCode
from falco.optimize import compute_targets, step_losses

from .official_loop import official_step_loss, unfrozen
from .problem import Batch, Problem
from .timing import official, ours


def latent_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def gradient_ours(problem: Problem, batch: Batch) -> torch.Tensor:
    """(b)'s float32 gradient of the batch loss w.r.t. the trainable latents at the start."""
    targets = compute_targets(problem.identity, problem.attributes, batch.originals, batch.theta_id,
                              batch.thetas_attr)
    code = LatentCode(problem.generator.layout, batch.init.float(), None if batch.fixed is None else batch.fixed)
    k = problem.knobs
    with autocast_weights(problem.generator, problem.identity, problem.attributes):
        image = problem.generator.partial_synthesis(code().detach())(code.trainable)
        per_image = step_losses(image, problem.identity, problem.attributes, targets,
                                margin_distance=k.margin_distance, id_weight=k.id_weight,
                                attr_weight=k.attr_weight, id_loss=k.id_loss, virtual_weight=0.0)[0]
    per_image.sum().backward()
    assert code.trainable.grad is not None
    return code.trainable.grad


def gradient_official(problem: Problem, batch: Batch) -> torch.Tensor:
    """(a)'s gradient w.r.t. the trainable latents of its first step (image 0 alone)."""
    code = LatentCode(problem.generator.layout, batch.init[:1].float(),
                      None if batch.fixed is None else batch.fixed[:1])
    k = problem.knobs
    with unfrozen(problem.generator, problem.attributes):
        loss = official_step_loss(problem.generator, problem.identity, problem.attributes, batch.originals[:1],
                                  code(), None if batch.theta_id is None else batch.theta_id[:1],
                                  {n: v[:1] for n, v in batch.thetas_attr.items()}, k.margin_distance,
                                  k.id_weight, k.attr_weight, k.id_loss)
        loss.backward()
    assert code.trainable.grad is not None
    return code.trainable.grad


def outcomes(problem: Problem, batch: Batch, latents: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per image, in float32: identity distance to the original, attribute loss, the named
    attributes (embedded: age, P(male)) and the original's ('<name>_original')."""
    with torch.no_grad():
        images = problem.generator.synthesize(latents).float()
        targets = compute_targets(problem.identity, problem.attributes, batch.originals, batch.theta_id,
                                  batch.thetas_attr)
        d = problem.identity.distance(problem.identity.embed(images, batch.theta_id).float(), targets.identity)
        diff = (problem.attributes.features(images, batch.thetas_attr).float() - targets.attributes).abs()
        out = {"distance": d, "attr_loss": diff.mean(-1).sum(-1) if diff.ndim == 3 else diff.mean(-1)}
        before = problem.attributes.predict(batch.originals, batch.thetas_attr)
        for k, v in problem.attributes.predict(images, batch.thetas_attr).items():
            out[k], out[f"{k}_original"] = v.float(), before[k].float()
    return out


def aggregates(o: dict[str, torch.Tensor], same_below: float) -> dict[str, float]:
    """What a run's summary reports: means, share past the same-person rule, attributes kept."""
    out = {"mean_distance": float(o["distance"].mean()), "mean_attr_loss": float(o["attr_loss"].mean()),
           "share_past_rule": float((o["distance"] >= same_below).float().mean())}
    if "age" in o:
        out["mean_abs_age_change"] = float((o["age"] - o["age_original"]).abs().mean())
    if "male" in o:
        out["gender_kept"] = float(((o["male"] > 0.5) == (o["male_original"] > 0.5)).float().mean())
    return out


def compare(ref: dict[str, torch.Tensor], other: dict[str, torch.Tensor], same_below: float) -> dict:
    """Per-image largest absolute differences, flipped same-person decisions, and `other`'s aggregates."""
    out = {f"max_abs_{k}": float((other[k] - ref[k]).abs().max()) for k in ref if not k.endswith("_original")}
    out["decision_flips"] = int(((ref["distance"] < same_below) != (other["distance"] < same_below)).sum())
    return {**out, "aggregates": aggregates(other, same_below)}


def batch_invariance(problem: Problem, official_run: dict) -> dict:
    """(b) float32 vs (a): first-step gradient (batch 2) and latents after (a)'s timed steps."""
    pair, run = problem.batch([0, 1]), official_run["steps_run"]
    ga, gb = gradient_official(problem, pair), gradient_ours(problem, pair)[:1]
    g1 = gradient_ours(problem, problem.batch([0]))
    return {"fp32_gradient_rel_gap": float((gb - ga).abs().max() / ga.abs().max()),
            # the scale of rounding alone: the same loop at batch 1 vs batch 2 (oneDNN's kernels differ)
            "fp32_gradient_rel_gap_b1_vs_b2": float((gb - g1).abs().max() / g1.abs().max()),
            "fp32_b_vs_a_batch2_max_abs": latent_gap(ours(problem, pair, run, "fp32").latents[:1],
                                                     official_run["latents"]),
            "fp32_b_vs_a_batch1_max_abs": latent_gap(ours(problem, problem.batch([0]), run, "fp32").latents,
                                                     official_run["latents"]),
            # the batch-invariant mode (default under 32-true): bit for bit (a), whatever the batch
            "fp32_invariant_b_vs_a_batch2_max_abs": latent_gap(
                ours(problem, pair, run, "fp32", exact=True).latents[:1], official_run["latents"]),
            "latent_scale": float(official_run["latents"].abs().max()), "lr": problem.knobs.lr, "check_steps": run}


def outcome_tolerance(problem: Problem, official_run: dict, precision: str, steps: int, images: int,
                      jitter: float = 1e-4) -> dict:
    """batch_invariance, then the outcomes of `images` images after `steps` steps (see above)."""
    checks: dict = batch_invariance(problem, official_run)
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
