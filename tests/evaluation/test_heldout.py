"""The held-out protocol on constructed cases: diversity, attacker-style alignment, disjointness."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from falco.backbones.base import IdentityEncoder
from falco.detect import Detection
from falco.heldout import HeldoutJudges, diversity, heldout_report, load_heldout


class PixelJudge(IdentityEncoder):
    """Embeds the pixels around the first landmark it is given: re-identifies an image only when
    it is cropped where that image's face really is (records the landmarks it was given)."""

    name = "pixels"
    input_size = 8
    same_person_below = 0.05

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[torch.Tensor] = []

    def crop_theta(self, landmarks, image_hw):
        self.seen.append(landmarks.clone())
        return landmarks[:, 0]  # (N,2): where to cut (not a real theta; only embed reads it)

    def embed(self, image, theta=None):
        out = []
        for im, (x, y) in zip(image, theta.round().long(), strict=True):
            out.append(im[:, y:y + 8, x:x + 8].flatten())
        return torch.stack(out)

    def distance(self, a, b):
        return 1 - torch.nn.functional.cosine_similarity(a, b, dim=1)


class KnownDetector:
    """Knows where the face of each image it will be shown is (the attacker's own detection)."""

    name = "known"

    def __init__(self) -> None:
        self.where: dict[bytes, tuple[int, int]] = {}

    def add(self, images: torch.Tensor, where: list[tuple[int, int]]) -> None:
        for im, w in zip(images, where, strict=True):
            self.where[im.numpy().tobytes()] = w

    def detect_tensor(self, images):
        out = []
        for im in images:
            w = self.where.get(im.numpy().tobytes())
            if w is None:
                out.append(None)
                continue
            lm = np.array([w] * 5, dtype=np.float64)
            out.append(Detection(np.array([*w, w[0] + 8, w[1] + 8], dtype=np.float64), 1.0, lm))
        return out


def _faces(n: int, seed: int = 0) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """n 32x32 images, each with a distinct random 8x8 "face" at a random place, zero elsewhere."""
    g = torch.Generator().manual_seed(seed)
    images, where = torch.zeros(n, 3, 32, 32), []
    for i in range(n):
        x, y = (int(v) for v in torch.randint(0, 24, (2,), generator=g))
        images[i, :, y:y + 8, x:x + 8] = torch.rand(3, 8, 8, generator=g) * 2 - 1
        where.append((x, y))
    return images, where


def test_identical_outputs_for_different_originals_collide_fully():
    judge = PixelJudge()
    originals = torch.randn(6, 16)
    same = torch.ones(6, 16)  # every anonymized face identical
    d = diversity(same, originals, list(range(6)), judge)
    assert d["anonymized_same_person_rate"] == 1.0 and d["pairs"] == 15
    assert d["originals_same_person_rate"] == 0.0
    assert diversity(originals.clone(), originals, list(range(6)), judge)["anonymized_same_person_rate"] == 0.0
    # pairs of the same person are not diversity pairs
    assert diversity(same, originals, [0, 0, 1, 1, 2, 2], judge)["pairs"] == 12


def test_attacker_alignment_is_the_default_protocol():
    """The anonymized image holds the original's face moved elsewhere: cropping where the original's
    landmarks are misses it, the attacker's own detection finds it (re-identified)."""
    x, where_x = _faces(5)
    y, where_y = torch.rand(x.shape, generator=torch.Generator().manual_seed(9)) * 0.2, []  # faint background
    for i, (ax, ay) in enumerate(where_x):
        bx, by = (ax + 12) % 24, (ay + 7) % 24
        y[i, :, by:by + 8, bx:bx + 8] = x[i, :, ay:ay + 8, ax:ax + 8]
        where_y.append((bx, by))
    detector = KnownDetector()
    detector.add(x, where_x)
    detector.add(y, where_y)
    judge = PixelJudge()
    landmarks = torch.tensor([[[float(a), float(b)]] * 5 for a, b in where_x])
    r = heldout_report(HeldoutJudges({"pixels": judge}, detector), [
        {"originals": x, "anonymized": y, "landmarks": landmarks}])
    rep = r["identity"]["pixels"]
    assert rep["protocol_default"] == "attacker_alignment" and rep["white_box"] is False
    assert rep["attacker_alignment"]["identification"]["top1"] == 1.0
    assert rep["original_landmarks"]["identification"]["top1"] < 1.0
    assert r["detection"]["rate"] == 1.0 and r["detection"]["selected_inputs"] is False


def test_an_undetected_image_is_aligned_at_the_median_detection():
    from falco.heldout import attacker_landmarks

    dets = [Detection(np.zeros(4), 1.0, np.full((5, 2), v)) for v in (10.0, 20.0, 30.0)] + [None]
    lm, found = attacker_landmarks(dets, torch.zeros(4, 5, 2))
    assert found.tolist() == [True, True, True, False] and torch.all(lm[3] == 20.0)


def test_a_loss_network_is_left_out_of_the_heldout_judges():
    j = load_heldout(("sface",), detector=False, attributes=(), loss_networks=("sface",))
    assert j.recognizers == {} and "white-box" in j.skipped["sface"]
    # an ensemble's name counts as each member: face-api in the loss is no judge (named as a judge "faceapi")
    j = load_heldout((), detector=False, attributes=("adience", "faceapi"),
                     loss_networks=("dlib_resnet", "age_gender+faceapi_age_gender"))
    assert list(j.attributes) == ["adience"] and "white-box" in j.skipped["faceapi"]
    with pytest.raises(ValueError, match="white-box"):
        load_heldout((), detector=True, attributes=(), loss_networks=("yunet",))
    with pytest.raises(ValueError, match="unknown held-out"):
        load_heldout(("dlib_resnet",), detector=False, attributes=())


def test_gender_consensus_on_constructed_judges():
    from falco.heldout import gender_consensus

    t = lambda *v: {"male": torch.tensor(v, dtype=torch.float32)}  # noqa: E731
    # three judges on 4 originals: all agree on the first two, split 2:1 on the others
    p_x = {"a": t(1, 0, 1, 0), "b": t(1, 0, 1, 1), "c": t(1, 0, 0, 1)}
    # anonymized: judge a flips face 0; the majority keeps faces 0, 1, 2 and flips face 3
    p_y = {"a": t(0, 0, 1, 0), "b": t(1, 0, 1, 0), "c": t(1, 0, 1, 0)}
    c = gender_consensus(p_x, p_y)
    assert c["pairwise_agreement_originals"] == {"a|b": 0.75, "a|c": 0.5, "b|c": 0.75}
    assert c["unanimous_n"] == 2 and c["unanimous_originals_share"] == 0.5
    assert c["gender_agreement_on_unanimous"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert c["majority_gender_agreement"] == 0.75 and c["majority_n"] == 4
    assert gender_consensus({"a": t(1)}, {"a": t(1)}) is None


class BrightnessGender(torch.nn.Module):
    """A gender judge that reads "male" in a bright image (and calls a dark one female)."""

    name = "brightness"

    def predict(self, images, boxes):
        return {"male": (images.mean((1, 2, 3)) > 0).float()}


def test_gender_against_the_true_labels_shows_a_method_that_turns_everyone_female():
    """Two men and three women; the "anonymizer" darkens every face, so the judge calls all of them
    female: gender agreement alone (60%) hides that no man stays a man, the truth split shows it."""
    truth = [1, 1, 0, 0, 0]
    x = torch.stack([torch.full((3, 8, 8), 0.5 if m else -0.5) for m in truth])
    y = torch.full_like(x, -0.5)
    judges = HeldoutJudges({}, None, attributes={"brightness": BrightnessGender()})
    chunk = [{"originals": x, "anonymized": y, "landmarks": torch.zeros(5, 5, 2)}]
    r = heldout_report(judges, chunk, male=truth)
    assert r["attributes"]["brightness"]["gender_agreement"] == pytest.approx(0.6)
    g = r["gender_vs_truth"]["brightness"]
    assert (g["n"], g["n_men"], g["n_women"]) == (5, 2, 3)
    assert g["originals_right"] == 1.0 and g["anonymized_right"] == pytest.approx(0.6)
    assert g["men_read_male"] == {"originals": 1.0, "anonymized": 0.0}
    assert g["women_read_female"] == {"originals": 1.0, "anonymized": 1.0}
    # unknown truth is left out; no truth at all, no figure
    g = heldout_report(judges, chunk, male=[1, None, 0, None, None])["gender_vs_truth"]["brightness"]
    assert (g["n"], g["n_men"]) == (2, 1) and g["men_read_male"]["anonymized"] == 0.0
    assert "gender_vs_truth" not in heldout_report(judges, chunk, male=[None] * 5)
    assert "gender_vs_truth" not in heldout_report(judges, chunk)
    with pytest.raises(ValueError, match="must be 1 \\(man\\) or 0 \\(woman\\); found 'M'"):
        heldout_report(judges, chunk, male=["M", 1, 0, 0, 0])
    from falco.heldout import format_heldout

    line = next(t for t in format_heldout(r) if "true labels" in t)
    assert "2 men, 3 women" in line and "men read as men 100.0% -> 0.0%" in line
    from evaluation.flatten import heldout_metrics

    flat = heldout_metrics(r)  # evaluate.py's metrics
    assert flat["heldout_gender_right@brightness"]["value"] == pytest.approx(0.6)
    assert flat["heldout_gender_right_originals@brightness"]["value"] == 1.0
