"""Anonymize a face dataset (FALCO). Loads, calls `falco.job.run_job`, saves; nothing else.

    python train.py                                  # embedded default, 16 synthetic faces
    python train.py data=folder data.root=PHOTOS     # your photos
    python train.py run_dir=outputs/RUN              # resume a run (done images are skipped)
    python train.py -m method.margin=0.7,0.9         # a sweep, one run directory per job
    python train.py run_dir=R shard=1/4              # a quarter of the dataset (array job 1 of 4)

Exit code: 0 when every image was anonymized, 3 (EXIT_SKIPPED) when some were skipped
(unreadable, no face, ...: see summary.json "skip_reasons"), 1 on an error. A multirun exits
3 when any of its jobs run in this process skipped images.
"""

from __future__ import annotations

import sys

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from evaluation.objective import Objective, from_config, trial_objective
from falco.config import MethodConfig, register
from falco.detect import FaceDetector
from falco.job import parse_shard, run_job
from falco.pipeline import Networks, StageKnobs

register()
EXIT_SKIPPED = 3  # the run finished, but some images were skipped (their records say why)
_skipped_jobs: list[str] = []  # run directories of the jobs in this process that skipped images


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
    if method.attr_weight is None:
        method.attr_weight = float(cfg.attributes.attr_weight)
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
                     config_yaml=OmegaConf.to_yaml(cfg, resolve=True), shard=parse_shard(cfg.shard),
                     stages_only=cfg.stages_only, heldout=heldout_judges(cfg, nets))
    return result


def heldout_judges(cfg: DictConfig, nets: Networks):
    """The held-out judges of the summary (none of them may be a loss network), or None."""
    h = cfg.heldout
    if not (h.enabled and cfg.summary) or cfg.stages_only:
        return None
    from evaluation.heldout import load_heldout

    return load_heldout(tuple(h.recognizers), detector=h.detector, attributes=tuple(h.attributes),
                        loss_networks=(nets.identity.name, nets.attributes.name), device=cfg.device)


def output_dir(cfg: DictConfig) -> str:
    """Hydra's job directory, except for shards: all shards of a dataset share `run_dir`.

    In a multirun each job gets its own sweep sub-directory (where Hydra keeps its logs), so
    array jobs `shard=0/4,...,3/4` would otherwise write four partial runs.
    """
    if cfg.shard is None:
        return HydraConfig.get().runtime.output_dir
    if not any(o.startswith("run_dir=") for o in HydraConfig.get().overrides.task):
        # the default run_dir holds the launch time, which differs between array jobs
        raise ValueError("shard=i/n needs an explicit run_dir=... shared by all shards")
    return cfg.run_dir


def search_objective(cfg: DictConfig) -> Objective | None:
    """The `objective:` block of a search trial (experiments/optuna_search.yaml), checked before the run."""
    if cfg.get("objective") is None:
        return None
    if cfg.shard is not None or cfg.stages_only:
        raise ValueError("objective: is scored on a whole run; it does not combine with shard= or stages_only=true")
    return from_config(cfg.objective)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    objective = search_objective(cfg)
    out = output_dir(cfg)
    result = run(cfg, out)
    if result.skipped:
        _skipped_jobs.append(str(result.run.root))
    # The return value is what sweepers (Optuna) optimize: with an `objective:` block, the
    # evaluation suite's score of this run (rank 0 only); else the white-box re-ID share.
    if objective is not None:
        return trial_objective(out, objective)["value"] if rank_zero_only.rank == 0 else None
    return result.summary.get("identity", {}).get("verified_as_original")


if __name__ == "__main__":
    main()  # Hydra exits 1 itself on an error
    sys.exit(EXIT_SKIPPED if _skipped_jobs else 0)
