"""Typed schemas for the knobs where a typo would silently change a result.

Registered in Hydra's ConfigStore and listed first in the YAML's defaults, so a misspelled
key (`method.marign=0.5`) or a wrong type (`method.steps=abc`) fails at compose time.
"""

import importlib.util
from dataclasses import dataclass, field
from typing import Optional  # noqa: UP035 (OmegaConf schemas need typing generics)

from hydra.core.config_store import ConfigStore

from .views import ViewSpec


@dataclass
class MethodConfig:
    name: str = "falco"  # falco | keyed
    steps: int = 50  # Adam steps per image (paper: 50)
    lr: float = 0.01  # Adam learning rate (paper: 0.01)
    milestones: list[float] = field(default_factory=lambda: [0.75, 0.9])  # MultiStepLR, fractions of steps
    gamma: float = 0.8  # learning-rate factor at each milestone
    id_weight: float = 10.0  # weight of the identity term (paper: 10)
    # weight of the attribute term (paper: 0.1 with FaRL); conf/method/*.yaml set it to the
    # attribute config's `attr_weight` (a number is required: validate)
    attr_weight: Optional[float] = None  # noqa: UP045
    # identity margin in the recognizer's own score (ArcFace: cosine similarity m, paper m = 0;
    # dlib: a Euclidean distance); conf/method/*.yaml set it to the identity config's `margin`
    margin: Optional[float] = None  # noqa: UP045
    id_loss: str = "two_sided"  # two_sided = |d - margin| (paper) | hinge = max(0, margin - d)
    init: str = "fake"  # where the trainable latent starts: fake (paired nearest fake, paper) | inversion
    # (keyed mode: always `virtual`, the person's virtual face)
    virtual_weight: float = 0.0  # keyed mode: weight of the pull toward the person's virtual identity
    # true: reproduce the official code's defects (range mix, unaligned target, min-max JPEG q75
    # output; falco/quirks.py) to match the paper's numbers; false: the method done right
    faithful_quirks: bool = False
    # true: optimize one image at a time with the unfolded synthesis, so an image's result does not
    # depend on its batch, shard or rank (bit for bit; in fp32 it is the official per-image loop's);
    # false (default): batched and folded, fast; results differ from the per-image loop by rounding
    batch_invariant: bool = False
    # random views of the attribute loss (falco/views.py): views = how many per step (0 = the
    # paper's plain loss), and their crop shift / zoom / rotation, blur and colour ranges
    views: ViewSpec = field(default_factory=ViewSpec)


def register() -> None:
    ConfigStore.instance().store(group="method", name="method_schema", node=MethodConfig)
    if importlib.util.find_spec("falco.keyed") is not None:  # the keyed mode's schema
        from .keyed.config import register_keyed

        register_keyed()


def validate(method: MethodConfig, *, has_inversion: bool = True, layered: bool = False) -> None:
    """Checks the schema's types cannot express. has_inversion: an inversion network is configured;
    layered: the generator keeps the inversion's layers (StyleGAN2 W+)."""
    for knob in ("margin", "attr_weight"):
        if getattr(method, knob) is None:
            raise ValueError(f"method.{knob} must be a number, got null")
    if method.id_loss not in ("two_sided", "hinge"):
        raise ValueError(f"method.id_loss must be 'two_sided' or 'hinge', got {method.id_loss!r}")
    starts = ("virtual",) if method.name == "keyed" else ("fake", "inversion")  # keyed: the virtual face
    if method.init not in starts:
        raise ValueError(f"method.init must be one of {starts} with method={method.name}, got {method.init!r}")
    if method.init == "inversion" and not has_inversion:
        raise ValueError("method.init=inversion starts from the inversion's latent, but inversion=none "
                         "configures none: choose inversion=projection (or e4e for StyleGAN2)")
    if layered and not has_inversion:
        raise ValueError("this generator keeps the inversion's coarse and fine layers (W+), but inversion=none "
                         "configures none: choose inversion=e4e or inversion=projection")
    if method.steps < 1:
        raise ValueError(f"method.steps must be >= 1, got {method.steps}")
    if not all(0 < f < 1 for f in method.milestones):
        raise ValueError(f"method.milestones are fractions of the steps in (0, 1), got {method.milestones}")
