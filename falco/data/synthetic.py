"""`data=synthetic`: photos of faces sampled from the embedded generator.

Each identity is one generator sample (seed stream "data", disjoint from the fake pool's
"pool" stream); each view of it is a photo made from that face: upscaled, then optionally
re-framed (scale, shift), rotated, colour-jittered and JPEG-compressed. The pipeline treats
these as photos (detects, aligns, inverts); it never sees their latent codes.

About 8% of the DCGAN's samples are not faces to MTCNN at all. With `accept` (the default
builder passes an MTCNN check), an identity whose sample is rejected is redrawn from the next
seed of its own stream, so the dataset has N detectable faces, reproducibly.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image, ImageEnhance

from ..backbones.base import Generator
from ..seeds import stream_seed
from .items import SourceItem


class SyntheticSource:
    name = "synthetic"

    def __init__(self, generator: Generator, *, identities: int = 16, views: int = 1, seed: int = 0,
                 photo_size: int = 128, augment: bool = False, rotate_deg: float = 10.0,
                 scale_jitter: float = 0.12, shift_jitter: float = 0.06, color_jitter: float = 0.15,
                 jpeg_quality: tuple[int, int] = (60, 95),
                 accept: Callable[[np.ndarray], bool] | None = None, max_draws: int = 20) -> None:
        self.generator = generator
        self.seed = seed
        self.photo_size = photo_size
        self.augment = augment
        self.jitter = dict(rotate=rotate_deg, scale=scale_jitter, shift=shift_jitter, color=color_jitter,
                           jpeg=tuple(jpeg_quality))
        self.items = [SourceItem(id=f"syn{j:05d}_v{v}", path=None, identity=f"syn{j:05d}", labels={})
                      for j in range(identities) for v in range(views)]
        self._faces: dict[str, np.ndarray] = {}
        self._latents: dict[str, torch.Tensor] = {}
        self.accept = accept  # identity check of a drawn face (uint8 HxWx3); None = keep every draw
        self.max_draws = max_draws  # draws per identity before giving up on the check

    def fingerprint(self) -> dict:
        return {"source": self.name, "seed": self.seed, "items": len(self.items), "photo": self.photo_size,
                "augment": self.augment, "jitter": self.jitter, "checked": self.accept is not None}

    def latent_of(self, identity: str) -> torch.Tensor:
        """The identity's generator latent: for tests that check the pipeline never uses it."""
        self._face(identity)
        return self._latents[identity]

    def _face(self, identity: str) -> np.ndarray:
        if identity not in self._faces:
            for draw in range(self.max_draws):
                z = self.generator.sample(1, stream_seed("data", self.seed, identity, *([draw] if draw else [])))
                with torch.no_grad():
                    img = self.generator.synthesize(z)[0]
                face = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
                if self.accept is None or self.accept(face):
                    break
            self._faces[identity], self._latents[identity] = face, z
        return self._faces[identity]

    def read(self, item: SourceItem) -> np.ndarray:
        """uint8 HxWx3 photo of the item's identity (deterministic per item id)."""
        assert item.identity is not None
        face = Image.fromarray(self._face(item.identity)).resize((self.photo_size,) * 2, Image.BICUBIC)
        if not self.augment:
            return np.asarray(face)
        rng = np.random.default_rng(stream_seed("view", self.seed, item.id))
        return np.asarray(self._augment(face, rng))

    def _augment(self, face: Image.Image, rng: np.random.Generator) -> Image.Image:
        j, size = self.jitter, self.photo_size
        scale = 1 + rng.uniform(-j["scale"], j["scale"])
        dx, dy = rng.uniform(-j["shift"], j["shift"], 2) * size
        img = face.rotate(rng.uniform(-j["rotate"], j["rotate"]), Image.BICUBIC, translate=(dx, dy),
                          fillcolor=(128, 128, 128))
        crop = size / scale
        off = (size - crop) / 2  # negative when zooming out: the box extends past the photo
        # EXTENT samples the box and fills what lies outside the photo with the same grey as the
        # rotation (resize(box=...) refuses boxes that start outside the image).
        img = img.transform((size, size), Image.EXTENT, (off, off, off + crop, off + crop), Image.BICUBIC,
                            fillcolor=(128, 128, 128))
        for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enhance(img).enhance(1 + rng.uniform(-j["color"], j["color"]))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(j["jpeg"][0], j["jpeg"][1] + 1)))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
