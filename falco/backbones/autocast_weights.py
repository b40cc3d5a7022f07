"""Frozen weights cast to the autocast dtype once per optimization, not at every call.

Under autocast, convolutions, linear layers and PReLU cast their float32 weights to bf16/fp16
on every call. Autocast's own cast cache only keeps the casts of parameters that require
grad (never the frozen networks' weights) and is cleared when the autocast region exits, so
FaRL's 86M parameters were re-cast at every Adam step (~0.3 s on 2 CPU cores). Inside
`autocast_weights(...)` those parameters hold their low-precision copies instead; the results
are bit-identical (autocast's cast of an already cast tensor is a no-op, and the rounding is
the same), and the float32 values come back on exit, also after an exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

# Modules whose forward is the stock one and whose every floating parameter autocast casts
# (checked bit for bit in tests/perf/test_autocast_weights.py). Exact types only: a subclass
# may use its weights in ops autocast leaves in float32.
CAST_TYPES = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.PReLU)
# Other modules name such parameters in an `autocast_params` class attribute (FaRL attention).
CAST_ATTRIBUTE = "autocast_params"


def castable(module: nn.Module) -> list[nn.Parameter]:
    """The frozen float32 parameters of `module` itself that autocast casts where they are used."""
    if type(module) in CAST_TYPES:
        params = list(module.parameters(recurse=False))
    else:
        params = [getattr(module, name) for name in getattr(module, CAST_ATTRIBUTE, ())]
    return [p for p in params if p is not None and p.dtype == torch.float32 and not p.requires_grad]


@contextmanager
def autocast_weights(*networks: nn.Module) -> Iterator[None]:
    """While active (and autocast is on for the networks' device), their castable frozen
    weights are stored in autocast's dtype. Does nothing outside autocast."""
    params = [p for net in networks for m in net.modules() for p in castable(m)]
    if not params or not torch.is_autocast_enabled(params[0].device.type):
        yield
        return
    dtype = torch.get_autocast_dtype(params[0].device.type)
    saved = [(p, p.data) for p in params]
    try:
        for p, data in saved:
            p.data = data.to(dtype)
        yield
    finally:
        for p, data in saved:
            p.data = data
