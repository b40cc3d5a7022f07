"""The run's device: one setting for the stages, the optimization and the summary.

`device: auto` (conf/train.yaml) is where the Trainer runs the optimization: its strategy's
root device (`cuda:<local rank>` under DDP, `cpu` on the CPU accelerator). An explicit device
(`cpu`, `cuda`, `cuda:1`) overrides it for the stages and the summary. Stage networks go onto
the device only while a stage computes, and back where they were afterwards, so whatever runs
between the stages (the Trainer, keyed mode) finds them where it left them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import torch
from torch import nn

GPU_ACCELERATORS = ("gpu", "cuda")


def resolve_device(setting: str, trainer: Any) -> str:
    """`setting` itself unless it is `auto`; `auto` follows `trainer`: a Trainer gives its
    strategy's root device, an accelerator name gives cuda for gpu/cuda (and for auto with a
    visible GPU), else cpu."""
    if str(setting) != "auto":
        return str(torch.device(setting))
    if isinstance(trainer, str):
        gpu = trainer in GPU_ACCELERATORS or (trainer == "auto" and torch.cuda.is_available())
        return "cuda" if gpu else "cpu"
    return str(trainer.strategy.root_device)


def device_of(net: Any) -> torch.device:
    """Where a network's weights are (a FaceDetector: where MTCNN runs); cpu if it has none."""
    if not isinstance(net, nn.Module):
        return torch.device(net.device)
    first = next(chain(net.parameters(), net.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@contextmanager
def on_device(device: str | torch.device, *nets: Any) -> Iterator[None]:
    """While active, the networks (torch modules, or the FaceDetector) are on `device`; then back
    where they were, also after an exception."""
    before = [device_of(n) for n in nets]
    try:
        for n in nets:
            n.to(device)
        yield
    finally:
        for n, d in reversed(list(zip(nets, before, strict=True))):
            n.to(d)
