"""What the Lightning predict loop adds over calling the module's predict_step directly.

Both sides run the same AnonymizerModule.predict_step on the same batches (targets, the
optimization, the final synthesis and distances); Lightning adds its loop, hooks, the
DataLoader, batch transfer and autocast handling. Runs alternate (direct, Lightning, direct,
Lightning) and each side's fastest counts, so a burst of load elsewhere hits neither alone.
Also measured: the peak memory in flight of Lightning runs over 1 and 3 batches (it must not
grow with the number of images).
"""

from __future__ import annotations

import copy
import time
from functools import partial

from torch.utils.data import DataLoader, Dataset

from falco.module import AnonymizerModule

from .memory import measure_peak
from .problem import Problem
from .timing import autocast_for

PRECISIONS = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}


class ItemsDataset(Dataset):
    """The items AnonymizeDataset yields, from the problem's image pool."""

    def __init__(self, problem: Problem, count: int) -> None:
        self.p, self.count = problem, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        k = i % self.p.originals.shape[0]
        fixed = self.p.fixed[k] if self.p.fixed is not None else self.p.init[k]
        return {"index": i, "image": self.p.originals[k], "landmarks": self.p.landmarks[k], "fixed": fixed,
                "fake": self.p.init[k], "init": self.p.init[k], "seed": k}  # seed: the image's random views


def module_for(problem: Problem, steps: int) -> AnonymizerModule:
    method = copy.deepcopy(problem.method)
    method.steps = steps  # type: ignore[attr-defined]
    return AnonymizerModule(problem.generator, problem.identity, problem.attributes, method)  # type: ignore[arg-type]


def direct(problem: Problem, loader: DataLoader, steps: int, precision: str) -> float:
    module = module_for(problem, steps)
    start = time.perf_counter()
    with autocast_for(precision):
        for i, batch in enumerate(loader):
            module.predict_step(batch, i)
    return time.perf_counter() - start


def through_lightning(problem: Problem, loader: DataLoader, steps: int, precision: str) -> float:
    assert problem.make_trainer is not None
    trainer = problem.make_trainer(PRECISIONS[precision])
    module = module_for(problem, steps)
    start = time.perf_counter()
    trainer.predict(module, loader, return_predictions=False)  # type: ignore[attr-defined]
    return time.perf_counter() - start


def lightning_overhead(problem: Problem, batch: int, steps: int, precision: str, repeats: int = 3) -> dict:
    loader = DataLoader(ItemsDataset(problem, 2 * batch), batch_size=batch, shuffle=False)
    direct(problem, loader, 1, precision)  # warm-up (kernels for these shapes)
    times: dict[str, list[float]] = {"direct": [], "lightning": []}
    for _ in range(repeats):
        times["direct"].append(direct(problem, loader, steps, precision))
        times["lightning"].append(through_lightning(problem, loader, steps, precision))
    best = {k: min(v) for k, v in times.items()}
    mem = {}
    for batches in (1, 3):
        few = DataLoader(ItemsDataset(problem, batches * batch), batch_size=batch, shuffle=False)
        _, peak = measure_peak(partial(through_lightning, problem, few, 2, precision))
        mem[f"mem_in_flight_{batches}_batches"] = peak.in_flight
    return {"batch": batch, "batches": 2, "steps": steps, "direct_s": best["direct"],
            "lightning_s": best["lightning"], "overhead": best["lightning"] / best["direct"] - 1,
            "all_s": times, **mem}
