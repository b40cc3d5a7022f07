"""Attribute agreement metrics and the attribute classifier on a tiny generated dataset."""

import math

import pytest
import torch

from evaluation.attribute_classifier import (
    CELEBA_ATTRIBUTES,
    AttributeClassifier,
    ClassifierConfig,
    evaluate_classifier,
    load_classifier,
    save_classifier,
    train_classifier,
)
from evaluation.metrics.attributes import attribute_accuracy, attribute_agreement
from falco.agreement import age_difference, gender_agreement


def test_agreement_per_attribute_and_balanced():
    orig = torch.tensor([[1, 0], [0, 0], [0, 0], [0, 0]])
    anon = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 1]])  # attr a: rare positive lost
    out = attribute_agreement(orig, anon, names=["a", "b"])
    assert out["per_attribute"]["a"]["agreement"] == 0.75
    assert out["per_attribute"]["a"]["balanced_agreement"] == 0.5  # TPR 0, TNR 1
    assert out["per_attribute"]["b"]["balanced_agreement"] == 0.75  # no positive in reference: TNR
    assert out["agreement_mean"] == 0.75 and out["n_images"] == 4
    same = attribute_agreement(orig.float() * 0.9, orig.bool())  # probabilities vs labels
    assert same["agreement_mean"] == 1.0


def test_accuracy_vs_labels_and_default_names():
    labels = torch.tensor([[1, 1], [1, 0], [0, 1], [0, 0]])
    preds = torch.tensor([[0.9, 0.2], [0.8, 0.1], [0.1, 0.3], [0.2, 0.4]])  # b always "no"
    out = attribute_accuracy(preds, labels)
    assert out["per_attribute"]["attr_0"]["accuracy"] == 1.0
    assert out["per_attribute"]["attr_1"]["accuracy"] == 0.5
    assert out["per_attribute"]["attr_1"]["balanced_accuracy"] == 0.5
    assert out["balanced_accuracy_mean"] == 0.75


def test_age_and_gender_with_missing_faces():
    age = age_difference(torch.tensor([20.0, 30.0, math.nan]), torch.tensor([25.0, 27.0, 40.0]))
    assert age["mae"] == 4.0 and age["mean_signed"] == 1.0 and age["n"] == 2 and age["n_missing"] == 1
    g = gender_agreement(torch.tensor([0.9, 0.1, 0.8, 1.0]), torch.tensor([0.7, 0.6, 0.9, math.nan]))
    assert math.isclose(g["agreement"], 2 / 3) and g["n_missing"] == 1


def _toy_dataset(n, seed):
    """32 px noise images with 4 visible binary attributes (bright left half, red tint,
    dark top half, blue tint), independent and balanced."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n, 4), generator=gen)
    x = 0.3 * torch.randn(n, 3, 32, 32, generator=gen)
    x[:, :, :, :16] += 0.6 * labels[:, 0, None, None, None]
    x[:, 0] += 0.6 * labels[:, 1, None, None]
    x[:, :, :16, :] -= 0.6 * labels[:, 2, None, None, None]
    x[:, 2] += 0.6 * labels[:, 3, None, None]
    return x.clamp(-1, 1), labels


@pytest.fixture
def one_thread():
    """Small convolutions run faster on one thread when the 2 cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_classifier_learns_tiny_dataset_and_round_trips(tmp_path, one_thread):
    train, val = _toy_dataset(256, 0), _toy_dataset(128, 1)
    cfg = ClassifierConfig(arch="small_cnn", input_size=32, names=("a", "b", "c", "d"), width=8)
    model = AttributeClassifier(cfg)
    before = evaluate_classifier(model, val)["balanced_accuracy_mean"]
    history = train_classifier(model, train, epochs=6, lr=3e-3, batch_size=32, val=val)
    after = history[-1]["val_balanced_accuracy_mean"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert after > 0.85 and after > before + 0.2, (before, after)  # chance is 0.5
    path = save_classifier(model, tmp_path / "attr.pt")
    again = load_classifier(path)
    assert again.config == cfg
    assert torch.equal(again.predict(val[0]), model.predict(val[0]))


def test_default_classifier_has_40_celeba_logits():
    model = AttributeClassifier(ClassifierConfig(arch="resnet18", input_size=32))
    assert len(CELEBA_ATTRIBUTES) == 40
    assert model(torch.zeros(2, 3, 40, 40)).shape == (2, 40)
