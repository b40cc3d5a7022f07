"""Turning block-quantized int8 ONNX graphs (OpenCV Zoo "int8bq") into float graphs onnx2torch converts.

OpenCV Zoo's int8bq models store every weight as int8 with per-block float scales and
zero points, dequantized inside the graph (opset 21 `DequantizeLinear` with `block_size`),
often followed by a `Reshape` to the conv kernel's shape. onnx2torch has no converter for
blocked dequantization, so `fold_dequantize` evaluates those constant subgraphs once, in
numpy, and stores the float32 results as initializers: the float graph computes exactly what
the int8 graph computes (the same float32 weights; onnxruntime dequantizes the same way).

`relabel_opset` then marks the graph as opset 17, onnx2torch's range, after checking that
every op left is one whose semantics did not change for the attributes these graphs use.

Both graphs also list their original float weight names as graph inputs without any node
reading them; onnxruntime refuses to run such a graph (it wants them fed). `for_onnxruntime`
removes them and makes one other meaning-preserving fix, so that tests can run the ORIGINAL
int8 graph in onnxruntime as the reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

# Ops whose definition is the same in opset 17 as in opset 21 for what these graphs use: later
# versions only added element types (int4, float8, bfloat16 ...) or, for Resize-18/19,
# attributes/inputs checked for below (antialias, axes, keep_aspect_ratio_policy,
# half_pixel_symmetric). DequantizeLinear is not here: it must have been folded.
SAME_IN_17 = {"Add", "BatchNormalization", "Constant", "Conv", "Dropout", "Flatten", "Gemm", "MaxPool", "Mul",
              "PRelu", "Relu", "Reshape", "Resize", "Sigmoid", "Sub", "Transpose"}
_RESIZE_ATTRS_17 = {"coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside", "extrapolation_value",
                    "mode", "nearest_mode"}


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
               block_size: int = 0) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21) in numpy: (x - zero_point) * scale, float32.

    Per tensor (scalar scale), per axis (1-D scale along `axis`) or blocked (`block_size` > 0:
    scale has x's rank, with ceil(D / block_size) entries along `axis`, each covering
    `block_size` consecutive elements of x there)."""
    xi = x.astype(np.int32)
    zp = np.zeros_like(scale, dtype=np.int32) if zero_point is None else zero_point.astype(np.int32)
    if scale.size == 1 and block_size == 0:  # per tensor
        return (xi - zp.reshape(())).astype(np.float32) * scale.reshape(()).astype(np.float32)
    axis = axis % x.ndim
    if block_size == 0:  # per axis
        shape = [1] * x.ndim
        shape[axis] = -1
        return (xi - zp.reshape(shape)).astype(np.float32) * scale.reshape(shape).astype(np.float32)
    if scale.ndim != x.ndim or scale.shape[axis] != -(-x.shape[axis] // block_size):
        raise ValueError(f"blocked scale {scale.shape} does not match x {x.shape} (axis {axis}, block {block_size})")
    n = x.shape[axis]
    full_scale = np.repeat(scale, block_size, axis=axis).take(np.arange(n), axis=axis)
    full_zp = np.repeat(zp, block_size, axis=axis).take(np.arange(n), axis=axis)
    return (xi - full_zp).astype(np.float32) * full_scale.astype(np.float32)


def fold_dequantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose constant DequantizeLinear nodes, and the Reshape / Constant nodes
    applied to constants, are replaced by float initializers; unused initializers and inputs are
    dropped. Raises if a DequantizeLinear is left (one reading a non-constant tensor)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    folded: dict[str, np.ndarray] = {}
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        ins = [i for i in node.input if i]
        if node.op_type == "DequantizeLinear" and all(i in consts for i in ins):
            zp = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            value = dequantize(consts[node.input[0]], consts[node.input[1]], zp, axis=_attr(node, "axis", 1),
                               block_size=_attr(node, "block_size", 0))
        elif node.op_type == "Reshape" and all(i in consts for i in ins) and not _attr(node, "allowzero", 0):
            data, shape = consts[node.input[0]], consts[node.input[1]].astype(np.int64)
            shape = [data.shape[k] if s == 0 else int(s) for k, s in enumerate(shape)]
            value = data.reshape(shape)
        else:
            kept.append(node)
            continue
        consts[node.output[0]] = folded[node.output[0]] = value
    left = sorted({n.op_type for n in kept} & {"DequantizeLinear", "QuantizeLinear"})
    if left:
        raise ValueError(f"fold_dequantize: {left} nodes with non-constant inputs are left")
    needed = {i for n in kept for i in n.input if i} | {o.name for o in graph.output}
    initializers = [i for i in graph.initializer if i.name in needed]
    initializers += [numpy_helper.from_array(v, k) for k, v in folded.items() if k in needed]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    names = {i.name for i in initializers}
    inputs = [i for i in graph.input if i.name in needed and i.name not in names]
    del graph.input[:]
    graph.input.extend(inputs)
    return out


def for_onnxruntime(model: onnx.ModelProto, free_input_dims: bool = False) -> onnx.ModelProto:
    """A copy of the ORIGINAL int8 graph that onnxruntime accepts, with the same meaning:

    - graph inputs no node reads (the original float weight names) are dropped: onnxruntime
      would otherwise want them fed;
    - DequantizeLinear nodes with a one-element 1-D scale and a `block_size` covering the whole
      tensor (YuNet's biases: x (64,), scale (1,), block_size 64) become per-tensor (block_size
      0): onnxruntime takes such a scale as per-tensor and then rejects any block size; one
      block spanning the whole tensor is per-tensor quantization;
    - free_input_dims: the graph inputs' fixed dims become symbolic (other image sizes).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    used = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    inputs = [i for i in out.graph.input if i.name in used]
    del out.graph.input[:]
    out.graph.input.extend(inputs)
    dims = {i.name: list(i.dims) for i in out.graph.initializer}
    for node in out.graph.node:
        if node.op_type == "DequantizeLinear" and dims.get(node.input[1]) in ([], [1]):
            keep = [a for a in node.attribute if a.name != "block_size"]
            del node.attribute[:]
            node.attribute.extend(keep)
    if free_input_dims:
        initializers = set(dims)
        for value in out.graph.input:
            if value.name in initializers:
                continue
            for k, dim in enumerate(value.type.tensor_type.shape.dim):
                dim.Clear()
                dim.dim_param = f"{value.name}_{k}"
    return out


def relabel_opset(model: onnx.ModelProto, version: int = 17) -> onnx.ModelProto:
    """Mark the default-domain opset as `version` (in place; returned) after checking that every
    op's semantics is the same there (SAME_IN_17) for the attributes and inputs the graph uses."""
    if version != 17:
        raise ValueError("only opset 17 is checked")
    ops = {n.op_type for n in model.graph.node}
    if not ops <= SAME_IN_17:
        raise ValueError(f"ops {sorted(ops - SAME_IN_17)} are not known to be the same in opset 17")
    for node in model.graph.node:
        if node.op_type == "Resize":
            extra = {a.name for a in node.attribute} - _RESIZE_ATTRS_17
            if extra or _attr(node, "coordinate_transformation_mode", "half_pixel") == "half_pixel_symmetric":
                raise ValueError(f"Resize node {node.name!r} uses opset-18/19 features {sorted(extra)}")
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = min(opset.version, version)
    return model


def load_folded(path: str | Path) -> onnx.ModelProto:
    """The float, opset-17 version of an int8bq ONNX file, built in memory (nothing is cached)."""
    return relabel_opset(fold_dequantize(onnx.load(str(path))))
