import torch

from falco.stages.pairing import nearest, unique_assignment


def test_nearest_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(7, 5, generator=g), torch.randn(50, 5, generator=g)
    idx, sim = nearest(real, fake, k=3, chunk=8)
    full = torch.nn.functional.normalize(real, dim=1) @ torch.nn.functional.normalize(fake, dim=1).T
    ref_s, ref_i = full.topk(3, dim=1)
    assert torch.equal(idx, ref_i)
    assert torch.allclose(sim, ref_s, atol=1e-6)


def test_unique_assignment_never_reuses_a_fake():
    real = torch.ones(6, 4) + 0.01 * torch.randn(6, 4)  # all prefer the same fakes
    fake = torch.randn(10, 4)
    out, _ = unique_assignment(real, fake, candidates=2)
    assert len(set(out.tolist())) == 6 and out.min() >= 0


def test_nearest_rejects_k_larger_than_pool():
    import pytest

    with pytest.raises(ValueError, match="exceeds the fake pool size"):
        nearest(torch.randn(2, 3), torch.randn(1, 3), k=2)


def test_unique_assignment_spreads_a_small_pool_evenly():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(10, 8, generator=g), torch.randn(4, 8, generator=g)
    real[:6] = fake[0] + 0.01 * torch.randn(6, 8, generator=g)  # six originals all nearest to fake 0
    out, _ = unique_assignment(real, fake)
    counts = torch.bincount(out, minlength=4)
    assert counts.max() <= 3 and counts.sum() == 10  # ceil(10 / 4) = 3 per fake
    assert counts[0] == 3


def test_distinct_assignment_skips_fakes_that_look_like_a_taken_one():
    """Fakes 0 and 1 are the two nearest to everyone but one synthetic person (identity
    embedding (0,0)); unique pairing gives them to two originals, distinct pairing gives the
    second original fake 2, the nearest that looks like somebody else. Only candidates are
    embedded; with no unlike candidate left the nearest free one is used and counted."""
    real = torch.tensor([[1.0, 0.0], [1.0, 0.05]])
    fake = torch.tensor([[1.0, 0.01], [1.0, 0.02], [1.0, 0.5], [0.0, 1.0]])
    person = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [9.0, 9.0]])
    seen = []

    def identities(rows):
        seen.append(rows.tolist())
        return person[rows]

    same = lambda e, others: (e - others).norm(dim=-1) < 0.6  # noqa: E731
    plain, _ = unique_assignment(real, fake, candidates=3)
    assert sorted(plain.tolist()) == [0, 1]
    out, fallbacks = unique_assignment(real, fake, candidates=3, identities=identities, same_person=same)
    assert sorted(out.tolist()) == [0, 2] and fallbacks == 0
    assert sorted(seen[0]) == [0, 1, 2]  # fake 3 is no one's candidate: never embedded
    out, fallbacks = unique_assignment(real, fake, candidates=2, identities=identities, same_person=same)
    assert sorted(out.tolist()) == [0, 1] and fallbacks == 1  # only look-alikes left: counted
