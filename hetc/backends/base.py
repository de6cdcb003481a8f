"""The backend contract: what every backend provides (docs/writing-a-backend.md).

A backend is one instance of a `Backend` subclass, registered under its name
(`Target.backend` names it). It declares:

- `Options`: a frozen dataclass whose fields are its `compile()` keywords and
  `hetc compile` flags; each field's metadata gives its help text (and
  `choices`). Keyword checking, the CLI flags, the message for an option
  given to another target, and the docs table all come from it.
- Its support table: `lowerings` (op kind -> how it is lowered, a
  `hetc.core.registry.Registry`) and `refused` (op kind -> why not); every
  op kind of the IR is in one of the two (docs/ops.md is generated from
  them). `op_problem(op)` says why one op of a lowered kind cannot be
  (its dtypes or encodings), `graph_problems(graph)` what else the graph
  holds that the backend cannot take (boundary dtypes).
- `problems(graph, target)`: all of that applied to a graph, one message
  each, before anything is lowered; `check` turns them into the one
  TargetError every backend raises, in the same words.
- `lower(graph, target, options) -> Artifact`.
- `load(artifact) -> executor`: a callable taking the input arrays (in graph
  input order, already checked) and returning the outputs; safe to call
  from several threads at once.

Availability on this host is the target's (`Target.probe`, `hetc targets`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass

from hetc.core.errors import TargetError
from .regions import seen_body


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that has none."""


def option(default, help: str, choices: tuple = ()):
    """A field of a backend's Options: its default, help text and allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


def emulate_option():
    """The `emulate` option of the backends that can run their generated code
    through a CPU model of hardware this host lacks (amx, cuda)."""
    return option(None, "run the generated code through hetc's CPU model of the hardware "
                        "(exact, slow), e.g. where the hardware is missing; default: "
                        "HETC_EMULATE=1 in the environment, else native")


def emulating(asked) -> bool:
    """Whether to emulate: `asked` (True/False), else HETC_EMULATE=1."""
    if asked is not None:
        return bool(asked)
    return os.environ.get("HETC_EMULATE", "") not in ("", "0")


class Backend:
    name = ""
    Options = NoOptions
    #: what the backend lowers, for the refusal message (values, ops)
    summary = ""
    #: op kind -> its lowering; the kinds here are the ones the backend lowers
    lowerings: Mapping = {}
    #: op kind -> why the backend does not lower it
    refused: Mapping[str, str] = {}
    #: whether compile() builds the native code (when the host can run it),
    #: so that the first call does not pay for the C compiler
    builds_at_compile = False

    def op_problem(self, op) -> str | None:
        """Why `op`, of a kind in `lowerings`, cannot be lowered (its dtypes,
        encodings or attributes), or None."""
        return None

    def graph_problems(self, graph) -> list:
        """Problems beyond single ops (the dtypes at the graph's boundary)."""
        return []

    def problems(self, graph, target) -> list:
        """One message per op or value of `graph` this backend cannot lower."""
        return op_problems(graph, self.lowerings, self.refused, self.op_problem) + \
            self.graph_problems(graph)

    def support(self, kind) -> tuple[str, str]:
        """("lowered", "") / ("refused", why) / ("missing", "") for an op kind."""
        if kind in self.refused:
            return "refused", self.refused[kind]
        return ("lowered", "") if kind in self.lowerings else ("missing", "")

    def check(self, graph, target):
        """TargetError naming every problem, or nothing."""
        refuse(target.name, graph, self.problems(graph, target), self.summary)

    def lower(self, graph, target, options):
        raise NotImplementedError

    def load(self, artifact):
        raise NotImplementedError


def op_problems(graph, lowerings, refused=None, why=lambda op: None) -> list:
    """A support table applied to `graph` and the bodies inside it: for each
    op (constants aside) `op #i kind (%result)` (`#i.j` inside op #i's
    body), with the reason from
    `refused`, none when the kind has no lowering, or `why(op)`'s for a
    lowered kind it gives one for. A fused region's ops are judged with the
    region's operands (regions.Seen): its weights are constants there."""
    refused = refused or {}
    out = []

    def judge(at, op):
        if op.kind in refused:
            reason = refused[op.kind]
        elif op.kind in lowerings:
            reason = why(op)
            if reason is None:
                return
        else:
            reason = ""
        out.append(f"op #{at} {op.kind} (%{op.outputs[0].name})" +
                   (f": {reason}" if reason else ""))

    for i, op in enumerate(graph.ops):
        if op.kind == "const":
            continue
        judge(i, op)
        if op.body is not None:  # op #i.j: the j-th op of op #i's body
            for j, inner in enumerate(seen_body(op)):
                judge(f"{i}.{j}", inner)
    return out


def refuse(target_name, graph, problems, summary):
    """The TargetError every backend raises for what it cannot lower."""
    if problems:
        shown = "; ".join(dict.fromkeys(problems))
        raise TargetError(f"target {target_name} cannot lower graph '{graph.name}': {shown} "
                          f"({summary}); use target='ref' for it")
