"""Stage `pairing`: each original's nearest fakes in attribute space (cosine similarity).

Chunked matrix products in torch (no sklearn, no N x M matrix in memory at once). k
neighbours per original; `unique=True` assigns fakes greedily by decreasing similarity so
that no fake is used twice (the paper allows duplicates: k = 1, unique = False), and optionally
that no two originals start from fakes the run's recognizer calls one person.
"""

from __future__ import annotations

from collections.abc import Callable

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


def unique_assignment(real: torch.Tensor, fake: torch.Tensor, *, candidates: int = 32,
                      identities: Callable[[torch.Tensor], torch.Tensor] | None = None,
                      same_person: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor, int]:
    """One fake per original, reused as little as possible: greedy on each original's top
    candidates, by decreasing similarity. Each fake serves at most ceil(N / M) originals (1 when
    the pool is at least as large as the dataset), so different people never share a starting
    face while the pool allows it.

    identities(rows) -> (len(rows), E) recognizer embeddings of those fakes, and same_person(e
    (E,), others (A, E)) -> (A,) bool: when given, a candidate that the recognizer calls the same
    person as a fake already given to another original is skipped too (distinct people start from
    distinct-looking faces, not from near-twins of one synthetic person). Only the candidates are
    embedded. Returns (assignment (N,), fallbacks: originals whose candidates all looked like a
    taken fake, given their nearest free one)."""
    capacity = -(-real.shape[0] // fake.shape[0])
    idx, sim = nearest(real, fake, k=min(candidates, fake.shape[0]))
    ids = None
    if identities is not None:
        rows = idx.unique()
        emb = identities(rows).float()
        ids = torch.zeros(fake.shape[0], emb.shape[1])
        ids[rows] = emb
    used = torch.zeros(fake.shape[0], dtype=torch.long)
    out = torch.full((real.shape[0],), -1, dtype=torch.long)
    taken: list[int] = []
    fallbacks = 0
    for r in sim[:, 0].argsort(descending=True).tolist():
        free = [j for j in idx[r].tolist() if used[j] < capacity]
        pick = next((j for j in free if ids is None or not taken
                     or not bool(same_person(ids[j], ids[taken]).any())), None)
        if pick is None and free:  # every free candidate looks like a taken fake: the nearest free one
            pick, fallbacks = free[0], fallbacks + 1
        if pick is not None:
            out[r] = pick
            used[pick] += 1
            taken.append(pick)
    for r in (out < 0).nonzero().flatten().tolist():  # all candidates full: the least used fake
        j = int(used.argmin())
        out[r] = j
        used[j] += 1
    return out, fallbacks
