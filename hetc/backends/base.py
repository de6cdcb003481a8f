"""The backend contract: what every backend provides (docs/writing-a-backend.md).

A backend is one instance of a `Backend` subclass, registered under its name
(`Target.backend` names it). It declares:

- `Options`: a frozen dataclass whose fields are its `compile()` keywords and
  `hetc compile` flags; each field's metadata gives its help text (and
  `choices`). Keyword checking, the CLI flags, the message for an option
  given to another target, and the docs table all come from it.
- `problems(graph, target)`: what in the graph it cannot lower, one message
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
from dataclasses import dataclass

from hetc.core.errors import TargetError


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that has none."""


def option(default, help: str, choices: tuple = ()):
    """A field of a backend's Options: its default, help text and allowed values."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


class Backend:
    name = ""
    Options = NoOptions
    #: what the backend lowers, for the refusal message (values, ops)
    summary = ""

    def problems(self, graph, target) -> list:
        """One message per op or value of `graph` this backend cannot lower."""
        return []

    def check(self, graph, target):
        """TargetError naming every problem, or nothing."""
        refuse(target.name, graph, self.problems(graph, target), self.summary)

    def lower(self, graph, target, options):
        raise NotImplementedError

    def load(self, artifact):
        raise NotImplementedError


def op_problems(graph, lowerings, why=lambda op: None) -> list:
    """A backend's support table applied to `graph`: `op #i kind` for each op
    (constants aside) without an entry in `lowerings`, `op #i kind: reason`
    for each whose `why(op)` gives a reason it cannot be lowered."""
    out = []
    for i, op in enumerate(graph.ops):
        if op.kind == "const":
            continue
        reason = why(op) if op.kind in lowerings else ""
        if reason is not None:
            out.append(f"op #{i} {op.kind}" + (f": {reason}" if reason else ""))
    return out


def refuse(target_name, graph, problems, summary):
    """The TargetError every backend raises for what it cannot lower."""
    if problems:
        shown = "; ".join(dict.fromkeys(problems))
        raise TargetError(f"target {target_name} cannot lower graph '{graph.name}': {shown} "
                          f"({summary}); use target='ref' for it")

