"""Re-identification: does a face recognizer still find the original person?

Two protocols exist in the field and both are offered:

identification  closed-set, CIAGAN/FALCO lineage. Each anonymized image (probe) is compared
    with a gallery of ORIGINAL embeddings that carry identity labels. Gallery identities are
    ranked by their closest gallery image; the probe is re-identified at k when the identity
    of its own original is among the k nearest identities. Ties count as re-identified
    (strict "<" when ranking), the conservative side for a privacy claim.
    Own original in the gallery: by default it stays there. On CelebA-HQ-like data with one
    image per person (or no identity labels, then every image is its own identity) the
    question is "is the anonymized face still closest to its own original?". With several
    images per person, `exclude_self=True` removes the probe's own original from ITS gallery
    (via `self_index`), asking "does it match the person's OTHER photos?"; probes whose
    identity then has no gallery image left are skipped and counted.

verification    TAR at a fixed FAR. The threshold is calibrated on ORIGINALS only: the FAR
    quantile of impostor distances (pairs of originals of different identities). Then
    TAR = share of (anonymized, own original) pairs the judge accepts at that threshold.
    Also reported: the FAR actually achieved, the FAR of (anonymized, someone else's original)
    pairs, the TAR of genuine original pairs (different images of one person: how good the
    judge is on this data) when labels provide them, and everything again at the judge's own
    same-person rule (`same_person_below`). With fewer than 1/FAR impostor pairs a FAR
    cannot be resolved: the entry says `underpowered: True` instead of pretending.

Distances: larger = more different, in the judge's native metric. `distance_matrix(a, b)`
maps (N,D),(M,D) -> (N,M); `distance(a, b)` maps (N,D),(N,D) -> (N,) (the IdentityEncoder
interface); `matrix_from_pair_distance` turns the latter into the former. Labels are (N,)
integer tensors or lists of hashables (e.g. names). Results are plain dicts of floats and
counts, JSON-serializable. Used by the held-out judges of the run's summary (falco/heldout.py)
and by the evaluation suite (evaluation/).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
DistanceMatrix = Callable[[Tensor, Tensor], Tensor]
PairDistance = Callable[[Tensor, Tensor], Tensor]


def cosine_distance_matrix(a: Tensor, b: Tensor) -> Tensor:
    """1 - cosine similarity, (N,D),(M,D) -> (N,M); ArcFace/FaceNet's native metric."""
    return 1.0 - F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T


def euclidean_distance_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Euclidean distance, (N,D),(M,D) -> (N,M); dlib's native metric."""
    return torch.cdist(a.float(), b.float())


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise 1 - cosine similarity, (N,D),(N,D) -> (N,)."""
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=1)


def matrix_from_pair_distance(distance: PairDistance, max_elements: int = 2**24) -> DistanceMatrix:
    """Distance matrix from a row-wise distance (e.g. `IdentityEncoder.distance`).

    Probes are compared with the whole gallery a block of rows at a time, the block sized so
    that the tiled inputs hold at most `max_elements` numbers (2**24 floats = 64 MB each);
    any judge's native metric works unchanged.
    """
    def matrix(a: Tensor, b: Tensor) -> Tensor:
        m = b.shape[0]
        rows = max(1, max_elements // max(m * b[0].numel(), 1))
        out = []
        for block in a.split(rows):
            n = block.shape[0]
            left = block.repeat_interleave(m, dim=0)  # (n*m, D): each probe repeated m times
            right = b.repeat(n, *([1] * (b.ndim - 1)))  # (n*m, D): the gallery tiled n times
            out.append(distance(left, right).reshape(n, m))
        return torch.cat(out)
    return matrix


def as_labels(labels: Tensor | Sequence | None, n: int) -> Tensor:
    """(n,) int64 identity labels; None = every image its own identity."""
    if labels is None:
        return torch.arange(n)
    if isinstance(labels, Tensor):
        out = labels.long().flatten()
    else:
        index: dict = {}
        out = torch.tensor([index.setdefault(x, len(index)) for x in labels], dtype=torch.long)
    if out.numel() != n:
        raise ValueError(f"expected {n} labels, got {out.numel()}")
    return out


def identification(probe: Tensor, probe_labels: Tensor | Sequence, gallery: Tensor,
                   gallery_labels: Tensor | Sequence, *,
                   distance_matrix: DistanceMatrix = cosine_distance_matrix,
                   ks: Sequence[int] = (1, 5), exclude_self: bool = False,
                   self_index: Tensor | None = None, chunk_size: int = 1024) -> dict:
    """Closed-set top-k re-identification rates of anonymized probes against originals.

    probe (N,D): anonymized embeddings; probe_labels (N,): identity of each probe's original.
    gallery (M,D): original embeddings; gallery_labels (M,).
    self_index (N,): gallery index of each probe's own original (-1 if absent); needed for
    exclude_self. Rates are over evaluated probes; skipped (counted) are probes whose identity
    has no gallery image (left) and probes with NaN embeddings (no face found).
    Returns {"top{k}": rate, "mean_rank" (1-based rank of the own identity), counts...,
    "chance_top1": 1/identities, "top1_ci95" (Wilson), "top1_p_above_chance" (one-sided
    binomial test against chance: is the top-1 rate more than luck?)}.
    """
    if exclude_self and self_index is None:
        raise ValueError("exclude_self=True needs self_index (gallery row of each probe's original)")
    # Labels are mapped jointly so that strings and ints compare across probe and gallery.
    both = as_labels(list(_label_list(probe_labels)) + list(_label_list(gallery_labels)),
                     probe.shape[0] + gallery.shape[0])
    p_lab, g_lab = both[: probe.shape[0]], both[probe.shape[0]:]
    identities, g_id = torch.unique(g_lab, return_inverse=True)  # (G,), (M,)
    pos = torch.searchsorted(identities, p_lab).clamp(max=len(identities) - 1)
    target = torch.where(identities[pos] == p_lab, pos, -1)  # -1: identity absent from gallery
    ranks = torch.cat([_ranks(probe[s:s + chunk_size], gallery, g_id, len(identities),
                              target[s:s + chunk_size],
                              None if not exclude_self else self_index[s:s + chunk_size],
                              distance_matrix)
                       for s in range(0, probe.shape[0], chunk_size)])
    valid = ranks >= 0
    n_eval = int(valid.sum())
    out = {f"top{k}": (float((ranks[valid] < k).double().mean()) if n_eval else math.nan) for k in ks}
    out["mean_rank"] = float(ranks[valid].double().mean() + 1) if n_eval else math.nan  # 1 = own identity first
    chance, hits = 1.0 / max(len(identities), 1), int((ranks[valid] == 0).sum())
    out.update(n_probes=int(probe.shape[0]), n_evaluated=n_eval, n_skipped=int((~valid).sum()),
               n_gallery=int(gallery.shape[0]), n_identities=int(len(identities)),
               exclude_self=bool(exclude_self), chance_top1=chance,
               top1_ci95=wilson_interval(hits, n_eval), top1_p_above_chance=p_above_chance(hits, n_eval, chance))
    return out


def _label_list(labels: Tensor | Sequence) -> list:
    return labels.flatten().tolist() if isinstance(labels, Tensor) else list(labels)


def _ranks(probe: Tensor, gallery: Tensor, g_id: Tensor, n_id: int, target: Tensor,
           self_index: Tensor | None, distance_matrix: DistanceMatrix) -> Tensor:
    """(b,) rank of the true identity among gallery identities; -1 = not evaluable."""
    d = distance_matrix(probe, gallery).float()  # (b, M)
    d = torch.nan_to_num(d, nan=math.inf)  # a failed (NaN) embedding matches nothing
    g_id, target = g_id.to(d.device), target.to(d.device)
    if self_index is not None:
        self_index = self_index.to(d.device)
        rows = torch.nonzero(self_index >= 0).flatten()
        d[rows, self_index[rows]] = math.inf
    b = d.shape[0]
    # Identity-level distance = distance to the identity's closest gallery image, (b, G).
    per_id = torch.full((b, n_id), math.inf, device=d.device).scatter_reduce(
        1, g_id.expand(b, -1), d, reduce="amin", include_self=True)
    d_true = per_id.gather(1, target.clamp(min=0)[:, None])  # (b, 1)
    rank = (per_id < d_true).sum(1)
    ok = (target >= 0) & torch.isfinite(d_true[:, 0])
    return torch.where(ok, rank, -1).cpu()


def impostor_pairs(labels: Tensor, max_pairs: int, generator: torch.Generator) -> Tensor:
    """(P,2) index pairs i<j with different labels: all of them, or a uniform sample of max_pairs."""
    n = labels.numel()
    if torch.unique(labels).numel() < 2:
        return torch.zeros(0, 2, dtype=torch.long)  # one person only: no impostors exist
    if n * (n - 1) // 2 <= max_pairs:
        pairs = torch.triu_indices(n, n, offset=1).T
        return pairs[labels[pairs[:, 0]] != labels[pairs[:, 1]]]
    chunks, have = [], 0
    while have < max_pairs:  # sample with replacement; rejection of same-label pairs
        ij = torch.randint(0, n, (max_pairs, 2), generator=generator)
        ij = ij[labels[ij[:, 0]] != labels[ij[:, 1]]]
        chunks.append(ij)
        have += len(ij)
    return torch.cat(chunks)[:max_pairs]


def genuine_pairs(labels: Tensor, max_pairs: int, generator: torch.Generator) -> Tensor:
    """(P,2) pairs i<j of different images with the same label (all, or a sample of max_pairs)."""
    groups = [torch.nonzero(labels == v).flatten() for v in torch.unique(labels)]
    pairs = [torch.combinations(g, 2) for g in groups if len(g) > 1]
    if not pairs:
        return torch.zeros(0, 2, dtype=torch.long)
    pairs = torch.cat(pairs)
    if len(pairs) > max_pairs:
        pairs = pairs[torch.randperm(len(pairs), generator=generator)[:max_pairs]]
    return pairs


def far_threshold(impostor_distances: Tensor, far: float) -> float:
    """Largest threshold t with share(impostor < t) <= far ("same person" means d < t).

    NaN when there are no impostor distances (nothing to calibrate on)."""
    s = torch.sort(impostor_distances.float()).values
    if len(s) == 0:
        return math.nan
    k = math.floor(far * len(s))  # number of impostor pairs we may accept
    return math.inf if k >= len(s) else float(s[k])


def wilson_interval(successes: int, n: int, level: float = 0.95) -> list[float]:
    """Wilson score interval of a rate (scipy's binomtest); [nan, nan] when n == 0."""
    if n == 0:
        return [math.nan, math.nan]
    from scipy.stats import binomtest  # here: importing scipy.stats takes seconds

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def p_above_chance(successes: int, n: int, chance: float) -> float:
    """One-sided binomial p-value of `successes` or more hits in n tries at rate `chance`: how
    often guessing alone would score at least this (small = re-identification beyond chance);
    nan when n == 0. With few identities a rate several times chance can still be luck (3 hits
    of 21 at chance 1/21: p = 0.08)."""
    if n == 0:
        return math.nan
    from scipy.stats import binomtest

    return float(binomtest(int(successes), int(n), min(max(chance, 0.0), 1.0), alternative="greater").pvalue)


def pair_distances(distance: PairDistance, a: Tensor, b: Tensor, pairs: Tensor,
                    chunk: int = 65536) -> Tensor:
    """(P,) distance(a[i], b[j]) for each pair (i, j), in chunks to bound memory."""
    out = [distance(a[p[:, 0]], b[p[:, 1]]).float() for p in pairs.split(chunk)]
    return torch.cat(out) if out else torch.zeros(0)


def _rate(d: Tensor, threshold: float) -> tuple[float, int]:
    """(share of d < threshold, count), ignoring NaN distances (failed embeddings)."""
    d = d[~torch.isnan(d)]
    if math.isnan(threshold):
        return math.nan, int(len(d))
    return (float((d < threshold).double().mean()) if len(d) else math.nan), int(len(d))


def verification(anonymized: Tensor, originals: Tensor, *, distance: PairDistance = cosine_distance,
                 labels: Tensor | Sequence | None = None, fars: Sequence[float] = (1e-3, 1e-2),
                 same_person_below: float | None = None, max_pairs: int = 1_000_000,
                 seed: int = 0) -> dict:
    """TAR at fixed FARs for (anonymized[i], originals[i]) pairs, threshold from originals.

    anonymized, originals: (N,D), row i of one is the anonymization of row i of the other.
    labels (N,): identities of the originals (None = all different people).
    Returns {"n_images", "n_impostor_pairs", "n_genuine_original_pairs",
             "at_far": {"0.001": {...}, ...}, "native": {...} or None}.
    """
    n = originals.shape[0]
    lab = as_labels(labels, n)
    gen = torch.Generator().manual_seed(seed)
    imp = impostor_pairs(lab, max_pairs, gen)
    d_imp = pair_distances(distance, originals, originals, imp)  # (P,) originals vs others
    d_imp_anon = pair_distances(distance, anonymized, originals, imp)  # anonymized vs others
    d_gen = pair_distances(distance, originals, originals, genuine_pairs(lab, max_pairs, gen))
    d_anon = distance(anonymized, originals).float()  # (N,) anonymized vs own original

    def rates_at(t: float) -> dict:
        tar, n_tar = _rate(d_anon, t)
        ci = [math.nan, math.nan] if math.isnan(tar) else wilson_interval(round(tar * n_tar), n_tar)
        return {"threshold": t, "tar": tar, "tar_ci95": ci,
                "far_achieved": _rate(d_imp, t)[0], "far_anonymized_impostors": _rate(d_imp_anon, t)[0],
                "original_tar": _rate(d_gen, t)[0] if len(d_gen) else None, "n_genuine": n_tar}

    at_far = {}
    for far in fars:
        entry = {"far_target": float(far), **rates_at(far_threshold(d_imp[~torch.isnan(d_imp)], far))}
        entry["underpowered"] = len(d_imp) < math.ceil(1.0 / far)  # cannot resolve this FAR
        at_far[f"{far:g}"] = entry
    native = None
    if same_person_below is not None:
        r = rates_at(float(same_person_below))
        native = {"threshold": r["threshold"], "reid_rate": r["tar"], "reid_ci95": r["tar_ci95"],
                  "false_match_rate": r["far_achieved"],
                  "false_match_rate_anonymized": r["far_anonymized_impostors"],
                  "original_tar": r["original_tar"]}
    return {"n_images": int(n), "n_impostor_pairs": int(len(d_imp)),
            "n_genuine_original_pairs": int(len(d_gen)), "at_far": at_far, "native": native}
