"""StyleGAN2 synthesis: the ops shared by both ports and genforce's synthesis network.

Ops (genforce and the NVIDIA port, stylegan2_ada.py): modulated convolution with the styles
applied to the activations (one ordinary batched conv, no per-sample weights), and FIR
filtering/upsampling as depthwise convolutions. Modules: genforce's layers (names follow the
official state dict) and `Synthesis` (W+ styles -> image). The generator around it (mapping,
truncation, loader) is stylegan2_genforce.py; its partial synthesis with the fixed W+ layers'
work done once is stylegan2_frozen.py (both import this module; it imports neither). All of it
runs on CPU or GPU, under autocast, with gradients w.r.t. the latent; nothing here is compiled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


# ---- StyleGAN2 ops (shared with stylegan2_ada.py and stylegan2_frozen.py) ----

def lrelu(x: torch.Tensor) -> torch.Tensor:
    """StyleGAN's activation: leaky ReLU (slope 0.2) scaled by sqrt(2) to keep the variance."""
    return F.leaky_relu(x, 0.2) * SQRT2


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, padding: int) -> torch.Tensor:
    """Correlate every channel of x (N,C,H,W) with the same 2-D kernel (K,K), zero padding."""
    k = kernel.to(x.dtype).expand(x.shape[1], 1, *kernel.shape[-2:])
    return F.conv2d(x, k, padding=padding, groups=x.shape[1])


def fir_upsample2x(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) -> (N,C,2H,2W): insert zeros after every sample, pad by (K/2, K/2-1) and
    correlate with `kernel` (K,K), K even (the [1,3,3,1] filter has K=4).

    A depthwise transposed convolution does the zero insertion and filtering in one op; it
    correlates with the flipped kernel, hence the flip.
    """
    ksize = kernel.shape[-1]
    if ksize % 2:
        raise ValueError(f"upsampling filter must have an even size, got {tuple(kernel.shape)}")
    k = kernel.to(x.dtype).flip(-2, -1).expand(x.shape[1], 1, ksize, ksize)
    return F.conv_transpose2d(x, k, stride=2, padding=ksize // 2 - 1, groups=x.shape[1])


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / |modulated weight| per sample and output channel, (N,O), in float32.

    |w[o] * s|^2 = sum_i s_i^2 * sum_kk w[o,i,kk]^2, so the (N,O,I,k,k) per-sample weights are
    never built.
    """
    with torch.autocast(styles.device.type, enabled=False):  # a float32 matmul
        w2 = weight.float().square().sum(dim=(2, 3))  # (O,I)
        return (styles.float().square() @ w2.T + 1e-8).rsqrt()


def bias_noise(y: torch.Tensor, bias: torch.Tensor, noise: torch.Tensor | None, gain: float) -> torch.Tensor:
    """gain * (bias[c] + noise[h,w]) as a (1,C,H,W) tensor in y's dtype and memory layout
    (channels_last stays channels_last, so the addcmul below does not fall back to NCHW)."""
    b = (bias * gain).to(y.dtype)
    if noise is None:
        return b[None, :, None, None]
    n = (noise * gain).to(y.dtype)
    if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        return (n[None, :, :, None] + b).permute(0, 3, 1, 2)  # built as (1,H,W,C)
    return n[None, None] + b[None, :, None, None]


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *,
                     demodulate: bool, bias: torch.Tensor, noise: torch.Tensor | None = None,
                     gain: float = 1.0, up_filter: torch.Tensor | None = None,
                     flip_up: bool = False) -> torch.Tensor:
    """StyleGAN2 modulated convolution, batched: gain * (conv_n(x) + noise + bias).

    x (N,I,H,W); weight (O,I,k,k); styles (N,I), with any weight gain folded in (the same
    product); bias (O,); noise (H',W'), already times its strength. conv_n convolves sample n
    with weight * styles[n] (divided by its norm when demodulating).
    For 3x3 kernels the styles scale the input channels and the demodulation coefficients the
    output channels instead: the same linear map, with one weight shared by the whole batch.
    1x1 kernels (ToRGB) build the tiny per-sample weights and contract them in one einsum.
    up_filter: when given, a stride-2 transposed conv followed by this FIR filter (K,K, gain
    included), padding 1 -> (N,O,2H,2W); `flip_up` flips the weight first (genforce does,
    NVIDIA does not). Otherwise a 'same' conv -> (N,O,H,W).
    """
    scale = demod_coefficients(weight, styles) * gain if demodulate else None  # (N,O) float32
    if weight.shape[-1] == 1 and up_filter is None:
        w = weight[None, :, :, 0, 0] * styles[:, None, :]  # (N,O,I)
        w = w * (scale[:, :, None] if demodulate else gain)
        y = torch.einsum("nihw,noi->nohw", x, w.to(x.dtype))
        return y + bias_noise(y, bias, noise, gain)
    x = x * styles.to(x.dtype)[:, :, None, None]
    w = weight.to(x.dtype)
    if up_filter is None:
        y = F.conv2d(x, w, padding=weight.shape[-1] // 2)
    else:
        w = w.flip(-2, -1) if flip_up else w
        y = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)  # (N,O,2H+k-2,...)
        y = fir_filter(y, up_filter, padding=1)
    if scale is None:
        scale = torch.full(y.shape[:2], gain, dtype=y.dtype, device=y.device)
    # one pass over the activations: y * scale + gain * (noise + bias)
    return torch.addcmul(bias_noise(y, bias, noise, gain), y, scale.to(y.dtype)[:, :, None, None])


# ---- genforce modules (names follow the official state dict) ----

class DenseLayer(nn.Module):
    """Equalized-lr linear layer: y = x @ (W * lr_mul/sqrt(in)).T + b * lr_mul (+ extra_bias)."""

    def __init__(self, in_features: int, out_features: int, *, lr_mul: float = 1.0,
                 activate: bool = True, extra_bias: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul, self.activate, self.extra_bias = lr_mul, activate, extra_bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # scaling the (N,in) input is cheaper than scaling the (out,in) weight every call
        x = F.linear(x * self.weight_gain, self.weight, self.bias * self.lr_mul) + self.extra_bias
        return lrelu(x) if self.activate else x


class FirKernel(nn.Module):
    """Holds genforce's stored resampling kernel (1,1,4,4): outer([1,3,3,1]) / 64 * 4."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / 64.0 * 4.0)[None, None])


class ConstInput(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.const = nn.Parameter(torch.zeros(1, channels, 4, 4))


class ModConvLayer(nn.Module):
    """genforce ModulateConvBlock: modulated 3x3 conv (optionally 2x up), noise, bias, lrelu;
    or, with to_rgb=True, the 1x1 ToRGB conv (no demodulation, noise or activation)."""

    def __init__(self, in_ch: int, out_ch: int, resolution: int, w_dim: int, *,
                 up: bool = False, to_rgb: bool = False):
        super().__init__()
        ksize = 1 if to_rgb else 3
        self.weight = nn.Parameter(torch.zeros(out_ch, in_ch, ksize, ksize))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.style = DenseLayer(w_dim, in_ch, activate=False, extra_bias=1.0)
        self.weight_gain = 1.0 / math.sqrt(in_ch * ksize * ksize)
        self.up, self.to_rgb = up, to_rgb
        if up:
            self.filter = FirKernel()
        if not to_rgb:
            self.noise_strength = nn.Parameter(torch.zeros(()))
            self.register_buffer("noise", torch.zeros(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """x (N,in,H,W), style (N,in) from `self.style(w)` -> (N,out,H',W')."""
        # (weight * gain) modulated by style == weight modulated by (style * gain): scale the
        # small style instead of the weight
        style = style * self.weight_gain
        if self.to_rgb:  # linear: conv + bias
            return modulated_conv2d(x, self.weight, style, demodulate=False, bias=self.bias)
        # lrelu(conv + noise + bias) * sqrt2 == lrelu(sqrt2 * (conv + noise + bias))
        x = modulated_conv2d(x, self.weight, style, demodulate=True, bias=self.bias,
                             noise=self.noise[0, 0] * self.noise_strength, gain=SQRT2,
                             up_filter=self.filter.kernel[0, 0] if self.up else None, flip_up=True)
        return F.leaky_relu(x, 0.2)


class Synthesis(nn.Module):
    """early_layer (const 4x4) -> layer0 .. layer{2k} (odd layers upsample) with a ToRGB
    `output{j}` after every even layer; RGB images summed across resolutions (skip)."""

    def __init__(self, resolution: int, w_dim: int, fmaps_base: int, fmaps_max: int):
        super().__init__()
        log2 = int(math.log2(resolution))
        if resolution < 8 or 2 ** log2 != resolution:
            raise ValueError(f"resolution must be a power of two >= 8, got {resolution}")
        self.num_blocks = log2 - 1  # resolutions 4, 8, ..., R
        nf = [min(fmaps_base // (4 * 2 ** b), fmaps_max) for b in range(self.num_blocks)]
        self.early_layer = ConstInput(nf[0])
        for b in range(self.num_blocks):
            res = 4 * 2 ** b
            if b > 0:
                self.add_module(f"layer{2 * b - 1}", ModConvLayer(nf[b - 1], nf[b], res, w_dim, up=True))
            self.add_module(f"layer{2 * b}", ModConvLayer(nf[b], nf[b], res, w_dim))
            self.add_module(f"output{b}", ModConvLayer(nf[b], 3, res, w_dim, to_rgb=True))
        self.upsample = FirKernel()

    def style_names(self) -> list[tuple[str, str, int]]:
        """(style name, module name, W+ index) of every modulated layer, in W+ order."""
        names = []
        for i in range(2 * self.num_blocks - 1):
            names.append((f"style{i:02d}", f"layer{i}", i))
            if i % 2 == 0:
                names.append((f"output_style{i // 2}", f"output{i // 2}", i + 1))
        return names

    def get_s(self, wp: torch.Tensor) -> dict[str, torch.Tensor]:
        """W+ (N,L,D) -> style codes {style00.., output_style0..}, each (N, in_channels)."""
        return {s: getattr(self, m).style(wp[:, i]) for s, m, i in self.style_names()}

    def forward(self, styles: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Style codes (see get_s) -> image (N,3,R,R)."""
        n = styles["style00"].shape[0]
        x = self.early_layer.const.expand(n, -1, -1, -1)
        image = None
        for i in range(2 * self.num_blocks - 1):
            x = getattr(self, f"layer{i}")(x, styles[f"style{i:02d}"])
            if i % 2 == 0:
                rgb = getattr(self, f"output{i // 2}")(x, styles[f"output_style{i // 2}"])
                image = rgb if image is None else rgb + fir_upsample2x(image, self.upsample.kernel[0, 0])
        return image
