"""Typed schema of `method=keyed`: FALCO's knobs plus the key and the virtual identities'.

Registered as group "method", name "keyed_schema" (conf/method/keyed.yaml lists it first), so a
misspelled knob fails at compose time. `key_file` / `key_env` hold a path or a variable NAME,
never the key itself: the resolved config is saved in the run directory.
"""

from dataclasses import dataclass
from typing import Optional  # noqa: UP035 (OmegaConf schemas need typing generics)

from hydra.core.config_store import ConfigStore

from ..config import MethodConfig

GROUPINGS = ("auto", "identity", "cluster")
LINKAGES = ("complete", "average", "single")


@dataclass
class KeyedMethodConfig(MethodConfig):
    name: str = "keyed"
    key_file: Optional[str] = None  # noqa: UP045  path of the key file (hex, base64:..., or raw bytes)
    key_env: Optional[str] = "FALCO_KEY"  # noqa: UP045  variable NAME holding the key when key_file is null
    lr: float = 0.03  # Adam learning rate: the pull toward a distinctive target needs longer moves
    id_loss: str = "hinge"  # only push away from the original; the virtual pull sets where the face goes
    init: str = "virtual"  # every image starts from its person's virtual face (the only start in keyed mode)
    virtual_weight: float = 10.0  # weight of the distance to the person's virtual identity
    grouping: str = "auto"  # auto = dataset identity where known, else cluster | identity | cluster
    cluster_threshold: Optional[float] = None  # noqa: UP045  cluster distance; null = recognizer's rule
    cluster_linkage: str = "complete"  # complete (every pair within threshold) | average | single
    candidates: int = 16  # key-derived draws compared per person
    attribute_keep: int = 4  # of those, the closest in attributes compete; the most distinctive is kept
    distinctiveness: float = 2.0  # target = center + this * (virtual - center): >1 spreads identities
    # a draw is rejected when its target is closer than this to one of the person's originals;
    # null = the larger of the recognizer's same-person rule and the identity margin
    reject_original: Optional[float] = None  # noqa: UP045
    # ... or closer than this to another person's target (same key); null = the same-person rule
    min_separation: Optional[float] = None  # noqa: UP045
    max_draws: int = 256  # give up (error) after this many draws for one person
    center_samples: int = 256  # generator samples (public seed) that define the population center


def register_keyed() -> None:
    ConfigStore.instance().store(group="method", name="keyed_schema", node=KeyedMethodConfig)


def validate_keyed(method: KeyedMethodConfig) -> None:
    """Checks the schema's types cannot express (called by apply_keyed before any work)."""
    if not (method.key_file or method.key_env):
        raise ValueError("method=keyed needs method.key_file=PATH or method.key_env=VARIABLE_NAME")
    if method.grouping not in GROUPINGS:
        raise ValueError(f"method.grouping must be one of {GROUPINGS}, got {method.grouping!r}")
    if method.cluster_linkage not in LINKAGES:
        raise ValueError(f"method.cluster_linkage must be one of {LINKAGES}, got {method.cluster_linkage!r}")
    if method.candidates < 1 or method.attribute_keep < 1 or method.max_draws < method.candidates:
        raise ValueError("method.candidates and method.attribute_keep must be >= 1, "
                         "and method.max_draws >= method.candidates")
    if method.distinctiveness <= 0:
        raise ValueError(f"method.distinctiveness must be > 0, got {method.distinctiveness}")
    if method.center_samples < 2:
        raise ValueError(f"method.center_samples must be >= 2, got {method.center_samples}")
