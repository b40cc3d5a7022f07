"""Stage `pairing`: each original's nearest fakes in attribute space (cosine similarity).

Chunked matrix products in torch (no sklearn, no N x M matrix in memory at once). k
neighbours per original; `unique=True` assigns fakes greedily by decreasing similarity so
that no fake is used twice (the paper allows duplicates: k = 1, unique = False).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nearest(real: torch.Tensor, fake: torch.Tensor, *, k: int = 1,
            chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """real (N,D), fake (M,D) -> (indices (N,k), cosine similarities (N,k))."""
    if k > fake.shape[0]:
        raise ValueError(f"pairing.k={k} exceeds the fake pool size {fake.shape[0]}")
    real, fake = F.normalize(real.float(), dim=1), F.normalize(fake.float(), dim=1)
    best_s = torch.full((real.shape[0], k), -2.0)
    best_i = torch.zeros((real.shape[0], k), dtype=torch.long)
    for start in range(0, fake.shape[0], chunk):
        sims = real @ fake[start:start + chunk].T
        s = torch.cat([best_s, sims], 1)
        i = torch.cat([best_i, torch.arange(start, start + sims.shape[1]).expand(real.shape[0], -1)], 1)
        best_s, order = s.topk(k, dim=1)
        best_i = i.gather(1, order)
    return best_i, best_s


def unique_assignment(real: torch.Tensor, fake: torch.Tensor, *, candidates: int = 32) -> torch.Tensor:
    """One fake per original, never reused: greedy on each original's top candidates."""
    if fake.shape[0] < real.shape[0]:
        raise ValueError(f"unique pairing needs a pool at least as large as the dataset "
                         f"({fake.shape[0]} < {real.shape[0]})")
    idx, sim = nearest(real, fake, k=min(candidates, fake.shape[0]))
    taken: set[int] = set()
    out = torch.full((real.shape[0],), -1, dtype=torch.long)
    for r in sim[:, 0].argsort(descending=True).tolist():
        for j in idx[r].tolist():
            if j not in taken:
                out[r] = j
                taken.add(j)
                break
    leftover = [r for r in range(real.shape[0]) if out[r] < 0]
    free = iter(sorted(set(range(fake.shape[0])) - taken))
    for r in leftover:  # all candidates taken: fall back to any unused fake
        out[r] = next(free)
    return out
