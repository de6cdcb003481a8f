"""A graph as one generated C function over a weights blob and an activation
arena: what every C-family code generator shares. A target's emitter is a
subclass that says which ops it lowers and how (`lowerings`), which headers
the generated file includes, what runs when a model is loaded and at the
start of each call, and which graphs it refuses (`check_supported`).

The generated file has one entry point for the whole graph:

    int hetc_prepare(void);                   0, or an error number, once per load
    void *hetc_create(const void *weights);   a context: weights, arena, status
    int hetc_run(void *ctx, void **in, void **out);
    int hetc_run_range(ctx, in, out, from, to);  steps [from, to): one per op
    unsigned char *hetc_arena(void *ctx);     the context's arena (resumed runs)
    const char *hetc_error(void *ctx);        the failure of the last run
    void hetc_destroy(void *ctx);

Every value gets a pointer: graph inputs and outputs are the caller's
buffers, constants point into the weights blob (64-byte aligned, in the
layouts the lowerings choose), intermediates live in the arena planned from
their lifetimes (plan.py), and views alias their operand. Names reach the
file only through text.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from hetc.backends.base import Backend, op_problems, refuse
from hetc.ir.interpret import load_const
from hetc.ir.ops import get_op
from hetc.ir.weights import aux_key
from hetc.runtime.buffers import aligned_zeros

from .plan import alias_offset, arena_lifetimes, output_slots, plan_arena
from .text import comment
from .values import ALIGN, CTYPE, cpointer, nbytes, round_up

HERE = os.path.dirname(os.path.abspath(__file__))
#: headers in this folder that every generated file includes (sources of every artifact)
HEADERS = ("hetc_status.h",)


@dataclass
class Lowered:
    source: str  # model.c
    blob: np.ndarray  # uint8 weights, in the kernels' layouts
    arena_bytes: int
    kernels: dict = field(default_factory=dict)  # op kind / variant -> count, for the report
    notes: list = field(default_factory=list)  # what the report should say about the lowering
    # weight name -> [Slot]: where each use of a named weight lies in the
    # blob, how its logical values are laid out there and which op reads it;
    # only weights every use of which can be re-packed (Library.set_weight)
    slots: dict = field(default_factory=dict)
    run_steps: int = 0  # hetc_run_range's steps: one per op, then the output copies
    lifetimes: list = field(default_factory=list)  # plan.arena_lifetimes, by step
    written: dict = field(default_factory=dict)  # output index -> the step writing it in place


@dataclass(frozen=True)
class Slot:
    offset: int
    size: int
    pack: object  # logical values -> the bytes at offset
    step: int  # the step of the first op reading it


class Blob:
    """The weights blob: arrays appended at 64-byte aligned offsets."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, array) -> int:
        data = np.ascontiguousarray(array).view(np.uint8).reshape(-1)
        offset = self.size
        self.parts.append((offset, data))
        self.size = round_up(offset + data.nbytes)
        return offset

    def array(self):
        out = aligned_zeros(max(self.size, ALIGN))  # the kernels' vectors on cache lines
        for off, data in self.parts:
            out[off:off + data.nbytes] = data
        return out


def boundary_problems(graph, ctypes=CTYPE) -> list:
    """Graph inputs and outputs whose dtype generated code cannot hold."""
    return [f"graph value %{v.name} is {v.type.dtype}" for v in graph.inputs + graph.outputs
            if v.type.dtype.name not in ctypes]


class Emitter:
    """Lowers one graph; `run()` gives its Lowered. Subclasses set:

    target: the target name its refusals give
    lowerings: {op kind: fn(emitter, op)} that emit the op's C
    refused: {op kind: why} for the IR ops it does not lower
    why_not(op): why an op of a lowered kind cannot be (dtypes, shapes), or None
    what: what it lowers, for its refusals
    headers: files the generated C includes after hetc_status.h
    prepare: C statements of hetc_prepare (return 0 or an error number)
    """

    target = ""
    #: IR dtype -> the C type generated code holds its values in
    ctypes = CTYPE
    lowerings: dict = {}
    refused: dict = {}
    what = ""
    headers: tuple = ()
    prepare = "return 0;"

    @staticmethod
    def why_not(op):
        return None

    @classmethod
    def problems(cls, graph) -> list:
        """The support table applied to `graph`: one message per problem."""
        return op_problems(graph, cls.lowerings, cls.refused, cls.why_not) + \
            boundary_problems(graph, cls.ctypes)

    @classmethod
    def summary(cls) -> str:
        return f"{cls.what}, and lowers these ops: {', '.join(sorted(cls.lowerings))}"

    def __init__(self, graph, threads=1):
        self.g, self.threads = graph, threads
        self.blob = Blob()
        self.ptr = {}  # Value -> C expression of a pointer to its elements
        self.lines = []
        self.kernels = {}
        self.arena_size = self.scratch_size = 0
        self.scratch_base = 0  # scratch below this is taken (a fused region's intermediates)
        self.fused_ops = 0  # ops that ran inside another op's kernel
        self.weight_reads = {}  # weight name -> how many times lowerings read it
        self.step = 0  # the index of the op being lowered
        self.slots = {}  # weight name -> [Slot] (Lowered.slots)

    # -- what a target says ------------------------------------------------------
    def check_supported(self):
        """Raise a TargetError naming everything in the graph this target
        cannot lower (before anything is emitted)."""
        refuse(self.target, self.g, self.problems(self.g), self.summary())

    def skipped(self) -> set:
        """Ops the target needs not run (their results are read elsewhere)."""
        return set()

    def lower(self, op):
        """Emit the code of one op."""
        self.lowerings[op.kind](self, op)

    def reads(self, op):
        """The values op's code reads (its operands, unless a lowering reads
        others in their place): they stay in the arena until it ran."""
        return op.inputs

    def notes(self) -> list:
        """What the report should say about this lowering."""
        return []

    def prologue(self) -> list:
        """C statements at the start of every hetc_run."""
        return []

    # -- weights -----------------------------------------------------------------
    def stored(self, name):
        """The stored array of weight `name` (a quantized one's codes or
        scales), read in a layout no later values can be re-packed into."""
        self.weight_reads[name] = self.weight_reads.get(name, 0) + 1
        return self.g.weights[name]

    def values(self, v):
        """The logical values of constant v (quantized data decoded)."""
        name = v.producer.attrs.get("name")
        if name is not None:
            self.weight_reads[name] = self.weight_reads.get(name, 0) + 1
        return np.asarray(load_const(v.producer, self.g))

    def packed(self, v, pack) -> int:
        """Blob offset of constant v's logical values as `pack` lays them
        out; a named weight's place is remembered so that a build can take
        other values for it later (Lowered.slots)."""
        data = np.ascontiguousarray(pack(self.values(v)))
        offset = self.blob.add(data)
        name = v.producer.attrs.get("name")
        if name is not None:
            self.slots.setdefault(name, []).append(Slot(offset, data.nbytes, pack, self.step))
        return offset

    def replaceable(self) -> dict:
        """The slots of the float weights every read of which went through
        packed() (quantized weights' codes are read by other helpers)."""
        return {n: s for n, s in self.slots.items()
                if len(s) == self.weight_reads.get(n) and aux_key(n, "scale") not in self.g.weights}

    # -- values ------------------------------------------------------------------
    def const(self, v):
        """Pointer to a constant's values in the blob: f32 for every float
        type (narrow and quantized ones decoded), else its own C type."""
        if v not in self.ptr:
            name = v.type.dtype.name
            if name not in CTYPE or v.type.value_dtype.is_float:
                name, pack = "f32", lambda d: d.astype(np.float32)
            else:
                dtype = np.dtype(v.type.dtype.storage)
                pack = lambda d: d.astype(dtype)  # noqa: E731
            self.ptr[v] = cpointer(name, f"W + {self.packed(v, pack)}", const=True)
        return self.ptr[v]

    def val(self, v):
        if v.producer is not None and v.producer.kind == "const":
            return self.const(v)
        return self.ptr[v]

    def alias(self, op) -> bool:
        """Make op's result a view of its operand's bytes when it is one (a
        reshape, a contiguous slice: plan.alias_offset); False otherwise."""
        offset = alias_offset(op)
        if offset is None:
            return False
        x = self.val(op.inputs[0])
        self.ptr[op.output] = x if get_op(op.kind).view else f"({x} + {offset})"
        return True

    def scratch(self, nbytes):
        """Arena offset of a temporary used within one op (after the planned
        buffers and what scratch_base keeps)."""
        self.scratch_size = max(self.scratch_size, self.scratch_base + round_up(nbytes))
        return self.arena_size + self.scratch_base

    def emit(self, text):
        self.lines.append("    " + text)

    def copy_output(self, j, v):
        """Output j is value v, which its producer did not write there."""
        self.emit(f"memcpy(out[{j}], {self.val(v)}, {nbytes(v.type)});")

    def count(self, what):
        self.kernels[what] = self.kernels.get(what, 0) + 1

    # -- the whole graph -----------------------------------------------------------
    def run(self) -> Lowered:
        self.check_supported()
        skipped = self.skipped()
        ops = [op for op in self.g.ops if op.kind != "const" and op not in skipped]
        self.outs = output_slots(self.g)
        arena, self.arena_size = plan_arena(self.g, ops, self.outs, self.reads)
        for i, v in enumerate(self.g.inputs):
            self.ptr[v] = cpointer(v.type, f"in[{i}]", ctypes=self.ctypes)
        written = {}
        for self.step, op in enumerate(ops):
            for v in op.outputs:
                if v in arena:
                    self.ptr[v] = cpointer(v.type, f"A + {arena[v]}", ctypes=self.ctypes)
                elif v in self.outs:
                    self.ptr[v] = cpointer(v.type, f"out[{self.outs[v]}]", ctypes=self.ctypes)
                    written[self.outs[v]] = self.step
            self.lines.append(_step_label(self.step))
            self.emit(comment(f"{op.kind} -> {', '.join('%' + v.name for v in op.outputs)}"))
            self.lower(op)
        self.lines.append(_step_label(len(ops)))
        for j, v in enumerate(self.g.outputs):  # outputs that are inputs, constants or aliases
            if self.outs.get(v) != j:  # not written in place by its producer
                self.copy_output(j, v)
        total = self.arena_size + self.scratch_size
        return Lowered(self.source("\n".join(self.lines), total, len(ops) + 1), self.blob.array(),
                       total, self.kernels, self.notes(), self.replaceable(), len(ops) + 1,
                       arena_lifetimes(self.g, ops, arena, self.reads), written)

    def source(self, body, arena_bytes, steps) -> str:
        """The generated file around the graph's code."""
        includes = "".join(f'#include "{h}"\n' for h in HEADERS + tuple(self.headers))
        prologue = "".join(f"    {line}\n" for line in self.prologue())
        return (comment("generated by hetc: do not edit") + "\n" +
                comment(f"graph @{self.g.name}") + "\n"
                f"{includes}\n"
                f"/* A context: the weights, an activation arena and the status of the\n"
                f" * call using it. Calls at once in several threads need a context each. */\n"
                f"typedef struct {{\n"
                f"    const unsigned char *W;\n"
                f"    unsigned char *A;\n"
                f"    hetc_status status;\n"
                f"}} hetc_ctx;\n\n"
                f"int hetc_prepare(void) {{ {self.prepare} }}\n\n"
                f"const char *hetc_error(void *ctx) {{ return ((hetc_ctx *)ctx)->status.text; }}\n\n"
                f"void *hetc_create(const void *weights) {{\n"
                f"    hetc_ctx *c = calloc(1, sizeof *c);\n"
                f"    if (!c) return 0;\n"
                f"    c->W = (const unsigned char *)weights;\n"
                f"    c->A = aligned_alloc({ALIGN}, {max(arena_bytes, ALIGN)});\n"
                f"    if (!c->A) {{ free(c); return 0; }}\n"
                f"    return c;\n}}\n\n"
                f"void hetc_destroy(void *ctx) {{\n"
                f"    if (ctx) {{ free(((hetc_ctx *)ctx)->A); free(ctx); }}\n}}\n\n"
                f"/* Steps [from, to) of a run: one per op, then the output copies. A run\n"
                f" * resumed at a later step needs what earlier steps left in the arena and\n"
                f" * the outputs (the caller restores them: evaluators do). */\n"
                f"int hetc_run_range(void *ctx, void **in, void **out, int from, int to) {{\n"
                f"    hetc_ctx *c = (hetc_ctx *)ctx;\n"
                f"    const unsigned char *W = c->W;\n"
                f"    unsigned char *A = c->A;\n"
                f"    (void)W; (void)A;\n"
                f"    c->status.failed = 0;\n"
                f"    c->status.text[0] = 0;\n"
                f"    hetc_status_now = &c->status;\n"
                f"{prologue}"
                f"    switch (from) {{\n"
                f"{body}\n    default: break;\n    }}\n"
                f"    hetc_status_now = 0;\n    return c->status.failed;\n}}\n\n"
                f"int hetc_run(void *ctx, void **in, void **out) {{\n"
                f"    return hetc_run_range(ctx, in, out, 0, {steps});\n}}\n\n"
                f"unsigned char *hetc_arena(void *ctx) {{ return ((hetc_ctx *)ctx)->A; }}\n")


def _step_label(i):
    """Where hetc_run_range enters step i, and where a range ending there stops."""
    return f"    case {i}:; if (to <= {i}) break;"


def read_headers(folder, names) -> dict:
    """{name: text} of header files in `folder`."""
    out = {}
    for name in names:
        with open(os.path.join(folder, name)) as f:
            out[name] = f.read()
    return out


def shared_headers() -> dict:
    """The headers of this folder every generated file includes."""
    return read_headers(HERE, HEADERS)


class EmitterBackend(Backend):
    """A backend whose support table is its renderer's (`emitter`)."""

    emitter = Emitter

    @property
    def lowerings(self):
        return self.emitter.lowerings

    @property
    def refused(self):
        return self.emitter.refused

    def problems(self, graph, target):
        return self.emitter.problems(graph)

    @property
    def summary(self):
        return self.emitter.summary()
