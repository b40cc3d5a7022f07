"""The secret key of the keyed mode: loaded from a file or an environment variable, never shown.

Accepted encodings (whitespace around the value is ignored):
    hex       64 hex digits (256 bits) or any even number >= 32 (128 bits)
    base64    "base64:" followed by standard or URL-safe base64
    raw       a binary key file (bytes that are not printable text), e.g. `head -c 32 /dev/urandom`
A passphrase is refused: a human-chosen string has far fewer than 128 bits of entropy, and the
security of every virtual identity rests on the key being unguessable.

`SecretKey` keeps the bytes in a private attribute; its repr, str and format show only
"redacted", the length and a key id (an HMAC of a fixed label, which reveals nothing about the
key but tells two keys apart), and it refuses to be pickled or copied into a config, so it
cannot reach a log, a checkpoint or a saved config by accident.

    python -m falco.keyed.key new PATH     # a new random 256-bit key file (mode 0600)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import stat
import sys
import warnings
from pathlib import Path

MIN_BYTES = 16  # 128 bits: shorter keys are refused; `new` writes 32 bytes (256 bits)
_HEX = re.compile(r"^[0-9a-fA-F]+$")


class KeyLoadError(ValueError):
    """The key is missing, malformed or too short (the message never contains key material)."""


class SecretKey:
    __slots__ = ("_bytes", "source")

    def __init__(self, raw: bytes, source: str = "memory") -> None:
        if len(raw) < MIN_BYTES:
            raise KeyLoadError(f"key from {source} has {8 * len(raw)} bits; at least {8 * MIN_BYTES} are required")
        self._bytes = bytes(raw)
        self.source = source  # where it came from: a path or "env:NAME", never the value

    def hmac(self, message: str | bytes) -> bytes:
        """HMAC-SHA256(key, message): 32 bytes, the only way the key is ever used."""
        data = message.encode() if isinstance(message, str) else message
        return hmac.new(self._bytes, data, hashlib.sha256).digest()

    @property
    def bits(self) -> int:
        return 8 * len(self._bytes)

    @property
    def key_id(self) -> str:
        """A public 64-bit check value: equal keys have equal ids; the key cannot be derived from it."""
        return self.hmac("falco-keyed:key-id").hex()[:16]

    def __repr__(self) -> str:
        return f"SecretKey(<redacted>, {self.bits} bits, id={self.key_id}, from {self.source})"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and hmac.compare_digest(self._bytes, other._bytes)

    def __hash__(self) -> int:
        return hash(self.key_id)

    def __reduce__(self):
        raise TypeError("SecretKey cannot be pickled: the key must never be written anywhere")

    @classmethod
    def generate(cls, nbytes: int = 32) -> SecretKey:
        """A fresh random key (e.g. the wrong keys of the evaluation); never stored."""
        return cls(secrets.token_bytes(nbytes), "random")


def decode_key(data: bytes, source: str) -> bytes:
    """Key bytes from a file's or variable's content (hex, base64:..., or raw binary)."""
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        return data  # binary: raw key bytes
    if not text.isprintable():
        return data
    if text.startswith("base64:"):
        body = text[len("base64:"):].strip()
        try:
            return base64.b64decode(body.replace("-", "+").replace("_", "/") + "=" * (-len(body) % 4),
                                    validate=True)
        except binascii.Error:
            raise KeyLoadError(f"key from {source}: 'base64:' prefix but the rest is not base64") from None
    if _HEX.match(text) and len(text) % 2 == 0:
        return bytes.fromhex(text)
    raise KeyLoadError(
        f"key from {source} is neither hex, 'base64:...' nor a binary key file. Passphrases are refused "
        f"(too little entropy); create a key with: python -m falco.keyed.key new PATH")


def load_key(key_file: str | None = None, key_env: str | None = None) -> SecretKey:
    """The key from `key_file` (a path) or else the environment variable named `key_env`."""
    if key_file:
        path = Path(key_file).expanduser()
        if not path.is_file():
            raise KeyLoadError(f"key file not found: {path} (create one with: python -m falco.keyed.key new {path})")
        _warn_if_shared(path)
        return SecretKey(decode_key(path.read_bytes(), str(path)), str(path))
    if key_env:
        value = os.environ.get(key_env)
        if not value:
            raise KeyLoadError(f"environment variable {key_env} is not set or empty (it should hold the key "
                            "as hex or base64:...)")
        return SecretKey(decode_key(value.encode(), f"env:{key_env}"), f"env:{key_env}")
    raise KeyLoadError("method=keyed needs a secret key: set method.key_file=PATH or method.key_env=VARIABLE_NAME")


def _warn_if_shared(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warnings.warn(f"key file {path} is readable by other users (chmod 600 it)", stacklevel=3)


def write_new_key(path: str | Path, nbytes: int = 32) -> SecretKey:
    """Create a random key file (hex, mode 0600); refuses to overwrite an existing file."""
    path = Path(path).expanduser()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    raw = secrets.token_bytes(nbytes)
    with os.fdopen(fd, "w") as f:
        f.write(raw.hex() + "\n")
    return SecretKey(raw, str(path))


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "new":
        print("usage: python -m falco.keyed.key new PATH", file=sys.stderr)
        return 2
    key = write_new_key(argv[1])
    print(f"wrote a {key.bits}-bit key to {argv[1]} (id {key.key_id}); keep it secret and backed up")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
