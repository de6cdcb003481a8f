"""The compile report: one row per layer (an op that reads weights), totals,
pass timings and notes. Printed as a table, saved as JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field

from .ir.graph import Graph


@dataclass
class LayerRow:
    name: str
    op: str
    inputs: list  # shapes of the non-weight operands
    output: list
    weights: list  # "name: type" of each weight operand
    bytes: int  # storage bytes of the weights


@dataclass
class Report:
    model: str = ""
    target: str = ""
    layers: list = field(default_factory=list)
    op_counts: dict = field(default_factory=dict)
    weight_bytes: int = 0
    passes: list = field(default_factory=list)  # [name, seconds]
    notes: list = field(default_factory=list)

    @classmethod
    def of(cls, graph: Graph, target="", passes=(), notes=()):
        rep = cls(graph.name, target, passes=[[t.name, t.seconds] for t in passes],
                  notes=list(notes))
        counts = Counter()
        for op in graph.walk():
            if op.kind == "const":
                continue
            counts[op.kind] += 1
            weights = [v for v in op.inputs if v.producer is not None and
                       v.producer.kind == "const" and "name" in v.producer.attrs]
            if not weights:
                continue
            wname = weights[0].producer.attrs["name"]
            rep.layers.append(LayerRow(
                name=wname.rsplit(".", 1)[0] if "." in wname else wname,
                op=op.kind,
                inputs=[list(v.type.shape) for v in op.inputs if v not in weights],
                output=list(op.outputs[0].type.shape),
                weights=[f"{w.producer.attrs['name']}: {w.type.text()}" for w in weights],
                bytes=sum(w.type.storage_bytes() for w in weights)))
        rep.op_counts = dict(counts.most_common())
        consts = {op.attrs["name"]: op.output.type for op in graph.walk()
                  if op.kind == "const" and "name" in op.attrs}
        rep.weight_bytes = sum(t.storage_bytes() for t in consts.values())
        return rep

    def to_dict(self):
        return asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["layers"] = [LayerRow(**r) for r in d.get("layers", [])]
        return cls(**d)

    def render(self, console=None):
        """Print the report as tables (to `console`, a rich Console)."""
        from rich.console import Console
        from rich.table import Table

        import sys

        # piped output (make, CI logs) gets a wide table instead of rich's 80 columns
        console = console or Console(width=None if sys.stdout.isatty() else 160)
        table = Table(title=f"@{self.model} for target {self.target}", title_justify="left")
        for col, just in (("layer", "left"), ("op", "left"), ("inputs", "left"),
                          ("output", "left"), ("weight", "left"), ("weight bytes", "right")):
            table.add_column(col, justify=just, overflow="fold")
        for r in self.layers:
            weight = r.weights[0].split(": ", 1)[1]
            if len(r.weights) > 1:
                weight += f" (+{len(r.weights) - 1} more)"
            table.add_row(r.name, r.op, " ".join(_shape(s) for s in r.inputs), _shape(r.output),
                          weight, f"{r.bytes:,}")
        console.print(table)
        ops = ", ".join(f"{k} x{n}" for k, n in self.op_counts.items())
        console.print(f"ops: {ops}")
        console.print(f"weights: {self.weight_bytes:,} bytes in {len(self.layers)} layers")
        if self.passes:
            console.print("passes: " + ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in self.passes))
        for note in self.notes:
            console.print(f"note: {note}")

    def __str__(self):
        from io import StringIO

        from rich.console import Console

        buf = StringIO()
        self.render(Console(file=buf, width=120, color_system=None))
        return buf.getvalue()


def _shape(s):
    return "[" + "x".join(map(str, s)) + "]"
