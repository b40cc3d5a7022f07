"""Anonymize a face dataset (FALCO). Loads, calls `falco.job.run_job`, saves; nothing else.

    python train.py                                  # embedded default, 16 synthetic faces
    python train.py data=folder data.root=PHOTOS     # your photos
    python train.py run_dir=outputs/RUN              # resume a run (done images are skipped)
    python train.py -m method.margin=0.7,0.9         # a sweep, one run directory per job
    python train.py run_dir=R shard=1/4              # a quarter of the dataset (array job 1 of 4)

Everything the job prints is also appended to <run_dir>/train.log (falco/runlog.py).

Exit code: 0 when every image was anonymized, 3 (EXIT_SKIPPED) when some were skipped
(unreadable, no face, ...: see summary.json "skip_reasons"), 4 (EXIT_STOPPED) when SIGTERM or
SIGINT stopped it (falco/stopping.py: nothing partial is written; the same command with the same
run_dir resumes it, as the last line printed says), 5 (EXIT_MISSING_WEIGHTS) when a weight file is
missing (one line names it and where it comes from: `./run weights` for the official ones), 1 on
another error. A multirun exits 3 when any of
its jobs run in this process skipped images, 4 when one was stopped (the later jobs do not start).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from falco import progress, stopping
from falco.backbones.checkpoints import EXIT_MISSING_WEIGHTS, missing_weights
from falco.config import MethodConfig, register
from falco.detect import FaceDetector
from falco.device import resolve_device
from falco.estimate import print_estimate
from falco.job import parse_shard, run_job
from falco.pipeline import Networks, StageKnobs
from falco.precision import PrecisionChoice, resolve_precision
from falco.rundir import RunDir
from falco.runlog import tee_output

if TYPE_CHECKING:  # the evaluation suite is imported only by a search trial that scores itself
    from evaluation.objective import Objective

register()
EXIT_SKIPPED = 3  # the run finished, but some images were skipped (their records say why)
_skipped_jobs: list[str] = []  # run directories of the jobs in this process that skipped images
EXIT_STOPPED = 4  # SIGTERM/SIGINT stopped the run at a step boundary; the same command resumes it
_stopped_jobs: list[str] = []  # run directories of the jobs in this process that a signal stopped
_missing: list[str] = []  # messages of the weight files that jobs of this process could not find


def build_networks(cfg: DictConfig) -> Networks:
    generator = instantiate(cfg.generator.net)
    inversion = None
    if cfg.inversion.get("net") is not None:
        extra = {"generator": generator} if cfg.inversion.get("needs_generator") else {}
        inversion = instantiate(cfg.inversion.net, **extra)
    return Networks(generator=generator, identity=instantiate(cfg.identity.net),
                    attributes=instantiate(cfg.attributes.net), inversion=inversion,
                    detector=FaceDetector(min_prob=cfg.detector.min_prob),  # the stages place it on the run's device
                    alignment=cfg.generator.alignment)


def method_config(cfg: DictConfig) -> MethodConfig:
    """The typed method config; its margin and attr_weight are interpolated in the YAML
    (conf/method/*.yaml), so config.yaml records the numbers the run used."""
    return OmegaConf.to_object(cfg.method)  # type: ignore[return-value]


def resolve_trainer_precision(cfg: DictConfig) -> PrecisionChoice:
    """Resolve cfg.trainer.precision (`auto`: by the hardware, falco/precision.py) in cfg itself,
    so that config.yaml records the precision used; `precision_choice` keeps what was asked and why."""
    requested, done = cfg.trainer.precision, cfg.get("precision_choice")
    if done is not None and done.precision == str(requested):  # resolved before (this cfg run again)
        requested = done.requested
    choice = resolve_precision(requested, cfg.trainer.get("accelerator", "auto"))
    if rank_zero_only.rank == 0:
        print(f"precision: {choice.reason}", flush=True)
    with open_dict(cfg):
        cfg.trainer.precision = choice.precision
        cfg.precision_choice = choice.as_dict()
    return choice


def resolve_stage_defaults(cfg: DictConfig) -> DictConfig:
    """`stages.pairing_unique: null` = the attribute config's choice, written into cfg itself so
    config.yaml records what the run did."""
    if cfg.stages.pairing_unique is None:
        with open_dict(cfg):
            cfg.stages.pairing_unique = bool(cfg.attributes.pairing_unique)
    if cfg.stages.get("pairing_distinct") and not cfg.stages.pairing_unique:
        raise ValueError("stages.pairing_distinct=true needs stages.pairing_unique=true (distinct fakes are "
                         "unique ones); set both, or drop pairing_distinct")
    return cfg


def build_trainer(cfg: DictConfig, out_dir: str) -> pl.Trainer:
    resolve_trainer_precision(cfg)
    loggers = []
    if cfg.logger.get("_target_"):
        loggers.append(instantiate(cfg.logger, save_dir=out_dir))
    # Lightning's bar redraws with carriage returns: on terminals only (logs get falco.progress lines)
    bar = bool(cfg.trainer.get("enable_progress_bar", True)) and sys.stdout.isatty()
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=[], enable_progress_bar=bar)


def run(cfg: DictConfig, out_dir: str):
    """The whole job for a composed config (also what the tests call)."""
    # No global seed: every random draw of a run comes from its own seeded generator (fake pool,
    # synthetic data, views: falco/seeds.py), and pseudonyms are random by design (falco/rundir.py).
    progress.configure(cfg.progress_every_s)
    nets = build_networks(cfg)
    source = instantiate(cfg.data, generator=nets.generator)
    knobs = StageKnobs(**resolve_stage_defaults(cfg).stages)
    trainer = build_trainer(cfg, out_dir)  # before config.yaml is written: it resolves trainer.precision
    device = resolve_device(cfg.device, trainer)
    if cfg.estimate:  # each stage's estimated time on this hardware, before the run (falco/estimate.py)
        print_estimate(nets, source, method_config(cfg), knobs, trainer, device, cfg.summary, cfg.stages_only)
    result = run_job(nets, source, method_config(cfg), out_dir, trainer=trainer,
                     precision=OmegaConf.to_container(cfg.precision_choice),  # type: ignore[arg-type]
                     cache_dir=cfg.cache_dir, knobs=knobs, batch_size=cfg.batch_size,
                     max_in_flight=cfg.max_in_flight, num_workers=cfg.num_workers, summary=cfg.summary,
                     config_yaml=OmegaConf.to_yaml(cfg, resolve=True), shard=parse_shard(cfg.shard),
                     stages_only=cfg.stages_only, heldout=heldout_judges(cfg, nets, device), device=device,
                     release_tar=cfg.release_tar)
    return result


def heldout_judges(cfg: DictConfig, nets: Networks, device: str = "cpu"):
    """The held-out judges of the summary (none of them may be a loss network), or None."""
    h = cfg.heldout
    if not (h.enabled and cfg.summary) or cfg.stages_only:
        return None
    from falco.heldout import load_heldout

    return load_heldout(tuple(h.recognizers), detector=h.detector, attributes=tuple(h.attributes),
                        loss_networks=(nets.identity.name, nets.attributes.name), device=device)


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
    from evaluation.objective import from_config

    return from_config(cfg.objective)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if _stopped_jobs:  # a sweep: a signal stopped an earlier job of this process, so the rest wait too
        print(f"[stop] not started (the sweep was stopped): {HydraConfig.get().runtime.output_dir}", flush=True)
        return None
    objective = search_objective(cfg)
    out = output_dir(cfg)
    with tee_output(Path(out) / "train.log", enabled=rank_zero_only.rank == 0):  # the run keeps its own log
        try:
            with stopping.on_signals():
                result = run(cfg, out)
        except stopping.Stopped as stop:  # caught here: Hydra would turn it into exit code 1
            _stopped_jobs.append(out)
            if rank_zero_only.rank == 0:
                print(stopped_message(stop, out), flush=True)
            return None
        except Exception as error:  # a missing weight file: its message, not Hydra's traceback
            missing = missing_weights(error)
            if missing is None:
                raise
            _missing.append(str(missing))
            print(f"[weights] {missing}", flush=True)
            return None
    if result.skipped:
        _skipped_jobs.append(str(result.run.root))
    # The return value is what sweepers (Optuna) optimize: with an `objective:` block, the
    # evaluation suite's score of this run (rank 0 only); else the white-box re-ID share.
    if objective is not None:
        from evaluation.objective import trial_objective

        return trial_objective(out, objective)["value"] if rank_zero_only.rank == 0 else None
    return result.summary.get("identity", {}).get("verified_as_original")


def stopped_message(stop: stopping.Stopped, out: str) -> str:
    """What a stopped job prints last: what is done, and the command that resumes it."""
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        again = f"the same `python train.py -m ...` command with hydra.sweep.dir={hc.sweep.dir}"
    else:  # the default run_dir holds the launch time: pin this one
        args = [o for o in hc.overrides.task if not o.startswith("run_dir=")] + [f"run_dir={out}"]
        again = "python train.py " + " ".join(shlex.quote(a) for a in args)
    done = len(RunDir(out).done_ids())
    return (f"[stop] {stop}: {done} images of {out} are done, nothing partial was written (the work in "
            f"progress was dropped). Resume with {again} (done images are skipped). Exit code {EXIT_STOPPED}.")


if __name__ == "__main__":
    main()  # Hydra exits 1 itself on an error
    sys.exit(EXIT_STOPPED if _stopped_jobs else EXIT_MISSING_WEIGHTS if _missing
             else EXIT_SKIPPED if _skipped_jobs else 0)
