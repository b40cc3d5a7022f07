"""AnonymizerModule under a real Trainer: the Trainer's precision alone decides autocast and loss
scaling, 32-true results are those of the plain function, and per-batch losses reach the
Trainer's logger at Lightning's own batch count."""

from __future__ import annotations

import csv

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader, Dataset

from falco.config import MethodConfig
from falco.job import _log_summary
from falco.module import AnonymizerModule
from falco.optimize import compute_targets, optimize_latents
from tests.keyed import ToyGenerator, toys

METHOD = MethodConfig(steps=6, margin=0.5, attr_weight=1.0)


class Items(Dataset):
    """The items AnonymizeDataset yields, from the toy generator."""

    def __init__(self, n: int, offset: int = 0) -> None:
        g = toys()[0]
        self.image = g.synthesize(g.sample(n + offset, 1)).detach()[offset:]
        self.init = g.sample(n + offset, 2)[offset:]
        self.offset = offset

    def __len__(self) -> int:
        return len(self.init)

    def __getitem__(self, i: int) -> dict:
        return {"index": i + self.offset, "image": self.image[i], "landmarks": torch.zeros(5, 2),
                "init": self.init[i], "fixed": self.init[i], "fake": self.init[i], "seed": i + self.offset}


class AutocastSpy(ToyGenerator):
    """Records the CPU autocast state at each synthesis (None: autocast off)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.dtype | None] = []

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return super().synthesize(latent)


class RecordingScaler(torch.amp.GradScaler):
    """A GradScaler that records the scale at every `scale` call."""

    def __init__(self, **kwargs) -> None:
        super().__init__("cpu", **kwargs)
        self.scales: list[float] = []
        self.steps = 0

    def scale(self, outputs):
        self.scales.append(self.get_scale())
        return super().scale(outputs)

    def step(self, optimizer, *args, **kwargs):
        self.steps += 1
        return super().step(optimizer, *args, **kwargs)


def trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(**{"accelerator": "cpu", "devices": 1, "inference_mode": False, "logger": False,
                         "enable_progress_bar": False, "enable_checkpointing": False,
                         "enable_model_summary": False, **kwargs})


def predict(t: pl.Trainer, module: AnonymizerModule, items: Dataset, batch_size: int) -> dict:
    out = t.predict(module, DataLoader(items, batch_size=batch_size))
    return {k: torch.cat([o[k] for o in out]) for k in ("latents", "images", "distance_final")}


def module(generator: ToyGenerator | None = None, **kwargs) -> AnonymizerModule:
    g, identity, attributes = toys()
    if generator is not None:
        generator.load_state_dict(g.state_dict())
        g = generator
    return AnonymizerModule(g, identity, attributes, METHOD, **kwargs)


def test_32_true_through_the_trainer_is_the_plain_function_bit_for_bit():
    items = Items(5)
    got = predict(trainer(precision="32-true"), module(max_in_flight=8), items, batch_size=5)
    # The same optimization by hand, no Lightning: targets, then optimize_latents in float32.
    g, identity, attributes = toys()
    batch = next(iter(DataLoader(items, batch_size=5)))
    targets = compute_targets(identity, attributes, batch["image"], None, {})
    want = optimize_latents(g, identity, attributes, targets, batch["init"], None, steps=METHOD.steps,
                            lr=METHOD.lr, milestones=tuple(METHOD.milestones), gamma=METHOD.gamma,
                            margin_distance=0.5, id_weight=METHOD.id_weight, attr_weight=1.0,
                            id_loss=METHOD.id_loss).latents
    assert torch.equal(got["latents"], want)
    assert not torch.equal(want, batch["init"])  # the comparison can fail: the latents did move
    direct = module(max_in_flight=8).predict_step(batch, 0)  # no Trainer: no autocast, no scaler
    assert torch.equal(direct["latents"], want)


@pytest.mark.parametrize(("precision", "dtype"), [("32-true", None), ("bf16-mixed", torch.bfloat16)])
def test_autocast_is_the_trainers(precision, dtype):
    spy = AutocastSpy()
    t = trainer(precision=precision)
    predict(t, module(spy, max_in_flight=8), Items(3), batch_size=3)
    assert getattr(t.precision_plugin, "scaler", None) is None
    # every synthesis of the optimization ran under the Trainer's autocast; the release render
    # (the last synthesis of the batch) in float32 with autocast off
    assert spy.seen[:-1] == [dtype] * (len(spy.seen) - 1) and len(spy.seen) > METHOD.steps
    assert spy.seen[-1] is None


def test_16_mixed_scales_with_the_trainers_scaler_reset_for_each_optimization():
    """fp16 on CPU through an explicit MixedPrecision plugin (Lightning maps precision='16-mixed'
    on CPU to bf16): its GradScaler does the scaling, and every optimization starts from the
    scale predict started with, so an image's result does not depend on the batches before it."""
    steps = METHOD.steps
    start = 2.0 ** 16
    scaler = RecordingScaler(init_scale=start, growth_interval=1)  # the scale moves at every step
    spy = AutocastSpy()
    t = trainer(plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert t.precision_plugin.scaler is scaler
    items = Items(4)
    got = predict(t, module(spy, max_in_flight=2), items, batch_size=2)
    assert set(spy.seen[:steps]) == {torch.float16}
    assert scaler.steps == 2 * steps and len(scaler.scales) == 2 * steps  # 2 batches: all through it
    first, second = scaler.scales[:steps], scaler.scales[steps:]
    assert first[0] == second[0] == start
    assert len(set(first)) > 1  # the scale moved during the first optimization (so a carried-over
    # state would have started the second one elsewhere)
    assert scaler.get_scale() == start  # the Trainer's scaler is left as predict found it
    # the second batch alone, through a fresh Trainer with the same plugin settings: the same latents
    alone_scaler = RecordingScaler(init_scale=start, growth_interval=1)
    alone = predict(trainer(plugins=[MixedPrecision("16-mixed", "cpu", scaler=alone_scaler)]),
                    module(max_in_flight=2), Items(2, offset=2), batch_size=2)
    assert alone_scaler.scales == second
    assert torch.equal(alone["latents"], got["latents"][2:])


def test_per_batch_losses_reach_the_csv_logger_at_lightnings_batch_count(tmp_path):
    logger = CSVLogger(tmp_path, name="logs")
    t = trainer(precision="32-true", logger=logger)
    m = module(max_in_flight=8)
    predict(t, m, Items(5), batch_size=2)  # 3 batches
    _log_summary(t, {"identity": {"verified_as_original": 0.25}, "stage_keys": {"a": "b"}})
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    batches = [r for r in rows if r["anon/loss"]]
    assert [int(r["step"]) for r in batches] == [0, 1, 2]
    for r in batches:
        assert all(float(r[k]) >= 0 for k in ("anon/loss", "anon/id_loss", "anon/attr_loss", "anon/id_distance"))
    summary = [r for r in rows if r.get("summary/identity/verified_as_original")]
    assert len(summary) == 1 and int(summary[0]["step"]) == 3  # after the batches
    assert not hasattr(m, "batches_done")


class StepRecorder(pl.Callback):
    """Records what the module reports after each optimization step."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, str]] = []

    def on_optimization_step(self, images_done: float, note: str) -> None:
        self.seen.append((images_done, note))


def test_each_optimization_step_reports_how_far_its_batch_is():
    """A batch of 4 optimized 2 at a time: after step k of the part starting at image o, the batch
    is o + 2 * k / steps images done (what the progress lines and their ETA count)."""
    rec = StepRecorder()
    t = trainer(precision="32-true", callbacks=[rec])
    t.predict(module(max_in_flight=2), DataLoader(Items(4), batch_size=4))
    steps = METHOD.steps
    assert [d for d, _ in rec.seen] == pytest.approx([o + 2 * k / steps for o in (0, 2) for k in range(1, steps + 1)])
    assert rec.seen[0][1] == f"batch: step 1/{steps} of images 1-2/4"
    assert rec.seen[-1][1] == f"batch: step {steps}/{steps} of images 3-4/4"
