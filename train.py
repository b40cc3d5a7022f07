"""Anonymize a face dataset (FALCO). Loads, calls `falco.job.run_job`, saves; nothing else.

    python train.py                                  # embedded default, 16 synthetic faces
    python train.py data=folder data.root=PHOTOS     # your photos
    python train.py run_dir=outputs/RUN              # resume a run (done images are skipped)
    python train.py -m method.margin=0.7,0.9         # a sweep, one run directory per job
"""

from __future__ import annotations

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from falco.config import MethodConfig, register
from falco.detect import FaceDetector
from falco.job import run_job
from falco.pipeline import Networks, StageKnobs

register()


def build_networks(cfg: DictConfig) -> Networks:
    generator = instantiate(cfg.generator.net)
    inversion = None
    if cfg.inversion.get("net") is not None:
        extra = {"generator": generator} if cfg.inversion.get("needs_generator") else {}
        inversion = instantiate(cfg.inversion.net, **extra)
    return Networks(generator=generator, identity=instantiate(cfg.identity.net),
                    attributes=instantiate(cfg.attributes.net), inversion=inversion,
                    detector=FaceDetector(min_prob=cfg.detector.min_prob, device=cfg.device),
                    alignment=cfg.generator.alignment)


def method_config(cfg: DictConfig) -> MethodConfig:
    method: MethodConfig = OmegaConf.to_object(cfg.method)  # type: ignore[assignment]
    if method.margin is None:
        method.margin = float(cfg.identity.margin)
    return method


def build_trainer(cfg: DictConfig, out_dir: str) -> pl.Trainer:
    loggers = []
    if cfg.logger.get("_target_"):
        loggers.append(instantiate(cfg.logger, save_dir=out_dir))
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=[])


def run(cfg: DictConfig, out_dir: str):
    """The whole job for a composed config (also what the tests call)."""
    pl.seed_everything(cfg.seed, workers=True)
    nets = build_networks(cfg)
    source = instantiate(cfg.data, generator=nets.generator)
    knobs = StageKnobs(**cfg.stages)
    result = run_job(nets, source, method_config(cfg), out_dir, trainer=build_trainer(cfg, out_dir),
                     cache_dir=cfg.cache_dir, knobs=knobs, batch_size=cfg.batch_size,
                     num_workers=cfg.num_workers, summary=cfg.summary,
                     config_yaml=OmegaConf.to_yaml(cfg, resolve=True))
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    result = run(cfg, HydraConfig.get().runtime.output_dir)
    # The return value is what sweepers (Optuna) optimize: here the white-box re-ID share.
    return result.summary.get("identity", {}).get("verified_as_original")


if __name__ == "__main__":
    main()
