"""genforce StyleGAN2 synthesis with the fixed W+ layers' work done once per batch.

FALCO optimizes W+ layers 3-7 only. Every modulated layer whose style comes from a fixed W+
layer (the 4x4 and 8x8 layers before, and all layers from 64 px up after the trainable ones)
does the same work at every Adam step, so `FrozenSynthesis` does it once:

- prefix: the leading layers whose styles are all fixed (genforce: the 4x4 and 8x8 layers
  using W+ 0-2) give a constant activation and RGB image: computed once, without gradient.
- live: the layers whose style depends on the trainable layers run as in `Synthesis`
  (batched, styles scaling the activations), so the gradient reaches the latent.
- tail: the layers after the last trainable style (64 px to 1024 px, ~99% of the FLOPs) have
  constant styles, so their modulated, demodulated weights are built once per image: each
  becomes an ordinary convolution, constant noise + bias map and leaky ReLU, with no style
  scaling pass over the activations and no weight gradient. They run image by image in
  channels_last (oneDNN's fast layout on CPU for these convolutions), so an image's tail is
  computed exactly as in a batch of one.

Mathematically equal to `GenforceStyleGAN2.synthesize`; in float32 it differs only by
rounding (the style and demodulation factors are folded into the weights): ~1e-6 relative.
`exact=True` folds nothing: the tail runs as `Synthesis` runs it, so only the prefix is saved
and the result is bit for bit `synthesize`'s (the batch-invariant mode, falco/module.py).
Call it under the same autocast state it was built under (its constants are in that dtype).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from falco.backbones.stylegan2_synthesis import SQRT2, Synthesis, demod_coefficients, fir_upsample2x

# Memory layout of the tail's activations: channels_last (NHWC) runs the convolutions 2-3x
# faster than NCHW on this CPU in bf16 (oneDNN), depthwise FIR filters too; on GPU unverified.
TAIL_MEMORY_FORMAT = torch.channels_last


@dataclass
class _TailOp:
    """One tail layer of one image: its folded weight and constants in the compute dtype."""

    kind: str  # "conv" (3x3, optionally 2x up) or "rgb" (1x1 ToRGB, added to the skip image)
    weight: torch.Tensor  # conv: (O,I,3,3), or (I,O,3,3) flipped for the transposed conv; rgb: (3,I,1,1)
    bias: torch.Tensor  # conv: gain * (noise + bias) as (1,O,H,W); rgb: (3,)
    fir: torch.Tensor | None = None  # (O,1,4,4) FIR kernel after a 2x up conv


def layer_sequence(synthesis: Synthesis) -> list[tuple[str, str, int]]:
    """(kind, module name, W+ index) of every modulated layer, in execution order."""
    ops = []
    for i in range(2 * synthesis.num_blocks - 1):
        ops.append(("conv", f"layer{i}", i))
        if i % 2 == 0:
            ops.append(("rgb", f"output{i // 2}", i + 1))
    return ops


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype convolutions run in here: autocast's when it is on, else float32."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


class FrozenSynthesis:
    """f(trainable) == synthesis(get_s(cat(wp[:, :start], trainable, wp[:, stop:]))).

    wp: (B,L,D) float32 W+ whose layers outside [start, stop) are kept; trainable: (B,stop-start,D).
    """

    def __init__(self, synthesis: Synthesis, wp: torch.Tensor, trainable: tuple[int, int], exact: bool = False):
        self.synthesis = synthesis
        self.start, self.stop = trainable
        ops = layer_sequence(synthesis)
        live = [k for k, (_, _, w) in enumerate(ops) if self.start <= w < self.stop]
        first, last = (live[0], live[-1] + 1) if live else (len(ops), len(ops))
        last = len(ops) if exact else last  # exact: the tail runs unfolded, with the live layers
        self.wp = wp
        self.live_ops = ops[first:last]
        self.dtype = compute_dtype(wp.device)
        with torch.no_grad():
            const = _tensor(synthesis.early_layer, "const").expand(wp.shape[0], -1, -1, -1)
            self.x, self.image = self._run_batched(ops[:first], lambda i: wp[:, i], const, None)
            self.tail = [self._fold(ops[last:], wp[n:n + 1]) for n in range(wp.shape[0])]

    def _w_of(self, trainable: torch.Tensor) -> Callable[[int], torch.Tensor]:
        """W+ layer i for the live layers: trainable inside [start, stop), else the fixed code."""
        return lambda i: trainable[:, i - self.start] if self.start <= i < self.stop else self.wp[:, i]

    def _style(self, name: str, w: torch.Tensor) -> torch.Tensor:
        """(N,D) W+ layer -> (N,in) style of layer `name`, times its weight gain."""
        module = getattr(self.synthesis, name)
        return module.style(w) * module.weight_gain

    def _run_batched(self, ops, w_of: Callable[[int], torch.Tensor], x: torch.Tensor,
                     image: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run `ops` as `Synthesis.forward` does; w_of(i) is the (B,D) W+ layer i."""
        kernel = _tensor(self.synthesis.upsample, "kernel")[0, 0]
        for kind, name, i in ops:
            module = getattr(self.synthesis, name)
            if kind == "conv":
                x = module(x, module.style(w_of(i)))
            else:
                rgb = module(x, module.style(w_of(i)))
                image = rgb if image is None else rgb + fir_upsample2x(image, kernel)
        return x, image

    def _fold(self, ops, w1: torch.Tensor) -> list[_TailOp]:
        """The tail layers of one image (w1: (1,L,D)) with styles folded into their weights."""
        folded = []
        for kind, name, i in ops:
            module = getattr(self.synthesis, name)
            s = self._style(name, w1[:, i]).float()  # (1,I)
            weight = module.weight.float()
            if kind == "rgb":  # no demodulation, gain 1
                w = (weight[:, :, 0, 0] * s).to(self.dtype)[:, :, None, None]
                folded.append(_TailOp("rgb", w.contiguous(memory_format=TAIL_MEMORY_FORMAT),
                                      module.bias.to(self.dtype)))
                continue
            d = demod_coefficients(weight, s) * SQRT2  # (1,O)
            w = weight * s[0, None, :, None, None] * d[0, :, None, None, None]
            fir = None
            if module.up:  # transposed conv (genforce flips the kernel), then the FIR filter
                w = w.flip(-2, -1).transpose(0, 1)
                k = module.filter.kernel[0, 0].to(self.dtype)
                fir = k.expand(w.shape[1], 1, *k.shape).contiguous(memory_format=TAIL_MEMORY_FORMAT)
            size = module.noise.shape[-1]
            noise = module.noise[0, 0] * module.noise_strength * SQRT2  # as bias_noise computes it
            const = (noise.to(self.dtype)[None, None] + (module.bias * SQRT2).to(self.dtype)[None, :, None, None])
            const = const.expand(1, -1, size, size).contiguous(memory_format=TAIL_MEMORY_FORMAT)
            folded.append(_TailOp("conv", w.to(self.dtype).contiguous(memory_format=TAIL_MEMORY_FORMAT),
                                  const, fir))
        return folded

    def _run_tail(self, tail: list[_TailOp], x: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor | None:
        """One image's tail: x (1,C,h,w), image (1,3,h',w') -> (1,3,R,R)."""
        x = x.to(self.dtype).contiguous(memory_format=TAIL_MEMORY_FORMAT)
        kernel = _tensor(self.synthesis.upsample, "kernel")[0, 0]
        for op in tail:
            if op.kind == "rgb":
                rgb = F.conv2d(x, op.weight, op.bias)
                image = rgb if image is None else rgb + fir_upsample2x(image.to(rgb.dtype), kernel)
                continue
            if op.fir is None:
                y = F.conv2d(x, op.weight, padding=op.weight.shape[-1] // 2)
            else:
                y = F.conv_transpose2d(x, op.weight, stride=2)
                y = F.conv2d(y, op.fir, padding=1, groups=y.shape[1])
            x = F.leaky_relu_(y.add_(op.bias), 0.2)  # in place: conv outputs are not saved for backward
        return image

    def __call__(self, trainable: torch.Tensor) -> torch.Tensor:
        """(B, stop-start, D) trainable W+ layers -> image (B,3,R,R)."""
        x, image = self.x, self.image
        if self.live_ops:
            x, image = self._run_batched(self.live_ops, self._w_of(trainable), x, image)
        if not self.tail[0]:  # the trainable layers reach the last layer: nothing folded
            assert image is not None
            return image
        images = [self._run_tail(t, x[n:n + 1], None if image is None else image[n:n + 1])
                  for n, t in enumerate(self.tail)]
        return torch.cat([i for i in images if i is not None]).contiguous()


def _tensor(module: torch.nn.Module, name: str) -> torch.Tensor:
    """A module's parameter or buffer, typed."""
    value = getattr(module, name)
    assert isinstance(value, torch.Tensor)
    return value
