"""The run's device: resolved from the trainer, and every stage network and the summary compute
on it, in batches of at most stages.batch, with the cached results on the CPU."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from falco.backbones.dcgan import load_dcgan
from falco.data.imageio import to_uint8, write_png_clean
from falco.data.synthetic import SyntheticSource
from falco.device import resolve_device
from falco.pipeline import Networks, StageKnobs, _batched, run_stages
from falco.rundir import RunDir
from falco.stages.cache import StageCache
from falco.summary import summarize
from tests.conftest import compose_train
from tests.core.stage_nets import stage_parts

BATCH = 3


def test_auto_is_the_trainers_device_and_an_explicit_device_overrides_it():
    assert resolve_device("auto", "gpu") == resolve_device("auto", "cuda") == "cuda"
    assert resolve_device("auto", "cpu") == "cpu"
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False)
    assert resolve_device("auto", trainer) == "cpu"
    rank1 = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 1)))  # a DDP rank
    assert resolve_device("auto", rank1) == "cuda:1"
    assert resolve_device("cpu", rank1) == "cpu" and resolve_device("cuda:2", trainer) == "cuda:2"
    for trainer_cfg, device in (("gpu", "cuda"), ("cpu", "cpu")):
        cfg = compose_train([f"trainer={trainer_cfg}"])
        assert cfg.device == "auto" and resolve_device(cfg.device, cfg.trainer.accelerator) == device


class Forwards:
    """Forward pre-hooks on every module of the named networks: per call, the network, the
    devices of the call's input tensors and of the module's own weights, and the batch size."""

    def __init__(self, nets: dict[str, torch.nn.Module]) -> None:
        self.calls: list[tuple[str, set[torch.device], int | None]] = []
        self.handles = [m.register_forward_pre_hook(partial(self._record, name))
                        for name, net in nets.items() for m in net.modules()]

    def _record(self, name: str, module: torch.nn.Module, args: tuple) -> None:
        inputs = [a for a in args if isinstance(a, torch.Tensor)]
        weights = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        self.calls.append((name, {t.device for t in inputs + weights}, inputs[0].shape[0] if inputs else None))

    def devices(self) -> dict[str, set[torch.device]]:
        out: dict[str, set[torch.device]] = {}
        for name, devices, _ in self.calls:
            out.setdefault(name, set()).update(devices)
        return out

    def largest_batch(self, name: str) -> int:
        return max(n for net, _, n in self.calls if net == name and n is not None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    parts = stage_parts(identities=5)
    nets = Networks(**{k: v for k, v in parts.items() if k != "source"})
    forwards = Forwards({"generator": nets.generator, "inversion": nets.inversion,
                         "attributes": nets.attributes, "detector": nets.detector.mtcnn})
    knobs = StageKnobs(pool_size=32, frame_samples=16, batch=BATCH)
    try:
        stages = run_stages(nets, parts["source"], StageCache(tmp_path_factory.mktemp("cache")), knobs,
                             device=torch.device("cpu"))
    finally:
        forwards.remove()
    return nets, stages, forwards


def test_every_stage_network_computes_on_the_run_device_in_bounded_batches(staged):
    nets, stages, forwards = staged
    assert len(stages.prepared.ok) > BATCH  # the dataset is larger than a batch
    # Every network ran (generator: frame, fake pool; inversion; attributes: pool and pairing
    # features; MTCNN: frame, prepare, pool), and each forward's inputs and weights were all on cpu.
    nets_run = ("generator", "inversion", "attributes", "detector")
    assert forwards.devices() == {n: {torch.device("cpu")} for n in nets_run}
    for name in ("generator", "inversion", "attributes"):
        assert forwards.largest_batch(name) == BATCH  # the pool (32) and the dataset in batches
    cached = [stages.inversion, stages.template, stages.pair_index, stages.pair_similarity, *stages.pool.values()]
    assert all(t.device.type == "cpu" for t in cached)
    # Afterwards the networks are where they were before the stages.
    assert {p.device for net in (nets.generator, nets.inversion, nets.attributes) for p in net.parameters()} \
        == {torch.device("cpu")} and nets.detector.device == torch.device("cpu")


def test_the_summary_computes_on_the_run_device(staged, tmp_path):
    nets, stages, _ = staged
    run = RunDir(tmp_path / "run")
    records = []
    for k, entry in enumerate(stages.prepared.ok):  # the originals themselves as the released images
        write_png_clean(run.image_path(f"p{k}", "png"), to_uint8(stages.prepared.get(entry)[0]))
        records.append({"id": entry["id"], "status": "ok", "pseudonym": f"p{k}", "identity": entry["identity"]})
    forwards = Forwards({"generator": nets.generator, "identity": nets.identity, "attributes": nets.attributes,
                         "detector": nets.detector.mtcnn})
    try:
        summary = summarize(run, nets, stages, records, chunk=BATCH, device="cpu")
    finally:
        forwards.remove()
    assert forwards.devices() == {n: {torch.device("cpu")} for n in ("generator", "identity", "attributes", "detector")}
    assert forwards.largest_batch("identity") == BATCH
    assert summary["identity"]["distance_mean"] < 1e-3  # each image is its own original


def test_the_inputs_measurements_are_a_cached_stage_that_changes_nothing(staged, tmp_path):
    """judged_inputs: computed once per data and judges, reused by the next run's summary, and
    the summary is the same with or without it."""
    nets, stages, _ = staged
    run = RunDir(tmp_path / "run")
    records = []
    for k, entry in enumerate(stages.prepared.ok[:5]):  # some of the dataset: rows picked by id
        write_png_clean(run.image_path(f"p{k}", "png"), to_uint8(stages.prepared.get(entry)[0].flip(-1)))
        records.append({"id": entry["id"], "status": "ok", "pseudonym": f"p{k}", "identity": entry["identity"]})
    cache = StageCache(tmp_path / "cache")
    plain = summarize(run, nets, stages, records[::-1], chunk=2)
    first = summarize(run, nets, stages, records[::-1], chunk=2, cache=cache)
    assert stages.reused["judged_inputs"] is False
    second = summarize(run, nets, stages, records, chunk=BATCH, cache=cache)
    assert stages.reused["judged_inputs"] is True and len(list((tmp_path / "cache" / "judged_inputs").iterdir())) == 1
    for other in (first, second):  # chunks of other sizes: batched rounding only
        for block in ("identity", "attributes"):
            a, b = _flat(other[block]), _flat(plain[block])
            numbers = {k for k, v in b.items() if isinstance(v, int | float) and not isinstance(v, bool)}
            other_keys = b.keys() - numbers
            assert a.keys() == b.keys() and {k: a[k] for k in other_keys} == {k: b[k] for k in other_keys}
            assert {k: a[k] for k in numbers} == pytest.approx({k: b[k] for k in numbers}, rel=1e-5, abs=1e-6)
    assert plain["identity"]["distance_mean"] > 1e-3  # mirrored outputs: a real distance was measured


def _flat(tree: dict, prefix: str = "") -> dict:
    """Nested numbers as one flat dict (pytest.approx compares flat ones)."""
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def test_batched_stage_inputs_go_to_the_device(staged):
    """The batches of the invert and pairing stages go where the device says, results to the CPU
    (the meta device stands in for an accelerator: no data, but a device of its own)."""
    _, stages, _ = staged
    seen = []

    def fn(x, lm):
        seen.append((x.device.type, lm.device.type, len(x)))
        return torch.ones(len(x), 2)

    out = _batched(fn, stages.prepared, 3, "test", device="meta")
    n = len(stages.prepared.ok)
    assert out.shape == (n, 2) and out.device.type == "cpu"
    assert [s[:2] for s in seen] == [("meta", "meta")] * len(seen) and max(s[2] for s in seen) == 3


def test_the_stages_compute_in_the_runs_precision_but_mtcnn_in_fp32(tmp_path):
    """precision=bf16: every forward of the generator, the inversion and the attribute network
    runs under bf16 autocast, none of MTCNN's; the reduced precision joins the cache keys, so an
    fp32 run does not reuse bf16 stages; what is cached is fp32."""
    parts = stage_parts(identities=2)
    nets = Networks(**{k: v for k, v in parts.items() if k != "source"})
    source = SyntheticSource(load_dcgan(), identities=2, seed=3)  # the data's own renderer: not a stage's
    seen: dict[str, set] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, args, name=name: seen.setdefault(name, set()).add(
            torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32))
        for name, net in (("generator", nets.generator), ("inversion", nets.inversion),
                          ("attributes", nets.attributes), ("detector", nets.detector.mtcnn)) for m in net.modules()]
    knobs = StageKnobs(pool_size=8, frame_samples=4, batch=BATCH)
    cache = StageCache(tmp_path / "cache")
    try:
        reduced = run_stages(nets, source, cache, knobs, device="cpu", precision="bf16")
    finally:
        for h in handles:
            h.remove()
    assert seen == {"generator": {torch.bfloat16}, "inversion": {torch.bfloat16}, "attributes": {torch.bfloat16},
                    "detector": {torch.float32}}
    assert reduced.pool["features"].dtype == reduced.inversion.dtype == torch.float32
    full = run_stages(nets, source, cache, knobs, device="cpu")
    for stage in ("frame", "invert", "fakepool", "pairing"):
        assert full.keys[stage] != reduced.keys[stage] and full.reused[stage] is False
