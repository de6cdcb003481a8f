"""Compression passes: N:M pruning and weight precision, through the API,
the CLI and the interpreter (which runs the compressed IR exactly as encoded)."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hetc
from hetc.core.errors import UsageError
from hetc.ir import Graph, TensorType, aux_key, dtypes, parse, print_graph, verify
from hetc.passes.pipeline import PassContext, PassManager
from hetc.core.targets import get_target
from models import examples
from hetc.passes import formats, prune

RNG = np.random.default_rng(0)


def test_nm_mask_keeps_the_top_n_of_every_group():
    s = np.array([[4, 1, 3, 2, 0, 0, 5, 1]], float)
    keep = prune.nm_mask(s, 2, 4, axis=-1)
    assert keep.tolist() == [[True, False, True, False, False, False, True, True]]
    col = prune.nm_mask(s.T, 1, 4, axis=0)
    assert col[:, 0].tolist() == [True, False, False, False, False, False, True, False]


def test_wanda_weighs_by_input_channel_norms():
    w = np.array([[1.0, 2.0, 3.0, 4.0]])
    norms = np.array([10.0, 10.0, 0.1, 0.1])
    assert prune.nm_mask(prune.scores(w, "magnitude", -1), 2, 4, -1).tolist() == [[0, 0, 1, 1]]
    wanda = prune.nm_mask(prune.scores(w, "wanda", -1, norms), 2, 4, -1)
    assert wanda.tolist() == [[1, 1, 0, 0]]


@pytest.mark.parametrize("name, max_rel", [("int8", 0.01), ("int4", 0.15), ("int4-g32", 0.12),
                                           ("int4-asym", 0.12), ("int3", 0.3), ("fp8", 0.05),
                                           ("mx4", 0.12), ("mx3", 0.25)])
def test_quantization_roundtrip_error(name, max_rel):
    from hetc.ir.types import Quant

    w = RNG.standard_normal((64, 256)).astype(np.float32)
    fmt = formats.get_format(name)
    r = formats.quantize(w, fmt, axis=-1)
    q, enc, scale = r.data, r.enc, r.scale
    assert isinstance(enc, Quant) and q.dtype == fmt.dtype.storage
    assert scale.shape == enc.param_shape(w.shape) and scale.dtype == fmt.scale.storage
    back = r.values()
    err = np.linalg.norm(back - w) / np.linalg.norm(w)
    assert err < max_rel
    if fmt.dtype.is_int:
        lo, hi = fmt.dtype.int_range
        assert q.min() >= lo and q.max() <= hi
    if fmt.codebook:  # several variants are in use, and the mixture beats its base grid alone
        assert r.variant.shape == scale.shape and len(np.unique(r.variant)) > 1


@pytest.mark.parametrize("name", ["int4", "int4-asym", "int3"])
def test_groups_below_the_scale_dtypes_range_quantize_quietly(name):
    """A group whose scale underflows f16 (a depthwise convolution's groups
    of one weight, one of them 1e-9) gets scale 1 and codes 0, without a
    division by zero."""
    w = np.array([[1e-9], [0.5], [0.0], [-3e-8]], np.float32)
    with np.errstate(divide="raise", invalid="raise"):
        r = formats.quantize(w, formats.get_format(name), axis=-1)
    assert np.all(np.isfinite(r.scale.astype(np.float32)))
    np.testing.assert_allclose(r.values(), w, atol=0.01)


def _linear_graph(out=8, inp=16, seed=None):
    rng = RNG if seed is None else np.random.default_rng(seed)
    g = Graph("lin")
    x = g.add_input("x", TensorType((3, inp), dtypes.f32))
    w = g.const(rng.standard_normal((out, inp)).astype(np.float32), "fc.weight")
    b = g.const(rng.standard_normal(out).astype(np.float32), "fc.bias")
    g.outputs = [g.add("linear", [x, w, b])]
    return g


def test_sparsify_and_quantize_compose_and_interpret_exactly():
    g = _linear_graph()
    dense = g.weights["fc.weight"].copy()
    g = PassManager.from_text("sparsify{pattern=2:4},quantize{format=int4-g32}").run(
        g, PassContext(target=get_target("ref")))
    w = g.ops[0].output
    assert w.type.text() == "tensor<8x16xi4, nm<2:4>, quant<group=16, scale=f16>>"
    verify(g)  # nonzeros per group, scale shape and dtype
    # the interpreter computes with exactly the stored values: q * scale
    q = g.weights["fc.weight"].astype(np.float32)
    s = g.weights[aux_key("fc.weight", "scale")].astype(np.float32)
    x = RNG.standard_normal((3, 16)).astype(np.float32)
    (y,) = hetc.interpret(g, [x])
    np.testing.assert_allclose(y, x @ (q * s).T + g.weights["fc.bias"], rtol=1e-5, atol=1e-6)
    # nonzeros only where the two largest of every four were (a small kept
    # weight may still round to 0)
    nonzero = (q != 0).reshape(8, 4, 4)
    big = np.argsort(-np.abs(dense).reshape(8, 4, 4), axis=-1)[..., :2]
    top2 = np.zeros_like(nonzero)
    np.put_along_axis(top2, big, True, axis=-1)
    assert not (nonzero & ~top2).any() and nonzero.sum() > 0.8 * top2.sum()
    # and the text form round-trips with its weights
    assert parse(print_graph(g), weights=g.weights) == g


def test_targets_limit_patterns_and_dtypes():
    # an explicit pattern the target cannot exploit is an error, not a silent dense layer
    with pytest.raises(UsageError, match="target cuda cannot exploit it .it can: 2:4, 1:4, 2:8, "
                                         "4:8."):
        PassManager.from_text("sparsify{pattern=1:3}").run(
            _linear_graph(), PassContext(target=get_target("cuda")))
    with pytest.raises(UsageError, match="it can: 2:4, 1:4, 1:3"):
        PassManager.from_text("sparsify{pattern=2:8}").run(
            _linear_graph(), PassContext(target=get_target("fpga")))
    name, model, inputs = examples()[0]
    with pytest.raises(UsageError, match="sparsity 3:4: target x86 cannot exploit it"):
        hetc.compile(model, target="x86", example_inputs=inputs, sparsity="3:4")
    # a layer regex that matches nothing is a typo, said so with the layer names
    with pytest.raises(UsageError, match=r"layer pattern 'fc9' matches no layer .*fc1, fc2"):
        hetc.compile(model, example_inputs=inputs, precision={"fc9": "int8"})
    with pytest.raises(UsageError, match=r"'fc\[' is not a regular expression"):
        hetc.compile(model, example_inputs=inputs, precision={"fc[": "int8"})
    # the NPU has no N:M fast path, but an explicit request is applied (as zeros)
    ctx = PassContext(target=get_target("npu"))
    g = PassManager.from_text("sparsify{pattern=2:4}").run(_linear_graph(), ctx)
    assert g.ops[0].output.type.nm is not None
    assert "no N:M fast path, so no speedup" in ctx.decisions["fc"]["why"][0]


def test_layers_that_do_not_divide_stay_dense():
    ctx = PassContext(target=get_target("ref"))
    g = PassManager.from_text("sparsify{pattern=2:8}").run(_linear_graph(inp=12), ctx)
    assert g.ops[0].output.type.nm is None
    assert "12 inputs along the reduction axis are not a multiple of 8" in ctx.decisions["fc"]["why"][0]


def test_compile_with_per_layer_choices_and_report():
    name, model, inputs = examples()[0]
    cal = [(torch.randn(8, 64),) for _ in range(8)]
    module = hetc.compile(model, example_inputs=inputs, sparsity={"fc3": "none", "fc": "2:4"},
                          precision={"fc3": "int8", ".": "int4"}, calibration=cal)
    rows = {r.name: r for r in module.report.layers}
    assert rows["fc1"].pattern == "2:4" and rows["fc1"].precision == "i4"
    assert rows["fc3"].pattern == "dense" and rows["fc3"].precision == "i8"
    assert rows["fc2"].bits == pytest.approx(3.125)  # 2 of 4 kept, 4 bits + 2-bit index, f16/128
    assert rows["fc1"].bits == pytest.approx(3.25)  # 64 inputs: one f16 scale per 64
    assert any("wanda" in w for w in rows["fc1"].why)
    c = module.report.compression
    assert c["held_out"] == 2 and 0 < c["error"] and c["budget"] == 0.01
    assert module.report.weight_bytes < module.report.weight_bytes_before / 5
    # the compiled module computes what its IR says, and the IR says what the report says
    assert "nm<2:4>" in module.ir and "xi8, quant<group=256, scale=f32>>" in module.ir
    with torch.no_grad():
        ref = model(*inputs)
    got = module(*inputs)
    assert float((got - ref).norm() / ref.norm()) < 1.0  # random weights: lossy, not broken


def test_compression_errors():
    name, model, inputs = examples()[0]
    with pytest.raises(UsageError, match="'auto' applies to the whole model"):
        hetc.compile(model, example_inputs=inputs, sparsity={"fc1": "auto"})
    with pytest.raises(UsageError, match="unknown precision 'int5'"):
        hetc.compile(model, example_inputs=inputs, precision="int5")
    with pytest.raises(UsageError, match="N:M pattern '3' is not of the form"):
        hetc.compile(model, example_inputs=inputs, sparsity="3")
    with pytest.raises(UsageError, match="apply to compression"):
        hetc.compile(model, example_inputs=inputs, accuracy_budget=0.1)
    with pytest.raises(UsageError, match="calibration sample 0 has 2 inputs"):
        hetc.compile(model, example_inputs=inputs, precision="int8",
                     calibration=[(torch.randn(8, 64), torch.randn(8, 64))])


class Digits(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def digits():
    """A classifier trained here on scikit-learn's bundled 8x8 digits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target)
    torch.manual_seed(0)
    model = Digits()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    train, test = slice(0, 1400), slice(1400, None)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[train]), y[train]).backward()
        opt.step()
    return model.eval(), x, y, train, test


@pytest.mark.parametrize("config, max_drop", [({"precision": "int8"}, 0.01),
                                              ({"precision": "int4"}, 0.03),
                                              ({"sparsity": "2:4", "precision": "int8"}, 0.05),
                                              ({"sparsity": "auto", "precision": "auto",
                                                "accuracy_budget": 0.05}, 0.02)])
def test_digits_accuracy_survives_compression(digits, config, max_drop):
    model, x, y, train, test = digits
    batch = x[test][:256]
    cal = [(x[train][i:i + 256],) for i in range(0, 1024, 256)] + [(batch,)]
    module = hetc.compile(model, example_inputs=(batch,), calibration=cal, **config)
    with torch.no_grad():
        before = (model(batch).argmax(1) == y[test][:256]).float().mean().item()
    after = (module(batch).argmax(1) == y[test][:256]).float().mean().item()
    assert before > 0.9
    assert after >= before - max_drop


def test_cli_compression_flags(tmp_path):
    name, model, inputs = examples()[0]
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model, inputs), path)
    np.savez(tmp_path / "cal.npz", x=np.random.default_rng(1).standard_normal((4, 8, 64)).astype(np.float32))
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", str(path), "-o", str(tmp_path / "o"),
                        "--sparsity", "fc[12]=2:4", "--precision", "int8", "--calibration",
                        str(tmp_path / "cal.npz"), "--accuracy-budget", "0.5"],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "2:4 by wanda" in p.stdout and "within the budget 0.5" in p.stdout
    p = subprocess.run([sys.executable, "-m", "hetc", "show", str(tmp_path / "o"), "--json"],
                       capture_output=True, text=True, env=env)
    import json

    report = json.loads(p.stdout)
    assert report["compression"]["budget"] == 0.5
    assert [r["pattern"] for r in report["layers"]] == ["2:4", "2:4", "dense"]
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", str(path), "-o",
                        str(tmp_path / "auto"), "--precision", "auto:int8|int4", "--bits-budget",
                        "6", "--calibration", str(tmp_path / "cal.npz")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "within 6 bits per weight" in p.stdout


def _calibrated_linear():
    """A linear layer whose inputs have correlated channels of very uneven
    scales, as LLM activations do: where second-order methods pay off."""
    g = _linear_graph(out=32, inp=64, seed=4)
    rng = np.random.default_rng(3)
    mix = np.eye(64) + 0.5 * rng.standard_normal((64, 64))
    scales = np.exp(rng.standard_normal(64)).astype(np.float32)
    samples = [[((rng.standard_normal((3, 64)) @ mix) * scales).astype(np.float32)]
               for _ in range(240)]
    return g, samples


def _layer_error(g, compressed, samples):
    from hetc.driver.compression_options import output_error

    return output_error(g, compressed, samples)


@pytest.mark.parametrize("second, first", [
    ("quantize{format=int3,method=gptq}", "quantize{format=int3}"),
    ("quantize{format=mx3,method=gptq}", "quantize{format=mx3}"),
    ("sparsify{pattern=2:4,criterion=sparsegpt}", "sparsify{pattern=2:4}"),
    ("sparsify{pattern=2:4,criterion=sparsegpt},quantize{format=int4,method=gptq}",
     "sparsify{pattern=2:4},quantize{format=int4}"),
])
def test_second_order_methods_beat_round_to_nearest(second, first):
    from hetc.ir.parser import parse as reparse

    g, samples = _calibrated_linear()
    errors = []
    for text in (second, first):
        copy = reparse(print_graph(g), weights=type(g.weights)(g.weights))
        ctx = PassContext(target=get_target("ref"), calibration=samples[:200])
        out = PassManager.from_text(text).run(copy, ctx)
        verify(out)  # codes on the grid, zeros kept, scales of the right shape
        errors.append(_layer_error(g, out, samples[200:]))
    assert errors[0] < errors[1] * 0.85, errors


class _Fragile(nn.Module):
    """The output depends on the small difference of two nearly equal layers,
    so their weight errors are amplified: a good search keeps those two
    precise and compresses the rest."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.l1, self.a, self.b, self.l4 = (nn.Linear(64, 64), nn.Linear(64, 64),
                                            nn.Linear(64, 64), nn.Linear(64, 8))
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight + 0.02 * torch.randn(64, 64))
            self.b.bias.copy_(self.a.bias)

    def forward(self, x):
        h = torch.relu(self.l1(x))
        return self.l4(20 * (self.a(h) - self.b(h)))


def test_auto_search_meets_the_budget_and_protects_the_sensitive_layer():
    model = _Fragile().eval()
    gen = torch.Generator().manual_seed(1)
    cal = [(torch.randn(16, 64, generator=gen),) for _ in range(8)]
    module = hetc.compile(model, example_inputs=cal[0], sparsity="auto", precision="auto",
                          calibration=cal, accuracy_budget=0.02)
    rows = {r.name: r for r in module.report.layers}
    c = module.report.compression
    assert c["error"] <= 0.02
    # the fragile pair keeps more bits than the robust layers
    assert rows["a"].bits + rows["b"].bits > rows["l1"].bits + rows["l4"].bits
    assert max(rows["a"].bits, rows["b"].bits) > max(rows["l1"].bits, rows["l4"].bits)
    assert all(r.sensitivity is not None and r.speedup >= 1 for r in rows.values())
    assert any("autocompress: the most compression" in n for n in module.report.notes)
    # a looser budget never buys fewer compressed bytes
    loose = hetc.compile(model, example_inputs=cal[0], sparsity="auto", precision="auto",
                         calibration=cal, accuracy_budget=0.2)
    assert loose.report.weight_bytes <= module.report.weight_bytes
    assert loose.report.compression["error"] <= 0.2


@pytest.mark.parametrize("fmt", ["mx4", "mx3", "int3"])
def test_every_format_applies_on_the_reference_target(fmt):
    name, model, inputs = examples()[0]
    module = hetc.compile(model, example_inputs=inputs, precision=fmt)
    rows = module.report.layers
    assert all(r.precision == formats.get_format(fmt).dtype.name for r in rows), \
        [r.why for r in rows]


def _fragile_calibration():
    gen = torch.Generator().manual_seed(1)
    return _Fragile().eval(), [(torch.randn(16, 64, generator=gen),) for _ in range(8)]


def test_bits_budget_fits_the_bits_and_spends_them_on_the_sensitive_layers():
    model, cal = _fragile_calibration()
    errors = {}
    for bits in (5.0, 7.0):
        module = hetc.compile(model, example_inputs=cal[0], precision="auto:int8|int4|mx3",
                              calibration=cal, bits_budget=bits)
        c = module.report.compression
        assert c["bits_per_weight"] <= bits
        assert {r.precision for r in module.report.layers} <= {"i8", "i4", "u3"}
        assert any(f"within {bits:g} bits per weight" in n for n in module.report.notes)
        errors[bits] = c["error"]
    rows = {r.name: r.precision for r in module.report.layers}
    assert rows["a"] == rows["b"] == "i8" and rows["l1"] != "i8"  # the amplified pair
    # uniform int4 (4.25 bits here: per-channel scales) is less accurate than the mixes
    uniform = hetc.compile(model, example_inputs=cal[0], precision="int4", calibration=cal)
    assert errors[7.0] < errors[5.0] < uniform.report.compression["error"]
    with pytest.raises(UsageError, match="bits_budget applies to the per-layer search"):
        hetc.compile(model, example_inputs=cal[0], precision="int4", bits_budget=4)


def test_auto_applies_the_requested_rounding_to_its_choice():
    model, cal = _fragile_calibration()
    kw = dict(example_inputs=cal[0], precision="auto:int4", calibration=cal, bits_budget=4.5)
    rtn = hetc.compile(model, **kw)
    gptq = hetc.compile(model, rounding="gptq", **kw)
    assert [r.precision for r in rtn.report.layers] == [r.precision for r in gptq.report.layers]
    assert gptq.report.compression["error"] < rtn.report.compression["error"]


def test_a_user_metric_is_the_budget():
    model, cal = _fragile_calibration()
    gen = torch.Generator().manual_seed(5)
    probes = [torch.randn(16, 64, generator=gen) for _ in range(4)]
    targets = [model(p).detach() for p in probes]
    calls = []

    def metric(run):  # 1 + mean squared error to the fp32 outputs on the user's own data
        calls.append(1)
        return 1.0 + sum(float(((torch.as_tensor(run(p)) - t) ** 2).mean())
                         for p, t in zip(probes, targets)) / len(probes)

    module = hetc.compile(model, example_inputs=cal[0], precision="auto", calibration=cal,
                          accuracy_metric=metric, accuracy_budget=0.05)
    c = module.report.compression
    assert c["measure"].startswith("metric increase") and 0 <= c["error"] <= 0.05
    assert len(calls) >= 10  # the uncompressed score, each bisection step, the final check
    assert "metric increase" in str(module.report)
    with pytest.raises(UsageError, match="accuracy_metric must be a callable"):
        hetc.compile(model, example_inputs=cal[0], precision="int8", accuracy_metric=1.0)
    with pytest.raises(UsageError, match="must return a number"):
        hetc.compile(model, example_inputs=cal[0], precision="int8", calibration=cal,
                     accuracy_metric=lambda run: "good")


def test_half_precision_tables_stay_when_quantizing_would_change_their_type():
    """Quantized values are f32 in the IR: an f16 embedding table (here tied
    to the output layer, so listed as a linear layer) is kept f16, and the
    report says why; the other layers are quantized."""
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 32)
            self.fc = torch.nn.Linear(32, 32)

        def forward(self, ids):
            return torch.nn.functional.linear(self.fc(self.embed(ids)), self.embed.weight)

    model, ids = Tied().half(), torch.randint(0, 50, (1, 5))
    for options in ({"precision": "int4"}, {"precision": "auto", "calibration": [(ids,)] * 2}):
        module = hetc.compile(model, example_inputs=(ids,), **options)
        rows = {r.name: r for r in module.report.layers}
        assert rows["embed"].precision == "f16", rows["embed"]
        if options["precision"] == "int4":
            assert rows["fc"].precision == "i4"
            assert any("would be f32" in w for w in rows["embed"].why), rows["embed"].why
        module(ids)



class _Tied(nn.Module):
    """Two linear layers sharing one weight."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(64, 64) / 8)

    def forward(self, x):
        return F.linear(torch.relu(F.linear(x, self.w)), self.w)


@pytest.mark.parametrize("tied", [False, True], ids=["separate", "tied"])
def test_the_search_stores_the_codes_it_weighed(tied, monkeypatch):
    """The per-layer search keeps each unpruned candidate's codes from
    weighing and stores the chosen ones as they are: the same weights as
    rounding them again (KEEP_CODES = 0), a weight two layers share (one
    layer of the search) included."""
    from hetc.ir.interpret import load_const
    from hetc.passes import autocompress

    model, cal = _fragile_calibration()
    if tied:
        torch.manual_seed(0)
        model = _Tied().eval()
    kw = dict(example_inputs=cal[0], precision="auto:int8|int4|mx3", calibration=cal,
              bits_budget=6.0)
    handed = []
    real = autocompress.apply

    def spy(*args):
        handed.append(len(args[7] or {}) if len(args) > 7 else 0)
        return real(*args)

    monkeypatch.setattr(autocompress, "apply", spy)
    kept = hetc.compile(model, **kw)
    monkeypatch.setattr(autocompress, "KEEP_CODES", 0)
    again = hetc.compile(model, **kw)
    assert handed[0] > 0 and handed[1] == 0, handed
    consts = [[op for op in m.graph.ops if op.kind == "const"] for m in (kept, again)]
    assert len(consts[0]) == len(consts[1])
    for a, b in zip(*consts):
        assert np.array_equal(np.asarray(load_const(a, kept.graph)),
                              np.asarray(load_const(b, again.graph)))
    assert [r.precision for r in kept.report.layers] == [r.precision for r in again.report.layers]
