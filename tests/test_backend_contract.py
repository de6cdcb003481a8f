"""The backend contract: a new target is a folder with a Backend and one
registration line (docs/writing-a-backend.md)."""

import importlib
import sys
import textwrap

import numpy as np
import pytest

import hetc
from hetc.core.errors import TargetError, UsageError
from hetc.ir import Graph, TensorType, dtypes

# A toy backend, written as a stranger to hetc would write one: its lowerings
# emit plain C loops through backends/c; nothing outside this text changes.
TOY = '''
from dataclasses import dataclass

from hetc.backends.base import Backend, option
from hetc.backends.c.build import build
from hetc.backends.c.emitter import Emitter, shared_headers
from hetc.backends.c.library import Library
from hetc.core.registry import Registry
from hetc.runtime.artifact import Artifact
from hetc.core.targets import COMMON_NM, CostModel, Target

LOWER = Registry("toy lowerings")
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}


@LOWER.register(*SYMBOL)
def _binary(e, op):
    a, b = op.inputs
    y, n = e.ptr[op.output], op.output.type.numel
    e.emit(f"for (long i = 0; i < {n}; i++) {y}[i] = {e.val(a)}[i] {SYMBOL[op.kind]} {e.val(b)}[i];")


@LOWER.register("relu")
def _relu(e, op):
    y, x, n = e.ptr[op.output], e.val(op.inputs[0]), op.output.type.numel
    e.emit(f"for (long i = 0; i < {n}; i++) {y}[i] = {x}[i] < 0 ? 0 : {x}[i];")


class ToyEmitter(Emitter):
    lowerings = LOWER


@dataclass(frozen=True)
class ToyOptions:
    unroll: int = option(1, "how many elements a loop step handles (toy: unused)")


class ToyBackend(Backend):
    name = "toy"
    Options = ToyOptions
    summary = "f32 add, sub, mul and relu on operands of one shape"

    lowerings = LOWER

    def op_problem(self, op):
        if any(v.type.shape != op.output.type.shape or v.type.dtype.name != "f32"
               for v in op.inputs):
            return "operands of other shapes or dtypes"

    def lower(self, graph, target, options):
        self.check(graph, target)
        lowered = ToyEmitter(graph).run()
        artifact = Artifact(target.name, graph, {"model.c": lowered.source, **shared_headers()},
                            extra={"unroll": options.unroll})
        artifact.lowered = lowered
        return artifact

    def load(self, artifact):
        lowered = getattr(artifact, "lowered", None) or ToyEmitter(artifact.graph).run()
        sources = {"model.c": lowered.source, **shared_headers()}
        return Library(artifact.graph, lowered, build(sources, ["-O1", "-fPIC", "-shared"]), "toy")


TARGET = Target("toy", "a toy CPU target", "plain C", (), ("f32",), ("f32",),
                CostModel("any CPU", 10.0, {"f32": 10.0}), "canonicalize,dce", "toy")
'''


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from hetc.backends import _BACKENDS, register
    from hetc.core.targets import TARGETS

    folder = tmp_path_factory.mktemp("toy")
    (folder / "toy_backend.py").write_text(textwrap.dedent(TOY))
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("toy_backend")
        register(module.ToyBackend(), module.TARGET)  # the one line a new target needs
        yield module
    finally:
        sys.path.remove(str(folder))
        TARGETS.pop("toy", None)
        _BACKENDS.pop("toy", None)


def _graph():
    g = Graph("toy_graph")
    x = g.add_input("x", TensorType((8,), dtypes.f32))
    w = g.const(np.linspace(-1, 1, 8).astype(np.float32), "w")
    g.outputs = [g.add("relu", [g.add("mul", [g.add("add", [x, w]), x])])]
    return g


def test_a_registered_backend_compiles_runs_and_saves(toy, tmp_path):
    x = np.linspace(-2, 2, 8).astype(np.float32)
    want = hetc.compile(_graph())(x)
    module = hetc.compile(_graph(), target="toy", unroll=4)
    np.testing.assert_allclose(module(x), want, rtol=1e-6)
    assert module.artifact.extra["unroll"] == 4
    module.save(tmp_path / "m")
    np.testing.assert_allclose(hetc.load(tmp_path / "m")(x), want, rtol=1e-6)


def test_its_options_reach_the_cli_and_other_targets_refuse_them(toy):
    from hetc.driver.cli import build_parser

    assert "target toy: how many elements a loop step handles" in \
        build_parser()._subparsers._group_actions[0].choices["compile"].format_help()
    with pytest.raises(UsageError, match=r"unroll= does not apply to target 'x86' .*target toy"):
        hetc.compile(_graph(), target="x86", unroll=2)
    with pytest.raises(UsageError, match="emulate= does not apply to target 'toy'"):
        hetc.compile(_graph(), target="toy", emulate=True)


def test_what_it_cannot_lower_is_named_in_the_common_words(toy):
    g = Graph("g")
    x = g.add_input("x", TensorType((8,), dtypes.f32))
    g.outputs = [g.add("tanh", [x])]
    with pytest.raises(TargetError, match=r"target toy cannot lower graph 'g': op #0 tanh "
                                          r"\(%\w+\) \(f32 add, sub, mul and relu .*\); "
                                          r"use target='ref'"):
        hetc.compile(g, target="toy")


def test_the_op_matrix_lists_it(toy):
    from hetc.backends import support_matrix
    from hetc.driver import ops_table

    table = support_matrix()["toy"]
    assert table["add"] == ("lowered", "") and table["tanh"] == ("missing", "")
    assert "| op | ref | x86 | amx | cuda | npu | fpga | toy |" in ops_table.markdown("x")
