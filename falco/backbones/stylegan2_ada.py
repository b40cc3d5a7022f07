"""NVIDIA stylegan2-ada-pytorch generator (`training/networks.py` Generator), pure PyTorch.

Reads what many users hold instead of genforce's file: NVIDIA's network pickles (`ffhq.pkl`,
`network-snapshot-*.pkl`, taking `G_ema`) through the code-free unpickler in safe_pickle.py,
or a converted `.pt` file {'kwargs': constructor kwargs, 'state_dict': G_ema state dict}
(see `nvidia_pickle_to_pt`). Any resolution and channel configuration from the kwargs; the
'skip' architecture of every official config; unconditional generators (c_dim = 0).

    z (N,z_dim) --2nd-moment norm, FC layers--> w --broadcast to num_ws, w_avg.lerp(w, psi)--> ws
    ws (N,num_ws,w_dim) --synthesis, noise_mode='const'--> image (N,C,R,R) in [-1, 1]

Differences from the official code that do not change the result: everything runs in the
input's dtype (the official code casts the highest resolutions to float16 on GPU when
num_fp16_res > 0; use autocast for reduced precision), and the modulated convolutions are
batched (see stylegan2_synthesis.modulated_conv2d).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from falco.backbones.base import Generator, LatentLayout
from falco.backbones.checkpoints import user_checkpoint
from falco.backbones.safe_pickle import PersistentObject, load_nvidia_pickle
from falco.backbones.stylegan2_genforce import load_state_dict_strict
from falco.backbones.stylegan2_synthesis import SQRT2, fir_upsample2x, lrelu, modulated_conv2d

MAPPING_KWARGS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier",
                  "w_avg_beta"}
# accepted and without effect here: precision/memory-layout switches of the official code
SYNTHESIS_IGNORED = {"num_fp16_res", "fp16_channels_last", "channels_last"}
SYNTHESIS_KWARGS = {"channel_base", "channel_max", "conv_clamp", "architecture", "resample_filter",
                    "use_noise", "activation", "kernel_size"} | SYNTHESIS_IGNORED


def setup_filter(taps) -> torch.Tensor:
    """NVIDIA's resampling filter: outer product of the taps, normalized to sum 1 (K,K)."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f) if f.ndim == 1 else f
    return f / f.sum()


class FullyConnected(nn.Module):
    """y = act(x @ (W * lr/sqrt(in)).T + b * lr); lrelu includes its sqrt(2) gain."""

    def __init__(self, in_features: int, out_features: int, *, lr_multiplier: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain, self.activate = lr_multiplier, activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x * self.weight_gain, self.weight, self.bias * self.bias_gain)
        return lrelu(x) if self.activate else x


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 layer_features: int | None = None, lr_multiplier: float = 0.01):
        super().__init__()
        self.num_ws, self.num_layers = num_ws, num_layers
        widths = [z_dim] + [layer_features or w_dim] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            self.add_module(f"fc{i}", FullyConnected(widths[i], widths[i + 1], lr_multiplier=lr_multiplier,
                                                     activate=True))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        """z (N,z_dim) -> ws (N,num_ws,w_dim); ws[:, :cutoff] = w_avg.lerp(w, psi)."""
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x[:, None, :].expand(-1, self.num_ws, -1)
        if truncation_psi == 1:
            return ws
        cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
        w_avg = self.w_avg.to(ws.dtype).expand_as(ws[:, :cut])
        return torch.cat([torch.lerp(w_avg, ws[:, :cut], truncation_psi), ws[:, cut:]], dim=1)


class SynthesisLayer(nn.Module):
    """Modulated conv (optionally 2x up), const noise, bias, lrelu, clamp to +-conv_clamp."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, *, up: bool,
                 kernel_size: int, use_noise: bool, conv_clamp: float | None, resample_filter):
        super().__init__()
        self.up, self.use_noise, self.conv_clamp = up, use_noise, conv_clamp
        self.affine = FullyConnected(w_dim, in_ch)
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        if use_noise:
            self.register_buffer("noise_const", torch.zeros(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        # upfirdn2d convolves (flipped filter) with gain up^2 = 4; fir_filter correlates
        up_filter = self.resample_filter.flip(-2, -1) * 4 if self.up else None
        noise = self.noise_const * self.noise_strength if self.use_noise else None
        x = modulated_conv2d(x, self.weight, self.affine(w), demodulate=True, bias=self.bias,
                             noise=noise, gain=SQRT2, up_filter=up_filter)
        x = F.leaky_relu(x, 0.2)
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class ToRGBLayer(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, conv_clamp: float | None):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_ch)
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight_gain, self.conv_clamp = 1 / math.sqrt(in_ch), conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, bias=self.bias)
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: [const | conv0 (up)], conv1, torgb; the RGB skip image is upsampled
    and summed. Uses ws[:, 0..2] (the first block ws[:, 0..1]); torgb shares its w with the
    next block's first conv."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, img_channels: int,
                 resample_filter, **layer_kwargs):
        super().__init__()
        self.first = in_ch == 0
        if self.first:
            self.const = nn.Parameter(torch.zeros(out_ch, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_ch, out_ch, w_dim, resolution, up=True,
                                        resample_filter=resample_filter, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_ch, out_ch, w_dim, resolution, up=False,
                                    resample_filter=resample_filter, **layer_kwargs)
        self.torgb = ToRGBLayer(out_ch, img_channels, w_dim, layer_kwargs["conv_clamp"])
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 1 if self.first else 2

    def forward(self, x, img, ws: torch.Tensor):
        if self.first:
            x = self.conv1(self.const[None].expand(ws.shape[0], -1, -1, -1), ws[:, 0])
        else:
            x = self.conv1(self.conv0(x, ws[:, 0]), ws[:, 1])
        y = self.torgb(x, ws[:, self.num_conv])
        if img is not None:  # upsample2d: zero insertion, pad (2,1), flipped filter * 4
            img = fir_upsample2x(img, self.resample_filter.flip(-2, -1) * 4)
        return x, y if img is None else img + y.to(img.dtype)


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, *, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = None, resample_filter=(1, 3, 3, 1),
                 use_noise: bool = True, kernel_size: int = 3):
        super().__init__()
        log2 = int(math.log2(img_resolution))
        if img_resolution < 4 or 2 ** log2 != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.resolutions}
        self.num_ws = 0
        for r in self.resolutions:
            block = SynthesisBlock(channels[r // 2] if r > 4 else 0, channels[r], w_dim, r, img_channels,
                                   resample_filter, kernel_size=kernel_size, use_noise=use_noise,
                                   conv_clamp=conv_clamp)
            setattr(self, f"b{r}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's torgb

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """ws (N,num_ws,w_dim) -> image (N,C,R,R)."""
        x = img = None
        w_idx = 0
        for r in self.resolutions:
            block = getattr(self, f"b{r}")
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1])
            w_idx += block.num_conv
        return img


def _split_kwargs(kwargs: Mapping, allowed: set, what: str) -> dict:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unsupported stylegan2-ada {what} arguments: {unknown}")
    return dict(kwargs)


class StyleGAN2ADA(Generator):
    """NVIDIA Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
    synthesis_kwargs) with the same state dict.

    sample(n, seed): z from a CPU torch.Generator(seed) -> mapping with `truncation_psi` on all
        ws -> (n, num_ws, w_dim). synthesize(ws) -> (n, img_channels, R, R), noise_mode='const'.
    """

    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 1024,
                 img_channels: int = 3, mapping_kwargs: Mapping | None = None,
                 synthesis_kwargs: Mapping | None = None, *, truncation_psi: float = 0.7,
                 trainable: tuple[int, int] = (3, 8)):
        super().__init__()
        if c_dim:
            raise ValueError(f"conditional generators (c_dim={c_dim}) are not supported: "
                             "sampling and anonymization here use unconditional latents")
        mk = _split_kwargs(mapping_kwargs or {}, MAPPING_KWARGS, "mapping")
        sk = _split_kwargs(synthesis_kwargs or {}, SYNTHESIS_KWARGS, "synthesis")
        if sk.pop("architecture", "skip") != "skip":
            raise ValueError("only architecture='skip' is supported (every official config uses it)")
        if sk.pop("activation", "lrelu") != "lrelu" or mk.get("activation", "lrelu") != "lrelu":
            raise ValueError("only activation='lrelu' is supported (every official config uses it)")
        for key in SYNTHESIS_IGNORED:
            sk.pop(key, None)
        self.z_dim, self.w_dim, self.resolution = z_dim, w_dim, img_resolution
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **sk)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mk.get("num_layers", 8),
                                      layer_features=mk.get("layer_features"),
                                      lr_multiplier=mk.get("lr_multiplier", 0.01))
        self.truncation_psi = truncation_psi
        start, stop = trainable
        trainable = (min(start, self.num_ws), min(stop, self.num_ws))  # clipped for small nets
        self.layout = LatentLayout((self.num_ws, w_dim), trainable, True)

    def get_w(self, z: torch.Tensor, truncation_psi: float | None = None,
              truncation_cutoff: int | None = None) -> torch.Tensor:
        """G.mapping(z, None, truncation_psi, truncation_cutoff); psi defaults to this generator's."""
        psi = self.truncation_psi if truncation_psi is None else truncation_psi
        return self.mapping(z, psi, truncation_cutoff)

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """Always float32, whatever autocast is active, so a seed gives the same latents."""
        z = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(int(seed)))
        device = self.mapping.w_avg.device
        with torch.autocast(device.type, enabled=False):
            return self.get_w(z.to(device))

    def synthesize(self, latent: torch.Tensor) -> torch.Tensor:
        if latent.ndim != 3 or tuple(latent.shape[1:]) != self.layout.shape:
            raise ValueError(f"expected ws of shape (N, {self.num_ws}, {self.w_dim}), "
                             f"got {tuple(latent.shape)}")
        return self.synthesis(latent)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.synthesize(latent)


def _from_pickle(path) -> tuple[dict, Mapping[str, torch.Tensor]]:
    data = load_nvidia_pickle(path)
    net = data.get("G_ema", data.get("G")) if isinstance(data, dict) else data
    if not isinstance(net, PersistentObject):
        raise ValueError(f"{str(path)!r}: no 'G_ema' (or 'G') network in this NVIDIA pickle")
    if net.init_args:
        raise ValueError(f"{str(path)!r}: generator built with positional arguments {net.init_args}")
    return net.init_kwargs, net.state_dict()


def read_stylegan2_ada(path) -> tuple[dict, Mapping[str, torch.Tensor]]:
    """(constructor kwargs, G_ema state dict) from an NVIDIA .pkl or a converted .pt file."""
    if not zipfile.is_zipfile(path):  # NVIDIA pickles are plain pickles, torch.save files zips
        return _from_pickle(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not (isinstance(ckpt, Mapping) and "kwargs" in ckpt and "state_dict" in ckpt):
        raise ValueError(f"{str(path)!r}: expected {{'kwargs': ..., 'state_dict': ...}} "
                         "(see falco.backbones.stylegan2_ada.nvidia_pickle_to_pt)")
    return dict(ckpt["kwargs"]), ckpt["state_dict"]


def nvidia_pickle_to_pt(src, dst) -> None:
    """Convert an NVIDIA pickle once into a weights-only .pt file {'kwargs', 'state_dict'}."""
    kwargs, sd = _from_pickle(src)
    torch.save({"kwargs": kwargs, "state_dict": dict(sd)}, dst)


def load_stylegan2_ada(path, *, truncation_psi: float = 0.7,
                       trainable: tuple[int, int] = (3, 8)) -> StyleGAN2ADA:
    """Load an NVIDIA stylegan2-ada-pytorch generator (G_ema) in eval mode."""
    p = user_checkpoint(path, what="StyleGAN2-ADA generator (NVIDIA)", filename="ffhq.pkl",
                        source="https://github.com/NVlabs/stylegan2-ada-pytorch (pretrained networks, "
                               "e.g. .../stylegan2-ada-pytorch/pretrained/ffhq.pkl)",
                        config_key="generator.checkpoint")
    kwargs, sd = read_stylegan2_ada(p)
    gen = StyleGAN2ADA(**kwargs, truncation_psi=truncation_psi, trainable=trainable)
    load_state_dict_strict(gen, sd, f"stylegan2-ada generator {str(p)!r}")
    return gen.eval()
