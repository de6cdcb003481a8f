"""The ONNX frontend on exported models and on hand-built graphs: answers
against ONNX Runtime, static shapes, freezing, external data, and errors."""

import os
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

import hetc
from hetc.core.errors import FrontendError, UsageError
from hetc.frontends.onnx import NeedsFrozenInput
from models import examples

REL_TOL = 1e-5  # relative L2 error against ONNX Runtime in f32


def rel_err(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def ort_run(model, feeds):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data).run(None, feeds)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The example models exported with torch.onnx.export."""
    folder = tmp_path_factory.mktemp("onnx")
    out = []
    for name, model, inputs in examples():
        path = str(folder / f"{name}.onnx")
        torch.onnx.export(model, inputs, path, dynamo=True, verbose=False)
        out.append((name, path, [x.numpy() for x in inputs]))
    return out


def test_exported_models_match_onnx_runtime(exported):
    for name, path, inputs in exported:
        module = hetc.compile(path, example_inputs=inputs)
        sess = ort.InferenceSession(path)
        (expected,) = sess.run(None, {i.name: x for i, x in zip(sess.get_inputs(), inputs)})
        assert rel_err(module(*inputs), expected) < REL_TOL, name
        if name == "mlp":  # Gemm with a transposed constant weight imports as linear
            assert [op.kind for op in module.graph.ops if op.kind != "const"].count("linear") == 3


def _model(nodes, inputs, outputs, initializers=(), opset=18, name="g"):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _io(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_symbolic_dims_take_example_shapes_and_say_so():
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [_io("x", TensorProto.FLOAT, ["batch", 4])], [_io("y", TensorProto.FLOAT, ["batch", 3])],
               [onnx.numpy_helper.from_array(w, "w")])
    x = np.ones((5, 4), np.float32)
    module = hetc.compile(m, example_inputs=[x])
    np.testing.assert_allclose(module(x), x @ w, rtol=1e-6)
    assert any("batch=5" in n for n in module.report.notes)
    assert hetc.compile(m, input_shapes={"x": [2, 4]}).graph.inputs[0].type.shape == (2, 4)
    with pytest.raises(UsageError, match=r"'x' has symbolic dimensions \['batch', 4\]"):
        hetc.compile(m)
    with pytest.raises(UsageError, match=r"has shape \['batch', 4\] in the model; cannot use \[5, 3\]"):
        hetc.compile(m, input_shapes={"x": [5, 3]})
    with pytest.raises(UsageError, match="input_shapes names unknown inputs: z"):
        hetc.compile(m, input_shapes={"z": [1]})


def test_external_data_is_loaded(tmp_path):
    w = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
               [_io("x", TensorProto.FLOAT, [1, 64])], [_io("y", TensorProto.FLOAT, [1, 64])],
               [onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "ext.onnx"
    onnx.save_model(m, str(path), save_as_external_data=True, location="ext.bin", size_threshold=0)
    assert (tmp_path / "ext.bin").exists()
    x = np.ones((1, 64), np.float32)
    np.testing.assert_allclose(hetc.compile(str(path))(x), x @ w, rtol=1e-6)


def test_reshape_by_a_graph_input_needs_freezing():
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["y"])],
               [_io("x", TensorProto.FLOAT, [2, 6]), _io("shape", TensorProto.INT64, [2])],
               [_io("y", TensorProto.FLOAT, None)])
    with pytest.raises(NeedsFrozenInput, match=r"freeze_inputs=\{'shape': ...\}"):
        hetc.compile(m)
    module = hetc.compile(m, freeze_inputs={"shape": np.array([3, 4])})
    assert module.input_names == ["x"]
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(module(x), x.reshape(3, 4))
    assert any("shape frozen" in n for n in module.report.notes)


def test_older_opsets_are_upgraded():
    m = _model([helper.make_node("Squeeze", ["x"], ["y"], axes=[0])],
               [_io("x", TensorProto.FLOAT, [1, 3])], [_io("y", TensorProto.FLOAT, [3])], opset=11)
    x = np.array([[1, 2, 3]], np.float32)
    np.testing.assert_array_equal(hetc.compile(m)(x), [1, 2, 3])


@pytest.mark.parametrize("node, inputs, message", [
    (helper.make_node("Unique", ["x"], ["y"], name="uniq"), [_io("x", TensorProto.FLOAT, [4])],
     r"node 'uniq' \(ai.onnx::Unique, opset 18\): this op is not supported"),
    (helper.make_node("Relu", ["x"], ["y"], name="r", foo=3), [_io("x", TensorProto.FLOAT, [4])],
     r"node 'r' \(ai.onnx::Relu, opset 18\): attribute foo not supported"),
    (helper.make_node("Relu", ["x"], ["y"]), [_io("x", TensorProto.STRING, [4])],
     r"graph input 'x': ONNX element type STRING is not supported"),
    (helper.make_node("Conv", ["x", "x"], ["y"], name="c3"), [_io("x", TensorProto.FLOAT, [1, 1, 2, 2, 2])],
     r"node 'c3' \(ai.onnx::Conv, opset 18\): Conv over 3 spatial dims is not supported"),
    (helper.make_node("Add", ["x", "nope"], ["y"], name="a"), [_io("x", TensorProto.FLOAT, [4])],
     r"node 'a' .*input 'nope' is not defined"),
])
def test_unsupported_things_are_named(node, inputs, message):
    m = _model([node], inputs, [_io("y", TensorProto.FLOAT, None)])
    with pytest.raises(FrontendError, match=message):
        hetc.compile(m)


def test_unreadable_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(FrontendError, match="bad.onnx: not a readable ONNX model"):
        hetc.compile(str(bad))


def test_cli_compiles_and_runs_onnx(exported, tmp_path):
    name, path, inputs = exported[1]
    out = tmp_path / "art"
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", path, "-o", out, "-q"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    np.save(tmp_path / "x.npy", inputs[0])
    in_name = hetc.load(out).input_names[0]
    p = subprocess.run([sys.executable, "-m", "hetc", "run", out, "--input",
                        f"{in_name}={tmp_path / 'x.npy'}"], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and "[2, 10] float32" in p.stdout, p.stderr


def test_cli_input_shape_fixes_symbolic_dims(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"])], [_io("x", TensorProto.FLOAT, ["n", 4])],
               [_io("y", TensorProto.FLOAT, ["n", 4])])
    path = tmp_path / "sym.onnx"
    onnx.save(m, str(path))
    cli = [sys.executable, "-m", "hetc", "compile", str(path), "-o", str(tmp_path / "o")]
    p = subprocess.run(cli, capture_output=True, text=True)
    assert p.returncode == 2 and "symbolic dimensions" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run(cli + ["--input-shape", "x=3,4"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert "n=3" in p.stdout  # the report's note says what the symbolic dim became
    p = subprocess.run(cli + ["--input-shape", "x=three"], capture_output=True, text=True)
    assert p.returncode == 2 and "expected NAME=D0,D1" in p.stderr
