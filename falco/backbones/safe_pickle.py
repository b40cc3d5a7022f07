"""Reading NVIDIA StyleGAN pickles without running the code inside them.

NVIDIA's `network-snapshot-*.pkl` / `ffhq.pkl` files are plain pickles of a dict such as
{'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}. The networks are instances of
`torch_utils.persistence` classes, each reduced to

    torch_utils.persistence._reconstruct_persistent_obj(meta)
    meta = {'type': 'class', 'version': 6, 'module_src': <source of the whole Python module>,
            'class_name': 'Generator', 'state': <the module's __dict__>}

and NVIDIA's loader exec()s `module_src` to rebuild the class. Here nothing is executed: the
unpickler below resolves only an allow-list of globals (tensor/storage rebuilders,
OrderedDict, EasyDict, numpy scalars/arrays) and turns every persistent object into a
`PersistentObject` record (class name, constructor arguments, parameters, buffers,
submodules). The source text is kept as an inert string. Any other global (os.system,
builtins.eval, subprocess.Popen, ...) raises `UnsafePickleError` naming it.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something outside the allow-list (it could run code)."""


class EasyDict(dict):
    """Stand-in for dnnlib.EasyDict (a dict with attribute access); plain data here."""


@dataclass
class PersistentObject:
    """A torch_utils.persistence object rebuilt as data (no class, no code)."""

    class_name: str
    module_src: str  # the embedded source, never executed
    state: dict = field(repr=False)  # the object's __dict__ as pickled

    @property
    def init_args(self) -> tuple:
        return tuple(plain(self.state.get("_init_args", ())))

    @property
    def init_kwargs(self) -> dict:
        """Constructor keyword arguments, as plain dicts."""
        return plain(self.state.get("_init_kwargs", {}))

    def children(self) -> dict[str, Any]:
        return dict(self.state.get("_modules") or {})

    def state_dict(self, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
        """Parameters and persistent buffers of the whole tree, keyed like nn.Module.state_dict."""
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        skip = self.state.get("_non_persistent_buffers_set") or set()
        for name, t in (self.state.get("_parameters") or {}).items():
            if t is not None:
                out[prefix + name] = t.detach()
        for name, t in (self.state.get("_buffers") or {}).items():
            if t is not None and name not in skip:
                out[prefix + name] = t.detach()
        for name, child in self.children().items():
            if isinstance(child, PersistentObject):
                out.update(child.state_dict(f"{prefix}{name}."))
            elif child is not None:
                raise UnsafePickleError(f"submodule {prefix}{name} is a {type(child).__name__}, "
                                        "not a persistent object; cannot take its weights")
        return out


def plain(obj: Any) -> Any:
    """EasyDict/OrderedDict/tuples of them -> plain dicts/lists (for constructor kwargs)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain(v) for v in obj)
    return obj


def _reconstruct_persistent_obj(meta: dict) -> PersistentObject:
    """Replaces NVIDIA's hook of the same name: records the object instead of exec()ing."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafePickleError(f"unsupported persistent object (type {meta.get('type')!r})"
                                if isinstance(meta, dict) else "malformed persistent object")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise UnsafePickleError(f"persistent {meta.get('class_name')!r}: state is not a dict")
    return PersistentObject(str(meta.get("class_name")), str(meta.get("module_src", "")), state)


def _load_storage_bytes(data: bytes):
    """torch.storage._load_from_bytes: a nested legacy torch.save stream, loaded weights-only."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    return data  # the tensor is all we need; hooks and extra state are dropped


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2 / 1
    found = {}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        found[(mod, "scalar")] = multiarray.scalar
        found[(mod, "_reconstruct")] = multiarray._reconstruct
    found[("numpy", "dtype")] = np.dtype
    found[("numpy", "ndarray")] = np.ndarray
    return found


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("collections", "OrderedDict"): OrderedDict,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("dnnlib", "EasyDict"): EasyDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("_codecs", "encode"): _latin1_encode,  # protocol-2 pickles spell bytes this way
    }
    allowed.update(_numpy_globals())
    return allowed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding != "latin1":
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the allow-listed globals above."""

    _allowed = None

    def find_class(self, module: str, name: str) -> Any:
        module = PY2_MODULES.get(module, module)  # protocol-2 pickles use Python 2 names
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        try:
            return RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: this pickle would call it, and only "
                "tensors, dicts and NVIDIA persistent networks are allowed") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"unexpected persistent id {pid!r} in a plain pickle")


def load_nvidia_pickle(source: str | os.PathLike | bytes | io.IOBase) -> Any:
    """Unpickle an NVIDIA network pickle (path, bytes or binary file) without running code."""
    if isinstance(source, bytes):
        return RestrictedUnpickler(io.BytesIO(source)).load()
    if isinstance(source, io.IOBase):
        return RestrictedUnpickler(source).load()
    with open(source, "rb") as f:
        return RestrictedUnpickler(f).load()
