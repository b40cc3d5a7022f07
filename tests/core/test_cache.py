from falco.stages.cache import StageCache


def test_cache_reuses_same_spec_and_recomputes_changed_spec(tmp_path):
    cache = StageCache(tmp_path)
    calls = []

    def compute(out):
        calls.append(1)
        (out / "x.txt").write_text("v")

    p1, k1, r1 = cache.get_or_compute("prepare", {"a": 1}, compute)
    p2, k2, r2 = cache.get_or_compute("prepare", {"a": 1}, compute)
    p3, k3, r3 = cache.get_or_compute("prepare", {"a": 2}, compute)
    assert (r1, r2, r3) == (False, True, False) and len(calls) == 2
    assert k1 == k2 != k3 and (p2 / "x.txt").read_text() == "v"


def test_failed_compute_leaves_no_entry(tmp_path):
    cache = StageCache(tmp_path)

    def boom(out):
        (out / "partial").write_text("x")
        raise RuntimeError("killed")

    try:
        cache.get_or_compute("fakepool", {"n": 3}, boom)
    except RuntimeError:
        pass
    assert not any((tmp_path / "fakepool").iterdir())
