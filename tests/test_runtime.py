"""Module: call, report, save/load; targets and compile-time errors."""

import json
import os

import numpy as np
import pytest
import torch

import hetc
from hetc.core.errors import HetcError, TargetError, UsageError
from hetc.core.targets import TARGETS
from models import examples


@pytest.fixture(scope="module")
def compiled():
    name, model, inputs = examples()[2]
    return model, inputs, hetc.compile(model, target="ref", example_inputs=inputs)


def test_module_exposes_ir_report_and_sources(compiled):
    model, inputs, module = compiled
    assert module.ir.startswith("graph @TransformerBlock(%x: tensor<2x16x64xf32>)")
    assert module.sources == {}  # the reference target generates no code
    rows = {r.name: r for r in module.report.layers}
    assert rows["fc1"].op == "linear" and rows["fc1"].bytes == (256 * 64 + 256) * 4
    assert module.report.weight_bytes == sum(p.numel() * 4 for p in model.parameters())
    text = str(module.report)
    assert "fc1" in text and "weights: 199,936 bytes" in text


def test_save_and_load_roundtrip(compiled, tmp_path):
    model, inputs, module = compiled
    out = tmp_path / "art"
    module.save(out)
    assert sorted(os.listdir(out)) == ["manifest.json", "model.hir", "model.npz", "report.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"] == "ref" and manifest["inputs"][0] == {
        "name": "x", "shape": [2, 16, 64], "dtype": "f32"}
    loaded = hetc.load(out)
    torch.testing.assert_close(loaded(*inputs), module(*inputs), rtol=0, atol=0)
    saved = dict(module.report.to_dict(), passes=[])  # timings stay out of saved folders
    assert loaded.report.to_dict() == saved
    # saving again over the folder replaces it whole
    module.save(out)
    assert hetc.load(out).ir == module.ir
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_failed_save_leaves_nothing_behind(compiled, tmp_path, monkeypatch):
    model, inputs, module = compiled
    import hetc.runtime.artifact

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(hetc.runtime.artifact, "save_ir", boom)
    with pytest.raises(OSError):
        module.save(tmp_path / "art")
    assert os.listdir(tmp_path) == []


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(HetcError, match="not a folder"):
        hetc.load(tmp_path / "missing")
    with pytest.raises(HetcError, match="no manifest.json; not a hetc artifact"):
        hetc.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "hetc-artifact", "format_version": 99}')
    with pytest.raises(HetcError, match="format version 99"):
        hetc.load(tmp_path)


def test_targets_are_data_with_host_availability():
    assert list(TARGETS) == ["ref", "x86", "amx", "cuda", "npu", "fpga"]
    assert TARGETS["cuda"].nm_patterns[0] == (2, 4)
    assert TARGETS["npu"].nm_patterns == ()
    assert TARGETS["fpga"].supports_nm(1, 3) and not TARGETS["cuda"].supports_nm(1, 3)
    assert TARGETS["ref"].availability().ok
    for t in TARGETS.values():
        assert t.availability().detail  # always says why (not)
        assert t.cost.seconds(1e9, 1e9, t.weight_dtypes[0]) > 0


def test_unbuilt_backends_say_so(monkeypatch):
    """A target declared before its backend is built (every target has one
    now: a made-up one stands in)."""
    import dataclasses

    planned = dataclasses.replace(TARGETS["fpga"], name="asic", backend=None)
    monkeypatch.setitem(TARGETS, "asic", planned)
    name, model, inputs = examples()[0]
    with pytest.raises(TargetError, match="target 'asic' .* not built yet"):
        hetc.compile(model, target="asic", example_inputs=inputs)


def test_compile_argument_errors():
    name, model, inputs = examples()[0]
    with pytest.raises(UsageError, match="unknown target 'tpu'"):
        hetc.compile(model, target="tpu", example_inputs=inputs)
    with pytest.raises(UsageError, match="unknown compile option"):
        hetc.compile(model, example_inputs=inputs, sparsity_typo="2:4")
    with pytest.raises(UsageError, match="unknown pass 'nope'"):
        hetc.compile(model, example_inputs=inputs, pipeline="cse,nope")
    with pytest.raises(UsageError, match="cannot compile a int"):
        hetc.compile(3)


def test_model_file_errors(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"\x00garbage")
    with pytest.raises(HetcError, match="m.onnx: not a readable ONNX model"):
        hetc.compile(str(onnx_file))
    with pytest.raises(UsageError, match="no such file"):
        hetc.compile(str(tmp_path / "absent.pt2"))
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(HetcError, match="bad.pt2: not a loadable torch.export program"):
        hetc.compile(str(bad))
    with pytest.raises(UsageError, match="unknown model file type '.txt'"):
        (tmp_path / "m.txt").write_text("")
        hetc.compile(str(tmp_path / "m.txt"))


def test_compile_a_hir_file_and_custom_pipeline(tmp_path):
    path = os.path.join(os.path.dirname(__file__), "lit", "fold.hir")
    with open(tmp_path / "dump.txt", "w") as dump:
        module = hetc.compile(path, pipeline="fold,dce", print_ir_after=("fold",), ir_stream=dump)
    assert "IR Dump After fold" in (tmp_path / "dump.txt").read_text()
    x = np.array([1, 2, 3], np.float32)
    np.testing.assert_array_equal(module(x), x * np.array([5, 7, 9], np.float32))
    assert [op.kind for op in module.graph.ops] == ["const", "mul"]


def test_inputs_are_coerced_only_within_their_kind():
    from hetc.ir import Graph, TensorType, dtypes

    g = Graph("emb")
    ids = g.add_input("ids", TensorType((3,), dtypes.i32))
    table = g.const(np.arange(12, dtype=np.float32).reshape(6, 2), "table")
    g.outputs = [g.add("embedding", [ids, table])]
    module = hetc.compile(g)
    np.testing.assert_array_equal(module(np.array([0, 5, 1], np.int64)), [[0, 1], [10, 11], [2, 3]])
    with pytest.raises(UsageError, match="input 'ids' is i32, got an array of f32"):
        module(np.zeros(3, np.float32))
    with pytest.raises(UsageError, match=r"values 0..4294967296 do not fit i32"):
        module(np.array([0, 1, 2 ** 32]))
