"""Where every stage of a real run computes: a tiny `train.py` run with device=<dev>, watched.

`train.run` runs in this process on a few photos (skimage's astronaut, mirrored and re-framed) with
the networks of benchmarks/perf_problem.py (embedded: DCGAN + projection inversion; official:
StyleGAN2-1024 + e4e + ArcFace + FaRL on the fixture weights). A forward pre-hook on every module
(as tests/core/test_stage_device.py does per network) records, for each forward of the run's
networks, the devices of its input tensors and of the module's own weights, under the stage in
progress; the stage is known from thin wrappers around the stage functions the pipeline calls
(falco/pipeline.py, falco/module.py predict_step, falco/job.py summarize), which also time them.
The run's own `[estimate]` lines (estimate=true) are kept beside the measured stage times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from PIL import Image

import falco.job
import falco.module
import falco.pipeline
import train
from benchmarks.perf_problem import OFFICIAL, compose_config
from tests.fixture_weights import write_official_checkpoints

STAGES = ("frame", "prepare", "inversion", "fake pool", "pairing", "optimization", "summary")
BATCHED = {"invert": "inversion", "pairing features": "pairing"}  # falco.pipeline._batched's names -> stage
# The tiny run: a few photos, a small frame sample and fake pool, one Adam step (every stage runs once).
TINY = ["heldout.enabled=false", "trainer.enable_progress_bar=false", "method.steps=1", "batch_size=2",
        "stages.pool_size=8", "stages.frame_samples=8", "stages.batch=2",
        "stages.pairing_detectable_only=false"]  # the fixture weights' fakes hold no faces
EMBEDDED = ["inversion=projection", "inversion.net.steps=2"]  # an inversion stage on the DCGAN as well
DDP_TIMEOUT_S = 300  # the 2-rank run's limit (a cold start loads the networks once per rank)
ROOT = Path(__file__).resolve().parents[1]


def write_photos(folder: Path, count: int = 4) -> Path:
    """`count` photos of one real face: the astronaut, mirrored, and zoomed in (distinct files)."""
    from skimage import data as skdata

    folder.mkdir(parents=True, exist_ok=True)
    face = Image.fromarray(skdata.astronaut())
    for k in range(count):
        photo = face.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if k % 2 else face
        inset = 8 * (k // 2)  # zoom in a little more every other photo
        photo = photo.crop((inset, inset, photo.width - inset, photo.height - inset))
        photo.save(folder / f"photo_{k}.png")
    return folder


def trainer_overrides(device: str) -> list[str]:
    """One process on `device`: trainer=cpu, or trainer=gpu (on the GPU the device names)."""
    kind = torch.device(device)
    if kind.type == "cpu":
        return ["trainer=cpu"]
    return ["trainer=gpu", *([f"trainer.devices=[{kind.index}]"] if kind.index is not None else [])]


def run_overrides(problem: str, photos: Path, cache: Path, weights: Path) -> list[str]:
    """The tiny run's overrides, trainer and device aside: the problem's networks, the photo folder."""
    if problem == "official":
        checkpoints = write_official_checkpoints(weights)
        nets = [o for o in OFFICIAL if not o.startswith("inversion")] + ["inversion=e4e"]
        nets += [f"{key}={path}" for key, path in checkpoints.items()]
    else:
        nets = EMBEDDED
    return [*TINY, *nets, "data=folder", f"data.root={photos}", f"cache_dir={cache}"]


class StageWatch:
    """While active: per stage, the devices each network's forwards used, and the stage's seconds."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.stage: str | None = None
        self.owner: dict[int, str] = {}  # id(module) -> network name
        self.devices: dict[str, dict[str, set[str]]] = {}
        self.seconds: dict[str, float] = {}
        self.estimates: list = []

    def forward(self, module: torch.nn.Module, args: tuple) -> None:
        name = self.owner.get(id(module))
        if self.stage is None or name is None:
            return
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        self.devices.setdefault(self.stage, {}).setdefault(name, set()).update(str(t.device) for t in tensors)

    def own(self, nets: falco.pipeline.Networks) -> None:
        """Name every module of the run's networks (the inversion first: it may hold the generator)."""
        named = {"inversion": nets.inversion, "generator": nets.generator, "identity": nets.identity,
                 "attributes": nets.attributes, "detector": nets.detector.mtcnn}
        for name, net in named.items():
            for m in net.modules() if net is not None else ():
                self.owner[id(m)] = name

    def staged(self, stage: str | Callable[..., str], fn: Callable) -> Callable:
        """`fn` run as `stage` (or as stage(*args) names it), timed up to the device's last kernel."""
        def wrapper(*args, **kwargs):
            outer, self.stage = self.stage, stage(*args, **kwargs) if callable(stage) else stage
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if torch.device(self.device).type == "cuda":
                    torch.cuda.synchronize()
                self.seconds[self.stage] = self.seconds.get(self.stage, 0.0) + time.perf_counter() - start
                self.stage = outer
        return wrapper

    def built(self, fn: Callable) -> Callable:
        def wrapper(cfg):
            nets = fn(cfg)
            self.own(nets)
            return nets
        return wrapper

    def estimated(self, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            self.estimates = fn(*args, **kwargs)
            return self.estimates
        return wrapper

    @contextmanager
    def watching(self) -> Iterator[StageWatch]:
        with ExitStack() as stack:
            stack.callback(torch.nn.modules.module.register_module_forward_pre_hook(self.forward).remove)
            for obj, attr, wrap in self._patches():
                stack.enter_context(patched(obj, attr, wrap(getattr(obj, attr))))
            yield self

    def _patches(self) -> list[tuple[object, str, Callable]]:
        batched = lambda fn: self.staged(lambda *a, **k: BATCHED.get(a[3] if len(a) > 3 else k["name"], "?"), fn)
        return [(train, "build_networks", self.built), (train, "print_estimate", self.estimated),
                (falco.pipeline, "generator_frame", lambda fn: self.staged("frame", fn)),
                (falco.pipeline, "run_prepare", lambda fn: self.staged("prepare", fn)),
                (falco.pipeline, "_batched", batched),
                (falco.pipeline, "run_fakepool", lambda fn: self.staged("fake pool", fn)),
                (falco.module.AnonymizerModule, "predict_step", lambda fn: self.staged("optimization", fn)),
                (falco.job, "summarize", lambda fn: self.staged("summary", fn))]

    def report(self) -> dict[str, dict]:
        """Per stage: its device (one, or 'mixed: ...', or 'none' if no network computed), the
        devices of each network, and its seconds."""
        out = {}
        for stage in STAGES:
            nets = {k: sorted(v) for k, v in self.devices.get(stage, {}).items()}
            seen = sorted({d for v in nets.values() for d in v})
            device = seen[0] if len(seen) == 1 else ("none" if not seen else "mixed: " + ", ".join(seen))
            out[stage] = {"device": device, "networks": nets, "seconds": self.seconds.get(stage)}
        return out


@contextmanager
def patched(obj: object, attr: str, value: object) -> Iterator[None]:
    """obj.attr = value while active, then the original back."""
    original = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, original)


def records_of(run_dir: Path) -> list[dict]:
    """The run's records (private/records.jsonl), one per input image."""
    path = run_dir / "private" / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def watched_run(problem: str, device: str, work: Path, weights: Path, photos: int = 2) -> dict:
    """The tiny run on `device`, watched: stages, the run's estimate per stage, its precision and records."""
    overrides = run_overrides(problem, write_photos(work / "photos", photos), work / "cache", weights)
    cfg = compose_config([*overrides, *trainer_overrides(device), f"device={device}", "estimate=true"])
    watch = StageWatch(device)
    start = time.perf_counter()
    with watch.watching():
        result = train.run(cfg, str(work / "run"))
    records = records_of(work / "run")
    return {"stages": watch.report(), "seconds": time.perf_counter() - start,
            "precision": str(cfg.trainer.precision), "images": len(records),
            "images_ok": sum(r["status"] == "ok" for r in records), "processed": result.processed,
            "estimate": {e.stage: {"count": e.count, "unit_seconds": e.unit_seconds, "seconds": e.seconds,
                                   "precision": e.precision} for e in watch.estimates},
            "overrides": [o for o in overrides if "checkpoint" not in o and "root" not in o and "cache" not in o]}


def ddp_run(problem: str, device: str, work: Path, weights: Path, photos: int = 4,
            timeout: float = DDP_TIMEOUT_S) -> dict:
    """The tiny run as `python train.py trainer=ddp trainer.devices=2` (Lightning re-launches it per
    rank); the watched run's stage cache is reused. Its exit code, time and records."""
    if torch.device(device).type != "cuda":
        return {"skipped": f"the 2-rank DDP run checks GPUs; the device checked is {device}"}
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return {"skipped": f"a 2-rank DDP run needs 2 GPUs; {found} visible"}
    overrides = run_overrides(problem, write_photos(work / "photos_ddp", photos), work / "cache", weights)
    run_dir = work / "run_ddp"
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, "logger=none", "trainer=ddp", "trainer.devices=2",
           "device=auto", f"run_dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    records = records_of(run_dir)
    return {"ranks": 2, "returncode": proc.returncode, "seconds": time.perf_counter() - start,
            "images": len(records), "images_ok": sum(r["status"] == "ok" for r in records),
            "expected_images": photos, "output_tail": (proc.stdout + proc.stderr)[-2000:]}


def stages_ok(stages: dict[str, dict], device: str) -> bool:
    """Every stage computed on the requested device's kind (cuda:0 for cuda)."""
    want = torch.device(device)

    def fits(d: str) -> bool:
        got = torch.device(d)
        return got.type == want.type and (want.index is None or got.index == want.index)

    return all(s["device"] not in ("none",) and not s["device"].startswith("mixed") and fits(s["device"])
               for s in stages.values())
