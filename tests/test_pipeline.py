"""The pass manager: pipeline strings, options, instrumentation."""

import io
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import hetc

from filecheck import filecheck
from hetc.core.errors import UsageError, VerifyError
from hetc.ir.interpret import interpret, load_const
from hetc.ir import Graph, TensorType, dtypes, parse
from hetc.passes.pipeline import PASSES, Pass, PassManager, parse_pipeline, register_pass

SRC = """graph @g(%x: tensor<4xf32>) -> (tensor<4xf32>) {
  %zero = const dense<0.0> : tensor<f32>
  %a = add(%x, %zero) : tensor<4xf32>
  %b = relu(%a) : tensor<4xf32>
  %c = relu(%a) : tensor<4xf32>
  %d = add(%b, %c) : tensor<4xf32>
  return %d
}
"""


def test_pipeline_string_with_options():
    passes = parse_pipeline("canonicalize, fold{max_elements=64,inline_elements=4},cse,dce")
    assert [p.name for p in passes] == ["canonicalize", "fold", "cse", "dce"]
    assert passes[1].max_elements == 64 and passes[1].inline_elements == 4
    assert passes[1].text() == "fold{max_elements=64,inline_elements=4}"
    assert parse_pipeline("") == []


@pytest.mark.parametrize("text, message", [
    ("canonicalize,nosuch", "unknown pass 'nosuch'"),
    ("fold{bogus=1}", "unknown option 'bogus'"),
    ("fold{max_elements=big}", "option max_elements needs a int"),
    ("fold{max_elements=1", "unclosed"),
    ("cse,,dce", "empty pass name"),
])
def test_bad_pipelines_are_usage_errors(text, message):
    with pytest.raises(UsageError, match=message):
        parse_pipeline(text)


def test_standard_pipeline_simplifies_and_keeps_numbers():
    g = parse(SRC)
    x = np.array([-1, 0.5, 2, -3], np.float32)
    (before,) = interpret(g, [x])
    manager = PassManager.from_text("canonicalize,fold,cse,dce")
    g = manager.run(g)
    (after,) = interpret(g, [x])
    np.testing.assert_array_equal(before, after)
    assert [op.kind for op in g.ops] == ["relu", "add"]
    assert [t.name for t in manager.timings] == ["canonicalize", "fold", "cse", "dce"]
    assert all(t.seconds >= 0 for t in manager.timings)


def test_print_ir_after_all_and_before_named():
    out = io.StringIO()
    PassManager.from_text("canonicalize,cse", print_ir_after_all=True, print_ir_before=("cse",),
                          stream=out).run(parse(SRC))
    filecheck(out.getvalue(), """
        CHECK: // -----// IR Dump After canonicalize //----- //
        CHECK: %b = relu(%x)
        CHECK: %c = relu(%x)
        CHECK: // -----// IR Dump Before cse //----- //
        CHECK: // -----// IR Dump After cse //----- //
        CHECK-NOT: %c = relu
        CHECK: return %d
    """)


def test_print_ir_after_needs_a_pass_in_the_pipeline():
    with pytest.raises(UsageError, match="pass 'dce' is not in the pipeline"):
        PassManager.from_text("cse", print_ir_after=("dce",))


@register_pass
@dataclass(frozen=True)
class _Breaker(Pass):
    """A deliberately wrong pass: it changes a result type."""

    name = "test-breaker"

    def run(self, graph, ctx):
        graph.ops[-1].outputs[0].type = TensorType((5,), dtypes.f32)


def test_verifier_after_each_pass_names_the_pass():
    with pytest.raises(VerifyError, match=r"(?s)after pass test-breaker: .*declared tensor<5xf32>"):
        PassManager.from_text("cse,test-breaker").run(parse(SRC))
    # without verification the broken graph goes through unnoticed
    PassManager.from_text("test-breaker", verify_each=False).run(parse(SRC))


def test_canonicalize_squares_by_a_product():
    text = """graph @g(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  %two = const dense<2.0> : tensor<f32>
  %three = const dense<3.0> : tensor<f32>
  %s = pow(%x, %two) : tensor<4xf32>
  %c = pow(%x, %three) : tensor<4xf32>
  return %s, %c
}
"""
    g = PassManager.from_text("canonicalize").run(parse(text))
    square, cube = (v.producer for v in g.outputs)
    assert square.kind == "mul" and list(square.inputs) == [g.inputs[0]] * 2
    assert cube.kind == "pow"
    x = np.array([-1.5, 0.0, 3.0, 1e19], np.float32)
    np.testing.assert_array_equal(interpret(g, [x])[0], np.power(x, 2))


def test_canonicalize_drops_a_pad_of_zeros():
    text = """graph @g(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x5xf32>) {
  %same = pad(%x) {pads = [0, 0, 0, 0]} : tensor<2x3xf32>
  %wider = pad(%x) {pads = [0, 1, 0, 1]} : tensor<2x5xf32>
  return %same, %wider
}
"""
    g = PassManager.from_text("canonicalize").run(parse(text))
    assert g.outputs[0] is g.inputs[0] and g.outputs[1].producer.kind == "pad"


def test_passes_reach_into_fused_bodies():
    text = """graph @g(%x: tensor<4xf32>) -> (tensor<4xf32>) {
  %f = fused(%x) : tensor<4xf32> graph @body(%a: tensor<4xf32>) -> (tensor<4xf32>) {
    %one = const dense<1.0> : tensor<f32>
    %m = mul(%a, %one) : tensor<4xf32>
    %dead = exp(%a) : tensor<4xf32>
    %r = relu(%m) : tensor<4xf32>
    return %r
  }
  return %f
}
"""
    g = PassManager.from_text("canonicalize,dce").run(parse(text))
    assert [op.kind for op in g.ops[0].body.ops] == ["relu"]


def test_fold_does_not_fold_encoded_weights_or_blow_up():
    g = Graph("g")
    g.weights["w"] = np.array([[1, 0, 0, 2]], np.float32)
    from hetc.ir import NM

    w = g.add("const", [], {"name": "w"}, result_types=[TensorType((1, 4), dtypes.f32, (NM(2, 4),))])
    s = g.const(np.array(1.0, np.float32), inline=True)
    big = g.add("expand", [s], {"shape": [64, 64]})
    g.outputs = [g.add("relu", [w]), big]
    g = PassManager.from_text("fold{max_elements=1000},dce").run(g)
    assert [op.kind for op in g.ops] == ["const", "const", "expand", "relu"]


def test_fold_takes_large_results_no_larger_than_their_operands():
    """A reshape of a weight over max_elements folds (a 1-D convolution's
    weight: else its convolution runs the generic loop), an expand to as
    many elements does not."""
    g = Graph("g")
    w = g.const(np.arange(2000, dtype=np.float32), "w")
    s = g.const(np.array(1.0, np.float32), inline=True)
    g.outputs = [g.add("reshape", [w], {"shape": [20, 100]}),
                 g.add("expand", [s], {"shape": [20, 100]})]
    g = PassManager.from_text("fold{max_elements=1000},dce").run(g)
    assert [op.kind for op in g.ops] == ["const", "const", "expand"]
    assert np.array_equal(load_const(g.outputs[0].producer, g), np.arange(2000).reshape(20, 100))


def test_a_large_conv1d_weight_folds_into_its_kernel():
    """Conv1d(512, 512, 5): its 2-D weight, a reshape of 1.3M elements, is a
    constant the convolution kernel packs (no generic loop)."""
    torch.manual_seed(0)
    model = torch.nn.Conv1d(512, 512, 5, padding=2).eval()
    x = torch.randn(1, 512, 20)
    module = hetc.compile(model, target="x86", example_inputs=(x,))
    assert module.artifact.extra["kernels"] == {"conv2d f32": 1}
    with torch.no_grad():
        np.testing.assert_allclose(module(x.numpy()), model(x).numpy(), rtol=1e-4, atol=1e-4)


def test_dce_drops_unused_weights():
    g = Graph("g")
    x = g.add_input("x", TensorType((2,), dtypes.f32))
    g.const(np.ones(2, np.float32), "unused")
    used = g.const(np.ones(2, np.float32), "used")
    g.outputs = [g.add("add", [x, used])]
    PassManager.from_text("dce").run(g)
    assert list(g.weights) == ["used"]


def test_builtin_passes_registered():
    parse_pipeline("dce")
    assert {"canonicalize", "fold", "cse", "dce"} <= set(PASSES)
