"""Target fpga: the generated Vitis-HLS project, run here as C simulation
(g++ with the Xilinx ap_types headers), bit for bit against the numpy
model of its arithmetic (backends/fpga/reference.py) and within f32
rounding of the interpreter; the emitted pragmas; the test bench; what is
refused."""

import re
import shutil
import subprocess

import numpy as np
import pytest
import torch

import hetc
from hetc.backends.fpga import HEADER, HERE, ap_types, reference
from hetc.core.errors import TargetError, UsageError

CXX = shutil.which("g++") or shutil.which("clang++")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(96, 48), torch.nn.ReLU(),
                               torch.nn.Linear(48, 12))


PATTERNS = [None, "2:4", "1:4", "1:3"]


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
    assert [tuple(c["nm"]) if c["nm"] else None for c in layers] == \
        [tuple(int(v) for v in sparsity.split(":")) if sparsity else None] * 2
    model = module.artifact.sources["model.cpp"]
    unit = "hetc::nm_mv" if sparsity else "hetc::dense_mv"
    bits = int(precision[3:])  # the multipliers' weight width: ap_int<BITS>
    assert model.count(unit) == 2 and all(c["bits"] == bits for c in layers)
    assert len(re.findall(rf"{unit}<[^>]*, {bits}>\(", model)) == 2


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


def test_a_flattened_image_streams_as_vectors():
    """A Flatten before the first layer relabels the stream (same values);
    a reshape after a layer is refused."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 10))
    x = torch.randn(5, 3, 8, 8)
    module = hetc.compile(model, target="fpga", example_inputs=(x,), sparsity="2:4")
    assert (module(x).numpy() == reference.run(module.graph, x.numpy())).all()
    assert "5 token(s) of 192 inputs -> 10 outputs" in module.artifact.sources["model.cpp"]
    late = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Flatten(0))
    with pytest.raises(TargetError, match="a reshape after the first layer"):
        hetc.compile(late, target="fpga", example_inputs=(torch.randn(2, 8),))


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
    weights a cycle (int4: P / 2 bytes, positions: P / 4 bytes); every
    loop of the units that must pipeline has its pragma; the top function
    has its stream and control interfaces and a dataflow region."""
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(torch.randn(2, 96),),
                          sparsity="2:4", precision="int4")
    model = module.artifact.sources["model.cpp"]
    for c in module.artifact.extra["layers"]:
        i, p = c["index"], c["p"]
        banks = p // 2 if p % 2 == 0 else p  # int4 weights: two per byte
        assert f"#pragma HLS ARRAY_PARTITION variable=W{i} cyclic factor={banks} dim=2" in model
        positions = p // 4 if p % 4 == 0 else p  # four per byte
        assert f"#pragma HLS ARRAY_PARTITION variable=I{i} cyclic factor={positions} dim=2" \
            in model
        assert re.search(rf"hetc::nm_mv<(96|48), \d+, 2, 4, \d+, {p}, ", model)
    for pragma in ("INTERFACE axis port=in", "INTERFACE axis port=out",
                   "INTERFACE s_axilite port=return", "DATAFLOW"):
        assert f"#pragma HLS {pragma}" in model
    header = module.artifact.sources[HEADER]
    for loop in re.finditer(r"for \(int (c|j|i) = 0;[^\n]*\{\n([^\n]*)", header):
        assert "#pragma HLS PIPELINE II=1" in loop.group(2), loop.group(0)
    for loop in re.finditer(r"for \(int p = 0;[^\n]*\{\n([^\n]*)", header):
        assert "#pragma HLS UNROLL" in loop.group(1)


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
def test_the_test_bench_builds_and_reproduces_the_simulation(tmp_path):
    """What a Vitis user runs in C simulation: tb.cpp with model.cpp,
    input.bin in, output.bin out."""
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(2))
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(x,), sparsity="1:3")
    for name, text in module.artifact.sources.items():
        (tmp_path / name).write_text(text)
    exe = tmp_path / "tb"
    p = subprocess.run([CXX, "-O1", "-std=c++14", f"-I{ap_types()}", "-ffp-contract=off", "-w",
                        str(tmp_path / "model.cpp"), str(tmp_path / "tb.cpp"), "-o", str(exe)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    x.numpy().astype(np.float32).tofile(tmp_path / "input.bin")
    assert subprocess.run([str(exe)], cwd=tmp_path).returncode == 0
    got = np.fromfile(tmp_path / "output.bin", np.float32).reshape(5, 12)
    np.testing.assert_array_equal(got, module(x).numpy())
    assert "csim_design" in module.artifact.sources["build_prj.tcl"]


def test_saved_projects_run_again(tmp_path):
    x = torch.randn(3, 96)
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(x,), sparsity="1:4")
    module.save(tmp_path / "m")
    assert (tmp_path / "m" / "sources" / "build_prj.tcl").exists()
    np.testing.assert_array_equal(hetc.load(tmp_path / "m")(x).numpy(), module(x).numpy())


class _Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        return torch.relu(self.fc(x)) + x


@pytest.mark.parametrize("model, inputs, why", [
    (torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.GELU()), (torch.randn(2, 8),),
     r"gelu \(%gelu\): not lowered for fpga yet"),
    (torch.nn.ReLU(), (torch.tensor(1.0),), "an input or output without a last axis"),
    (_Residual(), (torch.randn(2, 8),), r"add \(%add\): not lowered for fpga yet"),
    (torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), (torch.randn(1, 3, 8, 8),),
     r"conv2d \(%conv2d\): not lowered for fpga yet")])
def test_what_is_not_built_is_refused_with_the_reason(model, inputs, why):
    with pytest.raises(TargetError, match=why):
        hetc.compile(model, target="fpga", example_inputs=inputs)


def test_the_reuse_factor_sets_the_multipliers_and_the_part_its_budget():
    x = torch.randn(2, 96)
    module = hetc.compile(_mlp(), target="fpga", example_inputs=(x,), reuse=12)
    assert [(c["p"], c["bits"]) for c in module.artifact.extra["layers"]] == [(8, 8), (4, 8)]
    assert "12 DSP" in str(module.report)
    assert (module(x).numpy() == reference.run(module.graph, x.numpy())).all()
    with pytest.raises(UsageError, match=r"reuse=7 does not divide the 96 kept weights .*"
                                         r"it takes 96, 48, 32"):
        hetc.compile(_mlp(), target="fpga", example_inputs=(x,), reuse=7)
    big = torch.nn.Linear(4096, 4096)  # 16 MB of int8 weights: not on a ZCU104's chip
    with pytest.raises(TargetError, match=r"does not fit Zynq UltraScale\+ ZCU104 .* even with "
                                          r"one multiplier per layer"):
        hetc.compile(big, target="fpga", example_inputs=(torch.randn(1, 4096),), part="zcu104")


def test_the_header_ships_with_the_backend():
    with open(f"{HERE}/{HEADER}") as f:
        assert "namespace hetc" in f.read()
