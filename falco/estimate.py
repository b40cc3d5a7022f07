"""The estimated time of each stage of a run on this machine, printed before the run starts.

`estimate: true` (conf/train.yaml; experiments/paper.yaml sets it) makes train.py print, for each
stage the run has, a line such as

    [estimate] fake pool: 60000 fakes x 0.210 s = 3:30:00 on cuda (fp32)

and their total. The cost model is linear and small: each stage's unit of work is done on a probe
batch with the run's own networks, on the run's device and in its precision, once to warm up
(kernel selection, first allocations) and once timed; the time per item is multiplied by the
configured count. The probe batch is PROBE[device kind] items, at most stages.batch:

    stage         count                   timed work (per probe batch)
    frame         stages.frame_samples    generator synthesis + MTCNN
    prepare       dataset items           reading the first items + MTCNN + alignment
    inversion     dataset items           the inversion network (no line when none is configured)
    fake pool     stages.pool_size        synthesis + pairing features + MTCNN (the stage's own code)
    pairing       dataset items           pairing features of aligned faces
    optimization  dataset items           AnonymizerModule.predict_step with 1 and 1 + STEPS Adam steps
                                          in the trainer's precision: per-batch set-up + method.steps steps
    summary       dataset items           the white-box measurements (synthesis, recognizer, attributes, MTCNN)

Not counted: stages already in the cache (they are reused), writing files, the nearest-fake search,
the held-out judges of the summary. The run's precision (the trainer's) applies to every stage
but prepare (MTCNN) and the summary, which are fp32 (falco/pipeline.py run_stages, falco/summary.py),
as the run itself computes them; the optimization is spread over the trainer's ranks. Every
figure is per item at the probe batch: a GPU is faster per item at larger batches, so there the
estimate errs long. Nothing is written or downloaded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from pytorch_lightning.utilities import rank_zero_only

from .backbones.base import Generator
from .config import MethodConfig
from .data.items import SkipImage
from .device import on_device
from .module import AnonymizerModule
from .pipeline import Networks, StageKnobs
from .precision import autocast, precision_name
from .progress import clock_text
from .stages.fakepool import _embed
from .stages.frame import FFHQ_TEMPLATE
from .stages.prepare import Source, align_one
from .views import robust_features

# Items in each stage's probe batch, by device kind (the per-item time is taken at this batch size):
# a GPU is only efficient at larger batches, and its probe is cheap; a CPU's cost per item hardly depends on it.
PROBE = {"cuda": 8, "cpu": 2}
PROBE_OTHER = 2  # any other device kind
STEPS = 2  # Adam steps the optimization probe adds to a 1-step run (their mean is the step time)
PROBE_SEED = 7919  # seed of the probe latents (any: only their cost matters)
STAGES = ("frame", "prepare", "inversion", "fake pool", "pairing", "optimization", "summary")  # run order
UNITS = {"frame": "samples", "prepare": "photos", "inversion": "photos", "fake pool": "fakes",
         "pairing": "photos", "optimization": "images", "summary": "images"}  # what each stage counts


@dataclass(frozen=True)
class StageEstimate:
    stage: str
    count: int  # items the stage computes
    unit_seconds: float  # measured seconds per item
    device: str
    precision: str  # fp32 | bf16 | fp16
    ranks: int = 1  # processes sharing the stage's items

    @property
    def seconds(self) -> float:
        return self.count * self.unit_seconds / self.ranks

    def line(self) -> str:
        spread = f" / {self.ranks} ranks" if self.ranks > 1 else ""
        return (f"[estimate] {self.stage}: {self.count} {UNITS[self.stage]} x {seconds_text(self.unit_seconds)} s"
                f"{spread} = {clock_text(self.seconds)} on {self.device} ({self.precision})")


def seconds_text(seconds: float) -> str:
    """Three significant digits (whole seconds from 1000 s on), never in exponent form."""
    if seconds <= 0:
        return "0"
    return f"{seconds:.{max(0, 2 - math.floor(math.log10(seconds)))}f}"


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(work: Callable[[], object], device: str, warm_up: bool = True) -> float:
    """Seconds of one call of `work` (without autograd, as the stages run), after a warm-up call of it."""
    with torch.no_grad():
        if warm_up:
            work()
        sync(device)
        start = time.perf_counter()
        work()
        sync(device)
    return time.perf_counter() - start


@dataclass
class Probe:
    """The probe batch: generator samples standing in for aligned faces, with frame landmarks."""

    latents: torch.Tensor  # (n, *layout.shape)
    images: torch.Tensor  # (n, 3, R, R) in [-1, 1]
    landmarks: torch.Tensor  # (n, 5, 2) pixels

    @property
    def n(self) -> int:
        return len(self.latents)

    @classmethod
    def of(cls, generator: Generator, n: int, device: str) -> Probe:
        z = generator.sample(n, PROBE_SEED).to(device)
        res = generator.resolution
        with torch.no_grad():
            images = generator.synthesize(z).float().clamp(-1, 1)
        return cls(z, images, (FFHQ_TEMPLATE * res).to(device).expand(n, 5, 2).contiguous())


def probe_size(device: str, stage_batch: int) -> int:
    """Items in the probe batch on `device`, at most the stages' own batch."""
    return max(1, min(stage_batch, PROBE.get(torch.device(device).type, PROBE_OTHER)))


REDUCED = ("frame", "inversion", "fake pool", "pairing", "optimization")  # stages in the run's precision
# (prepare and summary: fp32)


def frame_cost(nets: Networks, probe: Probe, device: str, precision: str) -> float:
    def work() -> None:
        with autocast(device, precision):
            images = nets.generator.synthesize(probe.latents).float()
        nets.detector.detect_tensor(images)

    return timed(work, device) / probe.n


def read_or_none(source: Source, item):
    try:
        return source.read(item)
    except SkipImage:
        return None


def prepare_cost(nets: Networks, source: Source, probe: Probe, device: str) -> float:
    """Read, detect and align the dataset's first items (as run_prepare does, a chunk at a time)."""
    items, res = source.items[:probe.n], nets.generator.resolution

    def work() -> None:
        photos = [p for p in (read_or_none(source, it) for it in items) if p is not None]
        for photo, det in zip(photos, nets.detector.detect_batch(photos) if photos else [], strict=True):
            size = torch.tensor([photo.shape[1], photo.shape[0]], dtype=torch.float32)
            landmarks = det.landmarks if det is not None else (FFHQ_TEMPLATE * size).numpy()
            align_one(photo, landmarks, nets.alignment, FFHQ_TEMPLATE, res)

    return timed(work, device) / max(len(items), 1)


def inversion_cost(nets: Networks, probe: Probe, device: str, precision: str) -> float:
    inversion = nets.inversion
    assert inversion is not None
    with autocast(device, precision):
        return timed(lambda: inversion.invert(probe.images), device) / probe.n


def pool_cost(nets: Networks, probe: Probe, knobs: StageKnobs, device: str, precision: str) -> float:
    return timed(lambda: _embed(nets.generator, nets.attributes, FFHQ_TEMPLATE, probe.latents, nets.detector,
                                knobs.pairing_views, precision), device) / probe.n


def pairing_cost(nets: Networks, probe: Probe, knobs: StageKnobs, device: str, precision: str) -> float:
    att, res = nets.attributes, nets.generator.resolution
    thetas = att.crop_thetas(probe.landmarks, (res, res))
    with autocast(device, precision):
        return timed(lambda: robust_features(att.pairing_features, probe.images, thetas, knobs.pairing_views),
                     device) / probe.n


def optimization_cost(nets: Networks, probe: Probe, method: MethodConfig, device: str, precision: str) -> float:
    """Per image: (per-batch set-up + method.steps x one step) / n, from predict_step with 1 and
    1 + STEPS steps (targets, the Adam loop, the fp32 render) in the trainer's precision."""
    index = torch.arange(probe.n)
    batch = {"index": index, "image": probe.images, "landmarks": probe.landmarks, "init": probe.latents,
             "fixed": probe.latents, "fake": probe.latents, "seed": index}

    def run(steps: int) -> Callable[[], object]:
        module = AnonymizerModule(nets.generator, nets.identity, nets.attributes, replace(method, steps=steps),
                                  max_in_flight=probe.n, batch_invariant=method.batch_invariant)
        return lambda: module.predict_step(batch, 0)

    with autocast(device, precision):
        one = timed(run(1), device)
        more = timed(run(1 + STEPS), device, warm_up=False)
    # a probe disturbed by other work (more <= one): every step as long as the mean of all of them
    step = (more - one) / STEPS if more > one else more / (1 + STEPS)
    return (max(one - step, 0.0) + method.steps * step) / probe.n


def summary_cost(nets: Networks, probe: Probe, device: str) -> float:
    """One chunk of the summary's white-box measurements (falco/summary.py `_measure`)."""
    res, ident, att = nets.generator.resolution, nets.identity, nets.attributes

    def work() -> None:
        fakes = nets.generator.synthesize(probe.latents).float()
        theta, thetas = ident.crop_theta(probe.landmarks, (res, res)), att.crop_thetas(probe.landmarks, (res, res))
        for image in (probe.images, fakes):
            ident.embed(image, theta)
        for image in (probe.images, probe.images, fakes):
            att.predict(image, thetas)
        nets.detector.detect_tensor(probe.images)

    return timed(work, device) / probe.n


def stages_of(nets: Networks, summary: bool = True, stages_only: bool = False) -> tuple[str, ...]:
    """The stages the run computes, in order."""
    skip = {"inversion"} if nets.inversion is None else set()
    if stages_only:
        skip |= {"optimization", "summary"}
    if not summary:
        skip.add("summary")
    return tuple(s for s in STAGES if s not in skip)


def measure(nets: Networks, source: Source, method: MethodConfig, knobs: StageKnobs, device: str,
            precision: str, stages: tuple[str, ...]) -> dict[str, float]:
    """Seconds per item of each stage in `stages`, measured on `device` (the networks go back after)."""
    nets_on = [nets.generator, nets.identity, nets.attributes, nets.detector]
    nets_on += [nets.inversion] if nets.inversion is not None else []
    costs = {"frame": lambda p: frame_cost(nets, p, device, precision),
             "prepare": lambda p: prepare_cost(nets, source, p, device),
             "inversion": lambda p: inversion_cost(nets, p, device, precision),
             "fake pool": lambda p: pool_cost(nets, p, knobs, device, precision),
             "pairing": lambda p: pairing_cost(nets, p, knobs, device, precision),
             "optimization": lambda p: optimization_cost(nets, p, method, device, precision),
             "summary": lambda p: summary_cost(nets, p, device)}
    with on_device(device, *nets_on):
        probe = Probe.of(nets.generator, probe_size(device, knobs.batch), device)
        return {stage: costs[stage](probe) for stage in stages}


def counts(source: Source, knobs: StageKnobs) -> dict[str, int]:
    """Items each stage computes: the dataset's items, the frame's samples, the pool's fakes."""
    n = len(source.items)
    return {"frame": knobs.frame_samples, "prepare": n, "inversion": n, "fake pool": knobs.pool_size,
            "pairing": n, "optimization": n, "summary": n}


def plan(units: dict[str, float], count: dict[str, int], device: str, precision: str,
         ranks: int = 1) -> list[StageEstimate]:
    """Measured seconds per item x counts; the REDUCED stages in `precision`, the rest fp32; the
    optimization over `ranks`."""
    return [StageEstimate(s, count[s], units[s], device, precision if s in REDUCED else "fp32",
                          ranks if s == "optimization" else 1) for s in STAGES if s in units]


def print_estimate(nets: Networks, source: Source, method: MethodConfig, knobs: StageKnobs, trainer, device: str,
                   summary: bool = True, stages_only: bool = False) -> list[StageEstimate]:
    """Measure, print one line per stage and the total (rank 0 only); returns the estimates."""
    if getattr(rank_zero_only, "rank", 0) != 0:  # DDP: the other ranks print nothing
        return []
    precision = precision_name(trainer.precision)
    print(f"[estimate] timing one batch of {probe_size(device, knobs.batch)} per stage on {device} ...", flush=True)
    units = measure(nets, source, method, knobs, device, precision, stages_of(nets, summary, stages_only))
    estimates = plan(units, counts(source, knobs), device, precision, ranks=max(int(trainer.world_size), 1))
    for e in estimates:
        print(e.line(), flush=True)
    total = sum(e.seconds for e in estimates)
    print(f"[estimate] total: {clock_text(total)} (stages already cached take next to nothing)", flush=True)
    return estimates
