"""Opt-in torch.compile of (b)'s per-step work, for the benchmark's --compile.

Compiles the loss networks' `embed` / `features`, the generator's `synthesize` and the
StyleGAN2 tail (FrozenSynthesis._run_tail) while the context is active, and restores the
eager functions after. Inductor needs a C++ compiler on CPU; the project itself never compiles
(tests/test_no_compiler.py), so this stays a measurement option. Compilation happens in the
first call for each shape: the benchmark reports it as warm-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from falco.backbones.stylegan2_frozen import FrozenSynthesis

from .problem import Problem


@contextmanager
def compiled(problem: Problem, enabled: bool = True) -> Iterator[None]:
    if not enabled:
        yield
        return
    targets = [(problem.identity, "embed"), (problem.attributes, "features"), (problem.generator, "synthesize")]
    for obj, name in targets:  # instance attributes shadow the class's methods until deleted
        setattr(obj, name, torch.compile(getattr(obj, name), dynamic=False))
    eager_tail = FrozenSynthesis._run_tail
    FrozenSynthesis._run_tail = torch.compile(eager_tail, dynamic=False)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for obj, name in targets:
            delattr(obj, name)
        FrozenSynthesis._run_tail = eager_tail  # type: ignore[method-assign]
