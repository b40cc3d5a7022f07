"""Metrics of the keyed mode (falco/keyed): anonymity, consistency, diversity, authentication.

    python -m evaluation.keyed_metrics run_dir=RUN [other_run_dir=RUN_WITH_ANOTHER_KEY] [wrong_keys=10]
                                       [seed=0] [key_file=PATH | key_env=NAME]  # key: the run's own config

Each figure uses one recognizer and its own same-person rule (distance < same_person_below).
Held-out first: anonymity, consistency and diversity are measured by every held-out recognizer
of the run's config (falco/heldout.py: no loss uses them), each image detected and aligned by
the attacker's own detector (YuNet), then by the run's recognizer, the one the loss optimized:
WHITE-BOX (and said so). Authentication is the key holder's tool, so it uses the run's
recognizer by design (white-box too). Beside each share "verified as the same person" stands the
false-match rate of unrelated faces (pairs of different people's originals) under the same judge.

anonymity     no key: share of anonymized faces verified as their original, or as any photo of
              their person; closed-set top-1 identification among the originals (chance 1/P)
consistency   same person, same key: share of pairs of anonymized faces verified as one person
              (and, as the false-match reference, the share for different persons, same key)
diversity     same person, different keys (two runs): share of pairs verified as DIFFERENT
authentication  probes = released faces (template crop: no original needed); top-1 among the
              enrolled persons with the run's key and with `wrong_keys` keys derived from a
              public seed (reproducible), each against the binomial 95% interval of chance
              Bin(N, 1/P); also per person (majority vote), since a person's views move together
              and per-image hits are not independent (the per-image interval is too narrow)
attributes    white-box age/gender agreement of anonymized faces with their originals
Writes keyed_summary.json into run_dir ("heldout" first); it holds the key's check value, never the key.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy.stats import binom

from falco.agreement import gender_age_agreement
from falco.reid import identification, matrix_from_pair_distance
from falco.rundir import RunReader

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (N,D),(N,D) -> (N,)


def _pair_mask(a: Sequence[str], b: Sequence[str], same: bool) -> torch.Tensor:
    """(N,M) True where persons a[i], b[j] are equal (same=True) or differ."""
    ia = {p: k for k, p in enumerate(sorted(set(a) | set(b)))}
    la, lb = torch.tensor([ia[p] for p in a]), torch.tensor([ia[p] for p in b])
    return (la[:, None] == lb[None]) if same else (la[:, None] != lb[None])


def _share(d: torch.Tensor, below: float) -> dict:
    return {"share": float((d < below).double().mean()) if len(d) else float("nan"), "pairs": int(len(d)),
            "mean_distance": float(d.mean()) if len(d) else float("nan")}


def unrelated_false_match(orig: torch.Tensor, persons: Sequence[str], distance: Distance, below: float) -> dict:
    """Share of pairs of DIFFERENT persons' originals verified as one person (the reference)."""
    d = matrix_from_pair_distance(distance)(orig, orig)
    mask = _pair_mask(persons, persons, same=False).triu(1)
    return _share(d[mask], below)


def anonymity(anon: torch.Tensor, orig: torch.Tensor, persons: Sequence[str], distance: Distance,
              below: float) -> dict:
    """anon, orig (N,D) row-aligned; persons (N,). No key involved."""
    d = matrix_from_pair_distance(distance)(anon, orig)  # (N, N)
    same = _pair_mask(persons, persons, same=True)
    to_person = torch.where(same, d, torch.tensor(float("inf"))).min(1).values
    ident = identification(anon, list(persons), orig, list(persons),
                           distance_matrix=matrix_from_pair_distance(distance), ks=(1,))
    return {"verified_as_original": _share(d.diagonal(), below)["share"],
            "verified_as_any_photo_of_person": _share(to_person, below)["share"],
            "identification_top1": ident["top1"], "identification_chance": ident["chance_top1"],
            "distance_to_original_mean": float(d.diagonal().mean())}


def consistency(anon: torch.Tensor, persons: Sequence[str], distance: Distance, below: float) -> dict:
    """Same person, same key: pairs of anonymized faces verified as one (virtual) person."""
    d = matrix_from_pair_distance(distance)(anon, anon)
    same = _pair_mask(persons, persons, same=True).triu(1)
    diff = _pair_mask(persons, persons, same=False).triu(1)
    return {"same_person_verified_same": _share(d[same], below),
            "different_persons_verified_same": _share(d[diff], below)}


def diversity(anon_a: torch.Tensor, persons_a: Sequence[str], anon_b: torch.Tensor, persons_b: Sequence[str],
              distance: Distance, below: float) -> dict:
    """Same person, different keys (run a vs run b): share of pairs verified as DIFFERENT."""
    d = matrix_from_pair_distance(distance)(anon_a, anon_b)
    same = _share(d[_pair_mask(persons_a, persons_b, same=True)], below)
    diff = _share(d[_pair_mask(persons_a, persons_b, same=False)], below)
    return {"same_person_verified_different": 1 - same["share"], "pairs": same["pairs"],
            "mean_distance": same["mean_distance"],
            "reference_different_persons_verified_different": 1 - diff["share"]}


def chance_interval(n: int, p: float, level: float = 0.95) -> list[float]:
    """Equal-tailed binomial interval of the RATE of a chance-level classifier: Bin(n, p) / n."""
    tail = (1 - level) / 2
    return [float(binom.ppf(tail, n, p)) / n, float(binom.ppf(1 - tail, n, p)) / n]


def top1(pred: torch.Tensor, truth: torch.Tensor, persons: Sequence[str], n_enrolled: int) -> dict:
    """Per-image top-1 and per-person (majority vote of a person's probes) top-1 with their
    chance intervals. pred/truth (N,) enrolment indices (-1 = rejected)."""
    hits = (pred == truth).double()
    keys = sorted(set(persons))
    votes = []
    for p in keys:
        mine = torch.tensor([q == p for q in persons])
        winner = torch.mode(pred[mine]).values
        votes.append(float(winner == truth[mine][0]))
    per_image = float(hits.mean())
    lo, hi = chance_interval(len(hits), 1 / n_enrolled)
    plo, phi = chance_interval(len(keys), 1 / n_enrolled)
    per_person = sum(votes) / len(votes)
    return {"top1": per_image, "chance": 1 / n_enrolled, "chance_interval": [lo, hi],
            "within_chance_interval": lo <= per_image <= hi, "per_person_top1": per_person,
            "per_person_chance_interval": [plo, phi], "per_person_within": plo <= per_person <= phi,
            "probes": int(len(hits)), "persons": len(keys)}


@dataclass
class RunData:
    """What the metrics read from a keyed run directory (ok images, sorted by id)."""

    root: Path
    cfg: object  # the run's resolved config (OmegaConf)
    ids: list[str]
    persons: list[str]  # enrolment label of each image's person
    tokens: list[str]  # person token of each image (the image id in a plain FALCO run)
    originals: torch.Tensor  # (N,3,S,S) aligned originals in [-1,1]
    landmarks: torch.Tensor  # (N,5,2) their landmarks in the aligned frame
    anonymized: torch.Tensor  # (N,3,S,S) released faces in [-1,1]


def load_run(run_dir: str | Path) -> RunData:
    """The run's images (falco/rundir.py RunReader) with each image's person and token."""
    from falco.keyed import Enrolment

    reader = RunReader(run_dir)
    root, cfg = reader.root, reader.config()
    run = reader.read_images()
    ok = run.records
    keyed = root / "private" / "keyed"
    if (keyed / "assignment.json").is_file():
        assignment = json.loads((keyed / "assignment.json").read_text())
        label_of = {p["token"]: p["label"] for p in Enrolment.load(keyed / "enrolment.json").persons}
    else:  # a plain FALCO run (a reference): persons are the dataset's identities
        assignment = {r["id"]: r["id"] for r in ok}
        label_of = {r["id"]: f"identity:{r['identity']}" if r.get("identity") else f"image:{r['id']}" for r in ok}
    tokens = [assignment[r["id"]] for r in ok]
    return RunData(root, cfg, run.ids, [label_of[t] for t in tokens], tokens,
                   run.originals, run.landmarks, run.anonymized)


def build_networks(cfg) -> tuple:
    """(generator, identity, attributes) of the run's config, as train.py builds them."""
    from hydra.utils import instantiate

    return instantiate(cfg.generator.net), instantiate(cfg.identity.net), instantiate(cfg.attributes.net)


@torch.no_grad()
def embed(identity, images: torch.Tensor, landmarks: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """(N,D) embeddings of aligned images (N,3,S,S), cropped by the originals' landmarks (N,5,2)."""
    size = images.shape[-2:]
    return torch.cat([identity.embed(x, identity.crop_theta(lm, tuple(size))).float()
                      for x, lm in zip(images.split(batch), landmarks.split(batch), strict=True)])


def load_judges(cfg, device: str | torch.device = "cpu"):
    """The held-out recognizers and detector of a `heldout:` config (no attribute judges: the
    keyed figures are identity figures), none of them a loss network of the run; None when off."""
    if cfg is None or not cfg.enabled:
        return None
    from falco.heldout import load_heldout

    return load_heldout(tuple(cfg.recognizers), detector=cfg.detector, attributes=(), device=device)


def attacker_landmarks_of(judges, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """(N,5,2) landmarks the attacker's detector finds in the images (misses: the median
    detected position; without a detector: the originals' landmarks), in batches."""
    from falco.heldout import BATCH, attacker_landmarks

    if judges.detector is None:
        return landmarks.float()
    return torch.cat([attacker_landmarks(judges.detector.detect_tensor(x), lm.float())[0]
                      for x, lm in zip(images.split(BATCH), landmarks.split(BATCH), strict=True)])


def identity_figures(e_orig: torch.Tensor, e_anon: torch.Tensor, persons: Sequence[str], distance: Distance,
                     below: float, other: tuple[torch.Tensor, Sequence[str]] | None = None) -> dict:
    """Unrelated false-match, anonymity, consistency and (with another key's run) diversity of
    one judge's embeddings."""
    out = {"unrelated_false_match": unrelated_false_match(e_orig, persons, distance, below),
           "anonymity": anonymity(e_anon, e_orig, persons, distance, below),
           "consistency": consistency(e_anon, persons, distance, below)}
    if other is not None:
        out["diversity"] = diversity(e_anon, persons, other[0], other[1], distance, below)
    return out


def heldout_figures(judges, run: RunData, other: RunData | None = None) -> dict:
    """identity_figures per held-out recognizer, every image aligned by the attacker's detector."""
    from falco.heldout import RULE, embed

    lm_x = attacker_landmarks_of(judges, run.originals, run.landmarks)
    lm_y = attacker_landmarks_of(judges, run.anonymized, run.landmarks)
    lm_o = None if other is None else attacker_landmarks_of(judges, other.anonymized, other.landmarks)
    out: dict = {"rule": RULE, "protocol": "attacker_alignment" if judges.detector else "original_landmarks",
                 "recognizers": {}, "skipped": dict(judges.skipped)}
    for name, judge in judges.recognizers.items():
        e_other = None if other is None else (embed(judge, other.anonymized, lm_o), other.persons)
        out["recognizers"][name] = {
            "white_box": False, "same_person_below": judge.same_person_below,
            **identity_figures(embed(judge, run.originals, lm_x), embed(judge, run.anonymized, lm_y), run.persons,
                               judge.distance, judge.same_person_below, e_other)}
    return out


def authentication(run: RunData, key, generator, identity, wrong_keys: int, seed: int = 0) -> dict:
    """Top-1 with the run's key and with `wrong_keys` other keys (derived from `seed`)."""
    from falco.keyed import Authenticator, Enrolment, SecretKey

    enrolment = Enrolment.load(run.root / "private" / "keyed" / "enrolment.json")
    index_of = {p["token"]: k for k, p in enumerate(enrolment.persons)}
    truth = torch.tensor([index_of[t] for t in run.tokens])
    below, n = identity.same_person_below, len(enrolment.persons)
    auth = Authenticator(enrolment, key, generator, identity)
    probes = auth.embed_probes(run.anonymized)  # template crop: the key holder needs no original

    def measure(a: Authenticator) -> dict:
        out = top1(a.identify(probes), truth, run.persons, n)
        open_set = a.identify(probes, open_set_below=below)
        out["open_set"] = {"accepted": float((open_set >= 0).double().mean()),
                           "accepted_and_correct": float((open_set == truth).double().mean())}
        return out

    # Wrong keys from a public seed: reproducible figures, and no key anyone uses (nor the run's).
    wrong = [measure(Authenticator(enrolment, SecretKey(hashlib.sha256(f"wrong-key:{seed}:{i}".encode()).digest()),
                                   generator, identity, strict=False)) for i in range(wrong_keys)]
    return {"enrolled": n, "key_id": key.key_id, "correct_key": measure(auth), "wrong_keys": wrong,
            "wrong_keys_within_chance_interval": sum(w["within_chance_interval"] for w in wrong),
            "wrong_keys_per_person_within": sum(w["per_person_within"] for w in wrong),
            "wrong_key_top1_mean": sum(w["top1"] for w in wrong) / max(len(wrong), 1)}


def keyed_report(run_dir: str | Path, other_run_dir: str | Path | None = None, key=None,
                 wrong_keys: int = 10, seed: int = 0, heldout=None) -> dict:
    """All keyed metrics of a run (and diversity against a run of the same data under another
    key); writes keyed_summary.json into run_dir. `key`: a SecretKey, default the run's own.
    `heldout`: the `heldout:` config naming the held-out judges (falco/schema.py HeldoutConfig),
    default the run's own; a judge that is a loss network of the run is refused."""
    from falco.keyed import load_key

    run = load_run(run_dir)
    other = None if other_run_dir is None else load_run(other_run_dir)
    generator, identity, attributes = build_networks(run.cfg)
    key = key or load_key(run.cfg.method.get("key_file"), run.cfg.method.get("key_env"))
    judges = load_judges(heldout if heldout is not None else run.cfg.get("heldout"))
    in_loss = {identity.name, *attributes.name.split("+")} & set(judges.recognizers if judges else ())
    if in_loss:
        raise ValueError(f"held-out judges {sorted(in_loss)} are loss networks of {run.root}: they would be white-box")
    below, dist = identity.same_person_below, identity.distance
    e_orig, e_anon = embed(identity, run.originals, run.landmarks), embed(identity, run.anonymized, run.landmarks)
    e_other = None if other is None else (embed(identity, other.anonymized, other.landmarks), other.persons)
    report: dict = {"heldout": heldout_figures(judges, run, other) if judges is not None else None,
                    "judge": identity.name, "white_box": True, "same_person_below": below,
                    "note": "white-box: the judge is the recognizer the optimization used",
                    "images": len(run.ids), "persons": len(set(run.persons)),
                    **identity_figures(e_orig, e_anon, run.persons, dist, below, e_other)}
    if other is not None:
        report["diversity"]["other_run"] = str(other.root)
    report["authentication"] = authentication(run, key, generator, identity, wrong_keys, seed)
    with torch.no_grad():
        size = tuple(run.originals.shape[-2:])
        thetas = attributes.crop_thetas(run.landmarks, size)
        report["attributes"] = {"network": attributes.name, "white_box": True, **gender_age_agreement(
            attributes.predict(run.originals, thetas), attributes.predict(run.anonymized, thetas))}
    (run.root / "keyed_summary.json").write_text(json.dumps(report, indent=1))
    return report


def identity_lines(r: dict) -> list[str]:
    """Unrelated false-match, anonymity, consistency and diversity of one judge's figures."""
    fm = r["unrelated_false_match"]["share"]
    a, c = r["anonymity"], r["consistency"]
    lines = [f"  unrelated originals false-match: {fm:.1%}",
             f"  anonymity (no key): verified as original {a['verified_as_original']:.1%}, as any photo of the "
             f"person {a['verified_as_any_photo_of_person']:.1%}, identification top-1 "
             f"{a['identification_top1']:.1%} (chance {a['identification_chance']:.1%})   "
             f"[unrelated false-match {fm:.1%}]",
             f"  consistency (same person, same key): {c['same_person_verified_same']['share']:.1%} verified same; "
             f"different persons same key {c['different_persons_verified_same']['share']:.1%}   "
             f"[unrelated false-match {fm:.1%}]"]
    if "diversity" in r:
        d = r["diversity"]
        lines.append(f"  diversity (same person, other key): {d['same_person_verified_different']:.1%} verified "
                     f"different over {d['pairs']} pairs   [unrelated false-match {fm:.1%}]")
    return lines


def format_report(r: dict) -> str:
    auth = r["authentication"]
    ok = auth["correct_key"]
    lines = [f"{r['images']} images, {r['persons']} persons"]
    h = r.get("heldout")
    if h:
        lines.append(f"HELD-OUT ({h['rule']}; {h['protocol']}):")
        for name, j in h["recognizers"].items():
            lines += [f" judge {name}, same person below {j['same_person_below']:.3g}:", *identity_lines(j)]
        lines += [f" {name} skipped: {why}" for name, why in h["skipped"].items()]
    lines += [f"WHITE-BOX judge {r['judge']} (the loss's recognizer), same person below {r['same_person_below']}:",
              *identity_lines(r)]
    lines.append(f"  authentication top-1 with the key: {ok['top1']:.1%} (open set: "
                 f"{ok['open_set']['accepted_and_correct']:.1%} accepted and correct); chance {ok['chance']:.1%}")
    for i, w in enumerate(auth["wrong_keys"]):
        lo, hi = w["chance_interval"]
        lines.append(f"    wrong key {i}: top-1 {w['top1']:.1%} (95% chance interval [{lo:.1%}, {hi:.1%}]: "
                     f"{'within' if w['within_chance_interval'] else 'OUTSIDE'}; per person {w['per_person_top1']:.1%} "
                     f"{'within' if w['per_person_within'] else 'OUTSIDE'}); open-set accepted "
                     f"{w['open_set']['accepted']:.1%}")
    att = r["attributes"]
    nan = float("nan")
    lines.append(f"attributes [{att['network']}, WHITE-BOX]: gender agreement {att.get('gender_agreement', nan):.1%}, "
                 f"|age diff| {att.get('age_abs_diff', nan):.1f} y")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = dict(a.split("=", 1) for a in argv)
    unknown = set(args) - {"run_dir", "other_run_dir", "wrong_keys", "seed", "key_file", "key_env"}
    if "run_dir" not in args or unknown:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    key = None
    if "key_file" in args or "key_env" in args:
        from falco.keyed import load_key

        key = load_key(args.get("key_file"), args.get("key_env"))
    report = keyed_report(args["run_dir"], args.get("other_run_dir"), key, int(args.get("wrong_keys", 10)),
                          int(args.get("seed", 0)))
    print(format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
