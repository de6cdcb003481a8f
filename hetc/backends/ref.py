"""The reference backend: emits nothing; the interpreter runs the IR."""

from hetc.backends.base import Backend
from hetc.ir.interpret import SEMANTICS, interpret
from hetc.runtime.artifact import Artifact


class RefBackend(Backend):
    name = "ref"
    summary = "the interpreter runs every op of the IR"
    lowerings = SEMANTICS

    def lower(self, graph, target, options) -> Artifact:
        return Artifact(target.name, graph)

    def load(self, artifact):
        graph = artifact.graph
        return lambda arrays: interpret(graph, arrays)


BACKEND = RefBackend()
