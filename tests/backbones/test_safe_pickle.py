"""The code-free unpickler for NVIDIA network pickles (falco/backbones/safe_pickle.py).

Benign pickles are built here in NVIDIA's persistence layout: modules named
`torch_utils.persistence` and `dnnlib.util` are faked in sys.modules only while pickling, and
every network node reduces to `_reconstruct_persistent_obj(meta)` with placeholder source
text that would leave a marker file behind if anything executed it.
"""

from __future__ import annotations

import builtins
import importlib
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from falco.backbones.safe_pickle import PersistentObject, UnsafePickleError, load_nvidia_pickle

NVIDIA_BUFFERS = ("resample_filter", "noise_const", "w_avg")  # the rest are parameters


def _never_called(meta):
    raise AssertionError("the loader under test must not call NVIDIA's reconstruct hook")


class FakeEasyDict(dict):
    """Pickles as dnnlib.util.EasyDict (see fake_nvidia_modules)."""


class FakePersistent(nn.Module):
    """Reduces like a torch_utils.persistence object: hook(meta) with the module's __dict__."""

    def __init__(self, class_name: str, module_src: str, init_kwargs: dict | None = None):
        super().__init__()
        self._init_args = ()
        self._init_kwargs = FakeEasyDict(init_kwargs or {})
        self._meta = (class_name, module_src)

    def __reduce__(self):
        class_name, module_src = self._meta
        state = {k: v for k, v in self.__dict__.items() if k != "_meta"}
        meta = dict(type="class", version=6, module_src=module_src, class_name=class_name, state=state)
        return sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,)


def install_fake_nvidia_modules(monkeypatch) -> None:
    """Make `torch_utils.persistence._reconstruct_persistent_obj` and `dnnlib.util.EasyDict`
    importable for pickle.dumps (pickle records globals by module and name)."""
    persistence = types.ModuleType("torch_utils.persistence")
    _never_called.__module__ = "torch_utils.persistence"
    _never_called.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _never_called
    util = types.ModuleType("dnnlib.util")
    FakeEasyDict.__module__, FakeEasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = FakeEasyDict
    for name, mod in {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                      "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}.items():
        monkeypatch.setitem(sys.modules, name, mod)


def marker_source(marker) -> str:
    """Placeholder module source: running it would create `marker`."""
    return f"open({str(marker)!r}, 'w').write('executed')\nclass Generator: pass\n"


def persistent_tree(state_dict: dict, kwargs: dict, module_src: str) -> FakePersistent:
    """A Generator-like tree of persistent nodes holding `state_dict` (NVIDIA key names)."""
    root = FakePersistent("Generator", module_src, kwargs)
    root.weight_gain = np.float64(0.125)  # NVIDIA stores numpy floats as attributes
    for key, value in state_dict.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, FakePersistent(part.capitalize(), module_src))
            node = node._modules[part]
        if leaf in NVIDIA_BUFFERS:
            node.register_buffer(leaf, value.clone())
        else:
            node.register_parameter(leaf, nn.Parameter(value.clone()))
    return root


def nvidia_pickle_bytes(monkeypatch, state_dict: dict, kwargs: dict, module_src: str,
                        protocol: int = 4) -> bytes:
    """A network pickle in NVIDIA's layout with G_ema holding `state_dict`."""
    install_fake_nvidia_modules(monkeypatch)
    data = {"G": None, "D": None, "G_ema": persistent_tree(state_dict, kwargs, module_src),
            "augment_pipe": None, "training_set_kwargs": FakeEasyDict(resolution=64)}
    return pickle.dumps(data, protocol=protocol)


class Reduces:
    """Pickles as a call `func(*args)`: what a malicious pickle looks like."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [2, 4])
def test_benign_persistent_pickle_loads_without_running_its_source(monkeypatch, tmp_path, protocol):
    marker = tmp_path / "executed"
    sd = {"mapping.w_avg": torch.randn(8), "mapping.fc0.weight": torch.randn(8, 4),
          "synthesis.b4.const": torch.randn(2, 4, 4)}
    kwargs = {"z_dim": 4, "mapping_kwargs": FakeEasyDict(num_layers=1)}
    raw = nvidia_pickle_bytes(monkeypatch, sd, kwargs, marker_source(marker), protocol)
    data = load_nvidia_pickle(raw)
    assert not marker.exists()
    assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    g = data["G_ema"]
    assert isinstance(g, PersistentObject) and g.class_name == "Generator"
    assert "open(" in g.module_src  # kept as inert text
    assert g.init_kwargs == {"z_dim": 4, "mapping_kwargs": {"num_layers": 1}}
    assert type(g.init_kwargs["mapping_kwargs"]) is dict
    assert float(g.state["weight_gain"]) == 0.125
    loaded = g.state_dict()
    assert list(loaded) == ["mapping.w_avg", "mapping.fc0.weight", "synthesis.b4.const"]  # nn.Module order
    for key, value in sd.items():
        assert torch.equal(loaded[key], value) and not loaded[key].requires_grad


def test_file_and_stream_sources(monkeypatch, tmp_path):
    raw = nvidia_pickle_bytes(monkeypatch, {"w_avg": torch.ones(3)}, {}, "pass")
    path = tmp_path / "net.pkl"
    path.write_bytes(raw)
    assert torch.equal(load_nvidia_pickle(path)["G_ema"].state_dict()["w_avg"], torch.ones(3))
    with open(path, "rb") as f:
        assert load_nvidia_pickle(f)["G_ema"].class_name == "Generator"


@pytest.mark.parametrize("func, args, name", [
    (os.system, ("touch {marker}",), "system"),
    (builtins.eval, ("open({marker!r}, 'w')",), "builtins.eval"),
    (builtins.exec, ("open({marker!r}, 'w')",), "builtins.exec"),
    (subprocess.Popen, (["touch", "{marker}"],), "subprocess.Popen"),
    (getattr, ("text", "upper"), "builtins.getattr"),
    (importlib.import_module, ("os",), "importlib.import_module"),
])
def test_code_running_pickles_are_refused(tmp_path, func, args, name):
    marker = str(tmp_path / "pwned")
    args = tuple(a.format(marker=marker) if isinstance(a, str) else
                 [x.format(marker=marker) for x in a] if isinstance(a, list) else a for a in args)
    raw = pickle.dumps({"G_ema": Reduces(func, *args)})
    with pytest.raises(UnsafePickleError, match=f"refusing to load global .*{name}"):
        load_nvidia_pickle(raw)
    assert not os.path.exists(marker)


def test_malicious_object_inside_a_persistent_state_is_refused(monkeypatch, tmp_path):
    marker = tmp_path / "pwned"
    install_fake_nvidia_modules(monkeypatch)
    net = FakePersistent("Generator", "pass")
    net.payload = Reduces(os.system, f"touch {marker}")
    raw = pickle.dumps({"G_ema": net})
    with pytest.raises(UnsafePickleError, match="system"):
        load_nvidia_pickle(raw)
    assert not marker.exists()


def test_only_plain_pickles(tmp_path):
    # torch.save files use persistent ids; they belong to torch.load(weights_only=True)
    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage" if isinstance(obj, OrderedDict) else None

    import io
    buf = io.BytesIO()
    WithPid(buf).dump({"x": OrderedDict()})
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_nvidia_pickle(buf.getvalue())
