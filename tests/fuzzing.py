"""Fuzzing hetc where it reads what strangers write: the .hir parser and
verifier, the ONNX importer, the MLIR importer, and loading saved artifact
folders.

Each fuzzer turns (seed, index) into one mutant, always the same one, and
feeds it through hetc as a user would. Outcomes:

    ok       accepted (and, when small enough, run: interpreter, code generator)
    refused  a HetcError: the clear-error path
    crash    any other exception, or a worker killed inside native code: a bug
    hang     no answer within the time limit: a bug

Cases run in worker processes; a worker that hangs or dies is replaced and
the run goes on. A crash prints the command that replays it in one process,
with its traceback.

    python tests/fuzzing.py --hir 100000 --onnx 20000 --artifacts 5000   (make fuzz)
    python tests/fuzzing.py --replay onnx:0:1234
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing as mp
import os
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [p for p in (HERE, os.path.join(ROOT, "examples")) if p not in sys.path]

CASE_TIMEOUT_S = 30  # a case answering later than this is a hang
MEMORY_LIMIT = 8 << 30  # per worker: a memory bomb fails fast instead of swapping
RUN_LIMIT = 1 << 16  # graphs whose values total more elements are checked, not run
CORPUS_VERSION = 1

# -- what goes into mutants ------------------------------------------------------------------

HOSTILE_NAMES = ["a */ int x; /*", 'q"uote', "back\\slash", "new\nline", "#include <x>", "nul\x00",
                 "ünïcødé-名前", "%s%n", "../../etc/passwd", "", " ", "a" * 5000,
                 "__hetc_store__", "W:scale", "\x1b[2J", "\ud800"]
INTS = [0, 1, -1, 2, 3, 7, 64, 255, 256, -129, 2**31 - 1, 2**31, -2**31, 2**40, 2**62, 2**63 - 1,
        -2**63, 10**30]
FLOATS = ["0.0", "-0.0", "1e-45", "1e38", "3.5e39", "nan", "inf", "-inf", "0.5", "-1.5"]
CHARS = list('"\\*/#%@{}[]<>(),:=\n\x00-x') + ["é", "∞", "\u202e", "*/", "//", "\t"]


def _rng(seed, index, salt):
    return random.Random(f"{salt}:{seed}:{index}")


# -- corpora (built once, cached) ------------------------------------------------------------

def corpus_dir():
    from hetc.core.fsutil import cache_root
    from hetc.runtime.artifact import FORMAT_VERSION

    # saved artifacts in it must be of the format this hetc reads
    return os.path.join(cache_root(), f"fuzz-corpus-{CORPUS_VERSION}-a{FORMAT_VERSION}")


def build_corpus(progress=print):
    """The seeds: .hir graphs (printed IR with weights) from the ONNX node
    tests, the example models with compressed weights and the lit tests; the
    ONNX node-test models themselves; saved artifacts for ref, x86 and npu."""
    root = corpus_dir()
    if os.path.exists(os.path.join(root, ".complete")):
        return root
    import hetc
    from hetc.driver import conformance
    from hetc.ir.parser import save

    tmp = tempfile.mkdtemp(prefix=".tmp-fuzz-corpus-", dir=os.path.dirname(root) or None)
    for sub in ("hir", "onnx", "artifacts"):
        os.makedirs(os.path.join(tmp, sub))
    cases = conformance.case_dirs("onnx")
    kept = 0
    for i, case in enumerate(cases):
        with open(os.path.join(case, "model.onnx"), "rb") as f:
            data = f.read()
        if len(data) > 1 << 20:
            continue
        with open(os.path.join(tmp, "onnx", f"{i:05d}.onnx"), "wb") as f:
            f.write(data)
        if i % 3 == 0:  # every third one also as IR, if hetc imports it
            try:
                g = hetc.compile(os.path.join(case, "model.onnx")).graph
                save(g, os.path.join(tmp, "hir", f"onnx{i:05d}.hir"))
                kept += 1
            except Exception:  # noqa: BLE001 - an op hetc refuses: not a seed
                pass
    progress(f"corpus: {len(cases)} ONNX models, {kept} of them as IR")
    from models import examples

    for name, model, inputs in examples():
        for k, opts in enumerate([{}, {"precision": "int8"}, {"precision": "int4"},
                                  {"sparsity": "2:4", "precision": "int4"}, {"precision": "mx4"},
                                  {"precision": "int4", "activations": "int8"}]):
            try:
                module = hetc.compile(model, example_inputs=inputs, **opts)
            except Exception:  # noqa: BLE001 - a combination a model cannot take
                continue
            save(module.graph, os.path.join(tmp, "hir", f"{name}{k}.hir"))
    for path in sorted(os.listdir(os.path.join(HERE, "lit"))):
        with open(os.path.join(HERE, "lit", path)) as f:
            text = f.read()
        if "// WEIGHT" not in text:
            with open(os.path.join(tmp, "hir", path), "w") as f:
                f.write(text)
    name, model, inputs = examples()[0]
    for target in ("ref", "x86", "npu"):
        for k, opts in enumerate([{}, {"precision": "int4"}]):
            module = hetc.compile(model, target=target, example_inputs=inputs, **opts)
            module.save(os.path.join(tmp, "artifacts", f"{target}{k}"))
    open(os.path.join(tmp, ".complete"), "w").close()
    try:
        os.rename(tmp, root)
    except OSError:  # another process built it first (pytest workers): theirs serves
        shutil.rmtree(tmp, ignore_errors=True)
    return root


class Corpus:
    def __init__(self, root):
        self.root = root
        hir = os.path.join(root, "hir")
        self.hir = sorted(os.path.join(hir, f) for f in os.listdir(hir) if f.endswith(".hir"))
        onnx_dir = os.path.join(root, "onnx")
        self.onnx = sorted(os.path.join(onnx_dir, f) for f in os.listdir(onnx_dir))
        art = os.path.join(root, "artifacts")
        self.artifacts = sorted(os.path.join(art, f) for f in os.listdir(art))


# -- running what a case made ----------------------------------------------------------------

def random_inputs(graph, rng):
    out = []
    for v in graph.inputs:
        t = v.type
        if t.dtype.is_float:
            a = np.asarray(rng.standard_normal(t.shape) * 3, np.float32).astype(t.dtype.storage)
        elif t.dtype.kind == "bool":
            a = rng.random(t.shape) < 0.5
        else:
            lo, hi = t.dtype.int_range
            a = rng.integers(max(lo, -8), min(hi, 8) + 1, t.shape).astype(t.dtype.storage)
        out.append(a)
    return out


def small(graph):
    return sum(v.type.numel for op in graph.ops for v in op.outputs) + \
        sum(v.type.numel for v in graph.inputs) <= RUN_LIMIT


def exercise(graph, seed):
    """What a user does next with an accepted graph: print it and read it
    back (equal), run it on the interpreter, generate x86 C, CUDA, an
    OpenVINO model and an HLS project for it (HetcErrors there are
    refusals, as everywhere)."""
    from hetc.backends import backend_named
    from hetc.backends.cuda.emit import lower_graph as lower_cuda
    from hetc.backends.fpga.cost import DEFAULT_PART, PARTS
    from hetc.backends.fpga.emit import lower_graph as lower_hls
    from hetc.backends.openvino.lowering import to_model
    from hetc.backends.x86.emit import lower_graph
    from hetc.core.errors import HetcError
    from hetc.ir.interpret import interpret
    from hetc.ir import parse, print_graph
    from hetc.core.targets import get_target

    again = parse(print_graph(graph), weights=graph.weights)
    if again != graph:
        raise AssertionError("print -> parse gave a different graph")
    if not small(graph):
        return
    npu, fpga = backend_named("openvino"), backend_named("fpga")
    fpga_part = PARTS[DEFAULT_PART]
    for lower in (lower_graph, lower_cuda,
                  lambda g: (npu.check(g, get_target("npu")), to_model(g)),
                  lambda g: (fpga.check(g, get_target("fpga")),
                             lower_hls(g, 0, fpga_part).sources())):
        try:
            lower(graph)
        except HetcError:
            pass
    with np.errstate(all="ignore"):
        interpret(graph, random_inputs(graph, np.random.default_rng(seed)))


# -- the .hir fuzzer -------------------------------------------------------------------------

_TOKEN = re.compile(r'-?[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|-?[0-9]+|%[A-Za-z0-9_.$-]+|'
                    r'@[A-Za-z0-9_.$:/-]+|"(?:\\.|[^"\\])*"|[a-z][a-z0-9_]*')


def mutate_text(text, rng, others=()):
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.randrange(9)
        tokens = list(_TOKEN.finditer(text))
        if kind == 0 and text:  # a character in, out or changed
            i = rng.randrange(len(text))
            text = text[:i] + rng.choice(CHARS + [""]) + text[i + rng.choice([0, 1]):]
        elif kind in (1, 2) and tokens:  # a token replaced by an interesting one
            m = rng.choice(tokens)
            new = rng.choice([str(rng.choice(INTS)), rng.choice(FLOATS), "[]", "[[1]]", '"s"',
                              "true", rng.choice(["f32", "i4", "fx32", "bool", "u3", "nope"]),
                              "%" + rng.choice(["0", "undefined", "x"]),
                              rng.choice(["relu", "linear", "reshape", "fused", "const", "slice",
                                          "gather", "attention", "conv2d", "split"])])
            text = text[:m.start()] + new + text[m.end():]
        elif kind == 3:  # lines removed, repeated or swapped
            lines = text.split("\n")
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            op = rng.randrange(3)
            if op == 0:
                del lines[i]
            elif op == 1:
                lines.insert(j, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == 4 and others:  # a line from another graph
            other = rng.choice(others).split("\n")
            lines = text.split("\n")
            lines.insert(rng.randrange(len(lines)), rng.choice(other))
            text = "\n".join(lines)
        elif kind == 5:  # a hostile graph or weight name
            name = json.dumps(rng.choice(HOSTILE_NAMES))
            text = re.sub(r"@[A-Za-z0-9_.$:/-]+|@\"(?:\\.|[^\"\\])*\"", lambda m: "@" + name, text,
                          count=1 if rng.random() < 0.7 else 0)
        elif kind == 6 and tokens:  # an attribute added or changed
            m = rng.choice([t for t in tokens if t.group().startswith("%")] or tokens)
            attr = rng.choice(["axis", "axes", "shape", "perm", "stride", "padding", "kernel",
                               "groups", "sizes", "act_group", "dtype", "approximate", "eps"])
            val = rng.choice(["[]", "[0]", "[-1, -1]", str(rng.choice(INTS)), "1.5", '"x"', "f32",
                              "[" + ", ".join(str(rng.choice(INTS)) for _ in range(4)) + "]"])
            pos = text.find(")", m.end())
            if pos > 0:
                text = text[:pos + 1] + f" {{{attr} = {val}}}" + text[pos + 1:]
        elif kind == 7 and tokens:  # a shape changed
            shapes = list(re.finditer(r"tensor<([0-9x]*)([a-z][a-z0-9_]*)", text))
            if shapes:
                m = rng.choice(shapes)
                dims = "".join(f"{rng.choice([0, 1, 2, 3, 4, 8, 2**20, 2**40])}x"
                               for _ in range(rng.randrange(5)))
                text = text[:m.start(1)] + dims + text[m.end(1):]
        elif kind == 8:  # deep nesting
            depth = rng.choice([50, 500, 5000])
            text = text.replace("dense<", "dense<" + "[" * depth, 1).replace(">", "]" * depth + ">", 1)
    return text


def interesting(kind, rng):
    """A value of an attribute type (ops.ATTR_TYPES) near the edges."""
    small = [-3, -2, -1, 0, 1, 2, 3, 4, 7, 16]
    if kind == "int":
        return rng.choice(small + [2**31, -2**31, 2**62, 10**18])
    if kind == "ints":
        return [rng.choice(small + [2**31, 2**40]) for _ in range(rng.randrange(7))]
    if kind == "float":
        return rng.choice([0.0, -0.0, 1e-45, 3.4e38, float("inf"), float("-inf"), float("nan"),
                           0.5, -2.0, 1e30])
    if kind == "floats":
        return [rng.choice([0.0, 1.0, float("nan"), -1e30]) for _ in range(rng.randrange(4))]
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "str":
        return rng.choice(["", "none", "tanh", "constant", "reflect", "edge", "wrap", "zzz",
                           "linear_gelu"])
    if kind == "dtype":
        from hetc.ir import dtypes

        return rng.choice(dtypes.all_dtypes())
    return np.array(rng.choice([0, 1.5, [1, 2]]))


def mutate_graph(text, weights, rng):
    """The seed parsed, one op's attribute or operand changed, and the types
    of every op after it inferred again (so the verifier lets most through
    and the interpreter and code generator meet the edge cases)."""
    from hetc.ir import parse, print_graph
    from hetc.ir.ops import get_op

    g = parse(text, weights=weights, verify=False)
    ops = [op for op in g.ops if op.kind != "const"]
    if not ops:
        return text
    op = rng.choice(ops)
    attrs = get_op(op.kind).attrs
    if attrs and rng.random() < 0.8:
        a = rng.choice(attrs)
        op.attrs[a.name] = interesting(a.type, rng)
    elif op.inputs:
        earlier = g.inputs + [v for o in g.ops[:g.ops.index(op)] for v in o.outputs]
        op.inputs[rng.randrange(len(op.inputs))] = rng.choice(earlier)
    for o in g.ops:
        if o.kind == "const":
            continue
        try:
            types = get_op(o.kind).infer([v.type for v in o.inputs], o.attrs, o.body)
        except Exception:  # noqa: BLE001 - left for the verifier to refuse
            break
        for v, t in zip(o.outputs, types):
            v.type = t
    return print_graph(g)


class HirFuzzer:
    """case(seed, index) makes one mutant and returns what feeds it to hetc."""

    salt = "hir"

    def __init__(self, corpus):
        from hetc.ir.weights import WeightStore

        self.seeds = []
        for path in corpus.hir:
            with open(path) as f:
                text = f.read()
            npz = path[:-4] + ".npz"
            self.seeds.append((text, WeightStore.load(npz) if os.path.exists(npz) else WeightStore()))
        self.texts = [t for t, _ in self.seeds]

    def case(self, seed, index):
        from hetc.ir import parse

        from hetc.core.errors import HetcError

        rng = _rng(seed, index, self.salt)
        text, weights = rng.choice(self.seeds)
        try:
            if rng.random() < 0.5:
                text = mutate_graph(text, type(weights)(weights), rng)
            else:
                raise HetcError("a text mutant")
        except HetcError:  # or the seed is one of the lit tests' bad graphs
            text = mutate_text(text, rng, self.texts)
        return lambda: exercise(parse(text, "mutant.hir", type(weights)(weights)), index)


# -- the ONNX fuzzer -------------------------------------------------------------------------

def _names(graph):
    names = [i.name for i in graph.input] + [t.name for t in graph.initializer]
    for n in graph.node:
        names += list(n.output)
    return [n for n in names if n]


def mutate_model(model, rng):
    """A structural change or two to a ModelProto (in place)."""
    import onnx
    from onnx import AttributeProto, TensorProto

    g = model.graph
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.randrange(16)
        values = list(g.input) + list(g.output) + list(g.value_info)
        if kind == 0 and values:  # an element type
            v = rng.choice(values)
            v.type.tensor_type.elem_type = rng.choice([0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 14, 15, 16,
                                                       17, 21, 22, 23, 26, 27, 99])
        elif kind == 1 and values:  # a dimension
            dims = rng.choice(values).type.tensor_type.shape.dim
            if len(dims):
                d = rng.choice(dims)
                if rng.random() < 0.2:
                    d.dim_param = rng.choice(["N", "", "é"])
                else:
                    d.dim_value = rng.choice([0, 1, 2, 5, 2**31, 2**40, 10**12, -1, -7])
            elif rng.random() < 0.5:
                dims.add().dim_value = rng.choice([0, 3, 2**40])
        elif kind == 2 and g.node:  # an input of a node
            n = rng.choice(g.node)
            names = _names(g)
            choice = rng.randrange(5)
            if choice == 0 and n.input:
                n.input[rng.randrange(len(n.input))] = rng.choice(["", "undefined"] + names)
            elif choice == 1 and n.input:
                del n.input[rng.randrange(len(n.input))]
            elif choice == 2:
                n.input.append(rng.choice(names + [""]))
            elif choice == 3 and n.input and n.output:  # a cycle
                n.input[0] = n.output[0]
            elif n.output:
                n.output[rng.randrange(len(n.output))] = rng.choice(names + [""])
        elif kind == 3 and g.node and rng.random() < 0.5:  # an attribute's value, same type
            n = rng.choice(g.node)
            if n.attribute:
                a = rng.choice(n.attribute)
                if a.type == AttributeProto.INT:
                    a.i = rng.choice(INTS[:14])
                elif a.type == AttributeProto.INTS:
                    a.ints[:] = [rng.choice(INTS[:14]) for _ in range(rng.randrange(7))]
                elif a.type == AttributeProto.FLOAT:
                    a.f = rng.choice([0.0, -1.0, 1e30, float("nan"), float("inf")])
                elif a.type == AttributeProto.STRING:
                    a.s = rng.choice([b"", b"constant", b"reflect", b"linear", b"\xff\xfe"])
        elif kind == 3 and g.node:  # an attribute removed, retyped or added
            n = rng.choice(g.node)
            if n.attribute and rng.random() < 0.4:
                del n.attribute[rng.randrange(len(n.attribute))]
            else:
                a = rng.choice(list(n.attribute)) if n.attribute and rng.random() < 0.6 else None
                name = a.name if a is not None else rng.choice(
                    ["axis", "axes", "to", "perm", "kernel_shape", "pads", "strides", "mode",
                     "keepdims", "group", "value", "transB", "epsilon", "dilations", "shape"])
                if a is not None:
                    n.attribute.remove(a)
                kind_a = rng.randrange(6)
                if kind_a == 0:
                    new = onnx.helper.make_attribute(name, rng.choice(INTS[:-1]))
                elif kind_a == 1:
                    new = onnx.helper.make_attribute(name, [rng.choice(INTS[:-1])
                                                            for _ in range(rng.randrange(1, 6))])
                elif kind_a == 2:
                    new = onnx.helper.make_attribute(name, rng.choice([1.5, float("nan"), -1e30]))
                elif kind_a == 3:
                    new = onnx.helper.make_attribute(name, rng.choice(["", "constant", "é", "x" * 300]))
                elif kind_a == 4:
                    new = onnx.helper.make_attribute(
                        name, onnx.numpy_helper.from_array(np.array(rng.choice(INTS[:12]))))
                else:
                    new = AttributeProto(name=name, type=AttributeProto.INTS)  # empty list
                n.attribute.append(new)
        elif kind == 4 and g.initializer:  # an initializer's data or dims
            t = rng.choice(g.initializer)
            choice = rng.randrange(6)
            if choice == 0:
                t.ClearField("raw_data")
                for f in ("float_data", "int32_data", "int64_data", "double_data"):
                    t.ClearField(f)
            elif choice == 1:
                t.dims.append(rng.choice([0, 2, 2**40]))
            elif choice == 2 and len(t.dims):
                t.dims[rng.randrange(len(t.dims))] = rng.choice([0, 3, -1, 2**33])
            elif choice == 3:
                t.data_type = rng.choice([0, 1, 7, 8, 14, 16, 21, 99])
            elif choice == 4:
                t.data_location = TensorProto.EXTERNAL
                e = t.external_data.add()
                e.key, e.value = "location", rng.choice(["../x", "/etc/passwd", "w.bin", "", "."])
            else:
                t.raw_data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        elif kind == 5 and g.node:  # an op type changed
            rng.choice(g.node).op_type = rng.choice(
                ["Add", "Reshape", "Cast", "Expand", "Gather", "Conv", "MaxPool", "Slice",
                 "Concat", "Split", "Transpose", "ReduceMean", "ConstantOfShape", "Range",
                 "Tile", "Pad", "Resize", "Einsum", "NoSuchOp"])
        elif kind == 6:  # an opset
            if model.opset_import:
                model.opset_import[0].version = rng.choice([1, 6, 7, 9, 11, 13, 17, 21, 22, 40])
        elif kind == 7 and g.node:  # nodes reordered
            nodes = list(g.node)
            rng.shuffle(nodes)
            del g.node[:]
            g.node.extend(nodes)
        elif kind == 8:  # a hostile name
            name = rng.choice(HOSTILE_NAMES).replace("\ud800", "?")
            target = rng.choice(["graph", "node", "input", "init"])
            if target == "graph":
                g.name = name
            elif target == "node" and g.node:
                rng.choice(g.node).name = name
            elif target == "input" and g.input:
                old = rng.choice(g.input).name
                _rename(g, old, name)
            elif g.initializer:
                _rename(g, rng.choice(g.initializer).name, name)
        elif kind == 9 and g.input:  # a graph input dropped
            del g.input[rng.randrange(len(g.input))]
        elif kind == 10 and g.node:  # a node dropped or doubled
            i = rng.randrange(len(g.node))
            if rng.random() < 0.5:
                del g.node[i]
            else:
                g.node.insert(i, copy.deepcopy(g.node[i]))
        elif kind == 11 and g.node:  # a Constant or Shape value that sets shapes
            n = rng.choice(g.node)
            value = np.array([rng.choice(INTS[:14]) for _ in range(rng.randrange(1, 5))], np.int64)
            const = onnx.helper.make_node("Constant", [], [f"c{rng.randrange(99)}"],
                                          value=onnx.numpy_helper.from_array(value))
            g.node.insert(0, const)
            if n.input:
                n.input[rng.randrange(len(n.input))] = const.output[0]
        elif kind == 12 and g.output:  # an output that nothing makes
            g.output[rng.randrange(len(g.output))].name = rng.choice(["nothing", ""] + _names(g))
        elif kind == 13 and g.node:  # a domain
            rng.choice(g.node).domain = rng.choice(["", "ai.onnx.ml", "com.microsoft", "x"])
        elif kind in (14, 15):  # the values of a small integer initializer (shapes, axes, pads)
            small = [t for t in g.initializer if t.data_type in (6, 7) and math.prod(t.dims) <= 8]
            if small:
                t = rng.choice(small)
                arr = onnx.numpy_helper.to_array(t)
                new = np.array([rng.choice(INTS[:16]) for _ in range(arr.size)]).reshape(arr.shape)
                t.CopyFrom(onnx.numpy_helper.from_array(new.astype(arr.dtype), t.name))
    return model


def _rename(g, old, new):
    for v in list(g.input) + list(g.output) + list(g.initializer) + list(g.value_info):
        if v.name == old:
            v.name = new
    for n in g.node:
        for seq in (n.input, n.output):
            for i, x in enumerate(seq):
                if x == old:
                    seq[i] = new


def mutate_bytes(data: bytes, rng):
    data = bytearray(data)
    for _ in range(rng.choice([1, 2, 4, 8])):
        choice = rng.randrange(4)
        if not data:
            break
        i = rng.randrange(len(data))
        if choice == 0:
            data[i] = rng.randrange(256)
        elif choice == 1:
            del data[i:i + rng.randrange(1, 16)]
        elif choice == 2:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        else:
            data = data[:i]
    return bytes(data)


class OnnxFuzzer:
    salt = "onnx"

    def __init__(self, corpus):
        self.paths = corpus.onnx
        self.tmp = tempfile.mkdtemp(prefix="hetc-fuzz-onnx-")

    def case(self, seed, index):
        import onnx

        from hetc.frontends.onnx import import_onnx

        rng = _rng(seed, index, self.salt)
        with open(rng.choice(self.paths), "rb") as f:
            data = f.read()
        if rng.random() < 0.25:  # bytes: what a damaged or hand-made file holds
            path = os.path.join(self.tmp, "m.onnx")
            with open(path, "wb") as f:
                f.write(mutate_bytes(data, rng))
            return lambda: exercise(import_onnx(path), index)
        model = mutate_model(onnx.load_from_string(data), rng)
        return lambda: exercise(import_onnx(model), index)


# -- the artifact fuzzer ---------------------------------------------------------------------

def _json_mutant(value, rng, depth=0):
    """A changed copy of a JSON value: a key dropped or retyped, a value replaced."""
    junk = [None, 0, -1, 2**63, 1.5, "", "x", "../../etc/passwd", "/abs", [], {}, [1], {"a": 1},
            True, "a" * 300]
    if isinstance(value, dict) and value and rng.random() < 0.8:
        value = dict(value)
        key = rng.choice(list(value))
        choice = rng.randrange(3)
        if choice == 0:
            del value[key]
        elif choice == 1 or depth > 3:
            value[key] = rng.choice(junk)
        else:
            value[key] = _json_mutant(value[key], rng, depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        value = list(value)
        i = rng.randrange(len(value))
        value[i] = _json_mutant(value[i], rng, depth + 1) if rng.random() < 0.5 else rng.choice(junk)
        return value
    return rng.choice(junk)


def _mutate_npz(path, rng):
    from hetc.ir.weights import STORE_KEY, read_npz, write_npz

    entries = read_npz(path, path)
    key = rng.choice(list(entries))
    if key == STORE_KEY:
        meta = _json_mutant(json.loads(str(entries[key][()])), rng)
        entries[key] = np.array(json.dumps(meta))
    else:
        shape = [rng.choice([0, 1, 3, 64]) for _ in range(rng.randrange(4))]
        entries[key] = np.zeros(shape, rng.choice([np.float32, np.int8, np.uint16, np.bool_,
                                                   np.float64, np.int64]))
    if rng.random() < 0.3:
        entries[rng.choice(["x", "__hetc_w9", "__hetc_aux9", "a:scale"])] = np.ones(2, np.float32)
    with open(path, "wb") as f:
        write_npz(f, list(entries.items()))


class ArtifactFuzzer:
    salt = "artifact"

    def __init__(self, corpus):
        self.bases = corpus.artifacts
        self.texts = []
        for path in corpus.hir[:50]:
            with open(path) as f:
                self.texts.append(f.read())
        self.tmp = tempfile.mkdtemp(prefix="hetc-fuzz-art-")

    def case(self, seed, index):
        import hetc
        from hetc.runtime.artifact import _fingerprint

        rng = _rng(seed, index, self.salt)
        folder = os.path.join(self.tmp, "a")
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(rng.choice(self.bases), folder, symlinks=True)
        mpath = os.path.join(folder, "manifest.json")
        with open(mpath) as f:
            manifest = json.load(f)
        files = sorted(manifest["files"])
        mode = rng.randrange(3)
        if mode == 0:  # the manifest itself
            manifest = _json_mutant(manifest, rng)
            if rng.random() < 0.3 and isinstance(manifest, dict):
                manifest["sources"] = [rng.choice(["../../x", "/etc/passwd", "a/b", "", ".", "..",
                                                   "model.c", "x" * 300])]
        else:  # a file; with mode 2 the manifest is rewritten to match (as an attacker would)
            rel = rng.choice(files)
            path = os.path.join(folder, rel)
            choice = rng.randrange(5)
            if choice == 0:
                os.remove(path)
            elif choice == 1:
                os.remove(path)
                os.symlink(rng.choice(["/dev/zero", "/etc/passwd", "../manifest.json"]), path)
            elif choice == 2 and rel.endswith(".hir"):
                with open(path) as f:
                    text = mutate_text(f.read(), rng, self.texts)
                with open(path, "w") as f:
                    f.write(text)
            elif choice == 2 and rel.endswith(".npz"):  # a well-formed .npz saying odd things
                _mutate_npz(path, rng)
            elif choice == 3 and rel.endswith(".json"):
                with open(path) as f:
                    doc = _json_mutant(json.load(f), rng)
                with open(path, "w") as f:
                    json.dump(doc, f)
            else:
                with open(path, "rb") as f:
                    data = f.read()
                with open(path, "wb") as f:
                    f.write(mutate_bytes(data, rng))
            if mode == 2 and os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    manifest["files"][rel] = _fingerprint(f.read())
        with open(mpath, "w") as f:
            json.dump(manifest, f)

        def use():
            module = hetc.load(folder)
            if module.target in ("x86", "amx"):  # what loading generates (building it is slow)
                from hetc.backends.x86 import packed

                packed(module.artifact)
            else:
                module(*random_inputs(module.graph, np.random.default_rng(index)))
            str(module.report)
        return use


# -- the MLIR fuzzer -------------------------------------------------------------------------

class MlirFuzzer:
    """Mutants of the corpus graphs as hetc writes them in MLIR (hetc's own
    facts included: hetc.attrs, hetc.weight_type, locations), through the
    MLIR importer. Skipped when torch-mlir's bindings are not installed."""

    salt = "mlir"

    def __init__(self, corpus):
        from hetc.ir.mlir import to_mlir
        from hetc.ir.parser import parse_file

        self.texts = []
        for path in corpus.hir[::4]:  # a quarter of the graphs: enough kinds, quick to set up
            try:
                graph = parse_file(path)
                self.texts.append(to_mlir(graph, quant=random.Random(path).choice(
                    ["dequantize", "uniform"])))
            except Exception:  # noqa: BLE001 - a graph MLIR export refuses: not a seed
                continue

    def case(self, seed, index):
        from hetc.frontends.mlir_import import import_mlir

        rng = _rng(seed, index, self.salt)
        text = mutate_text(rng.choice(self.texts), rng, self.texts)
        if rng.random() < 0.3:  # hetc's facts: JSON and type strings in attributes
            facts = list(re.finditer(r'hetc\.(attrs|weight_type|weight_form|op) = "', text))
            if facts:
                m = rng.choice(facts)
                junk = rng.choice(['{}', '\\22x\\22', '[1, 2]', 'null', 'linear',
                                   '{\\22shape\\22: [-1]}', 'fused', 'const'])
                text = text[:m.end()] + junk + text[m.end():]
        return lambda: exercise(import_mlir(text), index)


FUZZERS = {"hir": HirFuzzer, "onnx": OnnxFuzzer, "artifacts": ArtifactFuzzer,
           "mlir": MlirFuzzer}


# -- workers and the run ---------------------------------------------------------------------

def classify(fuzzer, seed, index):
    """(outcome, signature, detail) of one case."""
    from hetc.core.errors import HetcError

    try:
        fn = fuzzer.case(seed, index)
    except Exception as e:  # noqa: BLE001 - the mutation itself failed: nothing reached hetc
        return "skipped", "", f"{type(e).__name__}: {str(e)[:200]}"
    try:
        fn()
        return "ok", "", ""
    except HetcError as e:
        return "refused", "", str(e)[:200]
    except Exception as e:  # noqa: BLE001 - anything else is what the fuzzer looks for
        tb = traceback.extract_tb(e.__traceback__)
        ours = [f for f in tb if "/site-packages/" not in f.filename or "hetc" in f.filename]
        where = ours[-1] if ours else tb[-1]
        sig = f"{type(e).__name__} at {os.path.basename(where.filename)}:{where.lineno}"
        return "crash", sig, f"{type(e).__name__}: {str(e)[:200]}"


def _worker(root, name, seed, indices, conn):
    import resource
    import warnings

    warnings.filterwarnings("ignore")
    try:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ValueError, OSError):
        pass
    sys.setrecursionlimit(3000)
    fuzzer = FUZZERS[name](Corpus(root))
    conn.send(("ready",))
    for index in indices:
        conn.send((index,) + classify(fuzzer, seed, index))
    conn.close()


def run(name, count, seed=0, jobs=2, timeout=CASE_TIMEOUT_S, progress=None):
    """Counter of outcomes and {signature: (first index, detail)} of the bugs."""
    root = build_corpus()
    ctx = mp.get_context("spawn")
    todo = list(range(count))
    chunks = [todo[k::jobs] for k in range(jobs)]
    counts, bugs = Counter(), {}
    workers = []

    def start(indices):
        parent, child = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(root, name, seed, indices, child), daemon=True)
        p.start()
        child.close()
        return {"proc": p, "conn": parent, "left": list(indices), "ready": False,
                "since": time.monotonic()}

    workers = [start(c) for c in chunks if c]
    done = 0
    while workers:
        for w in list(workers):
            conn = w["conn"]
            got = False
            try:
                while conn.poll(0.05):
                    msg = conn.recv()
                    got = True
                    if msg[0] == "ready":
                        w["ready"] = True
                        continue
                    index, outcome, sig, detail = msg
                    w["left"].remove(index)
                    counts[outcome] += 1
                    done += 1
                    if outcome == "crash" and sig not in bugs:
                        bugs[sig] = (index, detail)
            except (EOFError, OSError):
                got = False
                w["proc"].join(1)
            if got:
                w["since"] = time.monotonic()
            alive = w["proc"].is_alive()
            if not w["left"] and not alive:
                workers.remove(w)
                continue
            limit = timeout if w["ready"] else 600  # the first wait includes loading the corpus
            stalled = time.monotonic() - w["since"] > limit
            if (not alive and not conn.poll()) or stalled:
                if stalled:
                    w["proc"].kill()
                w["proc"].join()
                if w["left"]:
                    index = w["left"].pop(0)
                    outcome = "hang" if stalled else "crash"
                    counts[outcome] += 1
                    done += 1
                    sig = f"{outcome}: worker {'stalled' if stalled else 'died'} " \
                          f"(exit {w['proc'].exitcode})"
                    bugs.setdefault(f"{sig} #{index}", (index, sig))
                workers.remove(w)
                if w["left"]:
                    workers.append(start(w["left"]))
        if progress:
            progress(done, count, f"{name} mutants")
    return counts, bugs


def replay(spec):
    """Run one case in this process and show its traceback."""
    name, seed, index = spec.split(":")
    fuzzer = FUZZERS[name](Corpus(build_corpus()))
    fuzzer.case(int(seed), int(index))()
    print("no crash")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in FUZZERS:
        p.add_argument(f"--{name}", type=int, default=0, metavar="N", help=f"{name} mutants")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=int, default=CASE_TIMEOUT_S, help="seconds per case")
    p.add_argument("--replay", metavar="FUZZER:SEED:INDEX", help="run one case with its traceback")
    args = p.parse_args(argv)
    if args.replay:
        replay(args.replay)
        return 0
    from hetc.core.progress import stderr_progress

    failed = 0
    for name in FUZZERS:
        n = getattr(args, name)
        if not n:
            continue
        t0 = time.monotonic()
        counts, bugs = run(name, n, args.seed, args.jobs, args.timeout, stderr_progress)
        print(f"{name}: {n} mutants in {time.monotonic() - t0:.0f} s (seed {args.seed}): "
              + ", ".join(f"{counts[k]} {k}" for k in ("ok", "refused", "crash", "hang", "skipped")))
        for sig, (index, detail) in sorted(bugs.items()):
            print(f"  {sig}: {detail}\n    replay: python tests/fuzzing.py --replay "
                  f"{name}:{args.seed}:{index}")
        failed += counts["crash"] + counts["hang"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
