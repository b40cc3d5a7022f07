"""Lightning wiring: the per-image optimization as a predict loop.

`trainer.predict` with `Trainer(inference_mode=False)`: no network weight is trained, so there
is nothing for DDP to synchronize; predict shards images across processes without padding
duplicates; each batch gets fresh latents, a fresh Adam and schedule (the paper's per-image
semantics), and memory is O(batch) whatever the dataset size.

Precision is the Trainer's alone: its precision plugin runs `predict_step` inside its forward
context (Lightning's predict loop does this), so `bf16-mixed` / `16-mixed` autocast the forward
passes and `32-true` runs plain float32; under `16-mixed` the losses are scaled by the plugin's
GradScaler (`MixedPrecision.scaler`), set back to its state at the start of predict before each
optimization (each is a fresh problem, like its Adam). Per-batch losses go to the Trainer's
loggers at Lightning's count of completed predict batches (`self.log` is not available in predict).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from torch import distributed as dist
from torch.utils.data import Dataset, DistributedSampler

from .backbones.base import AttributeEncoder, Generator, IdentityEncoder
from .batch_size import images_that_fit, precision_of
from .config import MethodConfig
from .optimize import compute_targets, optimize_latents
from .pipeline import StageOutputs
from .quirks import official_range
from .seeds import stream_seed
from .stopping import check as stop_point
from .stopping import listen_in_worker
from .views import draw


class AnonymizeDataset(Dataset):
    """Items still to do: aligned original, its landmarks, and its starting latents."""

    def __init__(self, stages: StageOutputs, todo: list[int], init: str = "fake",
                 official_target: bool = False) -> None:
        self.p = stages
        self.todo = todo  # indices into stages.prepared.ok
        self.init = init
        # faithful_quirks: the losses' target is the unaligned photo in [0, 1] (falco/quirks.py)
        self.official_target = official_target

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i: int) -> dict:
        if i == len(self.todo):  # RankShare's placeholder for a process with nothing to do
            return {**self[0], "pad": True}
        k = self.todo[i]
        image, landmarks = self.p.prepared.get(self.p.prepared.ok[k])
        if self.official_target:
            image = official_range(self.p.prepared.unaligned(self.p.prepared.ok[k]))
        fake = self.p.pool["latents"][self.p.pair_index[k]]
        inv = self.p.inversion[k] if self.p.inversion is not None else fake
        init = inv if self.init == "inversion" else fake
        item = {"index": k, "image": image, "landmarks": landmarks, "fixed": inv, "fake": fake,
                "seed": stream_seed("views", self.p.prepared.ok[k]["id"])}  # the image's own random views
        if self.p.virtual is not None:  # keyed mode: start from and pull toward the virtual identity
            item["virtual"] = self.p.virtual[k]
            init = self.p.virtual_init[k] if self.p.virtual_init is not None else init
        return {**item, "init": init, "pad": False}


class RankShare(DistributedSampler):
    """Items r, r + world, ... for the process of rank r: each item once, none repeated or padded,
    as Lightning's own predict sampler deals them, except that a share may be empty (Lightning's
    refuses one: a resumed multi-process run with fewer images left than processes). The rank
    is read when iterating (a ddp_spawn loader is built before its ranks exist). Lightning needs
    a batch on every process: an empty share holds one placeholder, index `size`, which the
    dataset marks as padding and the module skips."""

    def __init__(self, size: int, world: int) -> None:  # no super().__init__: it asks for the rank now
        self.size, self.num_replicas, self.shuffle, self.epoch = size, world, False, 0

    @property
    def rank(self) -> int:
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def _share(self) -> range:
        share = range(self.rank, self.size, self.num_replicas)
        return share if len(share) or not self.size else range(self.size, self.size + 1)

    def __iter__(self) -> Iterator[int]:
        return iter(self._share())

    def __len__(self) -> int:
        return len(self._share())


class AnonymizerModule(pl.LightningModule):
    def __init__(self, generator: Generator, identity: IdentityEncoder, attributes: AttributeEncoder,
                 method: MethodConfig, max_in_flight: int | None = None, batch_invariant: bool = False) -> None:
        super().__init__()
        self.generator, self.identity, self.attributes = generator, identity, attributes
        for net in (generator, identity, attributes):
            net.eval().requires_grad_(False)  # frozen: no weight gradients are ever computed
        self.method = method
        self.max_in_flight = max_in_flight  # images optimized at once; None = the memory rule
        # one image at a time with the unfolded synthesis: each image's result is bit for bit
        # what it would be alone, whatever its batch, shard or rank (in fp32: the official loop's)
        self.batch_invariant = batch_invariant
        self._scaler_start: dict | None = None  # the Trainer's GradScaler state when predict started

    def _trainer_scaler(self) -> torch.amp.GradScaler | None:
        """The GradScaler of the Trainer's precision plugin (16-mixed), else None (no Trainer,
        32-true, bf16-mixed: no scaling)."""
        if self._trainer is None:
            return None
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def on_predict_start(self) -> None:
        listen_in_worker()  # a ddp_spawn rank: signals stop it at a step boundary (falco/stopping.py)
        scaler = self._trainer_scaler()
        self._scaler_start = None if scaler is None else scaler.state_dict()

    def on_predict_end(self) -> None:  # the Trainer's scaler is left as predict found it
        self._fresh_scaler()
        self._scaler_start = None

    def _fresh_scaler(self) -> torch.amp.GradScaler | None:
        """The Trainer's GradScaler in its state at the start of predict: each optimization starts
        from the same scale, so an image's result never depends on the batches before it."""
        scaler = self._trainer_scaler()
        if scaler is not None:
            if self._scaler_start is None:  # predict_step called outside trainer.predict
                self._scaler_start = scaler.state_dict()
            scaler.load_state_dict(self._scaler_start)
        return scaler

    def images_in_flight(self) -> int:
        """Images optimized at once: `max_in_flight`, else the memory rule (falco/batch_size.py)
        evaluated at the first batch, under the precision predict_step runs in."""
        if self.max_in_flight is None:
            self.max_in_flight = images_that_fit(self.generator, precision_of(self.device), self.device)
        return self.max_in_flight

    def predict_step(self, batch: dict, batch_idx: int) -> dict | None:
        if "pad" in batch and bool(batch["pad"].all()):  # a placeholder batch (RankShare): nothing to do or write
            return None
        t0 = time.perf_counter()
        size = len(batch["index"])
        # a batch larger than memory allows goes in parts; batch-invariant: parts of one image
        chunk = 1 if self.batch_invariant else min(size, self.images_in_flight())
        parts = [self._anonymize({k: v[s:s + chunk] for k, v in batch.items()}, self._progress(s, size))
                 for s in range(0, size, chunk)]
        out = {k: torch.cat([p[k] for p in parts], dim=1 if k == "history" else 0) for k in parts[0]}
        return {"index": batch["index"], **out, "seconds_per_image": (time.perf_counter() - t0) / size}

    def _progress(self, offset: int, size: int) -> Callable[[int, int], None]:
        """The per-step hook of the images batch[offset:offset + n] of a batch of `size`: stops at
        a requested signal, and tells progress callbacks (falco/progress.py PredictProgress) how
        far the batch is: offset + n * (step + 1) / steps images of it."""
        listeners = [] if self._trainer is None else [
            cb.on_optimization_step for cb in self.trainer.callbacks if hasattr(cb, "on_optimization_step")]
        steps = self.method.steps

        def hook(step: int, n: int) -> None:
            stop_point()  # SIGTERM/SIGINT: abandon the batch between steps
            for listen in listeners:
                listen(offset + n * (step + 1) / steps,
                       f"batch: step {step + 1}/{steps} of images {offset + 1}-{offset + n}/{size}")
        return hook

    def _anonymize(self, batch: dict, on_step: Callable[[int, int], None]) -> dict:
        """Targets, the latent optimization, the final images and distances of these images."""
        m, res = self.method, self.generator.resolution
        lm = batch["landmarks"].float()
        theta_id = self.identity.crop_theta(lm, (res, res))
        thetas_attr = self.attributes.crop_thetas(lm, (res, res))
        targets = compute_targets(self.identity, self.attributes, batch["image"], theta_id, thetas_attr)
        targets.virtual = batch.get("virtual")
        if m.views.views > 0:
            targets.originals = batch["image"]
            targets.views = draw(m.views, batch["seed"].tolist(), m.steps).to(batch["image"].device)
        layered = self.generator.layout.layered
        with torch.enable_grad():
            result = optimize_latents(
                self.generator, self.identity, self.attributes, targets, batch["init"],
                batch["fixed"] if layered else None, steps=m.steps, lr=m.lr,
                milestones=tuple(m.milestones), gamma=m.gamma,
                margin_distance=self.identity.margin_distance(m.margin), id_weight=m.id_weight,
                attr_weight=m.attr_weight, id_loss=m.id_loss, virtual_weight=m.virtual_weight,
                scaler=self._fresh_scaler(), exact=self.batch_invariant,
                on_step=lambda step: on_step(step, len(lm)))  # stops at a signal, reports progress
        latents = result.latents.detach().float()  # what is saved, and what the release image renders
        images, final = self._render(latents, batch["image"], lm)
        return {"latents": latents, "images": images, "history": result.history,
                "distance_first": result.distance[0], "distance_final": final}

    def _render(self, latents: torch.Tensor, originals: torch.Tensor,
                landmarks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The release images of these latents and their final identity distance to the originals,
        in float32 with autocast off: whatever the Trainer's precision, each image is exactly what
        its saved latent renders, and the distance is measured as the summary measures it."""
        res = self.generator.resolution
        with torch.no_grad(), torch.autocast(latents.device.type, enabled=False):
            images = self.generator.synthesize(latents).float()
            theta = self.identity.crop_theta(landmarks.float(), (res, res))
            target = self.identity.embed(originals.float(), theta).float()
            final = self.identity.distance(self.identity.embed(images, theta).float(), target)
        return images, final

    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """The batch's mean final losses and identity distance to the Trainer's loggers, at step =
        the predict batches Lightning completed before this one (0, 1, 2, ...)."""
        if not self.loggers or outputs is None:
            return
        last = outputs["history"][-1].mean(0)
        metrics = {"anon/loss": float(last[0]), "anon/id_loss": float(last[1]), "anon/attr_loss": float(last[2]),
                   "anon/id_distance": float(outputs["distance_final"].mean())}
        step = self.trainer.predict_loop.batch_progress.total.completed
        for logger in self.loggers:
            logger.log_metrics(metrics, step=step)
