"""One anonymization job: stages, skip what is done, optimize the rest, summarize.

Plain Python objects in, nothing from Hydra: train.py instantiates and calls `run_job`.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader

from .config import MethodConfig, validate
from .data.imageio import atomic_write_text
from .device import resolve_device
from .module import AnonymizeDataset, AnonymizerModule, RankShare
from .pipeline import Networks, StageKnobs, StageOutputs, run_stages
from .precision import precision_name
from .progress import PredictProgress
from .quirks import apply_network_quirks
from .release import secret_order
from .rundir import RunDir
from .seeds import stream_seed
from .stages.cache import StageCache, code_version
from .stages.prepare import Source
from .stopping import raise_if_requested
from .summary import format_summary, summarize
from .writer import RecordWriter


@dataclass
class JobResult:
    run: RunDir
    summary: dict
    done_before: int  # images already done when the job started (resume)
    processed: int  # images optimized by this job
    skipped: int = 0  # skip records in the run directory (known on rank 0 only)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """"i/n" (0 <= i < n) -> (i, n); None -> None (the whole dataset)."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def in_shard(item_id: str, shard: tuple[int, int] | None) -> bool:
    """Shard i of n owns the ids whose hash is i mod n: a fixed property of the id, not of its
    position, so array jobs started at different times, or re-run, never overlap or miss one."""
    return shard is None or stream_seed("shard", item_id) % shard[1] == shard[0]


def write_skips(run: RunDir, stages: StageOutputs, done: set[str], method: str,
                shard: tuple[int, int] | None = None) -> None:
    for e in stages.prepared.entries:
        if e["status"] != "ok" and e["id"] not in done and in_shard(e["id"], shard):
            run.write_record({"id": e["id"], "pseudonym": None, "status": "skipped", "reason": e["reason"],
                              "message": e.get("message"), "identity": e.get("identity"),
                              "labels": e.get("labels", {}), "method": method, "stage_keys": stages.keys})


def versions() -> dict[str, str]:
    import hydra
    import omegaconf

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": pl.__version__,
            "hydra": hydra.__version__, "omegaconf": omegaconf.__version__, "falco_code": code_version()}


def run_job(nets: Networks, source: Source, method: MethodConfig, out_dir: str | Path, *,
            trainer: pl.Trainer, cache_dir: str | Path, knobs: StageKnobs, batch_size: int = 16,
            max_in_flight: int | None = None, num_workers: int = 0, summary: bool = True,
            config_yaml: str | None = None, precision: dict | None = None,
            shard: tuple[int, int] | None = None, stages_only: bool = False, heldout=None,
            device: str = "auto", release_tar: bool = False) -> JobResult:
    """heldout: falco.heldout.HeldoutJudges measured first in the summary (None: white-box only).
    precision: how the trainer's precision was chosen (falco/precision.py PrecisionChoice.as_dict()),
    recorded in versions.json; None records the trainer's precision alone.
    max_in_flight: images optimized at once when not batch-invariant; None = the memory rule.
    device: where the stages and the summary compute; auto = the trainer's device (falco/device.py).
    release_tar: also write <run_dir>/release.tar (unsharded runs only: falco/release.py)."""
    device = resolve_device(device, trainer)
    validate(method, has_inversion=nets.inversion is not None, layered=nets.generator.layout.layered)
    run = RunDir(out_dir)
    # Under plain `ddp` (and SLURM tasks) every rank runs this whole function; what is written
    # before `trainer.predict` is written by rank 0 alone. No rank writes images before all
    # ranks have joined inside predict, so rank 0's recovery below always comes first.
    lead = rank_zero_only.rank == 0
    if config_yaml is not None and lead:
        atomic_write_text(run.root / "config.yaml", config_yaml)
    if lead:
        chosen = precision or {"precision": str(trainer.precision)}
        atomic_write_text(run.root / "versions.json", json.dumps({**versions(), "precision": chosen}, indent=1))
    if method.faithful_quirks:  # the official code's defects, for matching the paper (falco/quirks.py)
        apply_network_quirks(nets.attributes)
        knobs = replace(knobs, keep_unaligned=True)
    cache = StageCache(cache_dir)
    stages = run_stages(nets, source, cache, knobs, device, precision_name(str(trainer.precision)))
    if stages_only:  # warm the shared cache once, before array jobs or DDP ranks each compute it
        return JobResult(run, {"stage_keys": stages.keys, "stages_reused": stages.reused}, 0, 0)
    if not stages.prepared.ok:
        reasons = {e["id"]: e["reason"] for e in stages.prepared.entries}
        raise RuntimeError(f"no usable face in the dataset ({len(reasons)} items): {dict(list(reasons.items())[:10])}")
    if method.name == "keyed":  # per-person virtual identities under a secret key (after KFAAR)
        from .keyed import apply_keyed

        apply_keyed(stages, nets, method, run, device)
    # Before any process of this job writes: undo writes a kill cut off, then skip what is done.
    if lead:
        run.recover({e["id"] for e in stages.prepared.entries if in_shard(e["id"], shard)})
    done = run.done_ids()
    if lead:
        write_skips(run, stages, done, method.name, shard)
    todo = [k for k, e in enumerate(stages.prepared.ok) if e["id"] not in done and in_shard(e["id"], shard)]
    # Work (and so write) in the run's secret order, not the input order: every rank derives the
    # same order from the key in private/, so predict's sampler still deals each item once.
    todo = [todo[i] for i in secret_order([stages.prepared.ok[k]["id"] for k in todo], run.order_key())]
    if todo:
        module = AnonymizerModule(nets.generator, nets.identity, nets.attributes, method, max_in_flight=max_in_flight,
                                  batch_invariant=method.batch_invariant)
        dataset = AnonymizeDataset(stages, todo, method.init, official_target=method.faithful_quirks)
        # several processes: each its share of the items, once (an empty share is fine)
        sampler = RankShare(len(dataset), trainer.world_size) if trainer.world_size > 1 else None
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, num_workers=num_workers)
        trainer.callbacks.append(RecordWriter(run, stages.prepared.ok, {
            "method": method.name, "stage_keys": stages.keys, "judge": nets.identity.name,
            "pairs": stages.pair_index.tolist(), "pair_sims": stages.pair_similarity.tolist()},
            official_output=method.faithful_quirks))
        trainer.callbacks.append(PredictProgress(len(todo)))  # after the writer: counts written batches
        try:
            trainer.predict(module, loader, return_predictions=False)
        except Exception as error:  # ddp_spawn ranks stopped by a signal reach here as their failure
            raise_if_requested(error)
            raise
    trainer.strategy.barrier()
    result = JobResult(run, {}, len(done), len(todo))
    if trainer.is_global_zero:
        # Pairs keep their meaning only when all images of a person share one identity (keyed mode).
        # Shards may still be writing into release/images: only an unsharded run re-creates it or packs it.
        records = run.finalize(pairs=getattr(source, "pairs", None) if method.name == "keyed" else None,
                               rebuild=shard is None)
        result.skipped = sum(r["status"] != "ok" for r in records)
        if summary:
            result.summary = summarize(run, nets, stages, records, chunk=batch_size, heldout=heldout, device=device,
                                       cache=cache)
            result.summary["stage_keys"], result.summary["stages_reused"] = stages.keys, stages.reused
            atomic_write_text(run.root / "summary.json", json.dumps(result.summary, indent=1))
            _log_summary(trainer, result.summary)
            print(format_summary(result.summary), flush=True)
        run.seal(tar=release_tar and shard is None)  # after the summary's reads (falco/release.py)
    return result


def _log_summary(trainer: pl.Trainer, summary: dict[str, Any]) -> None:
    """The summary's numbers to the Trainer's loggers, one entry after the per-batch ones
    (AnonymizerModule.on_predict_batch_end): at step = the predict batches Lightning completed."""
    flat: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}/{k}" if prefix else k, v)
        elif isinstance(node, int | float) and not isinstance(node, bool):
            flat[f"summary/{prefix}"] = float(node)

    walk("", {k: v for k, v in summary.items() if k not in ("stage_keys", "stages_reused")})
    step = trainer.predict_loop.batch_progress.total.completed
    for logger in trainer.loggers:
        logger.log_metrics(flat, step=step)
        logger.save()
