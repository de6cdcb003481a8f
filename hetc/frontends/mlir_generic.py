"""linalg.generic -> hetc IR, for the MLIR importer (mlir_import.py).

A generic whose indexing maps are permutations and broadcasts is computed
on whole tensors over its loop space: every operand is aligned to the loops
(transposed, size 1 where it broadcasts), each op of the body becomes the
IR's elementwise op, and a reduction of a sum, max, min, product, all or
any becomes `reduce_*` over the reduction loops (a multiply summed over one
loop: `matmul`). hetc's own unary and GELU bodies come back as one op.
"""

from __future__ import annotations

import re

import numpy as np

from hetc.core.errors import FrontendError
from hetc.ir.mlir import GELU, UNARY

# f64 is computed in f32 (producers upcast norms to f64; no hetc target runs f64)
ELEMENTS = {"f32": "f32", "f16": "f16", "bf16": "bf16", "f64": "f32", "i1": "bool", "i8": "i8",
            "i16": "i16", "i32": "i32", "i64": "i64", "index": "i64"}
BODY_BINARY = {"arith.addf": "add", "arith.subf": "sub", "arith.mulf": "mul",
               "arith.divf": "div", "arith.maximumf": "maximum", "arith.minimumf": "minimum",
               "arith.maxnumf": "maximum", "arith.minnumf": "minimum", "math.powf": "pow",
               "arith.addi": "add", "arith.subi": "sub", "arith.muli": "mul",
               "arith.maxsi": "maximum", "arith.minsi": "minimum", "arith.andi": "logical_and",
               "arith.ori": "logical_or", "arith.xori": "logical_xor", "arith.remf": "fmod"}
BODY_UNARY = {"arith.negf": "neg", "math.exp": "exp", "math.tanh": "tanh", "math.sqrt": "sqrt",
              "math.rsqrt": "rsqrt", "math.erf": "erf", "math.log": "log", "math.absf": "abs",
              "math.roundeven": "round", "math.floor": "floor", "math.ceil": "ceil",
              **{f"math.{k}": k for k in ("sin", "cos", "tan", "asin", "acos", "atan", "sinh",
                                          "cosh", "asinh", "acosh", "atanh")}}
BODY_CAST = {"arith.sitofp", "arith.uitofp", "arith.extf", "arith.truncf", "arith.fptosi",
             "arith.extsi", "arith.trunci", "arith.extui"}
# arith.cmpf / cmpi predicates -> (comparison, negated)
CMPF = {1: ("equal", False), 2: ("greater", False), 3: ("greater_equal", False),
        4: ("less", False), 5: ("less_equal", False), 6: ("equal", True), 8: ("equal", False),
        9: ("greater", False), 10: ("greater_equal", False), 11: ("less", False),
        12: ("less_equal", False), 13: ("equal", True)}
CMPI = {0: ("equal", False), 1: ("equal", True), 2: ("less", False), 3: ("less_equal", False),
        4: ("greater", False), 5: ("greater_equal", False)}
REDUCE = {"add": ("reduce_sum", 0.0), "maximum": ("reduce_max", -np.inf),
          "minimum": ("reduce_min", np.inf), "mul": ("reduce_prod", 1.0),
          "logical_and": ("reduce_min", True), "logical_or": ("reduce_max", False)}


class Init:
    """A tensor.empty (value None) or a linalg.fill: an init, not yet data."""

    def __init__(self, shape, element, value=None):
        self.shape, self.element, self.value = tuple(shape), element, value


class Refused:
    """A result hetc cannot import; an error only when something reads it."""

    def __init__(self, message):
        self.message = message


def attr_value(attr):
    """A scalar attribute's number (bool, integer or float)."""
    if hasattr(attr, "value"):
        return attr.value
    text = str(attr).split(":")[0].strip()
    try:
        return float(text)
    except ValueError:
        raise FrontendError(f"{text[:80]} where a number is expected") from None


# -- linalg.generic -------------------------------------------------------------------

def map_exprs(attr):
    """The results of an affine map attribute: ("d", i) or ("0",) each, else None."""
    out = []
    m = re.search(r"->\s*\((.*)\)\s*>?\s*$", str(attr))
    for e in (m.group(1).split(",") if m else ["?"]):
        e = e.strip()
        if re.fullmatch(r"d\d+", e):
            out.append(("d", int(e[1:])))
        elif e == "0":
            out.append(("0",))
        elif e:
            return None
    return out


def _signature(block, n_args):
    """A body as normalized lines (hetc's export tables' form), to recognize
    hetc's own unary and GELU bodies."""
    refs = {a: f"{{arg{i}}}" for i, a in enumerate(block.arguments)}
    lines = []
    for op in block.operations:
        o = op.operation
        if o.name == "linalg.yield":
            return lines, [refs.get(v) for v in o.operands]
        if o.name == "arith.constant":
            lines.append(f"arith.constant {np.float32(attr_value(o.attributes['value']))!r}")
        else:
            lines.append(f"{o.name} " + ", ".join(refs.get(v, "?") for v in o.operands))
        for r in o.results:
            refs[r] = f"%t{len(lines) - 1}"
    return lines, []


def _table(lines, names):
    out = []
    for line in lines:
        head, _, rest = line.partition(" ")
        operands = rest.rsplit(" : ", 1)[0]
        if head == "arith.constant":
            out.append(f"arith.constant {np.float32(float(operands))!r}")
        else:
            out.append(f"{head} " + operands.format(**names))
    return out


_KNOWN = [(_table(lines, {"x": "{arg0}"}), kind, {}) for kind, lines in UNARY.items()] + \
    [(_table(lines, {"x": "{arg0}"}), "gelu", {"approximate": a}) for a, lines in GELU.items()]


def import_generic(im, op):
    ins = [v for v in op.operands][:len(op.operands) - len(op.results)]
    outs = list(op.operands)[len(ins):]
    maps = [map_exprs(m) for m in op.attributes["indexing_maps"]]
    iters = ["reduction" in str(t) for t in op.attributes["iterator_types"]]
    block = op.regions[0].blocks[0]
    if any(m is None for m in maps):
        im.fail("indexing maps other than permutations and broadcasts (strided windows: "
                "use the named convolution and pooling ops)")
    rank = len(iters)
    sizes = [None] * rank
    for v, m in zip(ins + outs, maps):
        for e, d in zip(m, im.ttype(v.type).shape):
            if e[0] == "d":
                sizes[e[1]] = d
    if None in sizes:
        im.fail("a loop that no operand bounds")
    lines, yielded = _signature(block, len(ins) + len(outs))
    if not any(iters) and len(ins) == 1 and len(outs) == 1 and yielded == ["%t" + str(
            len(lines) - 1)] and maps[0] == maps[1] == [("d", i) for i in range(rank)]:
        for table, kind, attrs in _KNOWN:
            if lines == table:
                return [im.add(kind, [im.tensor(ins[0])], attrs)]
    body = _Body(im, op, ins, outs, maps, sizes, iters)
    results = []
    for k, v in enumerate(list(block.operations)[-1].operation.operands):
        try:
            results.append(body.result(k, v))
        except FrontendError as e:
            if len(op.results) == 1:
                raise
            results.append(Refused(str(e)))
    return results


class _Body:
    """The block of a linalg.generic computed on whole tensors over its loop
    space (every operand aligned to the loops, size-1 where it broadcasts)."""

    def __init__(self, im, op, ins, outs, maps, sizes, iters):
        self.im, self.op, self.ins, self.outs = im, op, ins, outs
        self.maps, self.sizes, self.iters = maps, sizes, iters
        self.block = op.regions[0].blocks[0]
        self.args = list(self.block.arguments)
        self.memo = {}

    def aligned(self, v, exprs):
        """Operand v read through `exprs`, as a tensor of the loop rank."""
        im = self.im
        x = im.tensor(v)
        shape = x.type.shape
        off = len(self.sizes) - len(exprs)
        if all(e == ("d", off + j) or (e == ("0",) and shape[j] == 1)
               for j, e in enumerate(exprs)):
            return x  # numpy's broadcasting already lines it up
        dims = [(e[1], d) for e, d in zip(exprs, shape) if e[0] == "d"]
        if any(e[0] == "0" and d != 1 for e, d in zip(exprs, shape)):
            im.fail("reads index 0 of an axis longer than 1")
        if len(dims) != len(shape):
            x = im.add("reshape", [x], {"shape": [d for _, d in dims]})
        order = sorted(range(len(dims)), key=lambda i: dims[i][0])
        if order != list(range(len(dims))):
            x = im.add("transpose", [x], {"perm": order})
        full = [1] * len(self.sizes)
        for p, d in dims:
            full[p] = d
        if list(x.type.shape) != full:
            x = im.add("reshape", [x], {"shape": full})
        return x

    def body_op(self, v):
        """The body op defining v, or None (a block argument, or a value
        captured from outside the generic)."""
        if v in self.args:
            return None
        o = v.owner.operation if v.owner is not None else None
        return o if o is not None and o.parent is not None and \
            o.parent.name == "linalg.generic" else None

    def value(self, v):
        """Body value v over the loop space: a graph Value or a python number.
        The body ops v needs are found with a stack and computed in block
        order, so a long body does not recurse deeply."""
        if v in self.memo:
            return self.memo[v]
        if v in self.args:
            i = self.args.index(v)
            if i >= len(self.ins):
                self.im.fail("reads its output inside an elementwise body")
            self.memo[v] = self.aligned(self.ins[i], self.maps[i])
            return self.memo[v]
        if self.body_op(v) is None:
            out = self.im.raw(v)  # captured from outside: a scalar
            if not isinstance(out, float | int):
                self.im.fail("reads a tensor from outside its body")
            self.memo[v] = out
            return out
        needed, stack = set(), [v]
        while stack:
            u = stack.pop()
            o = self.body_op(u)
            if o is None or u in self.memo or o.results[0] in needed:
                continue
            needed.add(o.results[0])
            stack.extend(o.operands)
        for body_op in self.block.operations:
            o = body_op.operation
            if o.results and o.results[0] in needed and o.results[0] not in self.memo:
                self.memo[o.results[0]] = self.compute(o)
        return self.memo[v]

    def tensor(self, x, like="f32"):
        return x if not isinstance(x, float | int) else self.im.scalar(x, like)

    def compute(self, o):
        im = self.im
        name = o.name
        if name == "arith.constant":
            return attr_value(o.attributes["value"])
        vals = [self.value(v) for v in o.operands]
        result_type = str(o.results[0].type)
        if name in BODY_BINARY:
            a, b = vals
            kind = BODY_BINARY[name]
            elem = ELEMENTS.get(str(o.operands[0].type), "f32")
            if kind.startswith("logical") and elem != "bool":
                kind = kind.replace("logical", "bitwise")
            return im.add(kind, [self.tensor(a, elem), self.tensor(b, elem)])
        if name in BODY_UNARY:
            return im.add(BODY_UNARY[name], [self.tensor(vals[0])])
        if name in ("arith.cmpf", "arith.cmpi"):
            pred = int(str(o.attributes["predicate"]).split(":")[0])
            kind, negate = (CMPF if name == "arith.cmpf" else CMPI).get(pred, (None, False))
            if kind is None:
                im.fail(f"comparison predicate {pred} is not imported")
            elem = ELEMENTS.get(str(o.operands[0].type), "f32")
            out = im.add(kind, [self.tensor(vals[0], elem), self.tensor(vals[1], elem)])
            return im.add("logical_not", [out]) if negate else out
        if name == "arith.select":
            elem = ELEMENTS.get(result_type, "f32")
            return im.add("where", [self.tensor(vals[0], "bool"), self.tensor(vals[1], elem),
                                    self.tensor(vals[2], elem)])
        if name == "math.fpowi":  # a float to an integer power
            b = vals[1]
            b = float(b) if isinstance(b, float | int) else im.add("cast", [b], {"dtype": "f32"})
            return im.add("pow", [self.tensor(vals[0]), self.tensor(b)])
        if name == "linalg.index":  # the loop's position: an arange along it
            d = int(o.attributes["dim"].value)
            shape = [1] * len(self.sizes)
            shape[d] = self.sizes[d]
            return im.g.const(np.arange(self.sizes[d], dtype=np.int64).reshape(shape),
                              name="index", inline=None)
        if name in ("arith.index_cast", "arith.index_castui"):
            return self.tensor(vals[0], "i64")
        if "f64" in (result_type, str(o.operands[0].type)) if o.operands else False:
            im.demoted()
        if name in BODY_CAST:
            x = self.tensor(vals[0], ELEMENTS.get(str(o.operands[0].type), "f32"))
            if ELEMENTS.get(result_type, "f32") == x.type.dtype.name:
                return x  # f64 <-> f32 casts, computed in f32
            return im.add("cast", [x], {"dtype": ELEMENTS.get(result_type, "f32")})
        im.fail(f"body op {name} is not imported")

    def result(self, k, v):
        """Result k (yielding v) as a graph Value of the result's type."""
        im = self.im
        out_map, out_t = self.maps[len(self.ins) + k], im.ttype(self.op.results[k].type)
        if not any(self.iters):
            x = self.tensor(self.value(v), out_t.dtype.name)
            return self.place(x, out_map, out_t, reduced=())
        acc = self.args[len(self.ins) + k]
        o = self.body_op(v)
        kind = BODY_BINARY.get(o.name) if o is not None else None
        if kind not in REDUCE or acc not in list(o.operands):
            im.fail("a reduction other than a sum, max, min or product of its inputs")
        other = [x for x in o.operands if x != acc]
        matmul = self.contraction(other[0], out_map) if kind == "add" and len(other) == 1 \
            else None
        if matmul is not None:
            y = matmul
        else:
            x = self.tensor(self.value(other[0]))
            full = [s for s in self.sizes]
            if list(x.type.shape) != full:
                x = im.add("expand", [x], {"shape": full})
            reduced = [i for i, r in enumerate(self.iters) if r]
            reducer, identity = REDUCE[kind]
            logical = kind.startswith("logical")
            if logical:  # all / any: the min / max of 0s and 1s
                x = im.add("cast", [x], {"dtype": "f32"})
            y = im.add(reducer, [x], {"axes": reduced, "keepdims": True})
            if logical:
                y = im.add("cast", [y], {"dtype": "bool"})
            y = self.place(y, out_map, out_t, reduced)
        init = im.raw(self.outs[k])
        identity = REDUCE[kind][1]
        if isinstance(init, Init) and init.value is not None and (
                init.value == identity if not isinstance(identity, bool)
                else bool(init.value) == identity):
            return y
        return im.add(kind, [y, im.tensor(self.outs[k])])

    def contraction(self, v, out_map):
        """A multiply of two inputs summed over one loop: `matmul` (with
        transposes), when the maps have its form; else None."""
        o = self.body_op(v)
        args = self.args
        if o is None or o.name != "arith.mulf" or any(x not in args[:len(self.ins)]
                                                     for x in o.operands):
            return None
        reduced = [i for i, r in enumerate(self.iters) if r]
        if len(reduced) != 1 or len(self.ins) != 2 or any(e[0] != "d" for e in out_map):
            return None
        k = reduced[0]
        out_dims = [e[1] for e in out_map]
        a_i, b_i = (args.index(x) for x in o.operands)
        ma, mb = self.maps[a_i], self.maps[b_i]
        if len(out_dims) < 2 or any(e[0] != "d" for e in ma + mb):
            return None
        m, n, batch = out_dims[-2], out_dims[-1], out_dims[:-2]
        da, db = [e[1] for e in ma], [e[1] for e in mb]
        if da[-2:] not in ([m, k], [k, m]) or db[-2:] not in ([k, n], [n, k]) or \
                da[:-2] != batch[len(batch) - len(da) + 2:] or \
                db[:-2] != batch[len(batch) - len(db) + 2:]:
            return None
        im = self.im
        a, b = im.tensor(self.ins[a_i]), im.tensor(self.ins[b_i])
        if da[-2:] == [k, m]:
            a = im.add("transpose", [a], {"perm": list(range(len(da) - 2)) +
                                          [len(da) - 1, len(da) - 2]})
        if db[-2:] == [n, k]:
            b = im.add("transpose", [b], {"perm": list(range(len(db) - 2)) +
                                          [len(db) - 1, len(db) - 2]})
        return im.add("matmul", [a, b])

    def place(self, x, out_map, out_t, reduced):
        """x over the loop space (reduced loops of size 1, broadcast ones of
        size 1 or not yet a tensor) as the output: its loops in the output
        map's order, broadcast to the output's shape."""
        im = self.im
        target = [1 if i in reduced else s for i, s in enumerate(self.sizes)]
        if list(x.type.shape) != target:
            x = im.add("expand", [x], {"shape": target})
        keep = [i for i in range(len(target)) if i not in reduced]
        dims = [e[1] for e in out_map if e[0] == "d"]
        if sorted(dims) != keep:
            im.fail("an output that does not hold every parallel loop once")
        if reduced:
            x = im.add("reshape", [x], {"shape": [target[i] for i in keep]})
        order = [keep.index(d) for d in dims]
        if order != sorted(order):
            x = im.add("transpose", [x], {"perm": order})
        if list(x.type.shape) != list(out_t.shape):
            x = im.add("reshape", [x], {"shape": list(out_t.shape)})
        return x
