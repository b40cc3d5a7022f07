"""FID/KID with an injected extractor, the feature cache, and the local-Inception wiring."""

from unittest import mock

import pytest
import torch
from torch import nn

from evaluation.metrics.quality import (
    INCEPTION_FILENAME,
    cache_path,
    extract_features,
    image_quality,
    inception_extractor,
)
from falco.backbones.checkpoints import MissingWeights


class TinyExtractor(nn.Module):
    """uint8 (N,3,H,W) -> (N,48): 4x4 average colours (a test fixture, not a real metric)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return nn.functional.adaptive_avg_pool2d(x.float() / 255, 4).flatten(1)


def _images(n, seed, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(n, 3, 16, 16, generator=g) + shift).clamp(-1, 1)


def test_fid_of_a_set_with_itself_is_zero_and_shifted_set_is_positive():
    real, ext = _images(200, 0), TinyExtractor()
    same = image_quality(real, real, extractor=ext, kid_subset_size=50, kid_subsets=10)
    assert abs(same["fid"]) < 1e-3 and abs(same["kid_mean"]) < 1e-3
    other = image_quality(real, _images(200, 1), extractor=ext, kid_subset_size=50, kid_subsets=10)
    shifted = image_quality(real, _images(200, 1, shift=0.3), extractor=ext, kid_subset_size=50,
                            kid_subsets=10)
    assert shifted["fid"] > 10 * other["fid"] > 0 and shifted["kid_mean"] > other["kid_mean"]
    assert shifted["n_real"] == 200 and shifted["feature_dim"] == 48


def test_real_features_are_cached_by_key(tmp_path):
    real, fake, ext = _images(40, 0), _images(30, 1), TinyExtractor()
    batches = list(real.split(16))  # an iterable of batches works as well as one tensor
    first = image_quality(batches, fake, extractor=ext, cache_dir=tmp_path, real_key="toy/tiny48",
                          batch_size=16, kid_subsets=5)
    calls = ext.calls
    again = image_quality(None, fake, extractor=ext, cache_dir=tmp_path, real_key="toy/tiny48",
                          batch_size=16, kid_subsets=5)
    assert ext.calls - calls == 2  # only the 30 fake images (2 batches) were extracted
    assert again["fid"] == pytest.approx(first["fid"]) and again["kid_subset_size"] == 30
    assert cache_path(tmp_path, "toy/tiny48").is_file()
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError):
        image_quality(None, fake, extractor=ext, cache_dir=tmp_path, real_key="other-key")


def test_missing_inception_file_is_explained(tmp_path):
    for path in (None, tmp_path / "nowhere.pth"):
        with pytest.raises(MissingWeights, match=INCEPTION_FILENAME):
            inception_extractor(path)


def test_code_pickle_is_refused(tmp_path):
    bad = tmp_path / INCEPTION_FILENAME
    torch.save({"net": TinyExtractor()}, bad)  # a pickled module, not a plain state dict
    with pytest.raises(ValueError, match="weights_only"):
        inception_extractor(bad)


def _random_inception_file(path):
    """Random-weight state dict in torch-fidelity's Inception layout (test fixture only)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf

    cls = tf.FeatureExtractorInceptionV3
    with mock.patch.object(cls, "load_state_dict", lambda self, sd: None), \
            mock.patch.object(tf.torch, "load", lambda *a, **k: {}):
        net = cls("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    torch.save(net.state_dict(), path)


def test_local_inception_file_loads_and_gives_2048_features(tmp_path):
    pytest.importorskip("torch_fidelity")
    path = tmp_path / INCEPTION_FILENAME
    _random_inception_file(path)
    features = extract_features(_images(1, 0), inception_extractor(path))
    assert features.shape == (1, 2048) and torch.isfinite(features).all()
