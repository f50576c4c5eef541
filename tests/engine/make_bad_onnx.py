#!/usr/bin/python3
"""tests/engine/make_bad_onnx.py OUTDIR: broken and hostile ONNX files for test_engine.

Writes one file per case (unknown op, unsupported attribute value, external data, cycle,
undefined input, a tensor declared far larger than its data, nested subgraphs 3000 deep and a
TypeProto nested 3000 deep) plus good.onnx, a small valid model to truncate, and slice_steps.onnx,
a valid model whose constant Slices have the extreme steps INT64_MIN and INT64_MAX, and two
valid Dropout models with training_mode false and true. Built with onnx's
helpers and, where the onnx package refuses (deep nesting), as raw protobuf bytes.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def vi(name, c=3):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", c, "H", "W"])


def conv_model(nodes, inits, name, extra_inputs=()):
    g = helper.make_graph(nodes, name, [vi("input")], [vi("output")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="i2i-test")
    m.ir_version = 8
    return m


rng = np.random.default_rng(0)
w = numpy_helper.from_array(rng.normal(0, 0.1, (3, 3, 3, 3)).astype(np.float32), "w")
b = numpy_helper.from_array(np.zeros(3, np.float32), "b")

# good: conv + relu
good = conv_model([helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c"], ["output"], name="relu")], [w, b], "good")
onnx.checker.check_model(good, full_check=True)
onnx.save(good, os.path.join(out, "good.onnx"))

cases = {}
cases["unknown_op"] = conv_model([helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                                  helper.make_node("Softsign", ["c"], ["output"], name="mystery")], [w, b], "u")
cases["bad_attr"] = conv_model([helper.make_node("Conv", ["input", "w", "b"], ["output"], name="conv",
                                                 auto_pad="SAME_UPPER")], [w, b], "a")
ext = numpy_helper.from_array(rng.normal(0, 0.1, (3, 3, 3, 3)).astype(np.float32), "w")
ext.ClearField("raw_data")
ext.data_location = TensorProto.EXTERNAL
for k, v in (("location", "../../etc/passwd"), ("offset", "0"), ("length", "324")):
    e = ext.external_data.add()
    e.key, e.value = k, v
cases["external"] = conv_model([helper.make_node("Conv", ["input", "w", "b"], ["output"], name="conv", pads=[1, 1, 1, 1])],
                               [ext, b], "e")
cases["cycle"] = conv_model([helper.make_node("Add", ["input", "y"], ["x"], name="add_a"),
                             helper.make_node("Relu", ["x"], ["y"], name="relu_b"),
                             helper.make_node("Relu", ["y"], ["output"], name="relu_c")], [], "c")
cases["undefined"] = conv_model([helper.make_node("Add", ["input", "nowhere"], ["output"], name="add")], [], "d")
big = TensorProto()
big.name = "w"
big.data_type = TensorProto.FLOAT
big.dims.extend([1 << 20, 1 << 20, 3, 3])
big.raw_data = b"\0" * 64
cases["huge_tensor"] = conv_model([helper.make_node("Conv", ["input", "w", "b"], ["output"], name="conv", pads=[1, 1, 1, 1])],
                                  [big, b], "h")
# Slice steps of INT64_MIN and INT64_MAX in a constant subgraph (fuzz_onnx found the length
# computation overflowing): a valid model whose conv bias is Concat(data[7::MIN], data[0::MAX], 0).
data = numpy_helper.from_array(np.arange(8, dtype=np.float32), "data")
i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
steps_inits = [w, data, i64("s7", [7]), i64("e_lo", [-100]), i64("s0", [0]), i64("e_hi", [100]), i64("ax", [0]),
               i64("kmin", [np.iinfo(np.int64).min]), i64("kmax", [np.iinfo(np.int64).max]),
               numpy_helper.from_array(np.zeros(1, np.float32), "zero")]
slice_steps = conv_model([helper.make_node("Slice", ["data", "s7", "e_lo", "ax", "kmin"], ["a"], name="slice_min"),
                          helper.make_node("Slice", ["data", "s0", "e_hi", "ax", "kmax"], ["b2"], name="slice_max"),
                          helper.make_node("Concat", ["a", "b2", "zero"], ["bias"], name="cat", axis=0),
                          helper.make_node("Conv", ["input", "w", "bias"], ["output"], name="conv", pads=[1, 1, 1, 1])],
                         steps_inits, "s")
onnx.checker.check_model(slice_steps, full_check=True)
onnx.save(slice_steps, os.path.join(out, "slice_steps.onnx"))
# Dropout with an explicit training_mode input: false (ONNX inference: the identity) and true.
for mode in (False, True):
    ratio = numpy_helper.from_array(np.array(0.5, np.float32), "ratio")
    tm = numpy_helper.from_array(np.array(mode), "training_mode")
    dm = conv_model([helper.make_node("Conv", ["input", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                     helper.make_node("Dropout", ["c", "ratio", "training_mode"], ["output"], name="drop")],
                    [w, b, ratio, tm], "dropout")
    onnx.checker.check_model(dm, full_check=True)
    onnx.save(dm, os.path.join(out, "dropout_training_%s.onnx" % str(mode).lower()))
for name, m in cases.items():
    onnx.save(m, os.path.join(out, name + ".onnx"))


# Deep nesting as raw protobuf wire bytes (onnx's Python API would recurse too deeply).
def varint(n):
    r = bytearray()
    while True:
        b7 = n & 0x7F
        n >>= 7
        if n:
            r.append(b7 | 0x80)
        else:
            r.append(b7)
            return bytes(r)


def field(num, payload):
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def model_with_graph(graph_bytes):
    opset = field(8, field(1, b"") + varint((2 << 3) | 0) + varint(17))
    return varint((1 << 3) | 0) + varint(8) + opset + field(7, graph_bytes)


# GraphProto.node(1) -> NodeProto.attribute(5) -> AttributeProto.g(6) -> GraphProto ... 3000 deep
g = field(1, field(4, b"Relu"))
for _ in range(3000):
    attr = field(1, b"body") + varint((20 << 3) | 0) + varint(5) + field(6, g)
    g = field(1, field(4, b"If") + field(5, attr))
open(os.path.join(out, "deep_graph.onnx"), "wb").write(model_with_graph(g))

# ValueInfoProto.type(2) -> TypeProto.sequence_type(4) -> Sequence.elem_type(1) -> TypeProto ... 3000 deep
t = field(1, varint((1 << 3) | 0) + varint(1))  # TypeProto.tensor_type{elem_type=1}
for _ in range(3000):
    t = field(4, field(1, t))
vinfo = field(1, b"input") + field(2, t)
open(os.path.join(out, "deep_type.onnx"), "wb").write(model_with_graph(field(11, vinfo)))
print("wrote", len(cases) + 4, "files to", out)
