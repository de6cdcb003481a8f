"""MLIR text -> a hetc Graph, so that models from torch-mlir, IREE or other
MLIR producers can be compressed and lowered by hetc (`hetc compile
model.mlir`).

MLIR's own parser and verifier read the module (the Python bindings that
ship with torch-mlir; `pip install --no-deps torch-mlir`); this module then
walks `@main` (or the one public function). What it takes (docs/mlir.md):

- `arith.constant` (dense, splat and `dense_resource` blobs), `tensor.empty`,
  `linalg.fill`: constants; transposes and reshapes of constants are folded.
- `linalg.matmul` (any transposed operands): `linear` when the right operand
  is a constant, so that hetc compresses it; `matmul` otherwise.
  `linalg.batch_matmul`: `matmul`.
- `linalg.generic` whose indexing maps are permutations and broadcasts:
  elementwise bodies (arith/math ops, comparisons, selects, casts) become
  the IR's elementwise ops (hetc's own unary and GELU bodies come back as
  one op); a reduction of a sum, max, min or product becomes `reduce_*`; a
  multiply-accumulate over one reduction loop becomes `matmul`.
- `linalg.transpose`, `linalg.broadcast`, `tensor.reshape`,
  `tensor.expand_shape`, `tensor.collapse_shape`, `tensor.extract_slice`,
  `tensor.insert_slice` into an empty tensor along one axis (`concat`),
  `tensor.pad` with a constant (folded into the convolution or pooling that
  reads it), `linalg.conv_2d_nchw_fchw`, `conv_2d_ngchw_gfchw`,
  `depthwise_conv_2d_nchw_chw`, `linalg.pooling_nchw_max`, their channels-last
  forms and `linalg.reduce` (what MLIR's tosa-to-linalg gives: TOSA modules
  are converted by it first); `quant.dcast` of `!quant.uniform` types
  (lowered by MLIR's lower-quant-ops first).
- `func.call`: a function hetc wrote for a composite op (tagged `hetc.op`,
  hetc/ir/mlir.py) becomes that op again, so hetc -> MLIR -> hetc gives back
  the same graph; any other callee is imported inline.

Anything else is refused (FrontendError) naming the op and its line.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from hetc.core.errors import FrontendError, HetcError, UsageError
from hetc.ir import dtypes
from hetc.ir.graph import Graph
from hetc.ir.ops import InferError
from hetc.frontends.mlir_generic import (BODY_BINARY, ELEMENTS, REDUCE, Init, Refused, attr_value,
                                        import_generic, map_exprs)
from hetc.ir.types import NM, Quant, TensorType
from hetc.ir.verify import verify
from hetc.ir.weights import aux_key

def bindings():
    """torch-mlir's MLIR `ir` and `passmanager` modules, or a UsageError
    saying how to get them."""
    try:
        from torch_mlir import ir, passmanager
    except ImportError:
        raise UsageError("importing MLIR needs the MLIR Python bindings of torch-mlir: "
                         "pip install --no-deps torch-mlir") from None
    return ir, passmanager


def import_mlir(source, name=None) -> Graph:
    """A verified Graph of an MLIR module: `source` is a path to a .mlir file
    or the module's text."""
    path = "<string>"
    if isinstance(source, os.PathLike) or (isinstance(source, str) and "\n" not in source
                                           and os.path.isfile(source)):
        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as f:
                source = f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise FrontendError(f"{path}: cannot read: {e}") from None
        name = name or os.path.splitext(os.path.basename(path))[0]
    ir, passmanager = bindings()
    _check_in_a_child(source, path)
    with ir.Context():
        try:
            module = _parsed(ir, passmanager, source)
        except ir.MLIRError as e:
            raise FrontendError(f"{path}: not a valid MLIR module: {_diagnostics(e)}") from None
        funcs = {}
        for op in module.body.operations:
            sym = op.attributes["sym_name"] if "sym_name" in op.attributes else None
            if op.operation.name == "func.func" and isinstance(getattr(sym, "value", None), str):
                funcs[sym.value] = op
        main = _entry(funcs, path)
        name = re.sub(r"[^A-Za-z0-9_]", "_", _fact(main, "hetc.graph") or name or "main")
        g = _Importer(path, funcs, _resources(source), name).run(main)
    verify(g)
    return g


def _pipelines(source):
    """MLIR's own passes a module needs before hetc reads it: quant.dcast of
    quant.uniform types lowered, TOSA converted to linalg on tensors."""
    return [p for p, needed in ((LOWER_QUANT, "quant." in source),
                                (TOSA_TO_LINALG, "tosa." in source)) if needed]


def _parsed(ir, passmanager, source):
    """The module parsed, verified and lowered by MLIR (MLIRError for what
    MLIR refuses)."""
    ir.Context.current.allow_unregistered_dialects = False
    module = ir.Module.parse(source)
    module.operation.verify()
    for pipeline in _pipelines(source):
        passmanager.PassManager.parse(pipeline).run(module.operation)
    return module


# MLIR's parser (a release build) can crash on malformed text: a module from
# elsewhere is first parsed, verified and lowered in a child process (the
# same steps as _parsed, importing only MLIR), so that a crash there is an
# error here, not the end of the user's process
CHILD = """
import sys
from torch_mlir import ir, passmanager
source = sys.stdin.buffer.read().decode("utf-8")
with ir.Context() as ctx:
    ctx.allow_unregistered_dialects = False
    try:
        module = ir.Module.parse(source)
        module.operation.verify()
        for pipeline in sys.argv[1:]:
            passmanager.PassManager.parse(pipeline).run(module.operation)
    except ir.MLIRError:
        pass  # refused: the parent says why
    except MemoryError:
        sys.exit(3)
"""
CHILD_TIMEOUT_S = 600


def _check_in_a_child(source, path):
    import subprocess
    import sys

    try:
        p = subprocess.run([sys.executable, "-c", CHILD, *_pipelines(source)],
                           input=source.encode("utf-8"), capture_output=True,
                           timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FrontendError(f"{path}: MLIR did not finish parsing it in {CHILD_TIMEOUT_S} s") \
            from None
    if p.returncode == 3 or b"bad_alloc" in p.stderr or b"MemoryError" in p.stderr:
        raise FrontendError(f"{path}: MLIR ran out of memory parsing it (a constant of a huge "
                            f"shape?)")
    if p.returncode:
        raise FrontendError(f"{path}: MLIR's parser failed on it (exit {p.returncode}); the "
                            f"module is malformed")


LOWER_QUANT = "builtin.module(func.func(lower-quant-ops))"
MAX_ELEMENTS = 1 << 28  # one constant: 1 GiB of f32
TOSA_TO_LINALG = ("builtin.module(func.func(tosa-to-linalg-named, tosa-to-linalg, tosa-to-arith, "
                  "tosa-to-tensor), canonicalize)")


def _diagnostics(error) -> str:
    """MLIR's diagnostics of a parse or verify error, each with its line."""
    out = []
    for d in error.error_diagnostics:
        m = re.search(r":(\d+):(\d+)", str(d.location))
        out.append(f"line {m.group(1)}: {d.message}" if m else str(d.message))
    return "; ".join(out)[:800] or str(error)[:800]


def _fact(op, key):
    """A string attribute of op (hetc's facts), or None when absent or not a string."""
    attr = op.attributes[key] if key in op.attributes else None
    value = getattr(attr, "value", None)
    return value if isinstance(value, str) else None


def _entry(funcs, path):
    if "main" in funcs:
        return funcs["main"]
    public = [f for f in funcs.values() if "sym_visibility" not in f.attributes and
              len(f.regions[0].blocks)]
    if len(public) != 1:
        raise FrontendError(f"{path}: no @main and {len(public)} public functions: name the "
                            f"entry @main")
    return public[0]


def _resources(text):
    """The `dense_resource` blobs of the module's text: key -> hex bytes."""
    section = text.rfind("dialect_resources")
    if section < 0:
        return {}
    return {m.group(1): m.group(2) for m in
            re.finditer(r'([A-Za-z0-9_.$-]+)\s*:\s*"0x([0-9A-Fa-f]*)"', text[section:])}


class _Pad:
    """A tensor.pad with a constant, kept until its consumer folds it."""

    def __init__(self, source, low, high, value):
        self.source, self.low, self.high, self.value = source, low, high, value


class _Pieces:
    """tensor.insert_slice results into an empty tensor: (offsets, value) pieces."""

    def __init__(self, shape, pieces):
        self.shape, self.pieces = tuple(shape), pieces


class _Importer:
    def __init__(self, path, funcs, resources, name, weights=None):
        self.path, self.funcs, self.resources = path, funcs, resources
        self.g = Graph(name, weights)
        self.values = {}  # MLIR value -> hetc Value | np.ndarray | float | marker
        self.layers = {}  # hetc.weight name -> its const Value (tied weights stay one)
        self.depth = 0  # callees imported inline
        self.nesting = 0  # fused regions
        self.layer_count = 0
        self.op = None
        self.const_names = {}  # MLIR constant -> the name its location gives
        self.wanted = {}  # graph value -> the name its op's location gives

    # -- errors and types -----------------------------------------------------------

    def fail(self, message, op=None):
        op = op or self.op
        where = self.path
        if op is not None:
            # a line of this file, or the source line the producer recorded
            m = re.search(r'"([^"]*)":(\d+):\d+', str(op.location))
            if m and m.group(1) == "-":
                where += f":{m.group(2)}"
            elif m:
                message += f" (written for {m.group(1)}:{m.group(2)})"
            message = f"{op.name}: {message}"
        raise FrontendError(f"{where}: {message}")

    def ttype(self, t, what="value"):
        m = re.fullmatch(r"tensor<((?:\d+x)*)([a-z0-9]+)>", str(t))
        if m is None or m.group(2) not in ELEMENTS:
            self.fail(f"{what} of type {t}: only static tensors of "
                      f"{', '.join(ELEMENTS)} are imported")
        shape = [int(d) for d in m.group(1).split("x") if d]
        if m.group(2) == "f64":
            self.demoted()
        return TensorType(shape, dtypes.get(ELEMENTS[m.group(2)]))

    def room(self, t):
        """Refuse a constant too large to hold (a splat of a huge shape)."""
        m = re.fullmatch(r"tensor<((?:\d+x)*)[a-z0-9]+>", str(t))
        numel = int(np.prod([int(d) for d in m.group(1).split("x") if d])) if m else 0
        if numel > MAX_ELEMENTS:
            self.fail(f"a constant of {numel} elements ({t}); hetc holds at most "
                      f"{MAX_ELEMENTS} in one constant")

    def demoted(self):
        note = "MLIR import: f64 arithmetic is computed in f32"
        if note not in self.g.notes:
            self.g.notes.append(note)

    # -- values ---------------------------------------------------------------------

    def raw(self, v):
        try:
            return self.values[v]
        except KeyError:
            self.fail(f"reads {v.get_name()} which is not imported")

    def tensor(self, v):
        """Operand v as a graph Value (constants and inits materialized)."""
        x = self.raw(v)
        if isinstance(x, Refused):
            self.fail(x.message)
        if isinstance(x, np.ndarray):
            name, inline = self.const_names.get(v, ("const", None))
            if inline is False:
                c = self.stored(x, name)
            else:
                c = self.g.const(x, name=name, inline=inline)
            if inline:
                self.wanted[c] = name
            self.values[v] = c
            return c
        if isinstance(x, Init):
            if x.value is None:
                self.fail(f"reads {v.get_name()}, an uninitialized tensor.empty")
            self.room(v.type)
            c = self.g.const(np.full(x.shape, x.value, dtypes.get(x.element).storage),
                             name="const", inline=None)
            self.values[v] = c
            return c
        if isinstance(x, _Pad):
            src = self.tensor_from(x.source)
            pads = list(x.low) + list(x.high)
            out = self.g.add("pad", [src], {"pads": pads, "value": float(x.value)})
            self.values[v] = out
            return out
        if isinstance(x, _Pieces):
            out = _concat(self, x)
            self.values[v] = out
            return out
        if isinstance(x, float | int):
            self.fail(f"uses the scalar {v.get_name()} as a tensor")
        return x

    def tensor_from(self, x):
        if isinstance(x, np.ndarray):
            return self.g.const(x, name="const", inline=None)
        return x

    def const(self, v):
        """The constant array of operand v, or None when it is not constant."""
        x = self.values.get(v)
        return x if isinstance(x, np.ndarray) else None

    def scalar(self, value, like="f32"):
        return self.g.const(np.asarray(value, dtypes.get(like).storage), inline=True)

    # -- the walk -------------------------------------------------------------------

    def run(self, f):
        block = f.regions[0].blocks[0]
        for i, arg in enumerate(block.arguments):
            m = re.fullmatch(r'loc\("([A-Za-z0-9_.$-]+)"\)', str(arg.location))
            self.values[arg] = self.g.add_input(m.group(1) if m else f"arg{i}",
                                                self.ttype(arg.type, f"argument {i}"))
        self.g.outputs = self.block(block)
        self.g.rename(self.wanted)
        return self.g

    def block(self, block):
        for op in block.operations:
            self.op = op.operation
            name = self.op.name
            if name == "func.return":
                return [self.tensor(v) for v in self.op.operands]
            handler = HANDLERS.get(name)
            if handler is None:
                self.fail("is not imported (docs/mlir.md lists the ops hetc reads)")
            before = len(self.g.ops)
            try:
                results = handler(self, self.op)
            except HetcError as e:
                if isinstance(e, FrontendError):
                    raise
                self.fail(str(e))
            for r, x in zip(self.op.results, results):
                self.values[r] = x
            self.name(results, before)
        self.fail("the function does not end in func.return")

    def name(self, results, before):
        """Name a single result after the op's location when it is a name
        (hetc writes each value's name so; other producers write files and
        lines, which are not names)."""
        if self.depth:
            return
        loc = str(self.op.location)
        string = r'"((?:[^"\\]|\\.)*)"'
        m = re.fullmatch(r"loc\(" + string + r'(\("inline"\))?\)', loc)
        if len(results) > 1 and re.fullmatch(r"loc\(fused\[(" + string + r",? ?)+\]\)", loc):
            hints = [_unescape(h) for h in re.findall(string, loc)]
        elif m is not None and len(results) == 1:
            hints = [_unescape(m.group(1))]
        else:
            return
        new = {v for op in self.g.ops[before:] for v in op.outputs}
        for r, x, hint in zip(self.op.results, results, hints):
            if isinstance(x, np.ndarray):
                self.const_names[r] = (hint, bool(m and m.group(2)))
            elif x in new:
                self.wanted[x] = hint

    def add(self, kind, inputs, attrs=None):
        return self.g.add(kind, inputs, attrs or {})

    # -- composite ops hetc wrote as calls -------------------------------------------

    def call(self, op):
        callee = self.funcs.get(str(op.attributes["callee"]).lstrip("@"))
        if callee is None or not len(callee.regions[0].blocks):
            self.fail(f"calls {op.attributes['callee']}, which has no body in the module")
        if "hetc.op" in callee.attributes:
            return self.hetc_op(op, callee)
        if self.depth > 64:
            self.fail("calls nest deeper than 64")
        block = callee.regions[0].blocks[0]
        for arg, v in zip(block.arguments, op.operands):
            self.values[arg] = self.raw(v)
        self.depth += 1
        saved = self.op
        try:
            outs = self.block(block)
        finally:
            self.depth -= 1
            self.op = saved
        return outs

    def hetc_op(self, op, callee):
        """The op a function tagged `hetc.op` stands for; facts that do not
        make sense (a hand-edited or hostile module) are refused."""
        try:
            return self._hetc_op(op, callee)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, InferError) as e:
            self.fail(f"calls {op.attributes['callee']}, whose hetc facts do not make sense "
                      f"({type(e).__name__}: {str(e)[:200]})")

    def _hetc_op(self, op, callee):
        kind = callee.attributes["hetc.op"].value
        try:
            attrs = json.loads(callee.attributes["hetc.attrs"].value)
        except (KeyError, ValueError):
            self.fail(f"hetc.op {kind!r} without readable hetc.attrs")
        inputs = [self.tensor(v) for v in op.operands]
        if "hetc.weight" in callee.attributes:
            inputs.insert(1, self.layer_weight(callee))
        if kind == "fused":  # its body: the function, imported as a graph of its own
            if self.nesting > 64:
                self.fail("fused regions nest deeper than 64")
            name = _fact(callee, "hetc.graph") or "body"
            inner = _Importer(self.path, self.funcs, self.resources, name, self.g.weights)
            inner.nesting = self.nesting + 1
            body = inner.run(callee)
            outs = self.g.add(kind, inputs, attrs, body=body,
                              result_types=[v.type for v in body.outputs])
        else:
            outs = self.g.add(kind, inputs, attrs)
        outs = outs if isinstance(outs, list) else [outs]
        for got, r in zip(outs, op.results):
            if got.type.shape != self.ttype(r.type).shape:
                self.fail(f"hetc.op {kind}: result {list(got.type.shape)} where the call says "
                          f"{r.type}")
        return outs

    def layer_weight(self, callee):
        """The layer weight a hetc callee holds, with its IR type (hetc.weight_type)."""
        name = callee.attributes["hetc.weight"].value
        spec = json.loads(callee.attributes["hetc.weight_type"].value)
        shape = tuple(spec["shape"])
        consts = []
        for body_op in callee.regions[0].blocks[0].operations:
            o = body_op.operation
            if o.name == "arith.constant" and str(o.results[0].type).startswith("tensor<"):
                consts.append(self.constant_array(o))
        first = next((i for i, c in enumerate(consts) if c.shape == shape), None)
        if first is None:
            self.fail(f"hetc weight {name!r}: no constant of shape {list(shape)} in its function")
        data = consts[first]
        nm = spec["nm"] and NM(*spec["nm"])
        q = spec["quant"]
        encodings = [nm] if nm else []
        form = callee.attributes["hetc.weight_form"].value \
            if "hetc.weight_form" in callee.attributes else ""
        if q and "decoded" not in form:  # codes and their scales (and zero points)
            quant = Quant(q["group"], dtypes.get(q["scale"]), q["symmetric"], q["axis"],
                          q["codebook"])
            dtype = dtypes.get(spec["dtype"])
            order = spec.get("order") or ["NM", "Quant"]  # the type's encodings in its order
            t = TensorType(shape, dtype, sorted([quant] + encodings,
                                                key=lambda e: order.index(type(e).__name__)))
            shape_p = quant.param_shape(shape)
            # after the codes: the scales (the first float constant of their size),
            # then the zero points (hetc writes them after; MLIR's lowering as integers)
            params = [c for c in consts[first + 1:] + consts[:first] if c.size == np.prod(shape_p)]
            scale = next((c for c in params if c.dtype.kind == "f"), None)
            zero = next((c for c in params if c is not scale), None)
            if scale is None or (zero is None and not q["symmetric"]):
                self.fail(f"hetc weight {name!r}: its scales are not in its function")
            key = self.existing(name, t)
            if key is not None:
                return key
            if dtype.kind == "uint":  # codes in a signless container: their low bits
                data = np.asarray(data, np.int64) & ((1 << dtype.bits) - 1)
            value = self.g.const(np.asarray(data).astype(dtype.storage), name=name, type=t)
            stored = value.producer.attrs["name"]
            self.g.weights[aux_key(stored, "scale")] = \
                scale.reshape(shape_p).astype(quant.scale.storage)
            if not q["symmetric"]:
                self.g.weights[aux_key(stored, "zero")] = \
                    (np.asarray(zero).astype(np.int64) & ((1 << dtype.bits) - 1)
                     if dtype.kind == "uint" else zero).reshape(shape_p).astype(dtype.storage)
        else:  # f32, or written decoded to f32 (the note says so)
            if q:
                self.g.notes.append(f"MLIR import: weight {name} was written decoded to f32; "
                                    f"it is imported as f32")
            t = TensorType(shape, dtypes.f32, encodings)
            key = self.existing(name, t)
            if key is not None:
                return key
            value = self.stored(data.astype(np.float32), name, t)
        self.layers[name] = value
        return value

    def stored(self, array, name, t=None):
        """A stored constant named `name`: the one already in the graph when
        it holds the same type and bytes (a weight tied between two layers,
        or written both in @main and in a layer's function), else a new one."""
        for op in self.g.ops:
            if op.kind == "const" and op.attrs.get("name") == name:
                old = self.g.weights[name]
                if (t is None or op.output.type == t) and old.dtype == array.dtype and \
                        old.shape == array.shape and old.tobytes() == array.tobytes():
                    return op.output
        return self.g.const(array, name=name, type=t)

    def layer(self, kind):
        """A name for the weight of a layer the module does not name
        (linear0.weight, conv1.weight, ...: the report's layer names)."""
        self.layer_count += 1
        return f"{kind}{self.layer_count - 1}.weight"

    def existing(self, name, t):
        v = self.layers.get(name)
        return v if v is not None and v.type == t else None

    # -- constants ------------------------------------------------------------------

    def constant_array(self, op):
        attr = op.attributes["value"]
        self.room(op.results[0].type)
        text = str(attr)
        narrow = re.fullmatch(r"tensor<((?:\d+x)*)i([2-7])>", str(op.results[0].type))
        if narrow is not None:  # sub-byte codes (quant.uniform storage)
            shape = [int(d) for d in narrow.group(1).split("x") if d]
            data = _narrow_ints(text, int(narrow.group(2)))
            if data.size not in (1, int(np.prod(shape))):
                self.fail(f"a constant of {data.size} elements for {op.results[0].type}")
            return np.broadcast_to(data, (int(np.prod(shape)),)).reshape(shape).copy()
        t = self.ttype(op.results[0].type, "constant")
        storage = t.dtype.storage
        if text.startswith("dense_resource<"):
            key = text[len("dense_resource<"):text.index(">")]
            blob = self.resources.get(key)
            if blob is None:
                self.fail(f"dense_resource {key} has no blob in the module")
            raw = bytes.fromhex(blob)[4:]  # the first 4 bytes are the blob's alignment
            if len(raw) != t.numel * storage.itemsize:
                self.fail(f"dense_resource {key}: {len(raw)} bytes for {t.text()}")
            return np.frombuffer(raw, storage).reshape(t.shape).copy()
        ir = bindings()[0]
        dense = ir.DenseElementsAttr(attr)
        if dense.is_splat:
            return np.full(t.shape, attr_value(dense.get_splat_value()), storage)
        return np.array(dense).astype(storage).reshape(t.shape)


def _narrow_ints(text, bits):
    """The elements (int8, flat) of a constant of i2..i7 elements, which
    MLIR's Python bindings do not read, from its text: one byte per element
    in hexadecimal, or decimal numbers, or a splat; sign-extended from `bits`."""
    hexa = re.search(r'dense<"0x([0-9A-Fa-f]*)">', text)
    if hexa:
        raw = np.frombuffer(bytes.fromhex(hexa.group(1)), np.uint8).astype(np.int64)
    else:
        body = text[text.index("dense<") + 6:text.rindex(">", 0, text.rindex(":"))]
        raw = np.array([int(n) for n in re.findall(r"-?\d+", body)], np.int64)
    raw = raw & ((1 << bits) - 1)
    return np.where(raw >= 1 << (bits - 1), raw - (1 << bits), raw).astype(np.int8)


def _unescape(text):
    """An MLIR string literal's body: \\XX hex escapes back to bytes."""
    raw = re.sub(rb"\\([0-9A-Fa-f]{2})", lambda h: bytes([int(h.group(1), 16)]),
                 text.encode("utf-8"))
    return raw.decode("utf-8", errors="replace")


# -- handlers: each takes the MLIR op and gives its results -----------------------------

HANDLERS = {}


def handles(*names):
    def add(fn):
        for n in names:
            HANDLERS[n] = fn
        return fn
    return add


def _ints(attr):
    return [int(x) for x in attr]


@handles("arith.constant")
def _constant(im, op):
    t = str(op.results[0].type)
    if not t.startswith("tensor<"):
        return [attr_value(op.attributes["value"])]
    return [im.constant_array(op)]


@handles("tensor.empty")
def _empty(im, op):
    t = im.ttype(op.results[0].type)
    return [Init(t.shape, t.dtype.name)]


@handles("linalg.fill")
def _fill(im, op):
    value = im.raw(op.operands[0])
    t = im.ttype(op.results[0].type)
    if not isinstance(value, float | int):
        im.fail("fills with a value that is not a constant")
    return [Init(t.shape, t.dtype.name, value)]


@handles("func.call")
def _call(im, op):
    return im.call(op)


def _shape_op(im, op):
    t = im.ttype(op.results[0].type)
    x = im.raw(op.operands[0])
    if isinstance(x, np.ndarray):
        return [x.reshape(t.shape)]
    return [im.add("reshape", [im.tensor(op.operands[0])], {"shape": list(t.shape)})]


handles("tensor.reshape", "tensor.expand_shape", "tensor.collapse_shape")(_shape_op)


@handles("linalg.transpose")
def _transpose(im, op):
    perm = _ints(op.attributes["permutation"])
    a = im.const(op.operands[0])
    if a is not None:
        return [np.transpose(a, perm)]
    return [im.add("transpose", [im.tensor(op.operands[0])], {"perm": perm})]


@handles("linalg.broadcast")
def _broadcast(im, op):
    t = im.ttype(op.results[0].type)
    added = set(_ints(op.attributes["dimensions"]))
    x = im.tensor(op.operands[0])
    kept = [1 if i in added else d for i, d in enumerate(t.shape)]
    x = im.add("reshape", [x], {"shape": kept})
    return [im.add("expand", [x], {"shape": list(t.shape)})]


def _matmul_maps(im, op):
    """(a transposed, b transposed) of a linalg.matmul from its indexing maps
    (d0, d1, d2: rows, columns, the summed axis)."""
    if "indexing_maps" not in op.attributes:
        return False, False
    a, b = (map_exprs(m) for m in list(op.attributes["indexing_maps"])[:2])
    forms_a, forms_b = {(0, 2): False, (2, 0): True}, {(2, 1): False, (1, 2): True}
    key_a, key_b = (tuple(e[1] if e[0] == "d" else -1 for e in m or ()) for m in (a, b))
    if key_a not in forms_a or key_b not in forms_b:
        im.fail("matmul with broadcast operands is not imported")
    return forms_a[key_a], forms_b[key_b]


def _accumulate(im, op, y, init_operand):
    """y plus the init of a contraction, unless it is a fill of 0."""
    init = im.raw(init_operand)
    if isinstance(init, Init) and init.value == 0:
        return y
    return im.add("add", [y, im.tensor(init_operand)])


@handles("linalg.matmul")
def _matmul(im, op):
    ta, tb = _matmul_maps(im, op)
    a_v, b_v, init = op.operands[0], op.operands[1], op.operands[2]
    a = im.tensor(a_v)
    if ta:
        a = im.add("transpose", [a], {"perm": [1, 0]})
    w = im.const(b_v)
    if w is not None:  # a layer: its weight [N, K], which hetc compresses
        weight = im.g.const(np.ascontiguousarray(w if tb else w.T), name=im.layer("linear"))
        y = im.add("linear", [a, weight])
    else:
        b = im.tensor(b_v)
        if tb:
            b = im.add("transpose", [b], {"perm": [1, 0]})
        y = im.add("matmul", [a, b])
    return [_accumulate(im, op, y, init)]


@handles("linalg.batch_matmul")
def _batch_matmul(im, op):
    w = im.const(op.operands[1])
    maps = [map_exprs(m) for m in list(op.attributes["indexing_maps"])[:2]] \
        if "indexing_maps" in op.attributes else None
    plain = maps in (None, [[("d", 0), ("d", 1), ("d", 3)], [("d", 0), ("d", 3), ("d", 2)]])
    if w is not None and w.shape[0] == 1 and plain:
        # one batch by a constant (TOSA's matmul): a layer, which hetc compresses
        weight = im.g.const(np.ascontiguousarray(w[0].T), name=im.layer("linear"))
        y = im.add("linear", [im.tensor(op.operands[0]), weight])
        return [_accumulate(im, op, y, op.operands[2])]
    a, b = im.tensor(op.operands[0]), im.tensor(op.operands[1])
    if "indexing_maps" in op.attributes:
        ma, mb = (map_exprs(m) for m in list(op.attributes["indexing_maps"])[:2])
        if ma == [("d", 0), ("d", 3), ("d", 1)]:
            a = im.add("transpose", [a], {"perm": [0, 2, 1]})
        elif ma != [("d", 0), ("d", 1), ("d", 3)]:
            im.fail("batch_matmul with broadcast operands is not imported")
        if mb == [("d", 0), ("d", 2), ("d", 3)]:
            b = im.add("transpose", [b], {"perm": [0, 2, 1]})
        elif mb != [("d", 0), ("d", 3), ("d", 2)]:
            im.fail("batch_matmul with broadcast operands is not imported")
    y = im.add("matmul", [a, b])
    return [_accumulate(im, op, y, op.operands[2])]


@handles("tensor.extract_slice")
def _extract_slice(im, op):
    offsets, sizes, strides = (_ints(op.attributes[k]) for k in
                               ("static_offsets", "static_sizes", "static_strides"))
    if len(op.operands) > 1 or min(offsets + sizes + strides, default=0) < 0:
        im.fail("dynamic offsets, sizes or strides are not imported")
    t = im.ttype(op.results[0].type)
    axes = list(range(len(offsets)))
    ends = [o + (s - 1) * st + 1 for o, s, st in zip(offsets, sizes, strides)]
    x = im.const(op.operands[0])
    if x is not None:
        return [x[tuple(slice(o, e, st) for o, e, st in zip(offsets, ends, strides))]
                .reshape(t.shape)]
    y = im.add("slice", [im.tensor(op.operands[0])],
               {"axes": axes, "starts": offsets, "ends": ends, "steps": strides})
    if tuple(y.type.shape) != tuple(t.shape):  # a rank-reducing slice
        y = im.add("reshape", [y], {"shape": list(t.shape)})
    return [y]


@handles("tensor.insert_slice")
def _insert_slice(im, op):
    offsets, strides = _ints(op.attributes["static_offsets"]), _ints(op.attributes["static_strides"])
    if len(op.operands) > 2 or any(s != 1 for s in strides):
        im.fail("only static, unit-stride insert_slice is imported")
    dest = im.raw(op.operands[1])
    t = im.ttype(op.results[0].type)
    if isinstance(dest, Init) and dest.value is None:
        pieces = []
    elif isinstance(dest, _Pieces):
        pieces = list(dest.pieces)
    else:
        im.fail("inserts into a tensor other than a tensor.empty (only concatenation "
                "is imported)")
    return [_Pieces(t.shape, pieces + [(offsets, op.operands[0])])]


def _concat(im, pieces):
    """The concatenation the pieces make along one axis, or an error."""
    order = sorted(pieces.pieces, key=lambda p: p[0])
    axes = {i for off, _ in order for i, o in enumerate(off) if o}
    if len(axes) > 1:
        im.fail("insert_slices that are not one concatenation")
    axis = axes.pop() if axes else 0
    values = [im.tensor(v) for _, v in order]
    at = 0
    for (off, _), x in zip(order, values):
        full = all(x.type.shape[i] == pieces.shape[i] for i in range(len(off)) if i != axis)
        if off[axis] != at or not full:
            im.fail("insert_slices that do not cover the tensor (only concatenation is imported)")
        at += x.type.shape[axis]
    if at != pieces.shape[axis]:
        im.fail("insert_slices that do not cover the tensor (only concatenation is imported)")
    return values[0] if len(values) == 1 else im.add("concat", values, {"axis": axis})



@handles("tensor.pad")
def _tensor_pad(im, op):
    low, high = _ints(op.attributes["static_low"]), _ints(op.attributes["static_high"])
    body = list(op.regions[0].blocks[0].operations)
    yielded = body[-1].operation.operands[0]
    value = None
    for b in body[:-1]:
        if b.operation.name == "arith.constant" and b.operation.results[0] == yielded:
            value = attr_value(b.operation.attributes["value"])
    if value is None:
        value = im.values.get(yielded)
    if len(op.operands) > 1 or not isinstance(value, float | int):
        im.fail("only static padding with a constant is imported")
    return [_Pad(im.tensor(op.operands[0]), low, high, value)]


def _spatial_pads(im, x_operand, fill, spatial=(2, 3)):
    """(source, [top, left, bottom, right]) of a conv/pool input: a tensor.pad
    of the two spatial axes only (2, 3 in NCHW; 1, 2 in NHWC) by `fill` is
    folded in."""
    x = im.raw(x_operand)
    h, w = spatial
    others = [d for d in range(4) if d not in spatial]
    if isinstance(x, _Pad) and x.value == fill and \
            not any(x.low[d] or x.high[d] for d in others):
        return im.tensor_from(x.source), [x.low[h], x.low[w], x.high[h], x.high[w]]
    return im.tensor(x_operand), [0, 0, 0, 0]


def _nchw(im, x):
    return im.add("transpose", [x], {"perm": [0, 3, 1, 2]})


def _nhwc(im, y):
    return im.add("transpose", [y], {"perm": [0, 2, 3, 1]})


@handles("linalg.conv_2d_nhwc_fhwc")
def _conv_nhwc(im, op):
    """Channels last (TOSA's layout): transposed to NCHW around conv2d, the
    constant weight (f, kh, kw, c) folded to (f, c, kh, kw)."""
    x, pads = _spatial_pads(im, op.operands[0], 0.0, (1, 2))
    w = im.const(op.operands[1])
    weight = im.g.const(np.ascontiguousarray(w.transpose(0, 3, 1, 2)), name=im.layer("conv")) \
        if w is not None else im.add("transpose", [im.tensor(op.operands[1])],
                                     {"perm": [0, 3, 1, 2]})
    y = im.add("conv2d", [_nchw(im, x), weight], {"padding": pads,
                                                   "stride": _pairs(op, "strides"),
                                                   "dilation": _pairs(op, "dilations")})
    return [_accumulate(im, op, _nhwc(im, y), op.operands[2])]


@handles("linalg.depthwise_conv_2d_nhwc_hwcm")
def _depthwise_nhwc(im, op):
    """Channels last with a channel multiplier m: (n, h, w, c) x (kh, kw, c, m)
    -> (n, oh, ow, c, m), as conv2d with c groups of m outputs each."""
    x, pads = _spatial_pads(im, op.operands[0], 0.0, (1, 2))
    kh, kw, c, m = im.ttype(op.operands[1].type).shape
    w = im.const(op.operands[1])
    weight = im.g.const(np.ascontiguousarray(w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)),
                        name=im.layer("conv")) if w is not None else im.add("reshape", [
                            im.add("transpose", [im.tensor(op.operands[1])],
                                   {"perm": [2, 3, 0, 1]})], {"shape": [c * m, 1, kh, kw]})
    y = im.add("conv2d", [_nchw(im, x), weight], {"padding": pads, "groups": c,
                                                   "stride": _pairs(op, "strides"),
                                                   "dilation": _pairs(op, "dilations")})
    out = list(im.ttype(op.results[0].type).shape)
    y = im.add("reshape", [_nhwc(im, y)], {"shape": out})
    return [_accumulate(im, op, y, op.operands[2])]


@handles("linalg.pooling_nhwc_max")
def _max_pool_nhwc(im, op):
    x, pads = _spatial_pads(im, op.operands[0], -np.inf, (1, 2))
    return [_nhwc(im, _max_pool_of(im, op, _nchw(im, x), pads))]


@handles("linalg.reduce")
def _linalg_reduce(im, op):
    """linalg.reduce: its combiner (a sum, max, min or product) over `dimensions`."""
    body = [o.operation for o in op.regions[0].blocks[0].operations]
    kind = BODY_BINARY.get(body[0].name) if len(body) == 2 else None
    if kind not in REDUCE:
        im.fail("a reduction other than a sum, max, min or product")
    reducer, identity = REDUCE[kind]
    x = im.tensor(op.operands[0])
    y = im.add(reducer, [x], {"axes": _ints(op.attributes["dimensions"]), "keepdims": False})
    init = im.raw(op.operands[1])
    if isinstance(init, Init) and init.value is not None and init.value == identity:
        return [y]
    return [im.add(kind, [y, im.tensor(op.operands[1])])]


def _pairs(op, name):
    return _ints(op.attributes[name]) if name in op.attributes else [1, 1]


@handles("linalg.conv_2d_nchw_fchw")
def _conv(im, op):
    x, pads = _spatial_pads(im, op.operands[0], 0.0)
    w = im.const(op.operands[1])
    weight = im.g.const(w, name=im.layer("conv")) if w is not None else \
        im.tensor(op.operands[1])
    y = im.add("conv2d", [x, weight], {"padding": pads, "stride": _pairs(op, "strides"),
                                       "dilation": _pairs(op, "dilations")})
    return [_accumulate(im, op, y, op.operands[2])]


@handles("linalg.conv_2d_ngchw_gfchw", "linalg.depthwise_conv_2d_nchw_chw")
def _grouped_conv(im, op):
    """A grouped convolution ((n, g, c/g, h, w) x (g, o/g, c/g, kh, kw)) or a
    depthwise one ((n, c, h, w) x (c, kh, kw)) as conv2d with its groups."""
    depthwise = op.name.startswith("linalg.depthwise")
    xt, wt = (im.ttype(v.type).shape for v in op.operands[:2])
    if depthwise:
        groups, x, pads = xt[1], *_spatial_pads(im, op.operands[0], 0.0)
        wshape = (wt[0], 1) + tuple(wt[1:])
    else:
        groups, pads = xt[1], [0, 0, 0, 0]
        x = im.add("reshape", [im.tensor(op.operands[0])],
                   {"shape": [xt[0], xt[1] * xt[2], xt[3], xt[4]]})
        wshape = (wt[0] * wt[1],) + tuple(wt[2:])
    w = im.const(op.operands[1])
    weight = im.g.const(w.reshape(wshape), name=im.layer("conv")) if w is not None else \
        im.add("reshape", [im.tensor(op.operands[1])], {"shape": list(wshape)})
    y = im.add("conv2d", [x, weight], {"padding": pads, "stride": _pairs(op, "strides"),
                                       "dilation": _pairs(op, "dilations"), "groups": groups})
    out = im.ttype(op.results[0].type).shape
    if tuple(y.type.shape) != tuple(out):
        y = im.add("reshape", [y], {"shape": list(out)})
    return [_accumulate(im, op, y, op.operands[2])]


@handles("linalg.pooling_nchw_max")
def _max_pool(im, op):
    x, pads = _spatial_pads(im, op.operands[0], -np.inf)
    return [_max_pool_of(im, op, x, pads)]


def _max_pool_of(im, op, x, pads):
    kernel = list(im.ttype(op.operands[1].type).shape)
    init = im.raw(op.operands[2])
    if not (isinstance(init, Init) and init.value is not None and
            (init.value == -np.inf or init.value <= -3.4e38)):
        im.fail("max pooling from an init other than the lowest float")
    return im.add("max_pool2d", [x], {"kernel": kernel, "stride": _pairs(op, "strides"),
                                      "padding": pads, "dilation": _pairs(op, "dilations")})


HANDLERS["linalg.generic"] = import_generic
