"""Reader for dlib's `.dat` serialization of a DNN (`dlib::serialize(net, out)`), no dlib needed.

Used for `dlib_face_recognition_resnet_model_v1.dat` (package face_recognition_models). The
stream is, in order:
- the loss layer: version 1, its name (e.g. "loss_metric_2") and its scalars;
- one version integer per nested layer, outermost first: 2 = a computational layer
  (`add_layer`), 1 = a tag or skip layer (they carry no data), 3 = the innermost layer,
  which also holds the input layer;
- the input layer record, then one record per computational layer, input first. A record
  is the layer's name and fields, then the layer's bookkeeping: 3 bool characters and 3
  tensors (gradient/output caches, empty in a saved model); the innermost one also ends
  with its sample-expansion factor.

Tag and skip layers leave no trace after their version number, so the residual wiring is not
in the file; `falco.backbones.dlib_resnet` knows it and checks the record sequence.

Encodings: an integer is a control byte (low nibble = number of bytes, bit 0x80 = negative)
and that many little-endian magnitude bytes; a scalar float is two integers, mantissa and
base-2 exponent; a string is a length then bytes; a tensor is version 2, the 4 dimensions
(n, k, nr, nc), then n*k*nr*nc raw little-endian float32; a bool is the character '0'/'1'.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class DatFormatError(ValueError):
    """The file is not the dlib DNN serialization this reader understands."""


@dataclass
class DatLayer:
    kind: str  # the record name, e.g. "con_4", "affine_", "relu_", "fc_2"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # float32 weights
    ints: dict[str, int] = field(default_factory=dict)  # geometry: sizes, strides, paddings


@dataclass
class DatNet:
    loss: str
    input_mean: tuple[float, float, float]  # per-channel RGB mean in 0..255 units
    input_size: tuple[int, int]  # (rows, cols) of the fixed-size input layer
    layers: list[DatLayer]  # computational layers, input first
    num_nested: dict[int, int]  # version -> count in the nesting header (2: layers, 1: tags/skips)

    def num_params(self) -> int:
        return sum(a.size for layer in self.layers for a in layer.arrays.values())


class _Reader:
    def __init__(self, data: bytes, path: str) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> DatFormatError:
        return DatFormatError(f"{self.path}: {what} at byte {self.pos}")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"truncated file (wanted {n} more bytes)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def read_int(self) -> int:
        control = self.take(1)[0]
        if control & 0x70:
            raise self.fail(f"bad integer control byte {control:#x}")
        value = int.from_bytes(self.take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        mantissa, exponent = self.read_int(), self.read_int()
        return float(np.ldexp(float(mantissa), exponent))

    def read_string(self) -> str:
        return self.take(self.read_int()).decode("ascii", errors="replace")

    def read_bool(self) -> bool:
        c = self.take(1)
        if c not in (b"0", b"1"):
            raise self.fail(f"bad bool {c!r}")
        return c == b"1"

    def read_tensor(self) -> np.ndarray:
        if (version := self.read_int()) != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        shape = tuple(self.read_int() for _ in range(4))
        count = int(np.prod(shape))
        # Copy out of the file buffer so the result is writable and owns its memory.
        return np.frombuffer(self.take(4 * count), dtype="<f4").reshape(shape).astype(np.float32)

    def alias_shape(self) -> tuple[int, ...]:
        """An alias_tensor (a view into a layer's params): version 1 then (n, k, nr, nc)."""
        if (version := self.read_int()) != 1:
            raise self.fail(f"alias_tensor version {version}, expected 1")
        return tuple(self.read_int() for _ in range(4))


def _split(reader: _Reader, params: np.ndarray, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Cut a layer's flat params into named arrays, in order; the sizes must add up exactly."""
    flat, out, start = params.reshape(-1), {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = flat[start:start + size].reshape(shape)
        start += size
    if start != flat.size:
        raise reader.fail(f"params hold {flat.size} values but the views need {start}")
    return out


def _con(r: _Reader) -> DatLayer:
    params = r.read_tensor()
    keys = ("num_filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")
    ints = {k: r.read_int() for k in keys}
    filters, biases = r.alias_shape(), r.alias_shape()  # (O, I, kh, kw) and (1, O, 1, 1)
    for _ in range(4):  # learning-rate and weight-decay multipliers: training only
        r.read_float()
    arrays = _split(r, params, {"weight": filters, "bias": (biases[1],)})
    return DatLayer("con_4", arrays, ints)


def _affine(r: _Reader) -> DatLayer:
    params = r.read_tensor()
    gamma, beta = r.alias_shape(), r.alias_shape()  # (1, C, 1, 1) each
    if (mode := r.read_int()) != 0:
        raise r.fail(f"affine_ mode {mode}: only per-channel (conv) mode is supported")
    return DatLayer("affine_", _split(r, params, {"gamma": (gamma[1],), "beta": (beta[1],)}))


def _pool(kind: str):
    def read(r: _Reader) -> DatLayer:
        keys = ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")
        return DatLayer(kind, ints={k: r.read_int() for k in keys})  # nr = nc = 0: whole input
    return read


def _fc(r: _Reader) -> DatLayer:
    n_out, n_in = r.read_int(), r.read_int()
    params = r.read_tensor()
    r.alias_shape(), r.alias_shape()  # weights (n_in, n_out) view and the bias view
    bias_mode = r.read_int()  # 0: has bias (an extra params row), 1: no bias
    for _ in range(4):
        r.read_float()
    shapes: dict[str, tuple[int, ...]] = {"weight_in_out": (n_in, n_out)}
    if bias_mode == 0:
        shapes["bias"] = (n_out,)
    return DatLayer("fc_2", _split(r, params, shapes), {"num_outputs": n_out, "num_inputs": n_in})


_LAYER_READERS = {
    "con_4": _con, "affine_": _affine, "fc_2": _fc,
    "max_pool_2": _pool("max_pool_2"), "avg_pool_2": _pool("avg_pool_2"),
    "relu_": lambda r: DatLayer("relu_"), "add_prev_": lambda r: DatLayer("add_prev_"),
}


def _bookkeeping(r: _Reader) -> None:
    """setup-called / gradient-stale / disabled flags, then 3 cached tensors (empty when saved)."""
    for _ in range(3):
        r.read_bool()
    for _ in range(3):
        r.read_tensor()


def read_dlib_net(path: str | Path) -> DatNet:
    """Parse a dlib DNN `.dat` file with a metric loss and an `input_rgb_image_sized` input."""
    r = _Reader(Path(path).read_bytes(), str(path))
    if (version := r.read_int()) != 1:
        raise r.fail(f"loss layer version {version}, expected 1 (is this a dlib DNN file?)")
    loss = r.read_string()
    if loss != "loss_metric_2":
        raise r.fail(f"loss {loss!r}: only dlib's metric-learning nets (loss_metric_2) are supported")
    r.read_float(), r.read_float()  # margin and distance threshold of the training loss
    nested = {1: 0, 2: 0, 3: 0}
    while (version := r.read_int()) != 3:
        if version not in nested:
            raise r.fail(f"layer version {version}, expected 1 (tag/skip) or 2 (layer)")
        nested[version] += 1
    nested[2] += 1  # the innermost layer (version 3) is a computational layer too
    if (name := r.read_string()) != "input_rgb_image_sized":
        raise r.fail(f"input layer {name!r}, expected 'input_rgb_image_sized'")
    mean = (r.read_float(), r.read_float(), r.read_float())
    size = (r.read_int(), r.read_int())
    layers = []
    while r.pos < len(r.data):
        name = r.read_string()
        if name not in _LAYER_READERS:
            raise r.fail(f"unsupported layer record {name!r}")
        layers.append(_LAYER_READERS[name](r))
        _bookkeeping(r)
        if len(layers) == 1:
            r.read_int()  # the innermost layer's sample-expansion factor
    if len(layers) != nested[2]:
        raise r.fail(f"{len(layers)} layer records but the header announced {nested[2]}")
    return DatNet(loss, mean, size, layers, {1: nested[1], 2: nested[2]})
