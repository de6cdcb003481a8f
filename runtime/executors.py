"""Per-target executors: given an artifact, something that runs it.

An executor is a callable taking a list of numpy arrays (in graph input
order, already checked) and returning the list of outputs.
"""

from __future__ import annotations

from typing import Callable

from hetc.errors import TargetError
from hetc.interpret import interpret

EXECUTORS: dict[str, Callable] = {}


def register_executor(target: str):
    def deco(factory):
        EXECUTORS[target] = factory
        return factory
    return deco


def make_executor(artifact):
    try:
        factory = EXECUTORS[artifact.target]
    except KeyError:
        raise TargetError(f"no executor for target '{artifact.target}' in this hetc") from None
    return factory(artifact)


@register_executor("ref")
def _ref(artifact):
    graph = artifact.graph
    return lambda arrays: interpret(graph, arrays)
