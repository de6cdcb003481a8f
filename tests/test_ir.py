"""IR core: dtypes, types and encodings, the verifier, the weight store,
and the text form (round trip over random graphs, parse errors)."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hetc.core.errors import ParseError, VerifyError
from hetc.ir.interpret import interpret
from hetc.ir import NM, Graph, Quant, TensorType, WeightStore, aux_key, dtypes, parse, print_graph, verify
from hetc.ir.parser import parse_file, save

f32 = dtypes.f32


def test_dtypes_have_numpy_storage():
    assert dtypes.get("bf16").storage == np.dtype(ml_dtypes.bfloat16)
    assert dtypes.get("i4").bits == 4 and dtypes.get("i4").storage == np.dtype(ml_dtypes.int4)
    assert dtypes.from_numpy(np.float32) is f32
    with pytest.raises(KeyError, match="unknown dtype 'f7'"):
        dtypes.get("f7")


def test_a_new_dtype_can_be_registered(monkeypatch):
    monkeypatch.setattr(dtypes, "_REGISTRY", dict(dtypes._REGISTRY))
    monkeypatch.setattr(dtypes, "_BY_NUMPY", dict(dtypes._BY_NUMPY))
    dt = dtypes.register("f3test", 3, "float", np.uint8)  # raw codes in a byte
    assert dtypes.get("f3test") is dt and dt.is_float
    with pytest.raises(ValueError):
        dtypes.register("f3test", 3, "float", np.uint8)


def test_type_text_and_storage_bytes():
    t = TensorType((3072, 768), dtypes.i4, (NM(2, 4), Quant(128, dtypes.f16)))
    assert t.text() == "tensor<3072x768xi4, nm<2:4>, quant<group=128, scale=f16>>"
    # 4 bits per value plus one f16 scale per 128 values
    assert t.storage_bytes() == 3072 * 768 // 2 + 3072 * 6 * 2
    assert t.value_dtype is f32 and TensorType((), f32).text() == "tensor<f32>"


def test_nm_checks_groups_along_the_axis():
    ok = np.array([[1, 0, 0, 2], [0, 3, 4, 0]], np.float32)
    assert NM(2, 4).problem(ok.shape, ok) is None
    assert "3 nonzeros" in NM(2, 4).problem(ok.shape, np.array([[1, 1, 1, 0]] * 2, np.float32))
    assert "not a multiple" in NM(2, 4).problem((2, 6))
    col = np.array([[1, 0], [0, 0], [0, 2], [0, 0]], np.float32)
    assert NM(1, 2, axis=0).problem(col.shape, col) is None
    assert NM(1, 2).problem((2, 4), col.T.copy()) is None
    assert NM(1, 2).problem((4, 2), np.ones((4, 2), np.float32)) is not None


def _quant_graph(symmetric=True, scale_shape=(2, 2), with_zero=None):
    g = Graph("q")
    g.weights["w"] = np.array([[1, -2, 3, 4], [5, 6, -7, 0]], ml_dtypes.int4)
    g.weights[aux_key("w", "scale")] = np.full(scale_shape, 0.5, np.float16)
    if with_zero is not None:
        g.weights[aux_key("w", "zero")] = with_zero
    t = TensorType((2, 4), dtypes.i4, (Quant(2, dtypes.f16, symmetric),))
    w = g.add("const", [], {"name": "w"}, result_types=[t])
    g.outputs = [g.add("relu", [w])]
    return g


def test_quant_weights_dequantize_in_the_interpreter():
    g = _quant_graph()
    verify(g)
    (y,) = interpret(g, [])
    np.testing.assert_array_equal(y, np.maximum([[0.5, -1, 1.5, 2], [2.5, 3, -3.5, 0]], 0))


def test_quant_verifier_names_missing_or_misshapen_params():
    with pytest.raises(VerifyError, match=r"'w:scale' must be \[2, 2\] of f16, got \[2, 1\]"):
        verify(_quant_graph(scale_shape=(2, 1)))
    with pytest.raises(VerifyError, match="needs the array 'w:zero'"):
        verify(_quant_graph(symmetric=False))
    with pytest.raises(VerifyError, match="symmetric but the store has 'w:zero'"):
        verify(_quant_graph(with_zero=np.zeros((2, 2), ml_dtypes.int4)))


def test_verifier_messages_name_op_position_and_problem():
    g = Graph("m")
    x = g.add_input("x", TensorType((2, 3), f32))
    y = g.add("relu", [x])
    g.outputs = [y]
    y.type = TensorType((2, 4), f32)  # corrupt the declared type
    with pytest.raises(VerifyError, match=r"@m op #0 \(%0 = relu\): declared tensor<2x4xf32> "
                                          r"but the operands give tensor<2x3xf32>"):
        verify(g)


def test_verifier_catches_use_before_definition():
    g = Graph("m")
    x = g.add_input("x", TensorType((2,), f32))
    a = g.add("relu", [x])
    b = g.add("neg", [a])
    g.ops.reverse()
    g.outputs = [b]
    with pytest.raises(VerifyError, match="operand %0 is not defined before use"):
        verify(g)


def test_weight_store_roundtrips_narrow_dtypes(tmp_path):
    store = WeightStore({
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.array([1.5, -2.25], ml_dtypes.bfloat16),
        "c": np.array([-8, 7, 3], ml_dtypes.int4),
        aux_key("d", "scale"): np.array([0.5], ml_dtypes.float8_e4m3fn),
    })
    store.save(tmp_path / "w.npz")
    back = WeightStore.load(tmp_path / "w.npz")
    assert back.keys() == store.keys()
    for k in store:
        assert back[k].dtype == store[k].dtype
        np.testing.assert_array_equal(back[k].astype(np.float32), store[k].astype(np.float32))


def test_save_and_parse_file(tmp_path):
    g = Graph("lin")
    x = g.add_input("x", TensorType((1, 4), f32))
    w = g.const(np.ones((3, 4), np.float32), "fc.weight")
    g.outputs = [g.add("linear", [x, w])]
    save(g, str(tmp_path / "m.hir"))
    assert (tmp_path / "m.npz").exists()
    assert parse_file(str(tmp_path / "m.hir")) == g


def test_missing_weight_is_a_verifier_error():
    text = "graph @g() -> (tensor<2xf32>) {\n  %w = const @absent : tensor<2xf32>\n  return %w\n}\n"
    with pytest.raises(VerifyError, match="no weight named 'absent'"):
        parse(text, "g.hir")


@pytest.mark.parametrize("text, where, what", [
    ("graph @g(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  return %x\n", "3:1", "end of input"),
    ("graph @g(%x: tensor<2xq9>) -> (tensor<2xf32>) {\n  return %x\n}", "1:21", "unknown dtype 'q9'"),
    ("graph @g(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %x = relu(%x) : tensor<2xf32>\n"
     "  return %x\n}", "2:3", "%x is defined twice"),
    ("graph @g(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n  %y = relu(%x) {bogus = 1} : "
     "tensor<2xf32>\n  return %y\n}", "2:3", "relu has no attribute 'bogus'"),
    ("graph @g(%x: tensor<2xf32>) -> (tensor<3xf32>) {\n  return %x\n}", "2:3",
     "do not match the signature"),
])
def test_parse_errors_say_where_and_what(text, where, what):
    with pytest.raises(ParseError) as info:
        parse(text, "m.hir")
    assert f"m.hir:{where}:" in str(info.value) and what in str(info.value)


# -- round trip over random graphs ---------------------------------------------------

_UNARY = ["relu", "neg", "tanh", "sigmoid", "exp", "silu", "sqrt", "abs"]
_BINARY = ["add", "sub", "mul", "maximum"]
_FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


@st.composite
def graphs(draw):
    g = Graph(draw(st.sampled_from(["main", "g", "model_1"])))
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=3)))
    values = [g.add_input(f"in{i}", TensorType(shape, f32)) for i in range(draw(st.integers(1, 2)))]
    for _ in range(draw(st.integers(1, 8))):
        choice = draw(st.sampled_from(["unary", "binary", "const", "gelu", "softmax",
                                       "reshape", "transpose", "reduce", "weight"]))
        x = draw(st.sampled_from(values))
        if choice == "unary":
            v = g.add(draw(st.sampled_from(_UNARY)), [x])
        elif choice == "binary":
            v = g.add(draw(st.sampled_from(_BINARY)), [x, draw(st.sampled_from(values))]) \
                if all(u.type.shape == x.type.shape for u in values) else g.add("neg", [x])
        elif choice == "const":
            arr = np.array(draw(st.lists(_FLOATS, min_size=x.type.numel, max_size=x.type.numel)),
                           np.float32).reshape(x.type.shape)
            v = g.add("mul", [x, g.const(arr, inline=True)])
        elif choice == "weight":
            arr = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(x.type.shape)
            v = g.add("add", [x, g.const(arr.astype(np.float32), f"w.{len(g.weights)}")])
        elif choice == "gelu":
            v = g.add("gelu", [x], {"approximate": draw(st.sampled_from(["none", "tanh"]))})
        elif choice == "softmax":
            v = g.add("softmax", [x], {"axis": draw(st.integers(-x.type.rank, x.type.rank - 1))})
        elif choice == "reshape":
            v = g.add("reshape", [x], {"shape": [-1]})
            v = g.add("reshape", [v], {"shape": list(x.type.shape)})
        elif choice == "transpose":
            perm = draw(st.permutations(range(x.type.rank)))
            v = g.add("transpose", [x], {"perm": list(perm)})
            v = g.add("transpose", [v], {"perm": [list(perm).index(i) for i in range(len(perm))]})
        else:
            v = g.add("reduce_sum", [x], {"axes": [0], "keepdims": True})
            v = g.add("expand", [v], {"shape": list(x.type.shape)})
        values.append(v)
    g.outputs = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
    return g


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_parse_print_roundtrip(g):
    verify(g)
    text = print_graph(g)
    back = parse(text, weights=g.weights)
    assert back == g
    assert print_graph(back) == text


def test_scalar_weights_keep_their_shape(tmp_path):
    g = Graph("s")
    x = g.add_input("x", TensorType((2,), f32))
    g.outputs = [g.add("mul", [x, g.const(np.array(2.5, np.float32), "scale")])]
    save(g, str(tmp_path / "s.hir"))
    back = parse_file(str(tmp_path / "s.hir"))
    assert back.weights["scale"].shape == () and back == g


def test_codebook_quant_text_verify_and_interpret():
    import ml_dtypes

    from hetc.ir.codebooks import get

    g = Graph("mx")
    g.weights["w"] = np.array([[0, 15, 7, 3], [14, 1, 8, 9]], ml_dtypes.uint4)
    g.weights[aux_key("w", "scale")] = np.array([[0.5], [2.0]], np.float16)
    g.weights[aux_key("w", "variant")] = np.array([[1], [3]], np.uint8)
    t = TensorType((2, 4), dtypes.u4, (Quant(4, dtypes.f16, codebook="mx4"),))
    w = g.add("const", [], {"name": "w"}, result_types=[t])
    g.outputs = [g.add("relu", [w])]
    assert t.text() == "tensor<2x4xu4, quant<group=4, scale=f16, codebook=mx4>>"
    verify(g)
    table = get("mx4").table
    expected = np.maximum(np.stack([table[1][[0, 15, 7, 3]] * 0.5, table[3][[14, 1, 8, 9]] * 2.0]), 0)
    np.testing.assert_array_equal(interpret(g, [])[0], expected)
    assert parse(print_graph(g), weights=g.weights) == g
    assert t.storage_bytes() == 4 + 2 * 2 + 1  # codes, f16 scales, 2-bit variant indices
    g.weights[aux_key("w", "variant")] = np.array([[1], [4]], np.uint8)
    with pytest.raises(VerifyError, match="holds index 4, mx4 has 4"):
        verify(g)
    del g.weights[aux_key("w", "variant")]
    with pytest.raises(VerifyError, match="needs the array 'w:variant'"):
        verify(g)
