"""IR-SE-50: the residual body shared by TreB1eN's ArcFace and e4e's encoder.

Architecture facts (TreB1eN/InsightFace_Pytorch `model.py`, vendored unchanged in pSp/e4e
`models/encoders/helpers.py` and FALCO `lib/arcface.py`):
- input layer: 3x3 conv 3->64 (no bias), BatchNorm, PReLU; keeps the resolution.
- body: 24 "improved residual" units with squeeze-excitation, in 4 stages of
  (64, 3 units), (128, 4), (256, 14), (512, 3); the first unit of each stage has stride 2, so
  a 112 input ends at 7x7 and a 256 input at 16x16.
- unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN -> SE, plus a shortcut that is a
  strided 1x1 max pool (= subsampling) when the width is kept, else 1x1 conv + BN.

Module and attribute names reproduce the official ones (`input_layer.0`, `body.7.res_layer.5.fc1`,
`shortcut_layer.1`, ...), so official state dicts load with a plain `load_state_dict`.
Everything is eval-mode BatchNorm (running statistics): outputs do not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

# (input width, output width, number of units) per stage of the 50-layer variant.
STAGES_50 = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
# Index in `body` of the last unit of each stage: e4e taps its FPN features there
# (stage 2 -> 128 ch at 1/4 size, stage 3 -> 256 ch at 1/8, stage 4 -> 512 ch at 1/16).
STAGE_ENDS_50 = (2, 6, 20, 23)


class SEModule(nn.Module):
    """Squeeze-excitation: rescale each channel by a gate computed from the global mean."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=(2, 3), keepdim=True)  # (N,C,1,1), per-image: no batch statistics
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(gate))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """One IR-SE unit (official name `bottleneck_IR_SE`): (N,in,H,W) -> (N,depth,H/s,W/s)."""

    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        if in_channels == depth:
            # A 1x1 max pool with stride s just keeps every s-th pixel (identity when s == 1).
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def make_input_layer() -> nn.Sequential:
    """(N,3,H,W) image in [-1,1] -> (N,64,H,W)."""
    return nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))


def make_body(stages=STAGES_50) -> nn.Sequential:
    """The 24 IR-SE units as one flat Sequential (official indexing `body.0` ... `body.23`)."""
    units = []
    for in_channels, depth, count in stages:
        units.append(BottleneckIRSE(in_channels, depth, 2))
        units += [BottleneckIRSE(depth, depth, 1) for _ in range(count - 1)]
    return nn.Sequential(*units)


def with_batchnorm_counters(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Copy of `state_dict` with any missing BatchNorm `num_batches_tracked` filled with 0.

    Older TreB1eN/pSp files predate that buffer. It only matters in training mode (momentum
    None), never in eval, so zero is a faithful filler and keeps `strict=True` loading useful.
    """
    out = dict(state_dict)
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = torch.zeros(value.shape, dtype=value.dtype)  # CPU even for a meta module
    return out
