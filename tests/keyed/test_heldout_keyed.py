"""The keyed metrics under held-out judges (evaluation/keyed_metrics.py heldout_figures), on
constructed faces: each judge aligns every image with the attacker's own detections, and
consistency, anonymity and diversity follow from what the images share."""

from __future__ import annotations

from pathlib import Path

import torch

from evaluation.flatten import _keyed
from evaluation.keyed_metrics import RunData, heldout_figures
from falco.heldout import HeldoutJudges
from tests.evaluation.test_heldout import KnownDetector, PixelJudge

PERSONS = ["a", "a", "b", "b", "c", "c"]


def _placed(patches: torch.Tensor, where: list[tuple[int, int]], seed: int) -> torch.Tensor:
    """32x32 images: patch i at where[i], faint noise elsewhere (so no two crops of noise match)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(len(patches), 3, 32, 32, generator=g) * 0.02
    for i, (x, y) in enumerate(where):
        images[i, :, y:y + 8, x:x + 8] = patches[i]
    return images


def _run(originals: torch.Tensor, anonymized: torch.Tensor) -> RunData:
    n = len(PERSONS)
    landmarks = torch.full((n, 5, 2), 2.0)  # the originals' faces are at (2, 2)
    return RunData(Path("."), None, [f"i{k}" for k in range(n)], PERSONS, PERSONS, originals, landmarks, anonymized)


def _case():
    g = torch.Generator().manual_seed(1)
    originals = _placed(torch.rand(6, 3, 8, 8, generator=g) * 2 - 1, [(2, 2)] * 6, seed=2)
    person_patch = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1  # one virtual face per person
    where = [(2, 2), (14, 12)] * 3  # the second view of each person sits elsewhere in its image
    anonymized = _placed(person_patch.repeat_interleave(2, 0), where, seed=3)
    detector = KnownDetector()
    detector.add(originals, [(2, 2)] * 6)
    detector.add(anonymized, where)
    return originals, anonymized, detector


def test_consistency_and_anonymity_under_attacker_alignment():
    originals, anonymized, detector = _case()
    judge = PixelJudge()
    h = heldout_figures(HeldoutJudges({"pixels": judge}, detector), _run(originals, anonymized))
    r = h["recognizers"]["pixels"]
    assert h["protocol"] == "attacker_alignment" and r["white_box"] is False
    assert r["consistency"]["same_person_verified_same"]["share"] == 1.0  # found where each view's face is
    assert r["consistency"]["different_persons_verified_same"]["share"] == 0.0
    assert r["anonymity"]["verified_as_original"] == 0.0 and r["unrelated_false_match"]["share"] == 0.0
    assert any(bool((lm[:, 0] == torch.tensor([14.0, 12.0])).all(-1).any()) for lm in judge.seen)


def test_without_the_detector_the_second_views_are_cropped_at_the_originals_place():
    originals, anonymized, _ = _case()
    h = heldout_figures(HeldoutJudges({"pixels": PixelJudge()}, None), _run(originals, anonymized))
    assert h["protocol"] == "original_landmarks"
    assert h["recognizers"]["pixels"]["consistency"]["same_person_verified_same"]["share"] == 0.0


def test_an_unchanged_key_never_differs_and_unchanged_faces_are_reidentified():
    originals, anonymized, detector = _case()
    judges = HeldoutJudges({"pixels": PixelJudge()}, detector)
    same = heldout_figures(judges, _run(originals, anonymized), _run(originals, anonymized.clone()))
    assert same["recognizers"]["pixels"]["diversity"]["same_person_verified_different"] == 0.0  # "other key" = same
    r = heldout_figures(judges, _run(originals, originals.clone()))["recognizers"]["pixels"]
    assert r["anonymity"]["verified_as_original"] == 1.0 and r["anonymity"]["identification_top1"] == 1.0
    flat = _keyed({**r, "heldout": {"recognizers": {"pixels": r}}, "judge": "run_net", "white_box": True,
                   "authentication": {"correct_key": {"top1": 1.0}, "wrong_key_top1_mean": 0.0}})
    assert flat["keyed_heldout_anonymity_verified_as_original@pixels"] == {"value": 1.0, "judge": "pixels",
                                                                            "white_box": False}
    assert flat["keyed_auth_top1_correct_key@run_net"]["white_box"] is True
