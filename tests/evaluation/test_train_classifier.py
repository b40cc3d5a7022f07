"""The attribute classifier's training command on a tiny generated CelebA-HQ tree, and the
classifier's figures in an evaluation (agreement with the originals, accuracy vs labels)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from hydra import compose, initialize_config_dir

from evaluation.attribute_classifier import (
    CELEBA_ATTRIBUTES,
    AttributeClassifier,
    ClassifierConfig,
    load_classifier,
    save_classifier,
)
from evaluation.run_eval import EvalData, classifier_metrics
from evaluation.summary import flatten
from evaluation.train_attribute_classifier import train_from_config
from tests.conftest import ROOT
from tests.data import face, write_fake_celebahq

TINY = ["arch=small_cnn", "input_size=32", "width=8", "batch_size=2"]


def test_training_command_trains_on_the_train_split_and_saves(tmp_path):
    expected = write_fake_celebahq(tmp_path / "celebahq", images=[face(64)] * 6)
    out = tmp_path / "weights" / "celeba_small.pt"
    cmd = [sys.executable, "-m", "evaluation.train_attribute_classifier", f"data.root={tmp_path / 'celebahq'}",
           f"out={out}", *TINY, "epochs=2", "log_every=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch=1 loss=" in proc.stdout + proc.stderr  # progress lines

    model = load_classifier(out)
    assert model.config.names == CELEBA_ATTRIBUTES and model.config.arch == "small_cnn"
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 40)
    report = json.loads((tmp_path / "weights" / "celeba_small.pt.json").read_text())
    assert report["train_images"] == sum(e["split"] == "train" for e in expected.values()) == 3
    assert report["measured_on"] == "val" and report["skipped"] == []
    assert [h["epoch"] for h in report["history"]] == [0, 1]
    per = report["final"]["per_attribute"]
    assert list(per) == list(CELEBA_ATTRIBUTES)
    assert all(0.0 <= v[k] <= 1.0 for v in per.values() for k in ("accuracy", "balanced_accuracy"))
    rows = list(csv.DictReader(next((tmp_path / "weights").rglob("metrics.csv")).open()))
    assert any(r["classifier/loss"] for r in rows) and any(r["classifier/val_accuracy_mean"] for r in rows)


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train_classifier", overrides=[*TINY, "logger=none", *overrides])


def test_training_command_refuses_unlabelled_or_unsplit_data(tmp_path):
    out = f"out={tmp_path / 'c.pt'}"
    with pytest.raises(ValueError, match="data=synthetic has no attribute labels"):
        train_from_config(_compose("data=synthetic", out))
    with pytest.raises(ValueError, match="data.root is required"):
        train_from_config(_compose(out))
    (tmp_path / "photos").mkdir()
    face(64).save(tmp_path / "photos" / "a.jpg")
    with pytest.raises(ValueError, match="needs a data config with splits"):
        train_from_config(_compose("data=folder", f"data.root={tmp_path / 'photos'}", out))
    with pytest.raises(ValueError, match="carries the 40 attribute labels"):
        train_from_config(_compose("data=folder", f"data.root={tmp_path / 'photos'}", out, "split=null",
                                   "val_split=null"))


def _eval_data(labels: list[dict]) -> EvalData:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=gen) * 2 - 1
    return EvalData(x, x.flip(-1), torch.zeros(4, 5, 2), list("abcd"), list("abcd"), True, None, None, labels)


def test_classifier_figures_in_an_evaluation(tmp_path):
    names = ("Smiling", "Male")
    path = save_classifier(AttributeClassifier(ClassifierConfig("small_cnn", 32, names, 8)), tmp_path / "clf.pt")
    labels = [{"Smiling": i % 2, "Male": 1} for i in range(4)]
    data = _eval_data(labels)
    out = classifier_metrics(path, data)
    p_x, p_y = (load_classifier(path).predict(t).long() for t in (data.originals, data.anonymized))
    assert out["agreement"]["agreement_mean"] == pytest.approx(float((p_x == p_y).double().mean()))
    truth = torch.tensor([[lab[n] for n in names] for lab in labels])
    assert out["accuracy"]["accuracy_mean"] == pytest.approx(float((p_y == truth).double().mean()))
    assert out["accuracy_originals"]["accuracy_mean"] == pytest.approx(float((p_x == truth).double().mean()))
    flat = flatten({"judges": [], "detection": {"rate": 1.0}, "landmarks": {"nme_mean": 0.0}, "classifier": out})
    for key in ("attr_agreement_mean@clf", "attr_balanced_agreement_mean@clf", "attr_agreement.Smiling@clf",
                "attr_accuracy_mean@clf", "attr_balanced_accuracy_mean@clf", "attr_accuracy.Male@clf",
                "attr_accuracy_originals_mean@clf"):
        assert 0.0 <= flat[key]["value"] <= 1.0 and flat[key]["white_box"] is False, key
    # Same images on both sides: full agreement. No labels: no accuracy.
    same = classifier_metrics(path, replace(data, anonymized=data.originals, labels=[]))
    assert same["agreement"]["agreement_mean"] == 1.0 and "accuracy" not in same


def test_missing_classifier_file_names_the_file_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.pt.*python -m evaluation\.train_attribute_classifier"):
        classifier_metrics(tmp_path / "absent.pt", _eval_data([]))
