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

import torch

from .agreement import gender_age_agreement
from .detect import detection_rate
from .device import on_device
from .heldout import attribute_line, format_heldout, measure_chunk, report_from
from .pipeline import Networks, StageOutputs
from .progress import Progress
from .rundir import RunDir
from .stopping import check as stop_point

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


def _measure(run: RunDir, nets: Networks, stages: StageOutputs, index: dict[str, int], ok: list[dict],
             heldout=None, device: str | torch.device = "cpu") -> dict:
    """Embeddings, identity distances, attribute predictions and detections for a chunk of records
    (and the held-out judges' measurements, under "heldout"), computed on `device`, kept on the CPU."""
    res = nets.generator.resolution
    x, lm = run.originals(ok, stages.prepared)
    y = run.anonymized(ok)
    z = torch.stack([stages.pool["latents"][stages.pair_index[index[r["id"]]]] for r in ok])
    x, lm, y, z = (t.to(device) for t in (x, lm, y, z))
    with torch.no_grad():
        f = nets.generator.synthesize(z).float()
        theta = nets.identity.crop_theta(lm, (res, res))
        thetas = nets.attributes.crop_thetas(lm, (res, res))
        e_x, e_y = nets.identity.embed(x, theta).float(), nets.identity.embed(y, theta).float()
        p_x, p_y, p_f = ({k: v.cpu() for k, v in nets.attributes.predict(t, thetas).items()} for t in (x, y, f))
    out = {"e_x": e_x.cpu(), "d": nets.identity.distance(e_y, e_x).cpu(), "p_x": p_x, "p_y": p_y, "p_f": p_f,
           "detections": nets.detector.detect_tensor(y)}
    if heldout is not None:  # the judges take CPU tensors to their own device
        out["heldout"] = measure_chunk(heldout, {"originals": x.cpu(), "anonymized": y.cpu(), "landmarks": lm.cpu(),
                                                 "paired_fake": f.cpu()})
    return out


def summarize(run: RunDir, nets: Networks, stages: StageOutputs, records: list[dict], chunk: int = CHUNK,
              heldout=None, device: str | torch.device = "cpu") -> dict:
    """The run's summary; `heldout` (falco.heldout.HeldoutJudges) adds the held-out figures,
    first in the summary. The white-box networks measure on `device` (the run's)."""
    ok = [r for r in records if r["status"] == "ok"]
    summary: dict = {"images": len(records), "done": len(ok),
                     "skipped": len(records) - len(ok),
                     "skip_reasons": _count(r["reason"] for r in records if r["status"] != "ok")}
    if not ok:
        return summary
    index = {e["id"]: k for k, e in enumerate(stages.prepared.ok)}
    parts = []
    placed = on_device(device, nets.generator, nets.identity, nets.attributes, nets.detector)
    with Progress("summary: measure the outputs", len(ok)) as bar, placed:
        for s in range(0, len(ok), chunk):
            stop_point()  # SIGTERM/SIGINT: no summary.json; the re-run measures again
            parts.append(_measure(run, nets, stages, index, ok[s:s + chunk], heldout, device))
            bar.update(len(ok[s:s + chunk]))
    if heldout is not None:
        identities = [r.get("identity") for r in ok]
        summary["heldout"] = report_from(heldout, [p["heldout"] for p in parts],
                                         identities if all(i is not None for i in identities) else None)
    e_x, d = torch.cat([p["e_x"] for p in parts]), torch.cat([p["d"] for p in parts])
    p_x, p_y, p_f = ({n: torch.cat([p[key][n] for p in parts]) for n in parts[0][key]}
                     for key in ("p_x", "p_y", "p_f"))
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
    return "\n".join(lines)

