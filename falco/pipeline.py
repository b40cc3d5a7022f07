"""The cached stages before the optimization: frame, prepare, invert, fake pool, pairing.

Each stage's cache key covers what it depends on (its own knobs, the keys of the stages it
reads, the networks' weight fingerprints, the input data's identity), so a sweep over the
margin or the loss weights recomputes none of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .backbones.base import AttributeEncoder, Generator, IdentityEncoder, Inversion
from .detect import FaceDetector
from .device import on_device
from .precision import autocast
from .progress import Progress
from .schema import StagesConfig
from .stages.cache import StageCache, module_fingerprint
from .stages.fakepool import load_pool, run_fakepool
from .stages.frame import generator_frame
from .stages.pairing import nearest, unique_assignment
from .stages.prepare import Prepared, Source, run_prepare
from .stopping import Pace
from .views import robust_features


@dataclass
class Networks:
    generator: Generator
    identity: IdentityEncoder
    attributes: AttributeEncoder
    inversion: Inversion | None
    detector: FaceDetector
    alignment: str  # "ffhq" or "template": how photos are aligned into the generator's frame

    def fingerprints(self) -> dict[str, str]:
        """Weight identity of every network, the inversion's when there is one, and MTCNN's
        (its weights and the knobs that decide what it finds)."""
        nets = {"generator": self.generator, "identity": self.identity, "attributes": self.attributes}
        if self.inversion is not None:
            nets["inversion"] = self.inversion
        fp = {k: f"{type(v).__name__}:{module_fingerprint(v, all_buffers=True)}" for k, v in nets.items()}
        d = self.detector
        fp["detector"] = f"MTCNN:{module_fingerprint(d.mtcnn)}:min_prob={d.min_prob}:min_side={d.min_side}"
        return fp


@dataclass
class StageKnobs(StagesConfig):
    """The `stages:` knobs (falco/schema.py StagesConfig: their defaults and meaning) and those a run sets itself."""

    keep_unaligned: bool = False  # also store each photo unaligned (set by method.faithful_quirks)


@dataclass
class StageOutputs:
    """What the cached stages hand to the optimization, the keyed stage and the summary."""
    prepared: Prepared
    pool: dict[str, torch.Tensor]
    pair_index: torch.Tensor  # (n_ok,) index into the pool, per ok entry in order
    pair_similarity: torch.Tensor  # (n_ok,)
    inversion: torch.Tensor | None  # (n_ok, *shape) or None
    template: torch.Tensor  # (5,2) frame landmarks, unit coordinates
    keys: dict[str, str] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)
    # Keyed mode (falco/keyed): per ok entry, the person's virtual identity embedding (n_ok, D)
    # and the latent its optimization starts from (n_ok, *shape); None in plain FALCO.
    virtual: torch.Tensor | None = None
    virtual_init: torch.Tensor | None = None


def _batched(fn, prepared: Prepared, batch: int, name: str, device: str | torch.device = "cpu",
             precision: str = "fp32") -> torch.Tensor:
    """fn(images, landmarks) over the prepared images in batches on `device`, computed in
    `precision` (autocast), results on the CPU in fp32; `name` is the stage's in progress lines."""
    outs = []
    with Progress(name, len(prepared.ok)) as bar:
        for part in Pace(batch).slices(len(prepared.ok)):  # a stop: the stage's temporary entry goes
            imgs, lms = zip(*(prepared.get(e) for e in prepared.ok[part]), strict=True)
            with torch.no_grad(), autocast(device, precision):
                outs.append(fn(torch.stack(imgs).to(device), torch.stack(lms).to(device)).float().cpu())
            bar.update(len(imgs))
    return torch.cat(outs) if outs else torch.zeros(0)


def _fake_identities(nets: Networks, latents: torch.Tensor, template: torch.Tensor, batch: int,
                     device: str | torch.device, precision: str = "fp32") -> torch.Tensor:
    """The run's recognizer's embeddings (on the CPU) of the pool fakes of these latents, rendered
    again in batches on `device`; fakes sit in the generator's frame, so the crops come from the
    frame template's landmarks."""
    res, outs = nets.generator.resolution, []
    with on_device(device, nets.generator, nets.identity), Progress("pairing: candidate identities",
                                                                    len(latents)) as bar:
        for z in Pace(batch).split(latents):
            with torch.no_grad(), autocast(device, precision):
                images = nets.generator.synthesize(z.to(device)).float()
                lm = (template * res).to(images.device).expand(len(z), -1, -1)
                outs.append(nets.identity.embed(images, nets.identity.crop_theta(lm, (res, res))).float().cpu())
            bar.update(len(z))
    return torch.cat(outs)


def run_stages(nets: Networks, source: Source, cache: StageCache, knobs: StageKnobs,
               device: str | torch.device = "cpu", precision: str = "fp32") -> StageOutputs:
    """Every stage's networks compute on `device` (falco/device.py), in batches of at most
    `knobs.batch` images; what the cache stores is on the CPU, in fp32.

    precision (bf16 | fp16 | fp32, the run's: falco/precision.py): the generator, the inversion,
    the attribute and identity networks of the frame, invert, fake pool and pairing stages
    compute under its autocast; MTCNN always in fp32 (its landmarks place every crop, and a bf16
    coordinate is off by pixels at 1024 px). A reduced precision joins those stages' cache keys."""
    fp = nets.fingerprints()
    res = nets.generator.resolution
    keys: dict[str, str] = {}
    reused: dict[str, bool] = {}

    def stage(name: str, spec: dict, compute) -> Path:
        path, keys[name], reused[name] = cache.get_or_compute(name, spec, compute)
        return path

    frame_spec = {"generator": fp["generator"], "alignment": nets.alignment, "samples": knobs.frame_samples,
                  "detector": fp["detector"]}
    reduced = {"precision": precision} if precision != "fp32" else {}  # fp32: the keys stay what they were
    frame_spec.update(reduced)

    def compute_frame(out: Path) -> None:
        with on_device(device, nets.generator, nets.detector):
            tpl, report = generator_frame(nets.generator, nets.detector, nets.alignment, samples=knobs.frame_samples,
                                          device=device, batch=knobs.batch, precision=precision)
        torch.save(tpl, out / "template.pt")
        (out / "report.json").write_text(json.dumps(report))

    template = torch.load(stage("frame", frame_spec, compute_frame) / "template.pt", weights_only=True)

    prep_spec = {"data": source.fingerprint(), "frame": keys["frame"], "size": res,
                 "alignment": nets.alignment, "detector": fp["detector"]}
    if knobs.keep_unaligned:  # only then: the default's cache keys stay what they were
        prep_spec["unaligned"] = True
    if knobs.alignment_failure != "skip":
        prep_spec["alignment_failure"] = knobs.alignment_failure

    def compute_prepare(out: Path) -> None:
        with on_device(device, nets.detector):
            run_prepare(source, nets.detector, out, alignment=nets.alignment, template=template, size=res,
                        keep_unaligned=knobs.keep_unaligned, alignment_failure=knobs.alignment_failure)

    prepared = Prepared(stage("prepare", prep_spec, compute_prepare))

    inversion = None
    if nets.inversion is not None:
        inv = nets.inversion
        inv_spec = {"prepare": keys["prepare"], "inversion": fp["inversion"], "generator": fp["generator"],
                    "knobs": {k: v for k, v in vars(inv).items() if isinstance(v, int | float | str)}, **reduced}

        def compute_invert(out: Path) -> None:
            with on_device(device, inv):  # the projection's generator with it
                latents = _batched(lambda x, lm: inv.invert(x), prepared, knobs.batch, "invert", device, precision)
            torch.save(latents, out / "latents.pt")

        inversion = torch.load(stage("invert", inv_spec, compute_invert) / "latents.pt", weights_only=True)

    pool_spec = {"generator": fp["generator"], "attributes": fp["attributes"], "frame": keys["frame"],
                 "size": knobs.pool_size, "seed": knobs.pool_seed, "detector": fp["detector"], **reduced}
    if knobs.pairing_views:  # only then: the default's cache keys stay what they were
        pool_spec["views"] = knobs.pairing_views

    def compute_fakepool(out: Path) -> None:
        with on_device(device, nets.generator, nets.attributes, nets.detector):
            run_fakepool(nets.generator, nets.attributes, template, out, size=knobs.pool_size, seed=knobs.pool_seed,
                         device=device, batch=knobs.batch, detector=nets.detector, views=knobs.pairing_views,
                         precision=precision)

    pool = load_pool(stage("fakepool", pool_spec, compute_fakepool))

    att = nets.attributes
    pair_spec = {"prepare": keys["prepare"], "fakepool": keys["fakepool"], "attributes": fp["attributes"],
                 "unique": bool(knobs.pairing_unique),  # None (no attribute config said) = false
                 "detectable_only": knobs.pairing_detectable_only, **reduced}
    if knobs.pairing_distinct:  # only then: the default's cache keys stay what they were
        pair_spec.update(distinct=True, identity=fp["identity"], generator=fp["generator"])
    usable = pool["detected"].nonzero().squeeze(1) if knobs.pairing_detectable_only \
        else torch.arange(len(pool["features"]))
    if len(usable) == 0:
        raise RuntimeError("MTCNN found a face in none of the fake pool's samples; set "
                           "stages.pairing_detectable_only=false or check the generator")

    def compute_pairing(out: Path) -> None:
        with on_device(device, att):
            real = _batched(lambda x, lm: robust_features(att.pairing_features, x, att.crop_thetas(lm, (res, res)),
                                                          knobs.pairing_views), prepared, knobs.batch,
                            "pairing features", device, precision)
        feats = pool["features"][usable]
        if knobs.pairing_unique:
            ident = nets.identity
            identities = (lambda rows: _fake_identities(nets, pool["latents"][usable[rows]], template, knobs.batch,
                                                        device, precision)) if knobs.pairing_distinct else None
            idx, fallbacks = unique_assignment(
                real, feats, identities=identities,
                same_person=lambda e, others: ident.distance(e.expand_as(others), others) < ident.same_person_below)
            idx = idx[:, None]
            if identities is not None:
                print(f"[pairing] distinct: {fallbacks} of {len(idx)} originals found no candidate fake unlike the "
                      "fakes already taken (given their nearest free one)", flush=True)
            sim = torch.nn.functional.cosine_similarity(real, feats[idx[:, 0]])[:, None]
        else:
            idx, sim = nearest(real, feats, k=1)  # the nearest fake initializes the latent (paper)
        torch.save({"index": usable[idx], "similarity": sim}, out / "pairs.pt")

    pairs = torch.load(stage("pairing", pair_spec, compute_pairing) / "pairs.pt", weights_only=True)
    return StageOutputs(prepared, pool, pairs["index"][:, 0], pairs["similarity"][:, 0], inversion, template,
                   keys, reused)
