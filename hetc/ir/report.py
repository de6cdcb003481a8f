"""The compile report: one row per layer (an op that reads weights), totals,
pass timings and notes. Printed as a table, saved as JSON."""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from io import StringIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hetc.core.errors import printable
from hetc.ir.graph import Graph


def layer_name(weight_name: str) -> str:
    """A layer is named by its weight, without a trailing ".weight"."""
    return weight_name[:-len(".weight")] if weight_name.endswith(".weight") else weight_name


@dataclass
class LayerRow:
    name: str
    op: str
    inputs: list  # shapes of the non-weight operands
    output: list
    weights: list  # "name: type" of each weight operand
    bytes: int  # stored bytes of the weights (N:M packed, with scales)
    pattern: str = "dense"  # N:M pattern of the main weight
    precision: str = ""  # dtype the main weight is stored in
    bits: float = 0.0  # stored bits per weight of the main weight
    bytes_before: int = 0  # the weights' bytes before compression
    why: list = field(default_factory=list)  # what the compression passes decided and why
    sensitivity: float | None = None  # the layer's output error under its choice (search)
    speedup: float | None = None  # predicted on the target by its cost model (search)


@dataclass
class Report:
    model: str = ""
    target: str = ""
    layers: list = field(default_factory=list)
    op_counts: dict = field(default_factory=dict)
    weight_bytes: int = 0  # stored bytes of all weights
    weight_bytes_before: int = 0  # before compression
    compression: dict = field(default_factory=dict)  # budget, error, held_out, pruned, bits
    passes: list = field(default_factory=list)  # [name, seconds]
    notes: list = field(default_factory=list)

    @classmethod
    def of(cls, graph: Graph, target="", passes=(), notes=(), decisions=None, summary=None):
        decisions = decisions or {}
        rep = cls(graph.name, target, passes=[[t.name, t.seconds] for t in passes],
                  notes=list(notes), compression=dict(summary or {}))
        consts = {op.attrs["name"]: op.output.type for op in graph.walk()
                  if op.kind == "const" and "name" in op.attrs}
        rep.weight_bytes = sum(t.packed_bytes() for t in consts.values())
        counts, before, considered = Counter(), {}, set()
        for op in graph.walk():
            if op.kind == "const":
                continue
            counts[op.kind] += 1
            weights = [v for v in op.inputs if v.producer is not None and
                       v.producer.kind == "const" and "name" in v.producer.attrs]
            if not weights:
                continue
            main = weights[0]
            wname = main.producer.attrs["name"]
            name = layer_name(wname)
            decided = decisions.get(name, {})
            if name in decisions:
                considered.add(wname)
            t = main.type
            after = sum(w.type.packed_bytes() for w in weights)
            orig = after - t.packed_bytes() + decided.get("bytes_before", t.packed_bytes())
            before[wname] = decided.get("bytes_before", t.packed_bytes())
            rep.layers.append(LayerRow(
                name=name, op=op.kind,
                inputs=[list(v.type.shape) for v in op.inputs if v not in weights],
                output=list(op.outputs[0].type.shape),
                weights=[f"{w.producer.attrs['name']}: {w.type.text()}" for w in weights],
                bytes=after, pattern=f"{t.nm.n}:{t.nm.m}" if t.nm else "dense",
                precision=t.dtype.name, bits=round(t.packed_bytes() * 8 / max(t.numel, 1), 3),
                bytes_before=orig, why=list(decided.get("why", [])),
                sensitivity=decided.get("sensitivity"), speedup=decided.get("speedup")))
        rep.weight_bytes_before = rep.weight_bytes + sum(
            before[n] - consts[n].packed_bytes() for n in before if n in consts)
        rep.op_counts = dict(counts.most_common())
        if decisions:  # over the layers the compression passes considered
            main = [consts[n] for n in considered if n in consts]
            numel = sum(t.numel for t in main)
            pruned = sum(t.numel * (t.nm.m - t.nm.n) / t.nm.m for t in main if t.nm)
            rep.compression.update(
                pruned=pruned / numel if numel else 0.0,
                bits_per_weight=sum(t.packed_bytes() * 8 for t in main) / numel if numel else 0.0)
        return rep

    def to_dict(self):
        return asdict(self)

    def to_json(self, timings=True):
        """The report as JSON; timings=False leaves out the pass timings, so
        two compiles of one model save the same bytes."""
        d = self.to_dict()
        if not timings:
            d["passes"] = []
        return json.dumps(d, indent=2)

    @classmethod
    def from_dict(cls, d):
        """A report from its dict form (as saved); ValueError when it is not one."""
        problem = _shape_problem(d, _REPORT_FIELDS) or next(
            (p for r in d["layers"] for p in [_shape_problem(r, _ROW_FIELDS)] if p), None)
        if problem is None and not all(isinstance(p, list) and len(p) == 2 and isinstance(p[0], str)
                                       and _is_number(p[1]) for p in d["passes"]):
            problem = "'passes' must hold [name, seconds] pairs"
        c = d["compression"] if problem is None else {}
        if problem is None and not (
                set(c) <= _COMPRESSION_KEYS and ("error" not in c or _MEASURED <= set(c))
                and all(_is_number(v) or (k == "measure" and isinstance(v, str))
                        for k, v in c.items())
                and all(isinstance(v, int) for v in d["op_counts"].values())):
            problem = "'compression' and 'op_counts' must hold what a compile writes"
        if problem:
            raise ValueError(problem)
        d = dict(d)
        d["layers"] = [LayerRow(**r) for r in d["layers"]]
        return cls(**d)

    @property
    def compressed(self) -> bool:
        return bool(self.compression)

    def render(self, console=None):
        """Print the report as tables (to `console`, a rich Console)."""
        def text(x):  # names come from model files: no markup, no terminal escapes
            return escape(printable(x))

        # piped output (make, CI logs) gets a wide table instead of rich's 80 columns
        console = console or Console(width=None if sys.stdout.isatty() else 160)
        table = Table(title=text(f"@{self.model} for target {self.target}"), title_justify="left")
        cols = [("layer", "left"), ("op", "left"), ("inputs", "left"), ("output", "left"),
                ("weight", "left"), ("weight bytes", "right")]
        if self.compressed:
            cols = [("layer", "left"), ("op", "left"), ("weight", "left"), ("N:M", "left"),
                    ("dtype", "left"), ("bits/w", "right"), ("bytes before", "right"),
                    ("bytes after", "right"), ("sensitivity", "right"), ("speedup", "right"),
                    ("why", "left")]
        for col, just in cols:
            table.add_column(col, justify=just, overflow="fold")
        for r in self.layers:
            weight = r.weights[0].split(": ", 1)[1]
            if len(r.weights) > 1:
                weight += f" (+{len(r.weights) - 1} more)"
            if self.compressed:
                table.add_row(text(r.name), text(r.op), text(weight), text(r.pattern),
                              text(r.precision), f"{r.bits:g}",
                              f"{r.bytes_before:,}", f"{r.bytes:,}",
                              "-" if r.sensitivity is None else f"{r.sensitivity:.3g}",
                              "-" if r.speedup is None else f"{r.speedup:.2f}x",
                              text("; ".join(r.why)))
            else:
                table.add_row(text(r.name), text(r.op), " ".join(_shape(s) for s in r.inputs),
                              _shape(r.output), text(weight), f"{r.bytes:,}")
        console.print(table)
        ops = ", ".join(f"{k} x{n}" for k, n in self.op_counts.items())
        console.print(text(f"ops: {ops}"))
        console.print(f"weights: {self.weight_bytes:,} bytes in {len(self.layers)} layers")
        c = self.compression
        if c:
            line = (f"compression: {self.weight_bytes_before:,} -> {self.weight_bytes:,} bytes, "
                    f"{c.get('bits_per_weight', 0):.2f} bits per weight and "
                    f"{100 * c.get('pruned', 0):.1f}% pruned in the compressed layers")
            if "error" in c:
                verdict = "within" if c["error"] <= c["budget"] else "OVER"
                what = text(c.get("measure", "output error"))
                where = (f" on {c['held_out']} held-out sample(s)" if what == "output error"
                         else "")
                line += f"; {what} {c['error']:.3g}{where}, {verdict} the budget {c['budget']:g}"
            console.print(line)
        if self.passes:
            console.print(text("passes: " + ", ".join(f"{n} {s * 1e3:.1f} ms"
                                                      for n, s in self.passes)))
        for note in self.notes:
            console.print(text(f"note: {note}"))

    def __str__(self):
        buf = StringIO()
        self.render(Console(file=buf, width=160, color_system=None))
        return buf.getvalue()


def _shape(s):
    return "[" + "x".join(map(str, s)) + "]"


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _ints(x):
    return isinstance(x, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in x)


def _strs(x):
    return isinstance(x, list) and all(isinstance(i, str) for i in x)


def _kind(t):
    return lambda x: isinstance(x, t) and not isinstance(x, bool)


_COMPRESSION_KEYS = {"budget", "error", "held_out", "measure", "pruned", "bits_per_weight"}
_MEASURED = {"budget", "error", "held_out", "measure"}  # written together
# what each saved field must be, as a check and the words for it
_REPORT_FIELDS = {
    "model": (_kind(str), "a string"), "target": (_kind(str), "a string"),
    "layers": (_kind(list), "a list"), "op_counts": (_kind(dict), "an object"),
    "weight_bytes": (_kind(int), "an integer"), "weight_bytes_before": (_kind(int), "an integer"),
    "compression": (_kind(dict), "an object"), "passes": (_kind(list), "a list"),
    "notes": (_strs, "a list of strings")}
_ROW_FIELDS = {
    "name": (_kind(str), "a string"), "op": (_kind(str), "a string"),
    "inputs": (lambda x: isinstance(x, list) and all(_ints(i) for i in x), "a list of shapes"),
    "output": (_ints, "a shape"),
    "weights": (lambda x: _strs(x) and x and all(": " in w for w in x), "a list of 'name: type'"),
    "bytes": (_kind(int), "an integer"), "pattern": (_kind(str), "a string"),
    "precision": (_kind(str), "a string"), "bits": (_is_number, "a number"),
    "bytes_before": (_kind(int), "an integer"), "why": (_strs, "a list of strings"),
    "sensitivity": (lambda x: x is None or _is_number(x), "a number or null"),
    "speedup": (lambda x: x is None or _is_number(x), "a number or null")}


def _shape_problem(d, fields):
    """What keeps dict `d` from having exactly `fields`, each as its check
    wants, or None."""
    if not isinstance(d, dict) or set(d) != set(fields):
        return f"needs exactly the keys {', '.join(fields)}"
    for key, (ok, words) in fields.items():
        if not ok(d[key]):
            return f"'{key}' must be {words}"
    return None
