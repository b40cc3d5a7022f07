"""Seeds derived from names, so streams never overlap and never depend on order or world size.

stream_seed("pool", seed, chunk) and stream_seed("data", seed, identity) draw from disjoint
domains: no original of the synthetic dataset can be one of the fake pool's samples, and a
per-image seed depends only on the image id, not on which process or batch handles it.
"""

from __future__ import annotations

import hashlib


def stream_seed(domain: str, *parts: object) -> int:
    blob = "\x1f".join([domain, *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & (2**63 - 1)
