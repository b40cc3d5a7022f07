"""End-of-run summary, measured with the real networks on the written outputs.

HELD-OUT figures come first (`heldout`, falco/heldout.py): recognizers, a detector and
attribute networks that no loss of the run uses, with attacker-style alignment, identification
against chance, TAR at fixed FAR, diversity, gender/age/pose/expression agreement.

White-box figures follow. Privacy: identity distance original vs anonymized, and the share
still verified as the same person by the recognizer's own rule, next to the same share for
pairs of unrelated originals (the false-match rate: a re-identification figure means nothing
without it). The recognizer is the one the loss optimized, so these figures are WHITE-BOX.
Utility: attribute predictions (the attribute networks are also the loss's, so white-box too)
of originals vs anonymized vs the paired fakes before optimization, and the MTCNN detection
rate of the outputs (falco/detect.py: the same detector and rate evaluate.py reports).
The images are read through the run directory's reader (falco/rundir.py RunReader).
"""

from __future__ import annotations

from pathlib import Path

import torch

from .agreement import gender_age_agreement, gender_vs_truth
from .detect import detection_rate
from .device import on_device
from .heldout import (
    attribute_line,
    concat,
    format_heldout,
    judge_fingerprints,
    measure_inputs,
    measure_outputs,
    report_from,
    select_rows,
    true_male,
    truth_line,
)
from .pipeline import Networks, StageOutputs
from .progress import Progress
from .rundir import RunDir
from .stages.cache import StageCache
from .stopping import Pace

CHUNK = 64  # images per forward pass: the summary's memory does not grow with the dataset


def _unrelated_pairs(identities: list[str | None], limit: int = 20000) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `limit` index pairs (i, j), i < j, of originals known to be different people (or
    different items, when identities are unknown). Above `limit` candidate pairs they are drawn
    at random (seeded): listing all n^2/2 pairs would take hours and gigabytes at dataset scale."""
    n = len(identities)
    if n * (n - 1) // 2 <= limit:
        i, j = torch.triu_indices(n, n, offset=1)
    else:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randint(n, (limit,), generator=g), torch.randint(n - 1, (limit,), generator=g)
        b = b + (b >= a)  # uniform over b != a
        i, j = torch.minimum(a, b), torch.maximum(a, b)
    codes: dict[str, int] = {}  # unknown identities (None) each get their own code
    person = torch.tensor([codes.setdefault(p, len(codes)) if p is not None else -1 - k
                           for k, p in enumerate(identities)])
    keep = person[i] != person[j]
    return i[keep], j[keep]


def _inputs_chunk(nets: Networks, stages: StageOutputs, s: int, chunk: int, heldout, device) -> dict:
    """The inputs' measurements of the prepared entries s .. s + chunk (computed on `device`,
    kept on the CPU): originals' landmarks and white-box embeddings and attribute predictions,
    the paired fakes' predictions, and the held-out judges' measurements of both."""
    res = nets.generator.resolution
    images, landmarks = zip(*(stages.prepared.get(e) for e in stages.prepared.ok[s:s + chunk]), strict=True)
    x, lm = torch.stack(images).to(device), torch.stack(landmarks).float().to(device)
    z = stages.pool["latents"][stages.pair_index[s:s + chunk]].to(device)
    with torch.no_grad():
        f = nets.generator.synthesize(z).float()
        theta = nets.identity.crop_theta(lm, (res, res))
        thetas = nets.attributes.crop_thetas(lm, (res, res))
        p_x, p_f = ({k: v.float().cpu() for k, v in nets.attributes.predict(t, thetas).items()} for t in (x, f))
        out = {"landmarks": lm.cpu(), "e_x": nets.identity.embed(x, theta).float().cpu(), "p_x": p_x, "p_f": p_f}
    if heldout is not None:  # the judges take CPU tensors to their own device
        out["heldout"] = measure_inputs(heldout, {"originals": x.cpu(), "landmarks": lm.cpu(), "paired_fake": f.cpu()})
    return out


def judged_inputs(nets: Networks, stages: StageOutputs, heldout=None, cache: StageCache | None = None,
                  chunk: int = CHUNK, device: str | torch.device = "cpu") -> dict:
    """Every measurement of the inputs (`_inputs_chunk`), one row per prepared entry, in its order.

    They depend on the originals, their paired fakes and the judges only, not on the anonymized
    images: with `cache`, a cached stage ("judged_inputs", keyed by the prepare, fake pool and
    pairing stages and every judge's weights), so a second run on the same data measures only
    its outputs. Its key and whether it was reused join `stages.keys` / `stages.reused`."""
    n = len(stages.prepared.ok)

    def compute() -> dict:
        parts = []
        with Progress("summary: judge the inputs", n) as bar:
            for part in Pace(chunk).slices(n):  # a stop: nothing of the stage is cached
                parts.append(_inputs_chunk(nets, stages, part.start, part.stop - part.start, heldout, device))
                bar.update(len(parts[-1]["e_x"]))
        return concat(parts)

    needed = ("prepare", "fakepool", "pairing")
    if cache is None or any(k not in stages.keys for k in needed):
        return compute()
    fp = nets.fingerprints()
    spec = {**{k: stages.keys[k] for k in needed}, **{k: fp[k] for k in ("generator", "identity", "attributes")},
            "heldout": None if heldout is None else judge_fingerprints(heldout)}

    def store(out: Path) -> None:
        torch.save(compute(), out / "inputs.pt")

    path, key, reused = cache.get_or_compute("judged_inputs", spec, store)
    stages.keys["judged_inputs"], stages.reused["judged_inputs"] = key, reused
    return torch.load(path / "inputs.pt", weights_only=True)


def _outputs_chunk(run: RunDir, nets: Networks, ok: list[dict], landmarks: torch.Tensor, e_x: torch.Tensor,
                   heldout, device) -> dict:
    """The anonymized images' measurements of these records (white-box identity distance to
    their originals' embeddings e_x, attribute predictions, detections, held-out judges')."""
    res = nets.generator.resolution
    y, lm = run.anonymized(ok).to(device), landmarks.to(device)
    with torch.no_grad():
        e_y = nets.identity.embed(y, nets.identity.crop_theta(lm, (res, res))).float()
        p_y = nets.attributes.predict(y, nets.attributes.crop_thetas(lm, (res, res)))
        p_y = {k: v.float().cpu() for k, v in p_y.items()}
        out = {"d": nets.identity.distance(e_y, e_x.to(device)).cpu(), "p_y": p_y,
               "detections": nets.detector.detect_tensor(y)}
    if heldout is not None:
        out["heldout"] = measure_outputs(heldout, y.cpu(), lm.cpu())
    return out


def summarize(run: RunDir, nets: Networks, stages: StageOutputs, records: list[dict], chunk: int = CHUNK,
              heldout=None, device: str | torch.device = "cpu", cache: StageCache | None = None) -> dict:
    """The run's summary; `heldout` (falco.heldout.HeldoutJudges) adds the held-out figures,
    first in the summary. The white-box networks measure on `device` (the run's); `cache` keeps
    the inputs' measurements between runs (`judged_inputs`)."""
    ok = [r for r in records if r["status"] == "ok"]
    summary: dict = {"images": len(records), "done": len(ok),
                     "skipped": len(records) - len(ok),
                     "skip_reasons": _count(r["reason"] for r in records if r["status"] != "ok")}
    if not ok:
        return summary
    index = {e["id"]: k for k, e in enumerate(stages.prepared.ok)}
    placed = on_device(device, nets.generator, nets.identity, nets.attributes, nets.detector)
    with placed:
        inputs = judged_inputs(nets, stages, heldout, cache, chunk, device)
        parts = []
        with Progress("summary: measure the outputs", len(ok)) as bar:
            for part in Pace(chunk).slices(len(ok)):  # a stop: no summary.json; the re-run measures again
                rows = torch.tensor([index[r["id"]] for r in ok[part]])
                parts.append(_outputs_chunk(run, nets, ok[part], inputs["landmarks"][rows],
                                            inputs["e_x"][rows], heldout, device))
                bar.update(len(rows))
    rows = torch.tensor([index[r["id"]] for r in ok])
    male = [(r.get("labels") or {}).get("Male") for r in ok]  # the dataset's true gender, where it has one
    if heldout is not None:
        identities = [r.get("identity") for r in ok]
        measured = {**select_rows(inputs["heldout"], rows), **concat([p["heldout"] for p in parts])}
        summary["heldout"] = report_from(heldout, [measured],
                                         identities if all(i is not None for i in identities) else None,
                                         male=male)
    e_x, d = inputs["e_x"][rows], torch.cat([p["d"] for p in parts])
    p_x, p_f = ({n: t[rows] for n, t in inputs[key].items()} for key in ("p_x", "p_f"))
    p_y = {n: torch.cat([p["p_y"][n] for p in parts]) for n in parts[0]["p_y"]}
    detections = [det for p in parts for det in p["detections"]]
    with torch.no_grad():
        i, j = _unrelated_pairs([r.get("identity") for r in ok])
        d_unrelated = nets.identity.distance(e_x[i], e_x[j]) if len(i) else torch.zeros(0)
    thr = nets.identity.same_person_below
    judge = {"judge": nets.identity.name, "white_box": True, "same_person_below": thr}
    summary["identity"] = {**judge, "distance_mean": float(d.mean()),
                           "verified_as_original": float((d < thr).float().mean()),
                           "unrelated_false_match": float((d_unrelated < thr).float().mean())
                           if len(d_unrelated) else None,
                           "unrelated_distance_mean": float(d_unrelated.mean()) if len(d_unrelated) else None,
                           "unrelated_pairs": int(len(d_unrelated))}
    summary["attributes"] = {"network": nets.attributes.name, "white_box": True,
                             "anonymized": gender_age_agreement(p_x, p_y),
                             "paired_fake_before": gender_age_agreement(p_x, p_f)}
    truth = true_male(male, len(ok))
    if truth is not None and "male" in p_x:
        summary["attributes"]["gender_vs_truth"] = gender_vs_truth(p_x["male"], p_y["male"], truth)
    summary["detection_rate"] = detection_rate(detections)["rate"]
    return summary


def _count(reasons) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in reasons:
        out[r] = out.get(r, 0) + 1
    return out


def format_summary(s: dict) -> str:
    lines = [f"images: {s['images']}  done: {s['done']}  skipped: {s['skipped']} {s['skip_reasons'] or ''}"]
    if "heldout" in s:
        lines += format_heldout(s["heldout"])
    if "identity" in s:
        idt, att = s["identity"], s["attributes"]
        fm = idt["unrelated_false_match"]
        lines += [
            "WHITE-BOX judges (networks the loss optimized against: optimistic)",
            f"identity [{idt['judge']}, WHITE-BOX: the loss's own recognizer] distance original->anonymized "
            f"{idt['distance_mean']:.3f} (same person below {idt['same_person_below']})",
            f"  verified as original: {idt['verified_as_original']:.1%}   unrelated faces false-match: "
            + (f"{fm:.1%} over {idt['unrelated_pairs']} pairs" if fm is not None else "n/a"),
            f"attributes [{att['network']}, WHITE-BOX] anonymized: {attribute_line(att['anonymized'])}   "
            f"paired fake before optimization: {attribute_line(att['paired_fake_before'])}",
            f"detection rate of outputs (MTCNN): {s['detection_rate']:.1%}",
        ]
        if "gender_vs_truth" in att:
            lines.insert(-1, f"  gender vs the true labels [{att['network']}, WHITE-BOX] "
                         + truth_line(att["gender_vs_truth"]))
    return "\n".join(lines)

