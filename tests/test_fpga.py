"""Target fpga: the generated Vitis-HLS project, run here as C simulation
(g++ with the Xilinx ap_types headers), bit for bit against the numpy
model of its arithmetic (backends/fpga/reference.py) and within f32
rounding of the interpreter; the emitted pragmas; the test bench; what is
refused."""

import dataclasses
import importlib.util
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import hetc
from families import bert_layer, gpt2_block
from hetc.backends.fpga import HEADER, HERE, ap_types, reference, verilog
from hetc.core import fpga_model
from hetc.core.errors import TargetError, UsageError
from hetc.ir import dtypes
from hetc.ir.types import Quant, TensorType

CXX = shutil.which("g++") or shutil.which("clang++")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(96, 48), torch.nn.ReLU(),
                               torch.nn.Linear(48, 12))


PATTERNS = [None, "2:4", "1:4", "1:3"]


class _ArgMax(torch.nn.Module):
    def forward(self, x):
        return x.argmax(-1)


class _CumSum(torch.nn.Module):
    def forward(self, x):
        return x.cumsum(-1)


def _units(module, nm, bits):
    """How many integer layers of `module` run on the unit of pattern nm
    (None: dense) with BITS-bit weights."""
    n, m = nm or (1, 1)
    model = module.artifact.sources["model.cpp"]
    return len(re.findall(rf"hetc::cycle_dot<{n}, {m}, \d+, \d+, {bits}>\(", model))


def _pattern(sparsity):
    return tuple(int(v) for v in sparsity.split(":")) if sparsity else None


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("sparsity", PATTERNS, ids=["dense", "2:4", "1:4", "1:3"])
def test_every_unit_is_bit_exact_over_a_thousand_vectors(sparsity, precision):
    """1,000 tokens through the project: 0 mismatches against the reference
    model. Against the interpreter (which sums in another order) f32
    rounding, except where that rounding moves a value across an int8
    rounding boundary of the next layer's activations: one code step there,
    in a few tokens. Each layer on the unit of its pattern with P
    multipliers and the weights' ap_int type."""
    x = torch.randn(1000, 96, generator=torch.Generator().manual_seed(1))
    options = {"precision": precision, **({"sparsity": sparsity} if sparsity else {})}
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(x,), **options)
    got = module(x).numpy()
    assert (got != reference.run(module.graph, x.numpy())).sum() == 0
    want = hetc.interpret(module.graph, [x.numpy()])[0]
    top = float(np.abs(want).max())
    close = np.isclose(got, want, rtol=1e-5, atol=1e-5 * top).all(axis=1)
    assert close.mean() >= 0.99, close.mean()
    np.testing.assert_allclose(got, want, atol=0.02 * top)
    layers = module.artifact.extra["layers"]
    assert [tuple(c["nm"]) if c["nm"] else None for c in layers] == [_pattern(sparsity)] * 2
    bits = int(precision[3:])  # the multipliers' weight width: ap_int<BITS>
    assert _units(module, _pattern(sparsity), bits) == 2
    assert all(c["bits"] == bits for c in layers)


def _cnn(seed=0):
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 24, 3, stride=2, padding=(1, 0)), nn.ReLU(),
                         nn.Conv2d(24, 24, 1)).eval()


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("sparsity", PATTERNS, ids=["dense", "2:4", "1:4", "1:3"])
def test_convolutions_are_bit_exact(sparsity, precision):
    """A small CNN (3x3 convolutions with padding and a stride, max
    pooling, a pointwise convolution) on two images: 0 mismatches over its
    1,440 outputs (60 pixels, each a vector of 24 channels); the
    convolutions whose input channels (3, 16, 24) are a multiple of M run
    on the pattern's unit, the others dense; int8 activations per pixel and
    group."""
    x = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(4))
    options = {"precision": precision, **({"sparsity": sparsity} if sparsity else {})}
    module = hetc.compile(_cnn(), target="fpga", example_inputs=(x,), **options)
    got = module(x).numpy()
    assert got.shape == (2, 24, 6, 5)
    assert (got != reference.run(module.graph, x.numpy())).sum() == 0
    want = hetc.interpret(module.graph, [x.numpy()])[0]
    np.testing.assert_allclose(got, want, atol=0.02 * float(np.abs(want).max()))
    layers = module.artifact.extra["layers"]
    assert [c["kind"] for c in layers] == ["conv2d"] * 3 and [c["taps"] for c in layers] == \
        [9, 9, 1]
    bits, nm = int(precision[3:]), _pattern(sparsity)
    want = [nm if nm and c % nm[1] == 0 else None for c in (3, 16, 24)]
    assert [tuple(c["nm"]) if c["nm"] else None for c in layers] == want
    assert _units(module, nm, bits) == want.count(nm)


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("sparsity", PATTERNS, ids=["dense", "2:4", "1:4", "1:3"])
def test_a_transformer_encoder_block_is_bit_exact(sparsity, precision):
    """16 tokens through a MiniLM-sized encoder layer: its six linear
    layers on the units, attention's products, softmax, GELU, the residual
    adds (forks) and layer norms in float32; 0 mismatches over 6,144
    outputs; within the polynomials' and f32 rounding of the interpreter but
    where that rounding moves an activation across an int8 rounding
    boundary. int4's groups of 128 do not hold whole 1:3 groups: those
    layers run on the dense unit, said so."""
    x = torch.randn(1, 16, 384, generator=torch.Generator().manual_seed(5))
    options = {"precision": precision, **({"sparsity": sparsity} if sparsity else {})}
    module = hetc.compile(bert_layer(), target="fpga", example_inputs=(x,), **options)
    got = module(x).numpy()
    assert (got != reference.run(module.graph, x.numpy())).sum() == 0
    want = hetc.interpret(module.graph, [x.numpy()])[0]
    assert np.isclose(got, want, rtol=1e-4, atol=1e-4).mean() >= 0.99
    np.testing.assert_allclose(got, want, atol=0.02 * float(np.abs(want).max()))
    nm, bits = _pattern(sparsity), int(precision[3:])
    if sparsity == "1:3" and precision == "int4":
        assert "1:3 zeros stored, run on the dense unit" in str(module.report)
        nm = None
    assert _units(module, nm, bits) == 6
    model = module.artifact.sources["model.cpp"]
    for call in ("hetc::softmax<", "hetc::layer_norm<", "hetc::gelu_(", "hetc::matmul<",
                 "/* fork */"):
        assert call in model
    said = [n for n in module.report.notes if "not fixed point" in n]
    assert said and all(k in said[0] for k in ("softmax", "layer_norm x2", "gelu", "matmul x2"))


def test_int4_rows_of_odd_length_are_packed_and_padded():
    """36 inputs at 1:4 keep 9 int4 weights a row: packed two per byte, the
    last byte half padding, still bit-exact."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(36, 20), torch.nn.ReLU(), torch.nn.Linear(20, 6))
    x = torch.randn(300, 36, generator=torch.Generator().manual_seed(3))
    module = hetc.compile(model, target="fpga", example_inputs=(x,), sparsity="1:4",
                          precision="int4")
    assert module.artifact.extra["layers"][0]["p"] == 9
    weights = module.artifact.sources["weights.h"]
    assert "static const unsigned char W0[20][5]" in weights  # 9 codes
    assert "static const unsigned char I0[20][3]" in weights  # 9 positions
    assert (module(x).numpy() == reference.run(module.graph, x.numpy())).all()


class _Residual(torch.nn.Module):
    """A residual branch, a reshape between layers, two inputs and two outputs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc, self.out = torch.nn.Linear(8, 8), torch.nn.Linear(16, 4)

    def forward(self, x, z):
        h = torch.relu(self.fc(x)) + x * z
        return self.out(h.reshape(-1, 16)), h.sigmoid()


def test_branches_fork_reshapes_alias_and_streams_are_per_value():
    """A value read by two ops is copied once per reader (a fork: one
    producer, one consumer per dataflow channel); a reshape is the same
    array; each input and output is its own AXI stream."""
    x, z = torch.randn(6, 8), torch.randn(6, 8)
    module = hetc.compile(_Residual(), target="fpga", example_inputs=(x, z))
    got = [t.numpy() for t in module(x, z)]
    want = reference.run(module.graph, x.numpy(), z.numpy())
    for g, w in zip(got, want):
        assert g.shape == w.shape and (g == w).all()
    model = module.artifact.sources["model.cpp"]
    assert model.count("/* fork */") == 2  # x (read by fc and mul) and h (by out and sigmoid)
    assert "hls::stream<float> &in1" in model and "hls::stream<float> &out1" in model
    np.testing.assert_allclose(got[1], torch.sigmoid(
        torch.relu(_Residual().fc(x)) + x * z).detach().numpy(), atol=0.05)


def test_the_datapath_is_integer_by_default():
    """No compression asked: int8 weights and int8 activations, said so."""
    x = torch.randn(4, 96)
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(x,))
    assert all(c["bits"] == 8 for c in module.artifact.extra["layers"])
    assert "quantize{format=int8},quantize-activations" in str(module.report)
    assert "resource MODEL" in str(module.report)
    np.testing.assert_allclose(module(x).numpy(), _mlp()(x).detach().numpy(), atol=0.02)


def test_pragmas_match_the_layers():
    """Each layer's weight (and position) arrays are partitioned to give P
    weights a cycle (int4: P / 2 bytes, positions: P / 4 bytes) and its
    activation codes to give the inputs those reach (N:M: P * M / N); every
    loop that must pipeline has its pragma (each layer's flattened
    multiply-accumulate loop, with the distance at which its outputs' sums
    recur; the float functions'; the
    generated loop nests'); the top function has its
    stream and control interfaces and a dataflow region."""
    module = hetc.compile(_Residual(), target="fpga", sparsity="2:4", precision="int4",
                          example_inputs=(torch.randn(2, 8), torch.randn(2, 8)))
    model = module.artifact.sources["model.cpp"]
    for c in module.artifact.extra["layers"]:
        i, p = c["index"], c["p"]
        banks = p // 2 if p % 2 == 0 else p  # int4 weights: two per byte
        assert f"#pragma HLS ARRAY_PARTITION variable=W{i} cyclic factor={banks} dim=2" in model
        positions = p // 4 if p % 4 == 0 else p  # four per byte
        assert f"#pragma HLS ARRAY_PARTITION variable=I{i} cyclic factor={positions} dim=2" \
            in model
        assert f"#pragma HLS ARRAY_PARTITION variable=q cyclic factor={p * 2}" in model
        assert re.search(rf"hetc::cycle_dot<2, 4, {p}, \d+, 4>", model)
    for pragma in ("INTERFACE axis port=in0", "INTERFACE axis port=out0",
                   "INTERFACE s_axilite port=return", "DATAFLOW"):
        assert f"#pragma HLS {pragma}" in model
    macs = re.findall(r"for \(int it = 0;[^\n]*\{\n([^\n]*)\n([^\n]*)", model)
    layers = module.artifact.extra["layers"]
    assert len(macs) == 2 and all("#pragma HLS PIPELINE II=1" in a for a, _ in macs)
    # reuse 1 (P = the group's kept weights) for 8 outputs, then 4: each output's sum
    # is updated once per 8 (4) iterations, which Vitis is told
    assert [c["n"] for c in layers] == [8, 4] and all(2 * c["p"] == c["group"] for c in layers)
    assert [b.strip() for _, b in macs] == [
        f"#pragma HLS DEPENDENCE variable=out inter RAW distance={d} true" for d in (8, 4)]
    nests = re.findall(r"for \(int i\d+ = 0;[^\n]*\{\n([^\n]*)", model)
    assert len(nests) == 4 and all("#pragma HLS PIPELINE II=1" in n for n in nests)
    header = module.artifact.sources[HEADER]
    loops = re.findall(r"for \(int (?:c|j|i|e|s) = 0;[^\n]*\{\n([^\n]*)", header)
    assert len(loops) >= 12 and all("#pragma HLS PIPELINE II=1" in n for n in loops)
    for loop in re.finditer(r"for \(int p = 0;[^\n]*\{\n([^\n]*)", header):
        assert "#pragma HLS UNROLL" in loop.group(1)


def _test_bench(module, x, folder):
    """What a Vitis user runs in C simulation: tb.cpp with model.cpp,
    input.bin in, output.bin out (weights.bin beside them)."""
    for name, content in module.artifact.sources.items():
        path = folder / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    exe = folder / "tb"
    p = subprocess.run([CXX, "-O1", "-std=c++14", f"-I{ap_types()}", "-ffp-contract=off", "-w",
                        str(folder / "model.cpp"), str(folder / "tb.cpp"), "-o", str(exe)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    x.numpy().astype(np.float32).tofile(folder / "input.bin")
    assert subprocess.run([str(exe)], cwd=folder).returncode == 0
    return np.fromfile(folder / "output.bin", np.float32).reshape(module.graph.outputs[0].type.shape)


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_the_test_bench_builds_and_reproduces_the_simulation(tmp_path):
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(2))
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(x,), sparsity="1:3")
    np.testing.assert_array_equal(_test_bench(module, x, tmp_path), module(x).numpy())
    assert "csim_design" in module.artifact.sources["build_prj.tcl"]


def test_saved_projects_run_again(tmp_path):
    x = torch.randn(3, 96)
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(x,), sparsity="1:4")
    module.save(tmp_path / "m")
    assert (tmp_path / "m" / "sources" / "build_prj.tcl").exists()
    np.testing.assert_array_equal(hetc.load(tmp_path / "m")(x).numpy(), module(x).numpy())


@pytest.mark.parametrize("model, inputs, why", [
    (torch.nn.Softmax(dim=1), (torch.randn(2, 4, 8),), "an axis other than the last"),
    (torch.nn.Conv2d(4, 4, 3, groups=4), (torch.randn(1, 4, 8, 8),),
     r"a grouped \(depthwise\) convolution"),
    (torch.nn.Identity(), (torch.randn(2, 8),), "output %input is not computed by an op"),
    (_ArgMax(), (torch.randn(2, 8),), r"argmax \(%argmax\): not lowered for fpga yet"),
    (_CumSum(), (torch.randn(2, 8),), r"cumsum \(%cumsum\): not lowered for fpga yet")])
def test_what_is_not_built_is_refused_with_the_reason(model, inputs, why):
    with pytest.raises(TargetError, match=why):
        hetc.compile(model, target="fpga", example_inputs=inputs)


class _Wide(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2.0


def test_weights_too_large_for_the_chip_stream_over_m_axi(tmp_path):
    """16 Mbit of int8 weights do not fit a ZCU104's 11 Mbit of BRAM: that
    layer's codes (and N:M positions) move to weights.bin, read through
    m_axi ports of the top function; still bit-exact, in the simulation and
    in the test bench; the model charges the bank's bandwidth."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 64))
    x = torch.randn(3, 2048)
    module = hetc.compile(model, target="fpga", example_inputs=(x,), part="zcu104",
                          sparsity="2:4")
    got = module(x).numpy()
    assert (got != reference.run(module.graph, x.numpy())).sum() == 0
    layers = module.artifact.extra["resources"]["layers"]
    assert [(r["offchip_bank"], r["bram18"] > 0) for r in layers if r["op"] == "linear"] == \
        [(0, False), (None, True)]
    model_cpp = module.artifact.sources["model.cpp"]
    for port, size in (("W0", 1024 * 1024), ("I0", 1024 * 256)):
        assert f"#pragma HLS INTERFACE m_axi port={port} offset=slave bundle=gmem0 " \
               f"depth={size}" in model_cpp
    assert len(module.artifact.sources["weights.bin"]) == 1024 * 1024 + 1024 * 256
    assert "static const unsigned char W0" not in module.artifact.sources["weights.h"]
    assert "`W0` (bundle `gmem0`): 1048576 bytes at offset 0" in \
        module.artifact.sources["README.md"]
    if CXX:
        assert (_test_bench(module, x, tmp_path) == got).all()


def test_the_reuse_factor_sets_the_multipliers_and_the_part_its_budget():
    x = torch.randn(2, 96)
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(x,), reuse=12)
    assert [(c["p"], c["bits"]) for c in module.artifact.extra["layers"]] == [(8, 8), (4, 8)]
    assert "12 DSP" in str(module.report)
    assert (module(x).numpy() == reference.run(module.graph, x.numpy())).all()
    with pytest.raises(UsageError, match=r"reuse=7 does not divide the 96 kept weights .*"
                                         r"it takes 96, 48, 32"):
        hetc.compile(_mlp(), target="fpga", example_inputs=(x,), reuse=7)
    wide = _Wide()  # 16 Mbit buffers between two functions: more than a ZCU104's BRAM
    with pytest.raises(TargetError, match=r"does not fit Zynq UltraScale\+ ZCU104 .* the "
                                          r"buffers between functions, which hold whole "
                                          r"tensors, take \d+ BRAM18"):
        hetc.compile(wide, target="fpga", example_inputs=(torch.randn(1, 1 << 19),),
                     part="zcu104")


def test_the_header_ships_with_the_backend():
    with open(f"{HERE}/{HEADER}") as f:
        assert "namespace hetc" in f.read()


def test_int8_convolution_activations_are_the_irs_semantics():
    """conv2d's act_group (set by quantize-activations on targets with
    integer convolutions) quantizes each pixel's channels: OpenVINO
    computes it too and matches the interpreter, and so does x86."""
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    graph = hetc.compile(_cnn(), target="fpga", example_inputs=(x,)).graph
    convs = [op for op in graph.ops if op.kind == "conv2d"]
    assert [op.attrs["act_group"] for op in convs] == [3, 16, 24]
    want = hetc.interpret(graph, [x.numpy()])[0]
    for op in convs:
        op.attrs["act_group"] = 0
    unquantized = hetc.interpret(graph, [x.numpy()])[0]
    for op, g in zip(convs, [3, 16, 24]):
        op.attrs["act_group"] = g
    assert np.abs(unquantized - want).max() > 1e-3 * np.abs(want).max()
    if importlib.util.find_spec("openvino"):
        got = hetc.compile(graph, target="npu")(x).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    got = hetc.compile(graph, target="x86")(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="iverilog is not installed "
                    "(Debian: apt-get install iverilog)")
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("nm, p", [(None, 16), ((2, 4), 8), ((1, 4), 4), ((1, 3), 5)],
                         ids=["dense", "2:4", "1:4", "1:3"])
def test_the_verilog_blocks_compute_the_units_sums(nm, p, bits, tmp_path):
    """The per-cycle block of each unit (its P multipliers, their M:1
    multiplexers, a pipelined adder tree) simulated by iverilog over 300
    random vectors: every sum equal to numpy's."""
    b = verilog.Block(p, bits, nm)
    rng = np.random.default_rng(p * bits)
    x = rng.integers(-128, 128, (300, b.activations))
    w = rng.integers(-(1 << bits - 1), 1 << bits - 1, (300, p))
    idx = None
    if nm:
        n, m = nm
        idx = np.stack([np.sort(rng.choice(m, n, replace=False))
                        for _ in range(300 * p // n)]).reshape(300, p)
        x_used = np.take_along_axis(x, (np.arange(p) // n * m)[None] + idx, 1)
    else:
        x_used = x
    np.testing.assert_array_equal(verilog.simulate(b, x, w, idx, str(tmp_path)),
                                  (x_used * w).sum(1))


def test_a_residual_cnn_with_batch_norms_runs():
    """The examples' small ResNet-style CNN (3x3 convolutions with strides,
    batch norms, residual adds, global average pooling, a classifier) at
    2:4: bit-exact against the reference, within f32 rounding of the
    interpreter; each batch norm one scale and shift per channel."""
    from models import examples
    _, cnn, (x,) = examples()[1]
    module = hetc.compile(cnn, target="fpga", example_inputs=(x,), sparsity="2:4")
    got = module(x).numpy()
    assert (got != reference.run(module.graph, x.numpy())).sum() == 0
    want = hetc.interpret(module.graph, [x.numpy()])[0]
    np.testing.assert_allclose(got, want, atol=1e-5 * float(np.abs(want).max()))
    model = module.artifact.sources["model.cpp"]
    assert model.count("/* batch_norm") == sum(op.kind == "batch_norm" for op in module.graph.ops)
    assert any(c["nm"] == [2, 4] or c["nm"] == (2, 4) for c in module.artifact.extra["layers"])


def test_the_per_layer_search_ranks_choices_by_the_fpga_cycle_model():
    """sparsity="auto" on fpga predicts each layer's time by the processing
    elements' cycles (core/fpga_model.py, as the backend's report counts
    them), not a roofline: a chosen N:M layer's predicted speedup is the
    ratio of the backend's own cycles for it dense and as chosen; narrower
    weights save memory but no cycles, so int4 is not faster than int8."""
    from hetc.backends.fpga.cost import layer_usage
    from hetc.backends.fpga.emit import layer_config
    from hetc.core.targets import get_target
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    x = torch.randn(64, 256)
    module = hetc.compile(model, target="fpga", example_inputs=(x,), sparsity="auto",
                          accuracy_budget=0.6)  # random weights: N:M costs accuracy
    assert any("on fpga (Alveo U250)" in note for note in module.report.notes)
    chosen = {row.name: row for row in module.report.layers if row.pattern != "dense"}
    assert chosen, "the search chose no N:M layer"
    linears = [op for op in module.graph.ops if op.kind == "linear"]
    for i, op in enumerate(linears):
        row = next(r for r in module.report.layers if r.name == str(i * 2))
        if row.pattern == "dense":
            continue
        config = layer_config(i, op)
        dense = dataclasses.replace(config, nm=None, p=fpga_model.multipliers(config.group))
        want = layer_usage(dense)["cycles"] / layer_usage(config)["cycles"]
        assert row.speedup == pytest.approx(want, rel=1e-6), (row.name, row.speedup, want)
    cost = get_target("fpga").cost
    w8 = TensorType((512, 256), dtypes.i8, [Quant(256, dtypes.f32, True, -1)])
    w4 = TensorType((512, 256), dtypes.i4, [Quant(128, dtypes.f16, True, -1)])
    x, out = TensorType((64, 256), dtypes.f32), TensorType((64, 512), dtypes.f32)
    assert cost.layer_seconds(w4, -1, x, out) == pytest.approx(
        cost.layer_seconds(w8, -1, x, out), rel=0.01)


class _Sdpa(torch.nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v, mask):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=None if self.causal else mask, is_causal=self.causal)


@pytest.mark.parametrize("causal", [False, True], ids=["float mask", "causal"])
def test_attention_runs_in_float32_bit_exact(causal):
    """The fused attention op (PyTorch's scaled_dot_product_attention),
    keys and values shared by the heads (broadcast), a float mask added or
    the causal rule: one query row at a time, bit-exact against the
    reference, within f32 rounding of PyTorch."""
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 4, 7, 16, generator=g), torch.randn(2, 1, 9, 16, generator=g),
               torch.randn(2, 1, 9, 8, generator=g))
    mask = torch.randn(1, 1, 7, 9, generator=g)
    inputs = (q, k.expand(2, 4, 9, 16), v.expand(2, 4, 9, 8), mask)
    module = hetc.compile(_Sdpa(causal), target="fpga", example_inputs=inputs)
    assert any(op.kind == "attention" for op in module.graph.ops)
    got = module(*inputs).numpy()
    assert (got != reference.run(module.graph, *(t.numpy() for t in inputs))).sum() == 0
    np.testing.assert_allclose(got, _Sdpa(causal)(*inputs).numpy(), atol=2e-6)


def test_a_gpt2_block_runs():
    """transformers' GPT2Block (fused q/k/v split, causal attention, GELU
    written out with pow, raised to a tanh gelu) at 2:4: bit-exact against
    the reference."""
    x = torch.randn(1, 12, 128, generator=torch.Generator().manual_seed(9))
    module = hetc.compile(gpt2_block(), target="fpga", example_inputs=(x,), sparsity="2:4")
    kinds = {op.kind for op in module.graph.ops}
    assert {"split", "attention", "gelu"} <= kinds and "pow" not in kinds
    got = module(x).numpy()
    assert (got != reference.run(module.graph, x.numpy())).sum() == 0
    want = hetc.interpret(module.graph, [x.numpy()])[0]
    np.testing.assert_allclose(got, want, atol=1e-4 * float(np.abs(want).max()))


def test_copies_slice_concat_expand_and_pow():
    class Moves(torch.nn.Module):
        def forward(self, x):
            a, b = x[:, 1:7:2], x[:, :3]
            return torch.cat([a ** 3, b.expand(2, 3, 5), (x * x)[:, ::4]], dim=1)

    x = torch.randn(2, 8, 5)
    module = hetc.compile(Moves(), target="fpga", example_inputs=(x,))
    got = module(x).numpy()
    assert (got == reference.run(module.graph, x.numpy())).all()
    np.testing.assert_allclose(got, Moves()(x).numpy(), rtol=1e-6)
    with pytest.raises(TargetError, match="an exponent other than a constant 1, 2, 3 or 4"):
        hetc.compile(_Pow(), target="fpga", example_inputs=(x,))


class _Pow(torch.nn.Module):
    def forward(self, x):
        return x.abs() ** 0.7


class _TwoReaders(torch.nn.Module):
    def forward(self, x):
        return torch.relu(x) + x


def test_forked_copies_count_as_buffers_and_every_copy_is_read():
    """x is read twice: its array and a copy per reader, relu's and add's
    results: five ping-pong buffers in the model. A value given to one op
    twice (attention of x with itself) gets a fork copy per operand, each
    passed on."""
    import math
    x = torch.randn(1, 4096)
    module = hetc.compile(_TwoReaders(), target="fpga", example_inputs=(x,))
    res = module.artifact.extra["resources"]
    assert res["buffer_bram18"] == 5 * 2 * math.ceil(4096 * 32 / 18432)
    assert (module(x).numpy() == reference.run(module.graph, x.numpy())).all()

    class SelfAttention(torch.nn.Module):
        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)
    q = torch.randn(2, 5, 8)
    module = hetc.compile(SelfAttention(), target="fpga", example_inputs=(q,))
    model = module.artifact.sources["model.cpp"]
    call = re.search(r"\n    (op\d+)\(([^)]*)\);", model).group(2).split(", ")
    assert len(set(call)) == 4  # three distinct copies of q, and the result
    assert (module(q).numpy() == reference.run(module.graph, q.numpy())).all()


def test_odd_layouts_and_values_stay_defined():
    """An N:M weight pruned along its outputs (not the inputs the units
    select among) runs on the dense unit; a token holding inf gives NaN, as
    the interpreter's quantization does, not undefined codes."""
    from hetc.ir.parser import parse
    from hetc.ir.weights import WeightStore
    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, size=(8, 16)).astype(np.int8)
    codes[2:4] = 0
    codes[6:8] = 0  # 2:4 along the outputs
    weights = WeightStore({"w": codes, ("w", "scale"): np.full((8, 1), 0.01, np.float32)})
    graph = parse("""graph @g(%x: tensor<3x16xf32>) -> (tensor<3x8xf32>) {
  %w = const @w : tensor<8x16xi8, nm<2:4, axis=0>, quant<group=16, scale=f32>>
  %y = linear(%x, %w) {act_group = 16} : tensor<3x8xf32>
  return %y
}""", weights=weights)
    module = hetc.compile(graph, target="fpga")
    assert module.artifact.extra["layers"][0]["nm"] is None
    assert any("2:4 zeros stored, run on the dense unit" in n for n in module.report.notes)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    x[1, 3] = np.inf
    got = module(x)
    want = hetc.interpret(graph, [x])[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1]).all() and not np.isnan(got[[0, 2]]).any()
    assert (got[[0, 2]] == reference.run(graph, x)[[0, 2]]).all()
    assert np.isnan(reference.run(graph, x)[1]).all()
