"""The benchmark's problems, built from the project's Hydra configs like a run builds them.

embedded: conf defaults (DCGAN + dlib ResNet + age-gender); the originals are DCGAN faces in
which MTCNN finds a face (its 5 landmarks place the recognizers' crops, as in a run).
official: generator=stylegan2_ffhq1024 identity=arcface_irse50 attributes=farl, with the
equivalence fixtures' deterministic weights saved once in the official containers; the
originals are generator samples (the fixture weights draw no faces; ArcFace and FaRL crop the
whole aligned image, so landmarks play no part).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.harness.problem import Knobs, Problem
from falco.config import MethodConfig, register
from falco.detect import FaceDetector

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL = ["generator=stylegan2_ffhq1024", "identity=arcface_irse50", "attributes=farl", "inversion=none"]
# Fixture folder -> (config key, file name) of the three networks the loop uses.
FIXTURES = {"genforce_stylegan2_ffhq1024": ("generator.checkpoint", "stylegan2_ffhq1024.pth"),
            "arcface_ir_se50": ("identity.checkpoint", "model_ir_se50.pth"),
            "farl_clip_vitb16_visual": ("attributes.checkpoint", "FaRL-Base-Patch16-LAIONFace20M-ep64.pth")}
# MTCNN-style points (eyes, nose, mouth corners) of a face filling a 64x64 frame, scaled to the
# resolution when MTCNN finds no face.
TEMPLATE_64 = torch.tensor([[22.0, 26.0], [42.0, 26.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]])


def fixture_checkpoints(folder: Path) -> list[str]:
    """Write (once) the official-format checkpoints; returns the config overrides naming them."""
    from tests.fixture_weights import official_container  # the fixtures' weight rule

    folder.mkdir(parents=True, exist_ok=True)
    overrides = []
    for name, (key, filename) in FIXTURES.items():
        path = folder / filename
        if not path.is_file():
            torch.save(official_container(name), path.with_suffix(".partial"))
            path.with_suffix(".partial").replace(path)
        overrides.append(f"{key}={path}")
    return overrides


def compose_config(overrides: list[str]):
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=["logger=none", *overrides])


def method_of(cfg) -> MethodConfig:
    method: MethodConfig = OmegaConf.to_object(cfg.method)  # type: ignore[assignment]
    method.margin = float(cfg.identity.margin) if method.margin is None else method.margin
    method.attr_weight = float(cfg.attributes.attr_weight) if method.attr_weight is None else method.attr_weight
    return method


def originals_and_landmarks(generator, count: int, detect: bool, seed: int = 1000):
    """`count` generated originals in [-1,1] and their landmarks (MTCNN's when `detect`)."""
    res = generator.resolution
    with torch.no_grad():
        images = generator.synthesize(generator.sample(count * (3 if detect else 1), seed)).float().clamp(-1, 1)
    if not detect:
        return images, (TEMPLATE_64 * res / 64).expand(count, 5, 2).clone()
    found = [(img, torch.from_numpy(d.landmarks).float()) for img, d in
             zip(images, FaceDetector().detect_tensor(images), strict=True) if d is not None][:count]
    if len(found) < count:
        raise RuntimeError(f"MTCNN found faces in only {len(found)} of {len(images)} samples")
    return torch.stack([f[0] for f in found]), torch.stack([f[1] for f in found])


def build_problem(name: str, images: int, weights_dir: Path) -> Problem:
    overrides = OFFICIAL + fixture_checkpoints(weights_dir) if name == "official" else []
    cfg = compose_config(overrides)
    generator, identity, attributes = (instantiate(cfg[k].net).eval().requires_grad_(False)
                                       for k in ("generator", "identity", "attributes"))
    method = method_of(cfg)
    knobs = Knobs(method.steps, method.lr, tuple(method.milestones), method.gamma,
                  identity.margin_distance(method.margin), method.id_weight, method.attr_weight, method.id_loss)
    originals, landmarks = originals_and_landmarks(generator, images, detect=name == "embedded")
    layered = generator.layout.layered

    def make_trainer(precision: str):
        trainer_cfg = copy.deepcopy(cfg.trainer)
        trainer_cfg.precision, trainer_cfg.enable_progress_bar = precision, False
        return instantiate(trainer_cfg, logger=False, callbacks=[])

    return Problem(name, generator, identity, attributes, knobs, originals, landmarks,
                   generator.sample(images, 2000), generator.sample(images, 3000) if layered else None,
                   method=method, make_trainer=make_trainer,
                   notes={"overrides": [o for o in overrides if "checkpoint" not in o]})
