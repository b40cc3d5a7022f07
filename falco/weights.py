"""The official checkpoints of FALCO's path, fetched in one command: `./run weights`.

    ./run weights [--dir DIR] [--only NAME ...] [--mirror URL_PREFIX ...] [--list]

Each file goes to the weights folder (`$FALCO_WEIGHTS`, else `weights/` in the repository), where
the loaders find it when no checkpoint path is configured. A download lands in `<file>.part`
(an interrupted one is resumed with an HTTP Range request), is checked for size and sha256 and
only then moved into place. None of these authors publishes a checksum, so the sha256 and size of
the first copy are recorded in `hashes.json` in the weights folder and every later check compares
with them; a published value in the manifest would take precedence. Mirrors
(`--mirror https://host/path/` serves `https://host/path/<file name>`) are tried first, in order,
then the authors' direct link where one exists (Google Drive pages are not direct links: those
files need a mirror, or a download by hand). A file that cannot be fetched is reported with where
to put it and where it is published, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .backbones.checkpoints import weights_dir
from .download import TransferError, fetch

HASHES = "hashes.json"


@dataclass(frozen=True)
class Weight:
    name: str  # what --only selects (the config option it serves)
    filename: str  # the official file name, which the loaders look for
    what: str
    config_key: str  # the override that points at a copy elsewhere
    published: str  # where the authors publish it (for the by-hand message)
    urls: tuple[str, ...] = ()  # the authors' direct downloads, tried after the mirrors
    sha256: str | None = None  # published checksum (none of the current authors gives one)
    size: int | None = None  # published size in bytes

    def sources(self, mirrors: Sequence[str]) -> list[str]:
        """The URLs to try, in order: each mirror prefix + file name, then the direct links."""
        prefixes = [m if m.endswith("/") else m + "/" for m in mirrors if m]
        return [p + self.filename for p in prefixes] + list(self.urls)


GENFORCE = ("https://mycuhk-my.sharepoint.com/:u:/g/personal/1155082926_link_cuhk_edu_hk/"
            "EX0DNWiBvl5FuOQTF4oMPBYBNSalcxTK0AbLwBn9Y3vfgg?e=Q0sZit&download=1")
FACENET = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"

MANIFEST: tuple[Weight, ...] = (
    Weight("stylegan2_ffhq1024", "stylegan2_ffhq1024.pth", "StyleGAN2 FFHQ-1024 generator (genforce)",
           "generator.checkpoint",
           "genforce model zoo, https://github.com/genforce/genforce/blob/master/MODEL_ZOO.md "
           "('StyleGAN2 Official', ffhq-1024x1024; models/model_zoo.py 'stylegan2_ffhq1024')",
           urls=(GENFORCE,)),
    Weight("e4e", "e4e_ffhq_encode.pt", "e4e encoder (Encoder4Editing, FFHQ)", "inversion.checkpoint",
           "https://drive.google.com/file/d/1cUv_reLE6k3604or78EranS7XzuVMWeO/view (Google Drive; "
           "omertov/encoder4editing README, 'Pretrained Models', FFHQ Inversion)"),
    Weight("arcface_irse50", "model_ir_se50.pth", "ArcFace IR-SE-50 (TreB1eN)", "identity.checkpoint",
           "https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn/view (Google Drive; "
           "omertov/encoder4editing README, 'IR-SE50 Model', taken from TreB1eN/InsightFace_Pytorch, "
           "whose README links https://1drv.ms/u/s!AhMqVPD44cDOhkPsOU2S_HFpY9dC and "
           "https://pan.baidu.com/s/12BUjjwy1uUTEF9HCx5qvoQ)"),
    Weight("farl", "FaRL-Base-Patch16-LAIONFace20M-ep64.pth", "FaRL ViT-B/16 (LAION-Face, ep64)",
           "attributes.checkpoint",
           "https://github.com/FacePerceiver/FaRL#pre-trained-backbones (README, 'Pre-trained Backbones': "
           "GitHub release pretrained_weights)",
           urls=("https://github.com/FacePerceiver/FaRL/releases/download/pretrained_weights/"
                 "FaRL-Base-Patch16-LAIONFace20M-ep64.pth",)),
    Weight("facenet_vggface2", "20180402-114759-vggface2.pt", "FaceNet judge (VGGFace2)",
           "judges.facenet_vggface2.net.path",
           "https://github.com/timesler/facenet-pytorch/releases/tag/v2.2.9 (release asset)",
           urls=(FACENET + "20180402-114759-vggface2.pt",)),
    Weight("facenet_casia", "20180408-102900-casia-webface.pt", "FaceNet judge (CASIA-WebFace)",
           "judges.facenet_casia.net.path",
           "https://github.com/timesler/facenet-pytorch/releases/tag/v2.2.9 (release asset)",
           urls=(FACENET + "20180408-102900-casia-webface.pt",)),
)


class WeightUnavailable(Exception):
    """A file that is not in place and could not be fetched (or is in place but does not match)."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_hashes(folder: Path) -> dict[str, dict]:
    path = folder / HASHES
    return json.loads(path.read_text()) if path.is_file() else {}


def record_hash(folder: Path, filename: str, sha256: str, size: int, source: str) -> None:
    """Add one entry to `hashes.json` (written atomically)."""
    hashes = read_hashes(folder)
    hashes[filename] = {"sha256": sha256, "size": size, "source": source}
    tmp = folder / (HASHES + ".tmp")
    tmp.write_text(json.dumps(hashes, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / HASHES)


def expected(weight: Weight, folder: Path) -> tuple[str | None, int | None, str]:
    """(sha256, size, where they come from): the published values, else the recorded ones."""
    if weight.sha256:
        return weight.sha256, weight.size, "published"
    entry = read_hashes(folder).get(weight.filename)
    if entry:
        return entry["sha256"], entry["size"], f"recorded in {folder / HASHES}"
    return None, weight.size, "none yet"


def mismatch(path: Path, sha256: str | None, size: int | None) -> tuple[str | None, str]:
    """(what is wrong or None, the file's sha256); the size is compared first (cheap)."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size {actual} bytes, expected {size}", ""
    digest = sha256_of(path)
    if sha256 is not None and digest != sha256.lower():
        return f"sha256 {digest}, expected {sha256}", digest
    return None, digest


def ensure(weight: Weight, folder: Path, mirrors: Sequence[str] = (), *, stream: TextIO | None = None,
           log_every: float = 30.0) -> str:
    """Make `folder/<file>` a verified copy; returns a one-line report, raises WeightUnavailable."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / weight.filename
    if target.is_file():
        return _check_in_place(weight, folder, target)
    part = target.with_name(target.name + ".part")
    failures = [] if weight.sources(mirrors) else [
        "no direct download is published (a Google Drive page); give one with --mirror"]
    for url in weight.sources(mirrors):
        try:
            fetch(url, part, label=weight.filename, stream=stream, log_every=log_every)
        except TransferError as err:
            failures.append(str(err))
            continue
        sha256, size, origin = expected(weight, folder)
        problem, digest = mismatch(part, sha256, size)
        if problem:
            part.unlink()
            failures.append(f"{url}: wrong file ({problem}, {origin}); the download was deleted")
            continue
        if sha256 is None:
            record_hash(folder, weight.filename, digest, part.stat().st_size, url)
            origin = f"now recorded in {folder / HASHES}"
        os.replace(part, target)
        return f"{weight.filename}: downloaded from {url}, sha256 {digest} ({origin})"
    raise WeightUnavailable(by_hand(weight, target, failures))


def _check_in_place(weight: Weight, folder: Path, target: Path) -> str:
    sha256, size, origin = expected(weight, folder)
    problem, digest = mismatch(target, sha256, size)
    if problem:
        raise WeightUnavailable(
            f"{target} does not match ({problem}, {origin}). Delete it and run `./run weights --only "
            f"{weight.name}` for a fresh copy (or, if this copy is the right one, remove its entry "
            f"from {folder / HASHES}).")
    if sha256 is None:
        record_hash(folder, weight.filename, digest, target.stat().st_size, "found in place")
        return f"{weight.filename}: in place, sha256 {digest} now recorded in {folder / HASHES}"
    return f"{weight.filename}: in place, sha256 matches ({origin})"


def by_hand(weight: Weight, target: Path, failures: Sequence[str]) -> str:
    """What went wrong and how to provide the file without this command."""
    lines = [f"{weight.filename} ({weight.what}) could not be downloaded:"]
    lines += [f"  - {f}" for f in failures]
    lines.append(f"  Put the file by hand at {target} (or pass {weight.config_key}=/path/to/{weight.filename}).")
    links = "".join(f"; direct link: {u}" for u in weight.urls)
    lines.append(f"  It is published at: {weight.published}{links}.")
    lines.append(f"  Or name a server that has it: ./run weights --only {weight.name} --mirror "
                 f"https://HOST/PATH/ (fetches https://HOST/PATH/{weight.filename}).")
    part = target.with_name(target.name + ".part")
    if part.is_file():
        lines.append(f"  {part} ({part.stat().st_size} bytes) is kept: the next run resumes it.")
    return "\n".join(lines)


def status(weight: Weight, folder: Path) -> str:
    """One line of `--list`: file, state, checksum origin, where it comes from."""
    target = folder / weight.filename
    part = target.with_name(target.name + ".part")
    state = ("present" if target.is_file() else
             f"partial ({part.stat().st_size} bytes)" if part.is_file() else "missing")
    _, _, origin = expected(weight, folder)
    source = weight.urls[0] if weight.urls else f"mirror or by hand; page: {weight.published}"
    return f"{weight.name:<20} {weight.filename:<42} {state:<10} checksum: {origin}\n{'':<21}{source}"


def select(manifest: Sequence[Weight], only: Sequence[str] | None) -> list[Weight]:
    if not only:
        return list(manifest)
    by_name = {w.name: w for w in manifest}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown weight name(s) {unknown}; choose from {sorted(by_name)}")
    return [by_name[n] for n in only]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./run weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="weights folder (default: $FALCO_WEIGHTS or weights/)")
    parser.add_argument("--only", nargs="+", action="extend", metavar="NAME", help="only these files")
    parser.add_argument("--mirror", nargs="+", action="extend", default=[], metavar="URL_PREFIX",
                        help="servers tried first, in order: URL_PREFIX + file name")
    parser.add_argument("--list", action="store_true", help="show each file's state and source; fetch nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, manifest: Sequence[Weight] = MANIFEST) -> int:
    args = parse_args(argv)
    folder = (args.dir or weights_dir()).expanduser()
    chosen = select(manifest, args.only)
    if args.list:
        print(f"weights folder: {folder}")
        print("\n".join(status(w, folder) for w in chosen))
        return 0
    failed = []
    for weight in chosen:
        try:
            print(ensure(weight, folder, args.mirror), flush=True)
        except WeightUnavailable as err:
            print(err, file=sys.stderr, flush=True)
            failed.append(weight.filename)
    if failed:
        print(f"{len(failed)} of {len(chosen)} file(s) missing from {folder}: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
