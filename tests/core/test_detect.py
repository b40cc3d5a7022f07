"""The one MTCNN wrapper (falco/detect.py): the face it keeps, small-image upscaling, the rate."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from falco.detect import Detection, FaceDetector, detected_landmarks, detection_rate


def _face(v: float) -> Detection:
    return Detection(np.zeros(4), 0.95, np.full((5, 2), v))


def test_detection_rate_counts_images_with_a_face():
    dets = [_face(1.0), None, _face(2.0), None, None]
    assert detection_rate(dets, 0.9) == {"rate": 0.4, "n_images": 5, "n_detected": 2, "min_prob": 0.9}
    assert math.isnan(detection_rate([])["rate"])


def test_detected_landmarks_are_nan_where_no_face_was_found():
    out = detected_landmarks([_face(3.0), None])
    assert out.dtype == torch.float32 and out.shape == (2, 5, 2)
    assert torch.equal(out[0], torch.full((5, 2), 3.0)) and torch.isnan(out[1]).all()


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(min_prob=0.5)


def test_largest_face_above_min_prob_is_kept_in_input_pixels(detector):
    boxes = np.array([[0, 0, 40, 40], [0, 0, 80, 80], [0, 0, 10, 10]], dtype=np.float64)  # areas 1600, 6400, 100
    probs = np.array([0.9, 0.4, 0.99])  # the largest box is below min_prob
    points = np.arange(30, dtype=np.float64).reshape(3, 5, 2)
    d = detector._largest(boxes, probs, points, scale=2.0)
    assert d is not None and d.prob == 0.9
    np.testing.assert_array_equal(d.box, boxes[0] / 2)
    np.testing.assert_array_equal(d.landmarks, points[0] / 2)
    assert detector._largest(boxes, np.array([0.1, 0.2, 0.3]), points, 1.0) is None
    assert detector._largest(None, None, None, 1.0) is None


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data")
    return torch.tensor(data.astronaut()).permute(2, 0, 1).float()[None] / 127.5 - 1  # (1,3,512,512)


def test_a_small_crop_is_upscaled_and_mapped_back(detector, astronaut):
    full = detector.detect_tensor(astronaut)[0]
    assert full is not None
    # 256 px window around the face shrunk to 96 px: below min_side (160 px), so upscaled first.
    small = F.interpolate(astronaut[:, :, 0:256, 128:384], size=(96, 96), mode="area")
    dets = detector.detect_tensor(torch.cat([small, torch.zeros_like(small)]))
    assert dets[1] is None and detection_rate(dets)["n_detected"] == 1
    expected = (detected_landmarks([full])[0] - torch.tensor([128.0, 0.0])) * (96 / 256)
    assert (detected_landmarks(dets)[0] - expected).abs().max() < 2.0  # back in the 96 px image's pixels
