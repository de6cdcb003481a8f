"""Parse the .hir text form back into a Graph.

Weights of `m.hir` live in `m.npz` beside it. Errors carry file:line:column
and what was expected; each op is type-checked as it is read, so a wrong
declared type is reported at its line.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache

import numpy as np
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from hetc.core.errors import ParseError
from hetc.core.fsutil import atomic_write_text

from . import dtypes
from .graph import Graph, Op, Value
from .ops import InferError, get_op
from .printer import print_graph
from .types import NM, Quant, TensorType
from .verify import verify as run_verifier
from .weights import WeightStore

_TOKEN_NAMES = {
    "SSA": "a value (%name)", "GLOBAL": "a name (@name)", "NAME": "an identifier",
    "TYPE_BODY": "a shape and dtype (e.g. 4x8xf32)", "INT": "an integer", "FLOAT": "a float",
    "STRING": "a string", "LPAR": "'('", "RPAR": "')'", "LBRACE": "'{'", "RBRACE": "'}'",
    "LSQB": "'['", "RSQB": "']'", "LESSTHAN": "'<'", "MORETHAN": "'>'", "COMMA": "','",
    "COLON": "':'", "EQUAL": "'='", "__ANON_0": "'->'",
}


_TYPE_BODY = re.compile(r"^((?:[0-9]+x)*)(.*)$")


@lru_cache(maxsize=1)
def _lark():
    grammar = os.path.join(os.path.dirname(__file__), "hir.lark")
    with open(grammar) as f:
        return Lark(f.read(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def _expected(names) -> str:
    shown = sorted({_TOKEN_NAMES.get(n, repr(n.lower()) if n.isupper() and not n.startswith("_")
                                     else n) for n in names})
    return ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else "")


def _present(children):
    return [c for c in children if c is not None]


class _Builder:
    def __init__(self, filename, weights):
        self.file = filename
        self.weights = weights

    def error(self, node, message):
        meta = node if isinstance(node, Token) else getattr(node, "meta", None)
        line = getattr(meta, "line", None)
        col = getattr(meta, "column", None)
        return ParseError(message, self.file, line, col)

    # -- leaves -----------------------------------------------------------------
    def global_name(self, tok: Token) -> str:
        s = str(tok)[1:]
        return self.string(tok, s) if s.startswith('"') else s

    def string(self, tok, text) -> str:
        """A quoted string of the text form (JSON's escapes)."""
        try:
            return json.loads(text, strict=False)  # strict=False: raw control characters too
        except ValueError as e:
            raise self.error(tok, f"bad string {text[:40]!r}: {e}") from None

    def dtype(self, node, name):
        try:
            return dtypes.get(name)
        except KeyError as e:
            raise self.error(node, e.args[0]) from None

    def tensor_type(self, t: Tree) -> TensorType:
        body = t.children[0]
        dims, dt = _TYPE_BODY.match(str(body)).groups()  # dims "4x8x", then the dtype name
        encodings = [self.encoding(e) for e in t.children[1:]]
        return TensorType([int(d) for d in dims.split("x")[:-1]], self.dtype(body, dt), encodings)

    def encoding(self, e: Tree):
        if e.data == "nm":
            n, m, axis = e.children
            return NM(int(n), int(m), -1 if axis is None else int(axis))
        params = {}
        for qp in e.children:
            key, val = qp.children
            params[str(key)] = True if val is None else str(val)
        unknown = set(params) - {"group", "scale", "zero_point", "axis", "codebook"}
        if unknown or "group" not in params or "scale" not in params:
            raise self.error(e, "quant<...> takes group=N, scale=DTYPE and optionally "
                                "zero_point, axis=N and codebook=NAME" +
                             (f"; unknown: {', '.join(sorted(unknown))}" if unknown else ""))
        try:
            return Quant(int(params["group"]), self.dtype(e, params["scale"]),
                         "zero_point" not in params, int(params.get("axis", -1)),
                         str(params.get("codebook", "")))
        except ValueError:
            raise self.error(e, "quant group and axis must be integers") from None

    def value(self, v):
        kind = v.data
        if kind == "list":
            return [self.value(c) for c in _present(v.children)]
        if kind in ("true", "false"):
            return kind == "true"
        tok = v.children[0]
        if kind == "int":
            return int(tok)
        if kind == "float":
            return float(tok)
        if kind == "string":
            return self.string(tok, str(tok))
        return str(tok)  # ident: a dtype name and the like

    # -- structure -----------------------------------------------------------------
    def graph(self, t: Tree) -> Graph:
        name_tok, args, rettypes, *ops, ret = t.children
        g = Graph(self.global_name(name_tok), self.weights)
        env: dict[str, Value] = {}
        for arg in _present(args.children):
            ssa, ty = arg.children
            self.define(g, env, ssa)
            v = Value(str(ssa)[1:], self.tensor_type(ty))
            g.inputs.append(v)
            env[v.name] = v
        ret_types = [self.tensor_type(x) for x in _present(rettypes.children)]
        for node in ops:
            g.ops.append(self.op(node, g, env))
        g.outputs = [self.use(env, tok) for tok in _present(ret.children)]
        if [v.type for v in g.outputs] != ret_types:
            raise self.error(ret, "returned types (" + ", ".join(v.type.text() for v in g.outputs)
                             + ") do not match the signature ("
                             + ", ".join(t.text() for t in ret_types) + ")")
        return g

    def define(self, g, env, tok):
        try:
            g.claim_name(str(tok)[1:])
        except ValueError as e:
            raise self.error(tok, str(e)) from None

    def use(self, env, tok) -> Value:
        try:
            return env[str(tok)[1:]]
        except KeyError:
            raise self.error(tok, f"use of undefined value {tok}") from None

    def op(self, node: Tree, g: Graph, env) -> Op:
        results = node.children[0].children
        if node.data == "generic":
            _, kind_tok, operands, attrdict, type_list, body_tree = node.children
            kind = str(kind_tok)
            inputs = [self.use(env, tok) for tok in _present(operands.children)]
            attrs = {}
            for a in _present(attrdict.children if attrdict is not None else []):
                attrs[str(a.children[0])] = self.value(a.children[1])
            body = self.graph(body_tree) if body_tree is not None else None
        else:
            kind, inputs, body = "const", [], None
            src, type_list = node.children[1], node.children[2]
            attrs = ({"name": self.global_name(src)} if node.data == "const_named"
                     else {"value": self.dense(src)})
        types = [self.tensor_type(t) for t in type_list.children]
        if len(types) != len(results):
            raise self.error(node, f"{kind} declares {len(results)} results but {len(types)} types")
        try:
            opdef = get_op(kind)
            attrs = opdef.complete_attrs(attrs)
            if kind == "const" and "value" in attrs:
                attrs["value"] = self.shape_dense(node, attrs["value"], types[0])
            if kind != "const":
                inferred = opdef.infer([v.type for v in inputs], attrs, body)
                if inferred != types:
                    raise InferError("declared type " + ", ".join(t.text() for t in types)
                                     + " but the operands give " + ", ".join(t.text() for t in inferred))
        except InferError as e:
            raise self.error(node, f"{kind}: {e}") from None
        outs = []
        for tok, ty in zip(results, types):
            self.define(g, env, tok)
            v = Value(str(tok)[1:], ty)
            env[v.name] = v
            outs.append(v)
        return Op(kind, inputs, outs, attrs, body)

    def dense(self, node: Tree):
        return self.value(node.children[0])

    def shape_dense(self, node, value, t: TensorType):
        try:
            arr = np.asarray(value, dtype=np.float64 if t.dtype.is_float else None)
            return arr.astype(t.dtype.storage).reshape(t.shape)
        except (ValueError, TypeError) as e:
            raise self.error(node, f"dense value does not fit {t.text()}: {e}") from None


def parse(text: str, filename: str = "<string>", weights: WeightStore | None = None,
          verify: bool = True) -> Graph:
    """Parse IR text. `weights` supplies the arrays of named constants."""
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, filename) from None
    g = _Builder(filename, weights if weights is not None else WeightStore()).graph(tree.children[0])
    if verify:
        run_verifier(g, where=filename)
    return g


def _syntax_error(e: UnexpectedInput, text, filename) -> ParseError:
    if isinstance(e, UnexpectedCharacters):
        msg = f"unexpected character {text[e.pos_in_stream]!r}"
        if e.allowed:
            msg += f", expected {_expected(e.allowed)}"
    elif isinstance(e, UnexpectedEOF):
        msg = f"unexpected end of input, expected {_expected(e.expected)}"
    else:
        tok = e.token if isinstance(e, UnexpectedToken) else None
        shown = "end of input" if tok is None or tok.type == "$END" else repr(str(tok))
        msg = f"unexpected {shown}, expected {_expected(getattr(e, 'expected', []) or [])}"
    line = getattr(e, "line", None)
    col = getattr(e, "column", None)
    at_end = isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END")
    if line in (None, -1) or at_end:
        line = text.count("\n") + 1
        col = len(text) - text.rfind("\n")
    return ParseError(msg, filename, line, col)


def weights_path(hir_path: str) -> str:
    return os.path.splitext(hir_path)[0] + ".npz"


def parse_file(path: str, verify: bool = True) -> Graph:
    """Parse `path` (.hir) with the weights of the .npz beside it, if any."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ParseError(f"cannot read: {e.strerror}", path) from None
    npz = weights_path(path)
    weights = WeightStore.load(npz) if os.path.exists(npz) else WeightStore()
    return parse(text, path, weights, verify)


def save(graph: Graph, path: str):
    """Write `graph` as `path` (.hir) and its weights as the .npz beside it."""
    graph.weights.save(weights_path(path))
    atomic_write_text(path, print_graph(graph))
