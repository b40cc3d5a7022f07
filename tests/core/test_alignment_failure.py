"""stages.alignment_failure: implausible landmarks are skipped or aligned from the box, always recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from falco.align import BOX_LANDMARKS, box_landmarks, implausible_landmarks
from falco.detect import Detection
from falco.stages.frame import FFHQ_TEMPLATE
from falco.stages.prepare import Prepared, run_prepare

BOX = np.array([10.0, 20.0, 110.0, 140.0])
GOOD = box_landmarks(BOX).numpy()


@pytest.mark.parametrize("bad, why", [
    (GOOD * [1, -1] + [0, 160], "mouth not below the eyes"),  # mirrored top-bottom (not a rotation)
    (np.array([[60, 50], [62, 50], [61, 80], [50, 110], [70, 110]]), "eyes"),  # eyes 2 px apart
    (GOOD + [400, 0], "outside"),
    (np.full((5, 2), np.nan), "non-finite"),
])
def test_implausible_landmarks_say_why(bad, why):
    assert implausible_landmarks(GOOD, BOX) is None
    assert why in implausible_landmarks(bad, BOX)


def test_box_landmarks_sit_in_the_box():
    lm = box_landmarks(BOX)
    assert torch.allclose(lm[0], torch.tensor([10 + 0.282 * 100, 20 + 0.38 * 120]))
    assert torch.equal(box_landmarks([0, 0, 1, 1]), BOX_LANDMARKS)


class ScriptedDetector:
    """Returns one scripted detection per photo (photo i -> detections[i])."""

    min_prob = 0.9

    def __init__(self, detections):
        self.detections = detections

    def detect_batch(self, photos):
        return self.detections[:len(photos)]


class Source:
    name = "scripted"

    def __init__(self, n):
        from falco.data.items import SourceItem

        self.items = [SourceItem(id=f"p{i}.png", path=None) for i in range(n)]

    def read(self, item):
        return np.full((160, 120, 3), 100, np.uint8)

    def fingerprint(self):
        return {"n": len(self.items)}


@pytest.mark.parametrize("policy", ["skip", "box"])
def test_prepare_applies_the_policy_and_records_it(tmp_path, policy):
    mirrored = GOOD * [1, -1] + [0, 160]  # a reflection: no similarity transform aligns it
    dets = [Detection(BOX, 0.99, GOOD), Detection(BOX, 0.99, mirrored)]
    run_prepare(Source(2), ScriptedDetector(dets), tmp_path, alignment="ffhq", template=FFHQ_TEMPLATE,
                size=32, alignment_failure=policy)
    entries = json.loads((tmp_path / "items.json").read_text())
    assert entries[0]["status"] == "ok" and entries[0]["alignment"] == "landmarks"
    if policy == "skip":
        assert entries[1]["status"] == "skipped" and entries[1]["reason"] == "alignment_failed"
        assert "mouth not below the eyes" in entries[1]["message"]
        assert len(Prepared(tmp_path).ok) == 1
    else:
        assert entries[1]["status"] == "ok" and entries[1]["alignment"] == "box"
        assert "mouth" in entries[1]["alignment_note"]
        _, lm = Prepared(tmp_path).get(entries[1])
        _, lm_good = Prepared(tmp_path).get(entries[0])
        assert torch.allclose(lm, lm_good, atol=1e-3)  # the box's landmarks are the good ones here


def test_bad_policy_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="alignment_failure"):
        run_prepare(Source(1), ScriptedDetector([]), tmp_path, alignment="ffhq", template=FFHQ_TEMPLATE,
                    size=32, alignment_failure="guess")


def test_a_rotated_face_is_plausible():
    """Rotation (even 180 degrees) is what alignment undoes, not a failure."""
    centre = torch.tensor([60.0, 80.0])
    rot = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])
    upside_down = ((torch.as_tensor(GOOD, dtype=torch.float32) - centre) @ rot.T + centre).numpy()
    assert implausible_landmarks(upside_down, BOX) is None
