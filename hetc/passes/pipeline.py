"""Passes, the pass registry and the pass manager.

A pass is a small frozen dataclass whose fields are its options (as written in
a pipeline string: `fold{max_elements=1024}`) with a `run(graph, ctx)` that
rewrites the graph in place or returns a new one. Instrumentation lives here,
not in passes: verification after each pass, per-pass timing, and IR printing
before/after chosen passes. This module is part of hetc.passes, so importing it
registers the built-in passes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import ClassVar, TextIO

from hetc.core.errors import UsageError, VerifyError
from hetc.core.fsutil import atomic_write_text
from hetc.ir.graph import Graph
from hetc.ir.printer import print_graph
from hetc.ir.verify import verify
from hetc.runtime.evaluator import interpreted

PASSES: dict[str, type["Pass"]] = {}


@dataclass
class PassContext:
    """What passes may look at besides the graph."""

    target: object = None  # hetc.core.targets.Target
    report: object = None  # hetc.ir.report.Report
    calibration: list | None = None  # samples (lists of input arrays) for statistics
    held_out: list | None = None  # samples kept out of the statistics, for accuracy checks
    decisions: dict = field(default_factory=dict)  # layer -> what compression passes chose and why
    notes: list = field(default_factory=list)  # what passes want the report to say
    progress: object = None  # progress(done, total, what) for long passes, or None
    measure: object = None  # graph -> the error the accuracy budget bounds (compression.measure)
    metric: bool = False  # measure is a user's metric (else: the output error on held_out)
    # (graph, probes, runs) -> a runtime.evaluator.Evaluator for calibration runs
    evaluator: object = field(default=interpreted)


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = ""

    def run(self, graph: Graph, ctx: PassContext) -> Graph | None:
        raise NotImplementedError

    def text(self):
        opts = [f"{f.name}={_option_text(getattr(self, f.name))}" for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default]
        return self.name + ("{" + ",".join(opts) + "}" if opts else "")


def _option_text(value):
    """An option value as it parses back: quoted when it holds syntax."""
    text = str(value)
    if any(c in text for c in ',{}="') or text != text.strip():
        return '"' + text.replace('"', '\\"') + '"'
    return text


def register_pass(cls):
    """Class decorator: make a pass available by its `name` in pipelines."""
    if not cls.name or cls.name in PASSES:
        raise ValueError(f"pass name {cls.name!r} is empty or taken")
    PASSES[cls.name] = cls
    return cls


def _coerce_option(pass_name, f: dataclasses.Field, raw: str):
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':  # quoted: may hold , { } =
            return raw[1:-1].replace('\\"', '"')
        return raw
    except ValueError:
        raise UsageError(f"pass {pass_name}: option {f.name} needs a {kind}, got {raw!r}") from None


def _split_top(text, sep):
    """Split on `sep` outside braces and double quotes."""
    parts, depth, cur, quoted = [], 0, "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            pass
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise UsageError(f"pipeline {text!r}: unbalanced '}}'")
        if ch == sep and depth == 0 and not quoted:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth or quoted:
        raise UsageError(f"pipeline {text!r}: unclosed '{{' or '\"'")
    parts.append(cur)
    return parts


def parse_pipeline(text: str) -> list[Pass]:
    """`canonicalize,fold{max_elements=64},dce` -> pass objects."""
    out = []
    for item in _split_top(text.strip(), ","):
        item = item.strip()
        if not item:
            if text.strip():
                raise UsageError(f"pipeline {text!r}: empty pass name")
            continue
        name, _, rest = item.partition("{")
        name = name.strip()
        if name not in PASSES:
            raise UsageError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
        cls = PASSES[name]
        fields = {f.name: f for f in dataclasses.fields(cls)}
        opts = {}
        if rest:
            if not rest.endswith("}"):
                raise UsageError(f"pass {name}: options must end with '}}', got {item!r}")
            for kv in _split_top(rest[:-1], ","):
                if not kv.strip():
                    continue
                key, eq, val = kv.partition("=")
                key = key.strip()
                if not eq or key not in fields:
                    known = ", ".join(fields) or "none"
                    raise UsageError(f"pass {name}: unknown option {key!r} (options: {known})")
                opts[key] = _coerce_option(name, fields[key], val.strip())
        out.append(cls(**opts))
    return out


@dataclass
class PassTiming:
    name: str
    seconds: float


@dataclass
class PassManager:
    passes: list[Pass]
    verify_each: bool = True
    print_ir_after_all: bool = False
    print_ir_after: tuple[str, ...] = ()
    print_ir_before: tuple[str, ...] = ()
    stream: TextIO | None = None
    # dumps go to one .hir file each in this folder instead of the stream
    # (as MLIR's --mlir-print-ir-tree-dir)
    dump_dir: str | None = None
    timings: list[PassTiming] = field(default_factory=list)
    dumps: int = 0  # files written to dump_dir

    @classmethod
    def from_text(cls, text: str, **kw):
        mgr = cls(parse_pipeline(text), **kw)
        known = {p.name for p in mgr.passes}
        for opt in ("print_ir_after", "print_ir_before"):
            for name in getattr(mgr, opt):
                if name not in PASSES:
                    raise UsageError(f"--{opt.replace('_', '-')}: unknown pass '{name}'")
                if name not in known:
                    raise UsageError(f"--{opt.replace('_', '-')}: pass '{name}' is not in the "
                                     f"pipeline {text!r}")
        return mgr

    def _dump(self, when, p, graph):
        text = f"// -----// IR Dump {when} {p.text()} //----- //\n{print_graph(graph)}\n"
        if self.dump_dir is None:
            (self.stream or sys.stderr).write(text)
            return
        self.dumps += 1
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", p.text())[:80]
        os.makedirs(self.dump_dir, exist_ok=True)
        atomic_write_text(os.path.join(self.dump_dir, f"{self.dumps:03d}_{when.lower()}_{name}.hir"),
                          text)

    def run(self, graph: Graph, ctx: PassContext | None = None) -> Graph:
        ctx = ctx or PassContext()
        for p in self.passes:
            if p.name in self.print_ir_before:
                self._dump("Before", p, graph)
            start = time.perf_counter()
            graph = p.run(graph, ctx) or graph
            self.timings.append(PassTiming(p.text(), time.perf_counter() - start))
            if self.verify_each:
                try:
                    verify(graph)
                except VerifyError as e:
                    raise VerifyError(f"after pass {p.text()}: {e}") from None
            if self.print_ir_after_all or p.name in self.print_ir_after:
                self._dump("After", p, graph)
        return graph
