"""The attribute classifier's training command on a tiny generated CelebA-HQ tree (Lightning's
Trainer.fit: checkpoints, resuming), and the classifier's figures in an evaluation (agreement
with the originals, accuracy vs labels)."""

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
    ClassifierTraining,
    load_classifier,
    save_classifier,
)
from evaluation.flatten import flatten
from evaluation.run_eval import EvalData, classifier_metrics
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
    # the files and their formats: weights {config, state_dict}, the report's keys, Lightning's checkpoint
    assert set(torch.load(out, weights_only=True)) == {"config", "state_dict"}
    assert set(report) == {"weights", "data", "train_images", "skipped", "measured_on", "history", "final"}
    record = {"epoch", "loss", "val_accuracy_mean", "val_balanced_accuracy_mean"}
    assert all(set(h) == record for h in report["history"])
    assert set(report["final"]) == {"accuracy_mean", "balanced_accuracy_mean", "per_attribute", "n_images"}
    assert (tmp_path / "weights" / "celeba_small.pt.logs" / "checkpoints" / "last.ckpt").is_file()


def _compose(*overrides, keep_logger: bool = False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train_classifier", overrides=[*TINY, *([] if keep_logger else ["logger=none"]), *overrides])


def _epochs_started(monkeypatch, stop_at: int | None = None) -> list[int]:
    """Records the epoch of every training epoch that starts; raises at epoch `stop_at` (a kill)."""
    started: list[int] = []

    def on_train_epoch_start(module):
        if module.current_epoch == stop_at:
            raise RuntimeError("killed")
        started.append(module.current_epoch)

    monkeypatch.setattr(ClassifierTraining, "on_train_epoch_start", on_train_epoch_start)
    return started


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_the_same_command_resumes_from_the_last_checkpoint(tmp_path, monkeypatch):
    write_fake_celebahq(tmp_path / "celebahq", images=[face(64)] * 6)
    run = (f"data.root={tmp_path / 'celebahq'}", "epochs=3", "trainer.precision=32-true", "logger=csv")
    whole = train_from_config(_compose(*run, f"out={tmp_path / 'a.pt'}", keep_logger=True))  # uninterrupted

    cfg = _compose(*run, f"out={tmp_path / 'b.pt'}", keep_logger=True)
    with monkeypatch.context() as m:
        _epochs_started(m, stop_at=2)
        with pytest.raises(RuntimeError, match="killed"):
            train_from_config(cfg)
    assert not (tmp_path / "b.pt").exists()
    last = tmp_path / "b.pt.logs" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["epoch"] == 1 and [h["epoch"] for h in saved["classifier"]["history"]] == [0, 1]

    with monkeypatch.context() as m:
        started = _epochs_started(m)
        resumed = train_from_config(cfg)  # the same command
    assert started == [2]  # only the epoch the kill cut off: the count continues
    assert resumed["history"] == whole["history"] and [h["epoch"] for h in resumed["history"]] == [0, 1, 2]
    a, b = _weights(tmp_path / "a.pt"), _weights(tmp_path / "b.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # as if never interrupted
    assert resumed["final"] == whole["final"]
    # the logger's entries of the resumed run continue the epochs and the steps
    versions = sorted((tmp_path / "b.pt.logs" / "logs").glob("version_*/metrics.csv"))
    first, second = ([r for r in csv.DictReader(v.open()) if r["classifier/loss"]] for v in versions)
    assert [int(r["epoch"]) for r in first] == [0, 1] and [int(r["epoch"]) for r in second] == [2]
    assert int(second[0]["step"]) > int(first[-1]["step"])

    with monkeypatch.context() as m:  # done: nothing to train, the outputs are written again
        started = _epochs_started(m)
        again = train_from_config(cfg)
    assert started == [] and again["history"] == whole["history"]
    with monkeypatch.context() as m:
        started = _epochs_started(m)
        train_from_config(_compose(*run, f"out={tmp_path / 'b.pt'}", "resume=false", "epochs=1"))
    assert started == [0]
    with pytest.raises(ValueError, match="checkpoint is of another classifier"):
        train_from_config(_compose(*run, f"out={tmp_path / 'b.pt'}", "width=4"))


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
