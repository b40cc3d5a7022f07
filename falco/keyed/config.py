"""The keyed mode's config: its schema (falco/schema.py KeyedMethodConfig, FALCO's knobs plus the
key's and the virtual identities', each default and meaning written there) and its checks.

Registered as group "method", name "keyed_schema" (conf/method/keyed.yaml lists it first), so a
misspelled knob fails at compose time. `key_file` / `key_env` hold a path or a variable NAME,
never the key itself: the resolved config is saved in the run directory.
"""

from ..schema import Grouping, KeyedMethodConfig, Linkage, check_choices, register

__all__ = ["GROUPINGS", "LINKAGES", "KeyedMethodConfig", "register_keyed", "validate_keyed"]

GROUPINGS = tuple(g.value for g in Grouping)
LINKAGES = tuple(k.value for k in Linkage)


def register_keyed() -> None:
    """Registers the schemas (the keyed one among them): falco/schema.py `register`."""
    register()


def validate_keyed(method: KeyedMethodConfig) -> None:
    """Checks the schema's types cannot express (called by apply_keyed before any work)."""
    if not (method.key_file or method.key_env):
        raise ValueError("method=keyed needs method.key_file=PATH or method.key_env=VARIABLE_NAME")
    check_choices(method, "method.")  # grouping, cluster_linkage (Enums), also when set after construction
    if method.candidates < 1 or method.attribute_keep < 1 or method.max_draws < method.candidates:
        raise ValueError("method.candidates and method.attribute_keep must be >= 1, "
                         "and method.max_draws >= method.candidates")
    if method.distinctiveness <= 0:
        raise ValueError(f"method.distinctiveness must be > 0, got {method.distinctiveness}")
    if method.center_samples < 2:
        raise ValueError(f"method.center_samples must be >= 2, got {method.center_samples}")
