"""A TensorFlow.js graph model (model.json `format: graph-model`) run by PyTorch.

The graph's nodes are executed as written (no conversion step, no generated code): each node's op
is one PyTorch call on NHWC tensors, as TensorFlow computes them. Only the ops below are known;
a graph with any other op is refused when loaded, naming the ops, never half-run. Weights come from
the model's own manifest (falco/backbones/face_api.py `read_tfjs`: float16 / uint8 quantization
undone, int32 constants exact).

Conventions kept from TensorFlow: filters (kh, kw, in, out), depthwise filters (kh, kw, in, mult),
NHWC data, 'SAME' padding with the extra row/column at the bottom/right.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .face_api import read_tfjs
from .mini_xception import same_pads

OPS = frozenset({"Const", "Placeholder", "Identity", "Conv2D", "DepthwiseConv2dNative", "Add", "AddV2", "Sub",
                 "Mul", "Minimum", "Maximum", "Relu", "Relu6", "Mean", "_FusedMatMul", "MatMul", "BiasAdd",
                 "Sigmoid", "Softmax"})


def _attr(node: dict, key: str, default=None):
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        return [base64.b64decode(v).decode() for v in lst.get("s", [])]
    if "b" in a:
        return bool(a["b"])
    if "i" in a:
        return int(a["i"])
    return a.get("f", default)


def _same(x: torch.Tensor, kh: int, kw: int, sh: int, sw: int, padding: str) -> torch.Tensor:
    """NCHW input padded as TensorFlow pads it ('SAME': extra at the bottom/right; 'VALID': none)."""
    if padding == "VALID":
        return x
    if padding != "SAME":
        raise ValueError(f"unsupported TensorFlow padding {padding!r}")
    (t, b), (left, r) = same_pads(x.shape[-2], kh, sh), same_pads(x.shape[-1], kw, sw)
    return F.pad(x, (left, r, t, b)) if t or b or left or r else x


class TfjsGraph(nn.Module):
    """graph(inputs NHWC) -> {output name: tensor} for the requested output nodes."""

    def __init__(self, model_json: str | Path) -> None:
        super().__init__()
        model = json.loads(Path(model_json).read_text())
        if model.get("format") != "graph-model":
            raise ValueError(f"{model_json}: not a TensorFlow.js graph model (format {model.get('format')!r})")
        self.nodes = {n["name"]: n for n in model["modelTopology"]["node"]}
        unknown = sorted({n["op"] for n in self.nodes.values()} - OPS)
        if unknown:
            raise ValueError(f"{model_json}: TensorFlow.js ops this port does not run: {', '.join(unknown)}")
        weights = read_tfjs(model_json)
        self.consts = nn.ParameterDict()
        self._const_key: dict[str, str] = {}
        for name, n in self.nodes.items():
            if n["op"] == "Const":
                if name not in weights:
                    raise ValueError(f"{model_json}: constant {name!r} has no weights in the manifest")
                key = f"c{len(self._const_key)}"
                self._const_key[name] = key
                self.consts[key] = nn.Parameter(torch.from_numpy(np.ascontiguousarray(weights[name])),
                                                requires_grad=False)
        self.inputs = [name for name, n in self.nodes.items() if n["op"] == "Placeholder"]

    def forward(self, x: torch.Tensor, outputs: list[str]) -> dict[str, torch.Tensor]:
        values: dict[str, torch.Tensor] = {self.inputs[0]: x}
        return {name: self._value(name, values) for name in outputs}

    def _value(self, ref: str, values: dict[str, torch.Tensor]) -> torch.Tensor:
        name = ref.split(":")[0].lstrip("^")
        if name not in values:
            node = self.nodes[name]
            if node["op"] == "Const":
                values[name] = self.consts[self._const_key[name]]
            else:
                args = [self._value(i, values) for i in node.get("input", []) if not i.startswith("^")]
                values[name] = self._run(node, args)
        return values[name]

    def _run(self, node: dict, a: list[torch.Tensor]) -> torch.Tensor:
        op = node["op"]
        if op in ("Conv2D", "DepthwiseConv2dNative"):
            return self._conv(node, a[0], a[1])
        if op in ("_FusedMatMul", "MatMul"):
            x, w = a[0], a[1]
            x = x.transpose(-1, -2) if _attr(node, "transpose_a", False) else x
            w = w.transpose(-1, -2) if _attr(node, "transpose_b", False) else w
            y = x @ w.to(x.dtype)
            for fused in _attr(node, "fused_ops", []) if op == "_FusedMatMul" else []:
                if fused == "BiasAdd":
                    y = y + a[2].to(y.dtype)
                elif fused == "Relu":
                    y = y.relu()
                else:
                    raise ValueError(f"{node['name']}: unsupported fused op {fused!r}")
            return y
        if op == "Mean":
            axes = [int(v) for v in a[1].flatten().tolist()]
            return a[0].mean(dim=axes, keepdim=bool(_attr(node, "keep_dims", False)))
        unary = {"Identity": lambda t: t, "Relu": torch.relu, "Relu6": lambda t: t.clamp(0, 6),
                 "Sigmoid": torch.sigmoid, "Softmax": lambda t: t.softmax(-1)}
        if op in unary:
            return unary[op](a[0])
        binary = {"Add": torch.add, "AddV2": torch.add, "BiasAdd": torch.add, "Sub": torch.sub, "Mul": torch.mul,
                  "Minimum": torch.minimum, "Maximum": torch.maximum}
        x, y = a[0], a[1]
        return binary[op](x, y.to(x.dtype))

    def _conv(self, node: dict, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if _attr(node, "data_format", "NHWC") != "NHWC" or any(d != 1 for d in _attr(node, "dilations", [1] * 4)):
            raise ValueError(f"{node['name']}: only NHWC, undilated convolutions are run")
        _, sh, sw, _ = _attr(node, "strides", [1, 1, 1, 1])
        kh, kw = w.shape[0], w.shape[1]
        xc = _same(x.permute(0, 3, 1, 2), kh, kw, sh, sw, _attr(node, "padding", "VALID"))
        if node["op"] == "Conv2D":
            y = F.conv2d(xc, w.permute(3, 2, 0, 1).to(xc.dtype), stride=(sh, sw))
        else:  # depthwise: (kh, kw, in, mult) -> (in * mult, 1, kh, kw), one group per input channel
            cin, mult = w.shape[2], w.shape[3]
            y = F.conv2d(xc, w.permute(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw).to(xc.dtype),
                         stride=(sh, sw), groups=cin)
        return y.permute(0, 2, 3, 1)
