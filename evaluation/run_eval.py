"""Evaluate one run directory (or a baseline on its originals) with several judges.

Originals are the aligned crops the run optimized against (read from the run's `prepare`
stage in the cache), anonymized images are the run's release PNGs, both read through the run
directory's reader (falco/rundir.py RunReader, as the run's summary reads them). Detection uses
the run's MTCNN wrapper (falco/detect.py), so its rate equals summary.json's at the same threshold.
Every re-ID figure is labelled white-box when the judge is the network the run's loss used,
held-out otherwise, and always comes with the false-match rate of unrelated originals under the
same judge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from falco.agreement import age_difference, gender_agreement
from falco.backbones.base import IdentityEncoder
from falco.data.imageio import atomic_write_text
from falco.detect import FaceDetector, detected_landmarks, detection_rate
from falco.device import resolve_device
from falco.heldout import heldout_report, load_heldout
from falco.reid import identification, matrix_from_pair_distance, verification
from falco.rundir import RunReader
from falco.schema import DetectorConfig

from .attribute_classifier import load_classifier
from .baselines import BASELINES
from .flatten import flatten
from .metrics.attributes import attribute_accuracy, attribute_agreement
from .metrics.consistency import identity_consistency
from .metrics.geometry import landmark_nme


@dataclass
class EvalData:
    originals: torch.Tensor  # (N,3,S,S) aligned originals in [-1,1]
    anonymized: torch.Tensor  # (N,3,S,S) in [-1,1]
    landmarks: torch.Tensor  # (N,5,2) originals' landmarks in the aligned frame
    ids: list[str]
    identities: list[str]  # dataset identity, or the item id when the dataset has none
    has_identities: bool
    run_config: Any
    loss_judge: str | None  # name of the recognizer the run's loss used
    labels: list[dict]  # per image, the dataset's utility labels ({} when it has none)


def load_run(run_dir: Path, cache_dir: str | None = None, baseline: str | None = None) -> EvalData:
    """The run's released faces (or a baseline applied to its originals) beside the originals."""
    reader = RunReader(run_dir)
    cfg = reader.config()
    run = reader.read_images(cache_dir)
    ok, x, lm = run.records, run.originals, run.landmarks
    y = run.anonymized if baseline is None else apply_baseline(baseline, x, lm)
    ident = [r.get("identity") for r in ok]
    return EvalData(x, y, lm, run.ids, [i or r["id"] for i, r in zip(ident, ok, strict=True)],
                    all(i is not None for i in ident), cfg, None if baseline else ok[0]["identity_distance"]["judge"],
                    [r.get("labels") or {} for r in ok])


def face_boxes(landmarks: torch.Tensor, size: int) -> list[tuple[float, float, float, float]]:
    """A face box around the 5 landmarks (widened: landmarks span the inner face only)."""
    lo, hi = landmarks.min(1).values, landmarks.max(1).values
    c, half = (lo + hi) / 2, (hi - lo).max(1).values * 0.9
    return [(max(0.0, float(c[i, 0] - half[i])), max(0.0, float(c[i, 1] - half[i] * 0.9)),
             min(float(size), float(c[i, 0] + half[i])), min(float(size), float(c[i, 1] + half[i] * 1.2)))
            for i in range(len(landmarks))]


def apply_baseline(name: str, x: torch.Tensor, lm: torch.Tensor) -> torch.Tensor:
    """A baseline anonymization of the aligned originals; "original" = no anonymization at all
    (the reference every judge must re-identify at 100%)."""
    if name == "original":
        return x.clone()
    if name not in BASELINES:
        raise ValueError(f"baseline must be 'original' or one of {sorted(BASELINES)}, got {name!r}")
    return BASELINES[name](x, face_boxes(lm, x.shape[-1]))


def judge_metrics(name: str, judge: IdentityEncoder, data: EvalData, fars: tuple[float, ...],
                  device: str | torch.device = "cpu") -> dict:
    res = data.originals.shape[-1]
    theta = judge.crop_theta(data.landmarks, (res, res))
    judge.to(device)
    with torch.no_grad():
        e_x = _embed(judge, data.originals, theta, device)
        e_y = _embed(judge, data.anonymized, theta, device)
    dist = matrix_from_pair_distance(judge.distance)
    out = {"judge": name, "white_box": name == data.loss_judge, "same_person_below": judge.same_person_below}
    out["identification"] = identification(e_y, data.identities, e_x, data.identities, distance_matrix=dist)
    out["verification"] = verification(e_y, e_x, distance=judge.distance,
                                       labels=data.identities if data.has_identities else None,
                                       fars=fars, same_person_below=judge.same_person_below)
    if data.has_identities and len(set(data.identities)) < len(data.identities):
        out["consistency"] = identity_consistency(e_y, data.identities, distance=judge.distance,
                                                  same_person_below=judge.same_person_below)
    return out


def _embed(judge: IdentityEncoder, images: torch.Tensor, theta: torch.Tensor | None, device: str | torch.device,
           batch: int = 64) -> torch.Tensor:
    """Embeddings in batches computed on `device`, kept on the CPU."""
    parts = []
    for s in range(0, len(images), batch):
        t = None if theta is None else theta[s:s + batch].to(device)
        parts.append(judge.embed(images[s:s + batch].to(device), t).float().cpu())
    return torch.cat(parts)


def heldout_metrics(cfg: DictConfig, data: EvalData, device: str | torch.device = "cpu",
                    loss_networks: tuple[str, ...] = ()) -> dict | None:
    """The held-out protocol (falco/heldout.py), first in every evaluation; None when off.
    loss_networks: the run's loss networks besides its recognizer (no judge may be one)."""
    h = cfg.heldout
    if not h.enabled:
        return None
    in_loss = (data.loss_judge, *loss_networks) if data.loss_judge else loss_networks
    judges = load_heldout(tuple(h.recognizers), detector=h.detector, attributes=tuple(h.attributes),
                          loss_networks=in_loss, device=device)
    chunks = ({"originals": data.originals[s:s + 64], "anonymized": data.anonymized[s:s + 64],
               "landmarks": data.landmarks[s:s + 64]} for s in range(0, len(data.ids), 64))
    return heldout_report(judges, chunks, data.identities if data.has_identities else None, tuple(cfg.far),
                          male=[labels.get("Male") for labels in data.labels])


def geometry_and_detection(data: EvalData, threshold: float, device: str | torch.device = "cpu") -> dict:
    """MTCNN (falco/detect.py, the run's detector) on the anonymized faces: the share with a face
    of probability >= threshold, and the landmark error of the faces found vs the originals'."""
    dets = FaceDetector(min_prob=threshold, device=str(device)).detect_tensor(data.anonymized)
    return {"detection": detection_rate(dets, threshold),
            "landmarks": landmark_nme(data.landmarks, detected_landmarks(dets))}


def attribute_metrics(attributes, data: EvalData, white_box: bool, device: str | torch.device = "cpu",
                      batch: int = 64) -> dict:
    res = data.originals.shape[-1]
    thetas = attributes.crop_thetas(data.landmarks, (res, res))
    attributes.to(device)

    def predict(images: torch.Tensor) -> dict[str, torch.Tensor]:  # in batches on `device`, kept on the CPU
        parts = [attributes.predict(images[s:s + batch].to(device), {k: t[s:s + batch].to(device)
                                                                      for k, t in thetas.items()})
                 for s in range(0, len(images), batch)]
        return {k: torch.cat([p[k].float().cpu() for p in parts]) for k in parts[0]}

    with torch.no_grad():
        p_x, p_y = predict(data.originals), predict(data.anonymized)
    out: dict[str, Any] = {"network": attributes.name, "white_box": white_box}
    if "male" in p_x:
        out["gender"] = gender_agreement(p_x["male"], p_y["male"])
    if "age" in p_x:
        out["age"] = age_difference(p_x["age"], p_y["age"])
    return out


def label_matrix(labels: list[dict], names: tuple[str, ...]) -> torch.Tensor | None:
    """(N, A) 0/1 labels in the order of `names`, or None when an image lacks one of them."""
    if not labels or not all(all(n in lab for n in names) for lab in labels):
        return None
    return torch.tensor([[int(lab[n]) for n in names] for lab in labels], dtype=torch.long)


def classifier_metrics(path: str | Path, data: EvalData, device: str | torch.device = "cpu") -> dict:
    """The trained attribute classifier (held-out: no loss used it) on originals and anonymized:
    agreement of anonymized with the originals' predictions, and, when the dataset has the
    classifier's attributes as labels, accuracy of both against those labels."""
    model = load_classifier(path, map_location=device)
    names = model.config.names
    p_x, p_y = model.predict_proba(data.originals), model.predict_proba(data.anonymized)
    out: dict[str, Any] = {"network": Path(path).stem, "white_box": False,
                           "agreement": attribute_agreement(p_x, p_y, names=names)}
    labels = label_matrix(data.labels, names)
    if labels is not None:
        out["accuracy"] = attribute_accuracy(p_y, labels, names=names)
        out["accuracy_originals"] = attribute_accuracy(p_x, labels, names=names)
    return out


def evaluate(cfg: DictConfig) -> dict:
    """The whole evaluation of one run directory for a composed conf/evaluate.yaml: every
    metric, written to <run_dir>/eval/<name>/summary.json and to the configured logger."""
    run_dir = Path(cfg.run_dir)
    data = load_run(run_dir, cfg.cache_dir, cfg.baseline)
    method = cfg.baseline or data.run_config.method.name
    device = resolve_device(cfg.device, "auto")  # where every judge computes; results on the CPU
    run_attributes = None  # the run's attribute-loss network (none for a baseline: no loss made it)
    if cfg.baseline is None and data.run_config.attributes.get("net") is not None:
        run_attributes = instantiate(data.run_config.attributes.net)
    in_loss = (run_attributes.name,) if run_attributes is not None else ()
    results: dict = {"heldout": heldout_metrics(cfg, data, device, in_loss), "judges": []}
    for name, judge_cfg in cfg.judges.items():
        if judge_cfg.enabled:
            results["judges"].append(judge_metrics(name, instantiate(judge_cfg.net), data, tuple(cfg.far), device))
    threshold = cfg.detection_threshold  # null: the threshold the run's own summary used
    if threshold is None:
        threshold = data.run_config.get("detector", {}).get("min_prob", DetectorConfig.min_prob)
    results.update(geometry_and_detection(data, threshold, device))
    if cfg.attributes and data.run_config.attributes.get("net") is not None:  # white-box for the run's outputs:
        results["attributes"] = attribute_metrics(  # its loss used this network; no baseline's did
            run_attributes or instantiate(data.run_config.attributes.net), data, cfg.baseline is None, device)
    if cfg.get("attribute_classifier"):
        results["classifier"] = classifier_metrics(cfg.attribute_classifier, data, device)
    if method == "keyed" and cfg.keyed.enabled:  # the key holder's view: needs the run's key
        from .keyed_metrics import keyed_report

        results["keyed"] = keyed_report(run_dir, cfg.keyed.other_run_dir, wrong_keys=cfg.keyed.wrong_keys,
                                        heldout=cfg.heldout)
    if cfg.inception_weights:
        from .metrics.quality import image_quality

        results["quality"] = image_quality(data.originals, data.anonymized, weights_path=cfg.inception_weights)
    summary = {"run": str(run_dir), "method": method, "dataset": str(data.run_config.data._target_).split(".")[-1],
               "params": {"margin": data.run_config.method.get("margin"),
                          "id_weight": data.run_config.method.id_weight,
                          "attr_weight": data.run_config.method.attr_weight},
               "metrics": flatten(results), "details": results}
    out = run_dir / "eval" / (cfg.name or method)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    _log(cfg, out, summary)
    return summary


def _log(cfg: DictConfig, out: Path, summary: dict) -> None:
    if not cfg.logger.get("_target_"):
        return
    logger = instantiate(cfg.logger, save_dir=str(out))
    logger.log_metrics({f"eval/{k}": v["value"] for k, v in summary["metrics"].items() if v["value"] is not None})
    logger.save()
