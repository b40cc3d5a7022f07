"""e4e (Encoder4Editing, FFHQ): FALCO's GAN inversion, aligned face -> StyleGAN2 W+.

Official model: omertov/encoder4editing `Encoder4Editing(50, 'ir_se', opts)` as vendored in FALCO
(`models/encoders/psp_encoders.py`, loaded through `models/psp.pSp`, called by `invert.py`).
- IR-SE-50 body on the 256x256 aligned face in [-1,1]; features tapped after units 6 (c1:
  128 ch, 64x64), 20 (c2: 256 ch, 32x32) and 23 (c3: 512 ch, 16x16).
- FPN: p2 = up(c3) + latlayer1(c2) (32x32), p1 = up(p2) + latlayer2(c1) (64x64), bilinear with
  align_corners=True.
- 18 GradualStyleBlocks (for a 1024 generator: 2 * log2(1024) - 2): style 0 reads c3, styles
  1-2 c3, 3-6 p2, 7-17 p1. At inference (progressive stage `Inference`) the code is
  w_i = w0 + delta_i for i >= 1 and w_0 = w0, where w0 = style 0's output.
- `invert` adds the checkpoint's `latent_avg` (18,512) when `opts.start_from_latent_avg`
  (True for the released FFHQ file), as FALCO's `get_latents` does.
"""

from __future__ import annotations

import argparse
import math
import os
import pickle

import torch
import torch.nn.functional as F
from torch import nn

from .base import Inversion, warp
from .checkpoints import user_checkpoint
from .irse50 import STAGE_ENDS_50, make_body, make_input_layer, with_batchnorm_counters

FILENAME = "e4e_ffhq_encode.pt"
SOURCE = ("omertov/encoder4editing README ('FFHQ Inversion' e4e_ffhq_encode.pt); FALCO's "
          "download_models.py ships it in its E4E tar (models/pretrained/e4e/)")
COARSE_END, MIDDLE_END = 3, 7  # styles [0,3) read c3, [3,7) read p2, [7,18) read p1


class EqualLinear(nn.Module):
    """rosinality's EqualLinear without activation: y = x @ (W / sqrt(in)).T + b (lr_mul 1)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)  # weights are stored unscaled (equalized lr)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class GradualStyleBlock(nn.Module):
    """(N,512,S,S) -> (N,512): log2(S) stride-2 3x3 convs with LeakyReLU(0.01) down to 1x1."""

    def __init__(self, channels: int, spatial: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(spatial))):
            layers += [nn.Conv2d(channels, channels, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*layers)  # official indices: convs.0, convs.2, ...
        self.linear = EqualLinear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def _upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """FPN merge: bilinear (align_corners=True) upsampling of `top` to `lateral`'s size, plus it."""
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class E4EEncoder(Inversion):
    """Encoder4Editing with IR-SE-50; `latent_avg` is a non-persistent buffer (not in the
    official encoder state dict, which therefore loads strictly)."""

    name = "e4e_ffhq_encode"
    input_size = 256

    def __init__(self, stylegan_size: int = 1024, start_from_latent_avg: bool = True):
        super().__init__()
        self.style_count = 2 * int(math.log2(stylegan_size)) - 2  # 18 for 1024
        self.start_from_latent_avg = start_from_latent_avg
        self.input_layer = make_input_layer()
        self.body = make_body()
        self.styles = nn.ModuleList(
            GradualStyleBlock(512, 16 if i < COARSE_END else 32 if i < MIDDLE_END else 64)
            for i in range(self.style_count))
        self.latlayer1 = nn.Conv2d(256, 512, 1)  # c2 -> 512 ch
        self.latlayer2 = nn.Conv2d(128, 512, 1)  # c1 -> 512 ch
        self.register_buffer("latent_avg", torch.zeros(self.style_count, 512), persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> E4EEncoder:
        return super().train(False)  # frozen: BatchNorm keeps running statistics

    def _pyramid(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N,3,256,256) -> c1 (N,128,64,64), c2 (N,256,32,32), c3 (N,512,16,16)."""
        x = self.input_layer(x)
        taps = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in STAGE_ENDS_50[1:]:
                taps.append(x)
        c1, c2, c3 = taps
        return c1, c2, c3

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(N,3,256,256) in [-1,1] -> (N,18,512) codes relative to latent_avg (official forward)."""
        c1, c2, c3 = self._pyramid(x)
        p2 = _upsample_add(c3, self.latlayer1(c2))
        p1 = _upsample_add(p2, self.latlayer2(c1))
        w0 = self.styles[0](c3)
        codes = [w0]
        for i in range(1, self.style_count):
            features = c3 if i < COARSE_END else p2 if i < MIDDLE_END else p1
            codes.append(w0 + self.styles[i](features))
        return torch.stack(codes, dim=1)

    def invert(self, image: torch.Tensor) -> torch.Tensor:
        """Aligned face (N,3,H,W) in [-1,1] (resized to 256 if needed) -> (N,18,512) W+."""
        codes = self.encode(warp(image, None, self.input_size)).float()
        if self.start_from_latent_avg:
            codes = codes + self.latent_avg.unsqueeze(0)
        return codes


def _read_checkpoint(p: os.PathLike) -> dict:
    """weights_only load. The released file's `opts` is a plain dict (e4e saves vars(opts));
    an argparse.Namespace (data only) is also allowed. Anything else that would need code to
    unpickle is refused."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{p}: refused to unpickle (weights_only loading failed, nothing was "
                         f"executed): {err}") from err


def load_e4e(path: str | os.PathLike | None) -> E4EEncoder:
    """Load the official e4e checkpoint: {'state_dict': {'encoder.*', 'decoder.*'}, 'latent_avg',
    'opts'}. Only the encoder keys are used (strict), as in FALCO's pSp.load_weights."""
    p = user_checkpoint(path, what="e4e encoder (Encoder4Editing, FFHQ)", filename=FILENAME,
                        source=SOURCE, config_key="inversion.checkpoint")
    ckpt = _read_checkpoint(p)
    opts = ckpt.get("opts") or {}
    opts = vars(opts) if isinstance(opts, argparse.Namespace) else dict(opts)
    if opts.get("encoder_type", "Encoder4Editing") != "Encoder4Editing":
        raise ValueError(f"{p}: opts.encoder_type is {opts['encoder_type']!r}; only "
                         "'Encoder4Editing' (e4e) checkpoints are supported")
    with torch.device("meta"):  # no throw-away random init of ~270M parameters
        model = E4EEncoder(stylegan_size=int(opts.get("stylegan_size", 1024)),
                           start_from_latent_avg=bool(opts.get("start_from_latent_avg", True)))
    state = ckpt.get("state_dict", ckpt)
    encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    model.load_state_dict(with_batchnorm_counters(model, encoder), strict=True, assign=True)
    model.latent_avg = torch.zeros(model.style_count, 512)
    if model.start_from_latent_avg:
        if "latent_avg" not in ckpt:
            raise ValueError(f"{p}: no 'latent_avg' in the checkpoint, but opts.start_from_latent_avg "
                             "is set (the official code would average the generator's mapping)")
        model.latent_avg.copy_(ckpt["latent_avg"].reshape(-1, 512).expand(model.style_count, 512))
    return model.float().eval().requires_grad_(False)  # fp32 like the official module
