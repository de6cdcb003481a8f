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
    if artifact.target not in EXECUTORS:  # importing a backend registers its executor
        from hetc.backends import get_backend
        from hetc.targets import get_target

        get_backend(get_target(artifact.target))
    try:
        factory = EXECUTORS[artifact.target]
    except KeyError:
        raise TargetError(f"no executor for target '{artifact.target}' in this hetc") from None
    return factory(artifact)


@register_executor("ref")
def _ref(artifact):
    graph = artifact.graph
    return lambda arrays: interpret(graph, arrays)
