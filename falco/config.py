"""The method's config: its schema (falco/schema.py MethodConfig, where every knob's default and
meaning are written) and the checks a schema cannot express.

Registered in Hydra's ConfigStore (`register`) and listed first in conf/method/*.yaml, so a
misspelled key (`method.marign=0.5`), a wrong type (`method.steps=abc`) or an unknown choice
(`method.id_loss=hing`) fails at compose time.
"""

from .schema import IdLoss, Init, MethodConfig, check_choices, register

__all__ = ["IdLoss", "Init", "MethodConfig", "register", "validate"]


def validate(method: MethodConfig, *, has_inversion: bool = True, layered: bool = False) -> None:
    """Checks the schema's types cannot express. has_inversion: an inversion network is configured;
    layered: the generator keeps the inversion's layers (StyleGAN2 W+)."""
    for knob in ("margin", "attr_weight"):
        if getattr(method, knob) is None:
            raise ValueError(f"method.{knob} must be a number, got null")
    check_choices(method, "method.")  # a knob set after construction (choices are Enums)
    starts = ("virtual",) if method.name == "keyed" else ("fake", "inversion")  # keyed: the virtual face
    if method.init not in starts:
        raise ValueError(f"method.init must be one of {starts} with method={method.name}, got {str(method.init)!r}")
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
