"""Detection rate with a constructed detector, and the MTCNN adapter on a real photo."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.metrics.detection import (
    Detections,
    as_detections,
    best_landmarks,
    detect,
    detection_rate,
    mtcnn_detector,
)


def brightness_detector(images):
    """One 'face' per image whose probability is the image's mean brightness in [0, 1]."""
    p = (images.mean(dim=(1, 2, 3)) + 1) / 2
    return [(np.array([[0.0, 0.0, 4.0, 4.0]]), np.array([float(q)])) for q in p]


def test_detection_rate_counts_images_above_threshold():
    levels = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])  # probabilities 0, .25, .5, .75, 1
    images = levels[:, None, None, None].expand(5, 3, 8, 8)
    out = detection_rate(images, brightness_detector, threshold=0.5, batch_size=2)
    assert out == {"rate": 0.6, "n_images": 5, "n_detected": 3, "threshold": 0.5}
    assert detection_rate(images, brightness_detector, threshold=0.9)["n_detected"] == 1


def test_numpy2_object_arrays_and_missing_faces_become_float_tensors():
    boxes = np.array([np.array([[1, 2, 3, 4]], dtype=np.float32)], dtype=object)[0]
    d = as_detections((boxes, np.array([0.9], dtype=object), None))
    assert d.boxes.dtype == torch.float32 and d.boxes.shape == (1, 4) and d.probs.shape == (1,)
    empty = as_detections((None, [None]))
    assert empty.boxes.shape == (0, 4) and empty.probs.shape == (0,) and empty.landmarks is None


def test_best_landmarks_picks_most_probable_face_or_nan():
    marks = torch.arange(20.0).reshape(2, 5, 2)
    dets = [Detections(torch.zeros(2, 4), torch.tensor([0.8, 0.95]), marks),
            Detections(torch.zeros(1, 4), torch.tensor([0.3]), marks[:1])]
    out = best_landmarks(dets, threshold=0.5)
    assert torch.equal(out[0], marks[1]) and torch.isnan(out[1]).all()


@pytest.fixture(scope="module")
def astronaut():
    data = pytest.importorskip("skimage.data")
    return torch.tensor(data.astronaut()).permute(2, 0, 1).float()[None] / 127.5 - 1  # (1,3,512,512)


def test_mtcnn_finds_a_real_face_in_a_small_upsampled_crop(astronaut):
    detector = mtcnn_detector(threshold=0.5)
    full = detect(astronaut, detector)[0]
    # 256 px window around the face shrunk to 96 px: below 160 px, so it is upsampled first.
    small = F.interpolate(astronaut[:, :, 0:256, 128:384], size=(96, 96), mode="area")
    blank = torch.zeros_like(small)
    dets = detect(torch.cat([small, blank]), detector)
    assert detection_rate(None, detections=dets)["n_detected"] == 1
    marks = best_landmarks(dets)
    expected = (best_landmarks([full])[0] - torch.tensor([128.0, 0.0])) * (96 / 256)
    assert (marks[0] - expected).abs().max() < 2.0  # back in the 96 px image's pixels
    assert math.isnan(marks[1, 0, 0])
