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
from .stages.cache import StageCache, module_fingerprint
from .stages.fakepool import load_pool, run_fakepool
from .stages.frame import generator_frame
from .stages.pairing import nearest, unique_assignment
from .stages.prepare import Prepared, Source, run_prepare
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
        nets = {"generator": self.generator, "identity": self.identity, "attributes": self.attributes}
        return {k: f"{type(v).__name__}:{module_fingerprint(v)}" for k, v in nets.items()}


@dataclass
class StageKnobs:
    pool_size: int = 1024  # fakes sampled for pairing (paper: 60,000)
    pool_seed: int = 0  # seed of the fake pool's stream
    pairing_k: int = 1  # neighbours kept per original (the first one initializes the latent)
    pairing_unique: bool = False  # never give two originals the same fake
    pairing_detectable_only: bool = True  # pair only with fakes in which MTCNN finds a face
    pairing_views: int = 0  # pairing features averaged over this many fixed random views (0 = one plain view)
    frame_samples: int = 64  # generator samples used to measure its face frame
    batch: int = 32  # images per batch in the batched stages
    keep_unaligned: bool = False  # also store each photo unaligned (set by method.faithful_quirks)
    alignment_failure: str = "skip"  # implausible landmarks: skip the image | box (align from the detector box)


@dataclass
class Prepped:
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


def _batched(fn, prepared: Prepared, batch: int) -> torch.Tensor:
    outs = []
    for s in range(0, len(prepared.ok), batch):
        imgs, lms = zip(*(prepared.get(e) for e in prepared.ok[s:s + batch]), strict=True)
        with torch.no_grad():
            outs.append(fn(torch.stack(imgs), torch.stack(lms)).float())
    return torch.cat(outs) if outs else torch.zeros(0)


def run_stages(nets: Networks, source: Source, cache: StageCache, knobs: StageKnobs) -> Prepped:
    fp = nets.fingerprints()
    res = nets.generator.resolution
    keys: dict[str, str] = {}
    reused: dict[str, bool] = {}

    def stage(name: str, spec: dict, compute) -> Path:
        path, keys[name], reused[name] = cache.get_or_compute(name, spec, compute)
        return path

    frame_spec = {"generator": fp["generator"], "alignment": nets.alignment, "samples": knobs.frame_samples,
                  "min_prob": nets.detector.min_prob}

    def compute_frame(out: Path) -> None:
        tpl, report = generator_frame(nets.generator, nets.detector, nets.alignment, samples=knobs.frame_samples)
        torch.save(tpl, out / "template.pt")
        (out / "report.json").write_text(json.dumps(report))

    template = torch.load(stage("frame", frame_spec, compute_frame) / "template.pt", weights_only=True)

    prep_spec = {"data": source.fingerprint(), "frame": keys["frame"], "size": res,
                 "alignment": nets.alignment, "min_prob": nets.detector.min_prob}
    if knobs.keep_unaligned:  # only then: the default's cache keys stay what they were
        prep_spec["unaligned"] = True
    if knobs.alignment_failure != "skip":
        prep_spec["alignment_failure"] = knobs.alignment_failure
    prepared = Prepared(stage("prepare", prep_spec, lambda out: run_prepare(
        source, nets.detector, out, alignment=nets.alignment, template=template, size=res,
        keep_unaligned=knobs.keep_unaligned, alignment_failure=knobs.alignment_failure)))

    inversion = None
    if nets.inversion is not None:
        inv = nets.inversion
        inv_spec = {"prepare": keys["prepare"], "inversion": type(inv).__name__, "generator": fp["generator"],
                    "knobs": {k: v for k, v in vars(inv).items() if isinstance(v, int | float | str)}}
        path = stage("invert", inv_spec, lambda out: torch.save(
            _batched(lambda x, lm: inv.invert(x), prepared, knobs.batch), out / "latents.pt"))
        inversion = torch.load(path / "latents.pt", weights_only=True)

    pool_spec = {"generator": fp["generator"], "attributes": fp["attributes"], "frame": keys["frame"],
                 "size": knobs.pool_size, "seed": knobs.pool_seed, "min_prob": nets.detector.min_prob}
    if knobs.pairing_views:  # only then: the default's cache keys stay what they were
        pool_spec["views"] = knobs.pairing_views
    pool = load_pool(stage("fakepool", pool_spec, lambda out: run_fakepool(
        nets.generator, nets.attributes, template, out, size=knobs.pool_size, seed=knobs.pool_seed,
        detector=nets.detector, views=knobs.pairing_views)))

    att = nets.attributes
    pair_spec = {"prepare": keys["prepare"], "fakepool": keys["fakepool"], "k": knobs.pairing_k,
                 "unique": knobs.pairing_unique, "detectable_only": knobs.pairing_detectable_only}
    usable = pool["detected"].nonzero().squeeze(1) if knobs.pairing_detectable_only \
        else torch.arange(len(pool["features"]))
    if len(usable) == 0:
        raise RuntimeError("MTCNN found a face in none of the fake pool's samples; set "
                           "stages.pairing_detectable_only=false or check the generator")

    def compute_pairing(out: Path) -> None:
        real = _batched(lambda x, lm: robust_features(att.pairing_features, x, att.crop_thetas(lm, (res, res)),
                                                      knobs.pairing_views), prepared, knobs.batch)
        feats = pool["features"][usable]
        if knobs.pairing_unique:
            idx = unique_assignment(real, feats)[:, None]
            sim = torch.nn.functional.cosine_similarity(real, feats[idx[:, 0]])[:, None]
        else:
            idx, sim = nearest(real, feats, k=knobs.pairing_k)
        torch.save({"index": usable[idx], "similarity": sim}, out / "pairs.pt")

    pairs = torch.load(stage("pairing", pair_spec, compute_pairing) / "pairs.pt", weights_only=True)
    return Prepped(prepared, pool, pairs["index"][:, 0], pairs["similarity"][:, 0], inversion, template,
                   keys, reused)
