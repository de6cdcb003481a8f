"""Target x86: the generated C (one entry point, built with the system C
compiler) computes what the reference interpreter computes."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hetc
from hetc.core.errors import TargetError
from hetc.ir import Graph, TensorType, dtypes
from hetc.ir.interpret import quantize_activations
from models import examples

REL_TOL = 1e-5


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def both(model, inputs, **kw):
    return (hetc.compile(model, target="x86", example_inputs=inputs, **kw),
            hetc.compile(model, target="ref", example_inputs=inputs, **kw))


@pytest.mark.parametrize("name, model, inputs", examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_models_match_the_interpreter(name, model, inputs):
    x86, ref = both(model, inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    fresh = tuple(torch.randn_like(x) for x in inputs)
    assert rel_err(x86(*fresh), ref(*fresh)) < REL_TOL
    assert "hetc_run" in x86.sources["model.c"] and "kernels.h" in x86.sources


def test_vit_matches_the_interpreter():
    from families import vit

    model, inputs = vit()
    x86, ref = both(model, inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL


def test_bert_with_pretrained_weights_matches_the_interpreter():
    """MiniLM: i64 token ids, embeddings, a bool padding mask computed in the
    graph (cast, gather, logical_and) and made additive for attention."""
    from families import minilm

    model, inputs = minilm()
    x86, ref = both(model, inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert x86.artifact.extra["kernels"]["attention f32"] == 6


@pytest.mark.parametrize("precision", [None, "int8", "int4"])
@pytest.mark.parametrize("make", ["gpt2_tiny", "llama_tiny"])
def test_decoders_prefill_and_decode_with_kv_cache_match_the_interpreter(make, precision):
    """GPT-2's tied embedding and LM head, int8/int4 weights on both."""
    import families

    step = families.KVStep(getattr(families, make)())
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(1))
    inputs = (ids, step.empty_cache())  # an empty cache: zero-length tensors
    for _ in range(2):  # prefill, then one decode step on the cache it produced
        x86, ref = both(step, inputs, precision=precision)
        (logits, cache), (want_logits, want_cache) = x86(*inputs), ref(*inputs)
        assert rel_err(logits, want_logits) < REL_TOL and rel_err(cache, want_cache) < REL_TOL
        inputs = (want_logits[:, -1:].argmax(-1), want_cache)


class Indexing(nn.Module):
    """Slices with steps, broadcasts, gathers with negative indices,
    reductions over several axes, comparisons, casts and bool logic."""

    def forward(self, x, idx, keep):
        a = x[:, 1:7:2] * 2
        c = x[:, :1].expand(-1, 8, -1) + x
        g = x[:, idx]
        r = x.amax(dim=(0, 2)) + x.sum(dim=-1).mean(0) + x.amin(dim=1).sum()
        m = (keep & (idx > 0).unsqueeze(0).expand(2, -1)[:, :1]).float()
        w = torch.where(x > 0, x, x * 0.1)
        s = torch.cumsum(x, 1).log_softmax(1) + x.argmax(1, keepdim=True).float()
        return a.sum() + x[:, :, 1:4].sum(-1), c, g, r, m, idx.float(), w, s


def test_indexing_reduction_and_bool_ops_match_the_interpreter():
    inputs = (torch.randn(2, 8, 5), torch.tensor([3, -1, 0, 2]), torch.tensor([[True], [False]]))
    x86, ref = both(Indexing(), inputs)
    for got, want in zip(x86(*inputs), ref(*inputs)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert rel_err(got, want) < REL_TOL


def test_an_index_out_of_range_is_a_clear_error_at_run_time():
    emb = nn.Embedding(16, 4)
    x86 = hetc.compile(emb, target="x86", example_inputs=(torch.tensor([1, 2]),))
    with pytest.raises(TargetError, match=r"embedding: index 16 out of range \[-16, 16\)"):
        x86(torch.tensor([3, 16]))
    assert x86(torch.tensor([3, -16])).shape == (2, 4)  # negative indices count from the end


@pytest.mark.parametrize("config", [{"precision": "int8"}, {"precision": "int4"},
                                    {"precision": "int4-g32"}, {"precision": "mx4"},
                                    {"sparsity": "2:4", "precision": "int4"}],
                         ids=lambda c: "+".join(c.values()))
@pytest.mark.parametrize("activations", [None, "int8"])
def test_compressed_linear_layers_match_the_interpreter(config, activations):
    name, model, inputs = examples()[0]
    x86, ref = both(model, inputs, activations=activations, **config)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    kernels = x86.artifact.extra["kernels"]
    if config["precision"] in ("int8", "int4"):  # integer weights get integer kernels
        sparse = f"{config['sparsity']} " if "sparsity" in config else ""
        want = "int8 act x " if activations else f"linear {sparse}int"
        assert all(k.startswith("linear ") and " int" in k for k in kernels) and \
            any(want in k for k in kernels), kernels


@pytest.mark.parametrize("pattern, precision", [("2:4", "int4"), ("1:4", "int4"), ("2:8", "int4-g64"),
                                                 ("4:8", "int8"), ("1:3", "int8"), ("2:4", "int4-g32")])
@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_packed_nm_kernels_match_the_interpreter(pattern, precision, portable, monkeypatch):
    """N:M weights with int8 activations run the packed sparse kernel (only
    kept values and their positions stored), on AVX-512 and in portable C."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(768, 96), nn.GELU(), nn.Linear(96, 8))
    inputs = (torch.randn(3, 768),)
    x86, ref = both(model, inputs, sparsity={"0": pattern}, precision={"0": precision},
                    activations="int8")
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert any(f"x {pattern} int" in k for k in x86.artifact.extra["kernels"]), \
        x86.artifact.extra["kernels"]


@pytest.mark.parametrize("pattern, precision", [("2:4", "int4"), ("1:4", "int4-g32"),
                                                 ("2:8", "int4-g64"), ("4:8", "int8"),
                                                 ("1:3", "int8")])
@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_packed_nm_kernels_with_float_activations_match_the_interpreter(pattern, precision,
                                                                        portable, monkeypatch):
    """N:M weights without activations= read only the kept values and their
    positions with f32 activations (k_linear_rbf), on AVX-512 and in
    portable C: every token remainder of the passes of 8, 4, 2 and 1 (and
    the independent sums of few tokens), a partial last block of rows, a
    bias and none."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(768, 37), nn.GELU(), nn.Linear(37, 8, bias=False))
    for batch in (1, 2, 5, 15):
        inputs = (torch.randn(batch, 768),)
        x86, ref = both(model, inputs, sparsity={"0": pattern}, precision={"0": precision})
        assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL, batch
        bits = precision[:4]
        assert any(k.startswith(f"linear {pattern} {bits} g") for k in
                   x86.artifact.extra["kernels"]), x86.artifact.extra["kernels"]


@pytest.mark.parametrize("precision", ["f32", "bf16"])
@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_float_weight_panels_match_the_interpreter(precision, portable, monkeypatch):
    """Constant float weights run the panel kernel (16 rows per panel,
    k-major; bf16 weights stay 16-bit): partial last panels, an odd
    panel count, every token remainder, and batches of 16 or more (three
    panels per pass), on AVX-512 and in portable C."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 37), nn.ReLU(), nn.Linear(37, 50))
    for batch in (1, 3, 13, 37):
        inputs = (torch.randn(batch, 40),)
        x86, ref = both(model, inputs, **({} if precision == "f32" else {"precision": precision}))
        assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL, batch
        assert x86.artifact.extra["kernels"] == {f"linear {precision} weights": 2}


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(96, 100), nn.Linear(100, 96)

    def forward(self, x, r):
        return self.down(F.gelu(self.up(x))) + r


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_float_weight_panels_on_many_tokens(portable, monkeypatch):
    """From 512 tokens the panel kernel works in even chunks of tokens on
    both threads (ConvNeXt's layers): chunk boundaries that are not
    multiples of 8, and epilogues (GELU, a residual added from another
    tensor) on each chunk's own tokens."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = _Residual().eval()
    for tokens in (517, 1003):
        inputs = (torch.randn(2, tokens, 96), torch.randn(2, tokens, 96))
        x86, ref = both(model, inputs)
        assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL, tokens
        assert x86.artifact.extra["kernels"] == {"linear f32 weights": 2}


class _Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10999, 37)

    def forward(self, x, r):
        return F.gelu(self.fc(x)) + r


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_float_weight_panels_on_inputs_over_4_mb(portable, monkeypatch):
    """99 tokens of 10999 features (4.4 MB): AVX-512 sums blocks of 512
    features over every group of panels, a partial last block, then the
    bias, GELU and a residual add."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    inputs = (torch.randn(99, 10999), torch.randn(99, 37))
    x86, ref = both(_Wide().eval(), inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert x86.artifact.extra["kernels"] == {"linear f32 weights": 1}


@pytest.mark.parametrize("kind", ["reduce_sum", "reduce_mean", "reduce_prod", "reduce_max",
                                  "reduce_min"])
def test_reductions_over_leading_axes_match_the_interpreter(kind):
    """Reductions whose last kept axis is contiguous (a global response
    norm's sums over positions per channel): blocks of 64 outputs with a
    partial one, kept axes before it, a NaN (max and min keep it)."""
    g = Graph("reduce")
    x = g.add_input("x", TensorType((2, 5, 7, 100), dtypes.f32))
    g.outputs = [g.add(kind, [x], {"axes": [1, 2], "keepdims": True}),
                 g.add(kind, [x], {"axes": [0, 1, 2], "keepdims": False})]
    rng = np.random.default_rng(0)
    xs = (rng.standard_normal((2, 5, 7, 100)) * (0.9 if kind == "reduce_prod" else 3)).astype(
        np.float32)
    xs[1, 3, 2, 70] = np.nan
    with np.errstate(all="ignore"):
        want, got = hetc.compile(g)(xs), hetc.compile(g, target="x86")(xs)
    for w, o in zip(want, got):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=2e-5, equal_nan=True)  # f32 sums there
        assert np.array_equal(np.isnan(o), np.isnan(w))


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_run_time_matmul_and_softmax_match_the_interpreter(portable, monkeypatch):
    """Products of two run-time operands (attention written out, einsum):
    AVX-512 tiles of 8, 4, 2 and 1 rows x 48 columns with partial ones,
    chunks of 64 rows, a batch broadcast from one operand; softmax and
    log-softmax rows of 101 values on 16 lanes, a row of -inf and a row
    holding a NaN."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    g = Graph("mm")
    a = g.add_input("a", TensorType((3, 133, 37), dtypes.f32))
    b = g.add_input("b", TensorType((3, 37, 101), dtypes.f32))
    b2 = g.add_input("b2", TensorType((37, 101), dtypes.f32))
    s = g.add("matmul", [a, b])
    g.outputs = [s, g.add("softmax", [s], {"axis": -1}), g.add("log_softmax", [s], {"axis": -1}),
                 g.add("matmul", [a, b2])]
    rng = np.random.default_rng(0)
    xa = rng.standard_normal((3, 133, 37)).astype(np.float32)
    xb = rng.standard_normal((3, 37, 101)).astype(np.float32)
    xb2 = rng.standard_normal((37, 101)).astype(np.float32)
    xa[0, 5] = 0.0
    xb[1] *= 30  # scores far apart: exp underflows to 0 for most of a row
    with np.errstate(all="ignore"):
        want = hetc.compile(g)(xa, xb, xb2)
        got = hetc.compile(g, target="x86")(xa, xb, xb2)
    for w, o in zip(want, got):  # sums in another order: error relative to the largest
        np.testing.assert_allclose(o, w, rtol=2e-5, atol=2e-6 * np.abs(w).max())
    g2 = Graph("softmax")
    x = g2.add_input("x", TensorType((4, 101), dtypes.f32))
    g2.outputs = [g2.add("softmax", [x], {"axis": -1}), g2.add("log_softmax", [x], {"axis": -1})]
    rows = rng.standard_normal((4, 101)).astype(np.float32) * 5
    rows[1] = -np.inf
    rows[2, 7] = np.nan
    with np.errstate(all="ignore"):
        want, got = hetc.compile(g2)(rows), hetc.compile(g2, target="x86")(rows)
    for w, o in zip(want, got):
        np.testing.assert_allclose(o, w, rtol=2e-5, atol=2e-6, equal_nan=True)


@pytest.mark.parametrize("precision", ["int8", "int4", "int4-g32"])
@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_weight_only_integer_kernels_match_the_interpreter(precision, portable, monkeypatch):
    """Integer weights with float activations (no activations=): 16-row
    blocks decoded in registers on AVX-512 and in portable C, every token
    remainder of the passes of 8, 4, 2 and 1, row counts that leave a partial
    last block (37, 5), int8 groups of any size (rows of 96 and 37) and a
    bias; from 128 tokens (131, and 600 in chunks) AVX-512 decodes each
    block once into float panels."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 37), nn.ReLU(), nn.Linear(37, 5, bias=False))
    for batch in (1, 2, 3, 7, 15, 131, 600):
        inputs = (torch.randn(batch, 96),)
        x86, ref = both(model, inputs, precision=precision)
        assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL, batch
        assert any(k.startswith("linear int") for k in x86.artifact.extra["kernels"])


def test_nm_weights_store_only_the_kept_values_and_their_positions():
    """2:4 + int4 stores 4 + 2 bits per kept value (3 per weight), 1:4 + int4
    1.5 per weight, against 4 for dense int4 (plus scales and sums for all)."""
    torch.manual_seed(0)
    model, inputs = nn.Linear(1024, 256), (torch.randn(1, 1024),)
    size = {}
    for pattern in (None, "2:4", "1:4"):
        module = hetc.compile(model, target="x86", example_inputs=inputs, precision="int4",
                              activations="int8", **({"sparsity": pattern} if pattern else {}))
        size[pattern] = module.artifact.extra["weights_bytes"]
    codes = 1024 * 256 / 2
    assert size["2:4"] < size[None] - 0.2 * codes and size["1:4"] < size[None] - 0.6 * codes, size


def test_nm_layouts_the_packed_kernel_cannot_take_stay_correct():
    """1:3 needs quantization groups that hold whole 3-groups: with group 128
    the weight is run dense (zeros stored), still exact."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(384, 64))
    inputs = (torch.randn(2, 384),)
    x86, ref = both(model, inputs, sparsity="1:3", precision="int4", activations="int8")
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert x86.artifact.extra["kernels"] == {"linear int8 act x int4 g128": 1}


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_integer_kernel_tiles_cover_any_batch_and_row_count(precision):
    """The integer kernel works on blocks of 16 rows and passes of 8, 4, 2
    and 1 tokens: a partial last block and every token remainder must come
    out right."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 33))
    for batch in (1, 2, 3, 5, 9, 15):
        inputs = (torch.randn(batch, 256),)
        x86, ref = both(model, inputs, precision=precision, activations="int8")
        assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL, batch


def test_int8_activations_are_quantized_per_token_and_group():
    x = np.array([[1.0, -0.5, 0.25, 0.0, 10.0, 5.0, -2.5, 1.0]], np.float32)
    q = quantize_activations(x, 4)
    s1, s2 = np.float32(1.0) / 127, np.float32(10.0) / 127
    np.testing.assert_array_equal(q[0, :4], np.rint(x[0, :4] / s1) * s1)
    np.testing.assert_array_equal(q[0, 4:], np.rint(x[0, 4:] / s2) * s2)
    assert q[0, 4] == pytest.approx(10.0) and q[0, 3] == 0.0


def test_int8_activations_cost_accuracy_the_report_measures():
    name, model, inputs = examples()[0]
    cal = [(torch.randn_like(inputs[0]),) for _ in range(4)]
    plain = hetc.compile(model, example_inputs=inputs, precision="int8", calibration=cal)
    act = hetc.compile(model, example_inputs=inputs, precision="int8", calibration=cal,
                       activations="int8")
    assert act.report.compression["error"] > plain.report.compression["error"]
    assert any("activations int8 per token" in w for r in act.report.layers for w in r.why)
    with pytest.raises(hetc.core.errors.UsageError, match="activations='int8' applies to integer"):
        hetc.compile(model, example_inputs=inputs, activations="int8")


class _IntArithmetic(nn.Module):
    def forward(self, x):
        return (x.long() ** 3).float()  # integer pow: no integer kernel


def test_unsupported_ops_are_named_at_compile_time():
    with pytest.raises(TargetError, match=r"target x86 cannot lower .*op #\d+ pow \(%\w+\): i64 value"):
        hetc.compile(_IntArithmetic(), target="x86", example_inputs=(torch.randn(2, 3),))


def test_missing_c_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setenv("HETC_CACHE", str(tmp_path))  # nothing cached: a build is needed
    name, model, inputs = examples()[0]
    module = hetc.compile(model, target="x86", example_inputs=inputs)  # compiling works
    with pytest.raises(TargetError, match="no C compiler"):
        module(*inputs)


def test_save_load_and_the_cli(tmp_path):
    name, model, inputs = examples()[0]
    module = hetc.compile(model, target="x86", example_inputs=inputs, precision="int4")
    module.save(tmp_path / "m")
    assert (tmp_path / "m" / "sources" / "model.c").exists()
    loaded = hetc.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded(*inputs).numpy(), module(*inputs).numpy())
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(model, inputs), path)
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", str(path), "-t", "x86",
                        "-o", str(tmp_path / "cli"), "--precision", "int8", "--activations",
                        "int8", "-q"], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    assert "k_linear_rb" in (tmp_path / "cli" / "sources" / "model.c").read_text()


def test_two_models_with_the_same_code_keep_their_own_weights():
    name, model, inputs = examples()[0]
    other = type(model)().eval()  # same architecture (same generated code), other weights
    a = hetc.compile(model, target="x86", example_inputs=inputs)
    b = hetc.compile(other, target="x86", example_inputs=inputs)
    assert a.sources == b.sources
    ya, yb = a(*inputs), b(*inputs)
    with torch.no_grad():
        assert rel_err(ya, model(*inputs)) < REL_TOL and rel_err(yb, other(*inputs)) < REL_TOL


def test_weights_outputs_and_caches_lie_on_cache_lines():
    """numpy puts a large array 16 bytes past a page, where every 64-byte
    vector the kernels load or store would straddle two cache lines."""
    from hetc.runtime.generate import DecoderSpec, HostCache

    model = nn.Linear(512, 640)  # 1.3 MB of weights, 1.3 MB out: numpy would map both
    x = torch.randn(512, 512)
    module = hetc.compile(model, target="x86", example_inputs=(x,))
    assert module.artifact.lowered.blob.ctypes.data % 64 == 0
    out = module(x.numpy())  # numpy in, the output array itself out
    assert out.ctypes.data % 64 == 0 and out.shape == (512, 640)
    with torch.no_grad():
        assert rel_err(out, model(x)) < REL_TOL
    cache = HostCache(None, DecoderSpec(max_context=1024, chunk=1, layers=2, kv_heads=4,
                                        head_dim=64))
    assert all(layer.ctypes.data % 64 == 0 and not layer.any() for layer in cache.layers)


class _Outputs(nn.Module):
    def forward(self, x):
        r = torch.relu(x)
        return x, r.reshape(6, 2), r, torch.tanh(x)  # an input, an alias, shared buffers


def test_outputs_that_are_inputs_or_aliases_are_copied_out():
    x = torch.randn(3, 4)
    x86, ref = both(_Outputs(), (x,))
    for a, b in zip(x86(x), ref(x)):
        assert a.shape == b.shape and rel_err(a, b) < REL_TOL


def test_generate_with_a_static_kv_cache_matches_pytorch_greedy():
    """decoder=: the step graph with positions, mask and a fixed-size cache as
    inputs runs on x86 too; the host loop (hetc.runtime.generate) is shared."""
    from families import llama_tiny

    model = llama_tiny()
    ids = torch.randint(1, 256, (1, 7), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
    module = hetc.compile(model, target="x86", decoder={"max_context": 32, "chunk": 4})
    assert torch.equal(module.generate(ids, max_new_tokens=24, eos_token_id=-1), want)


def test_attention_reads_the_static_cache_in_place():
    """The decoder step's cache slices, grouped-query repeat and concat with
    the new token are not copied: attention reads the cache input directly."""
    from families import llama_tiny

    module = hetc.compile(llama_tiny(), target="x86", decoder={"max_context": 16, "chunk": 1})
    body = module.sources["model.c"].split("int hetc_run")[1]
    assert "/* expand" not in body
    calls = [line for line in body.splitlines() if "k_attention(" in line]
    assert len(calls) == 2 and all("in[3]" in c or "in[4]" in c for c in calls)


@pytest.mark.parametrize("dtype", ["i64", "i32"])
def test_integer_arithmetic_matches_the_interpreter(dtype):
    """Integer add, sub, mul (wrapping), div (toward zero, x / 0 = 0, MIN / -1
    wrapping), maximum, minimum, neg, abs, relu, sign and cumsum on x86,
    bit-exact against the interpreter (pipeline="": nothing folded away)."""
    from hetc.ir import Graph, TensorType, dtypes
    from hetc.ir.interpret import interpret

    dt = dtypes.get(dtype)
    info = np.iinfo(dt.storage)
    g = Graph("ints")
    x = g.add_input("x", TensorType((2, 6), dt))
    y = g.add_input("y", TensorType((6,), dt))
    outs = [g.add(k, [x, y]) for k in ("add", "sub", "mul", "div", "maximum", "minimum")]
    outs += [g.add(k, [x]) for k in ("neg", "abs", "relu", "sign")]
    outs += [g.add("cumsum", [x], {"axis": 1, "exclusive": e, "reverse": r})
             for e in (False, True) for r in (False, True)]
    g.outputs = outs
    module = hetc.compile(g, target="x86", pipeline="")
    xs = np.array([[7, -7, info.max, info.min, 0, 5], [-9, 9, info.min, info.max, 3, -1]],
                  dt.storage)
    ys = np.array([2, 2, 2, -1, 0, 0], dt.storage)
    with np.errstate(over="ignore"):
        want = interpret(g, [xs, ys])
    for got, w in zip(module(xs, ys), want):
        np.testing.assert_array_equal(got, w)


def _topk_input(rng, shape, dt):
    """Few distinct values (many ties); for floats NaN, infinities and -0 too."""
    if dt.is_float:
        x = rng.integers(-3, 4, shape).astype(np.float32)
        for value, p in ((np.nan, 0.15), (np.inf, 0.05), (-np.inf, 0.05), (-0.0, 0.1)):
            x[rng.random(shape) < p] = value
        return x
    info = np.iinfo(dt.storage)
    return rng.choice([info.min, info.max, info.min + 1, -1, 0, 1, 1, 2], shape).astype(dt.storage)


@pytest.mark.parametrize("dtype", ["f32", "i64", "i32"])
def test_topk_matches_the_interpreter_bit_for_bit(dtype):
    """topk (kernels.h k_topk: each line's elements inserted in index order
    into its k outputs) on odd line lengths (1, 3, 7, 33, 257), the middle and
    last axes, k from 0 to the whole line, largest and smallest, with many
    ties (index order) and for f32 NaN (above every number), infinities and
    -0, equal to the interpreter bit for bit (indices and values)."""
    from hetc.ir import Graph, TensorType, dtypes
    from hetc.ir.interpret import interpret

    rng = np.random.default_rng(3)
    dt = dtypes.get(dtype)
    g = Graph("topk")
    feeds, outs = [], []
    for shape, axes in (((2, 7, 3), (1, -1)), ((5, 33), (-1,)), ((257,), (0,)),
                        ((4, 1), (1,))):
        x = g.add_input(f"x{len(feeds)}", TensorType(shape, dt))
        feeds.append(_topk_input(rng, shape, dt))
        for axis in axes:
            n = shape[axis]
            for k in sorted({0, 1, 2, n // 2, n} & set(range(n + 1))):
                for largest in (True, False):
                    outs += g.add("topk", [x], {"k": k, "axis": axis, "largest": largest})
    g.outputs = outs
    module = hetc.compile(g, target="x86", pipeline="")
    for got, want, v in zip(module(*feeds), interpret(g, feeds), outs):
        assert got.dtype == want.dtype and got.shape == want.shape, v
        np.testing.assert_array_equal(got, want, err_msg=str(v))
        if got.dtype.kind == "f":
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want), err_msg=str(v))


def test_models_build_against_one_kernel_library(tmp_path, monkeypatch):
    """kernels.h is built once into a kernel library that each model's own
    model.c links by full path; the sources a module shows still build in
    one unit, to the same numbers."""
    from hetc.backends.c.build import build
    from hetc.backends.c.library import Library
    from hetc.backends.x86 import FLAGS

    monkeypatch.setenv("HETC_CACHE", str(tmp_path))
    name, model, inputs = examples()[0]
    first = hetc.compile(model, target="x86", example_inputs=inputs)
    got = first(*inputs)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    second = hetc.compile(conv, target="x86", example_inputs=(torch.randn(1, 3, 9, 9),))
    second(torch.randn(1, 3, 9, 9))
    builds = tmp_path / "builds"
    libraries = sorted(builds.glob("*/kernels.so"))
    models = sorted(builds.glob("*/model.so"))
    assert len(libraries) == 1 and len(models) == 2, (libraries, models)
    for so in models:  # the library's full path is in the model's dynamic section
        assert str(libraries[0]).encode() in so.read_bytes()
    one_unit = Library(first.artifact.graph, first.artifact.lowered,
                       build(dict(first.sources), FLAGS))
    again = one_unit([np.asarray(x) for x in inputs])[0]
    assert np.array_equal(again, got.numpy())
    assert len(list(builds.glob("*/kernels.so"))) == 1  # built with the kernels, not against them


class Broadcasts(nn.Module):
    """Comparisons, logical ops and where with operands broadcast along
    different axes (rows walked with each operand's own strides)."""

    def forward(self, x, y, m):
        c = x > y
        either = torch.logical_xor(c, m) | (y < 0)
        return c, either, torch.where(m, x, y), torch.where(either, y * 2, x), \
            torch.eq(x.round(), y.round())


def test_broadcast_comparisons_logic_and_where_match_the_interpreter():
    torch.manual_seed(0)
    inputs = (torch.randn(2, 3, 5), torch.randn(3, 1), torch.randn(2, 1, 5) > 0)
    x86, ref = both(Broadcasts(), inputs)
    for got, want in zip(x86(*inputs), ref(*inputs)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_vector_unary_functions_match_the_interpreter(portable, monkeypatch):
    """GELU (erf and tanh), SiLU, sigmoid and tanh, alone and as a linear
    layer's epilogue: 16 lanes at a time on AVX-512 (a masked tail), on
    values from -90 to 90, small ones (tanh's relative precision there, and
    -0), infinities and NaN."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    small = np.logspace(-30, -0.2, 60).astype(np.float32)
    x = np.concatenate([np.linspace(-90, 90, 301, dtype=np.float32), small, -small,
                        np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-30], np.float32)])
    wrong = []
    for kind, attrs in (("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}),
                        ("sigmoid", {}), ("tanh", {})):
        g = Graph("unary")
        v = g.add_input("x", TensorType(x.shape, dtypes.f32))
        g.outputs = [g.add(kind, [v], attrs)]
        with np.errstate(all="ignore"):
            want, got = hetc.compile(g)(x), hetc.compile(g, target="x86")(x)
        finite = np.isfinite(want)
        if not (np.array_equal(np.isnan(got), np.isnan(want)) and
                np.array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)]) and
                np.allclose(got[finite], want[finite], rtol=1e-5, atol=1e-6)):
            wrong.append(f"{kind} {attrs}: {np.abs(got[finite] - want[finite]).max()}")
        if kind == "tanh" and not (np.allclose(got[finite], want[finite], rtol=1e-6, atol=0)
                                   and np.array_equal(np.signbit(got), np.signbit(want))):
            wrong.append(f"tanh: relative {np.abs(got[finite] / want[finite] - 1).max()}")
    assert not wrong, wrong
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 40), nn.GELU(), nn.Linear(40, 8), nn.SiLU()).eval()
    inputs = (torch.randn(3, 7, 24) * 4,)
    x86, ref = both(model, inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert any("elementwise ops run as epilogues" in n for n in x86.report.notes)


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_elementwise_kernels_match_the_interpreter(portable, monkeypatch):
    """Binary ops with operands broadcast along the rows, along the last axis
    (one value per row) or not at all, and unary ops, each loop with its op
    a constant: threaded above 64K values (runs of 16384 and a shorter last
    one) and not, NaN and infinities included: bit for bit where the C and
    numpy operations round alike, within a few ulp where they need not (pow,
    exp within 3 ulp, rsqrt, reciprocal, sin)."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    rng = np.random.default_rng(0)
    shapes = {"a": (2, 9, 61, 64), "row": (61, 64), "col": (2, 9, 61, 1), "s": (3, 1),
              "t": (1, 5)}
    arrays = {k: rng.standard_normal(v).astype(np.float32) * 3 for k, v in shapes.items()}
    arrays["a"].flat[::97] = np.nan
    arrays["a"].flat[5::89] = np.inf
    arrays["row"].flat[::13] = np.nan
    g = Graph("elementwise")
    v = {k: g.add_input(k, TensorType(arrays[k].shape, dtypes.f32)) for k in shapes}
    outs = []
    for kind in ("add", "sub", "mul", "div", "maximum", "minimum", "pow"):
        outs += [g.add(kind, [v["a"], v["row"]]), g.add(kind, [v["col"], v["a"]]),
                 g.add(kind, [v["a"], v["col"]]), g.add(kind, [v["s"], v["t"]])]
    for kind in ("neg", "abs", "relu", "sqrt", "rsqrt", "reciprocal", "exp", "sin"):
        outs += [g.add(kind, [v["a"]]), g.add(kind, [v["s"]])]
    g.outputs = outs
    ins = [arrays[k] for k in shapes]
    with np.errstate(all="ignore"):
        want, got = hetc.compile(g)(*ins), hetc.compile(g, target="x86")(*ins)
    for i, (w, o) in enumerate(zip(want, got)):
        kind = g.outputs[i].producer.kind
        assert np.allclose(o, w, rtol=1e-6, atol=0, equal_nan=True), (i, kind)
        if kind not in ("pow", "exp", "rsqrt", "reciprocal", "sin"):
            assert np.array_equal(o, w, equal_nan=True), (i, kind)


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_permutes_and_strided_copies_match_the_interpreter(portable, monkeypatch):
    """Transposes large enough to split among threads (each thread steps
    through its rows' indices from its first), small ones, a transpose
    whose rows are not contiguous, a slice, a broadcast, 64-bit elements,
    axes of one element and axes that merge (an einsum's permute of
    [N, 1, S, 1]), bit for bit."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")

    class Layouts(nn.Module):
        def forward(self, x, n):
            heads = x.reshape(2, 64, 12, 32).permute(0, 2, 1, 3)  # rows of 32 contiguous
            cols = x.reshape(2, 64, 384).transpose(1, 2)  # rows of one strided value each
            ones = x.reshape(2, 64, 1, 384, 1).permute(2, 0, 4, 1, 3)  # [1, 2, 1, 64, 384]
            merged = x.reshape(2, 1, 64, 1, 96, 4).permute(1, 0, 3, 2, 4, 5)[..., :3]
            return (heads.contiguous(), cols.contiguous(), x[:, 3:, 7:12].contiguous(),
                    x[:1, :3, :1].expand(4, 3, 7).contiguous(),
                    n.reshape(3, 5, 7, 2, 3).permute(4, 2, 0, 3, 1).contiguous(),
                    ones.contiguous() * 1.0, merged.contiguous() * 1.0)

    torch.manual_seed(0)
    inputs = (torch.randn(2, 64, 384), torch.arange(630).reshape(30, 21))
    x86, ref = both(Layouts().eval(), inputs)
    for got, want in zip(x86(*inputs), ref(*inputs)):
        np.testing.assert_array_equal(got, want)


def test_attention_scratch_sizes_agree_with_the_kernel_library():
    """The emitter reserves threads x attention_scratch_bytes(S, D) of arena
    for k_attention, which finds each thread's part with the library's own
    hetc_attention_scratch: the two must agree."""
    import ctypes

    from hetc.backends.x86 import kernel_library
    from hetc.backends.x86.emit import attention_scratch_bytes

    lib = ctypes.CDLL(kernel_library())
    lib.hetc_attention_scratch.restype = ctypes.c_long
    lib.hetc_attention_scratch.argtypes = [ctypes.c_long, ctypes.c_long]
    for s, d in ((1, 1), (7, 64), (128, 32), (512, 64), (1029, 80), (4096, 128)):
        assert attention_scratch_bytes(s, d) == lib.hetc_attention_scratch(s, d), (s, d)


class Sdpa(nn.Module):
    def __init__(self, causal):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("q, kv, dv, causal", [
    ((1, 9, 13, 40), 13, 40, True),  # 9 heads on 2 threads: parts; 40 features; a last query
    ((1, 5, 20, 64), 20, 64, True),  # 5 blocks of queries in 2 interleaved parts
    ((2, 3, 8, 8), 21, 24, False),  # 21 keys: a part block of 16; values of their own width
])
def test_attention_shapes_match_the_interpreter(q, kv, dv, causal, portable, monkeypatch):
    """Keys transposed 16 x 16 at a time (features and keys not multiples of
    16), heads that do not share out evenly among the threads split into
    interleaved parts of their query blocks, the queries after the last
    block: against the interpreter and PyTorch."""
    monkeypatch.setenv("HETC_THREADS", "2")
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    b, h, _, d = q
    inputs = (torch.randn(*q), torch.randn(b, h, kv, d), torch.randn(b, h, kv, dv))
    x86, ref = both(Sdpa(causal).eval(), inputs)
    with torch.no_grad():
        want = Sdpa(causal)(*inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert rel_err(x86(*inputs), want) < 1e-5


@pytest.mark.parametrize("causal", [False, True])
def test_attention_with_scores_far_below_their_maximum(causal):
    """Scores more than 87 below a query's maximum: their softmax numerators
    are flushed to 0 on AVX-512 (subnormals cost a microcode assist each),
    which changes no output beyond f32 rounding."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 3, 40, 16) for _ in range(3))
    q = q * 40  # logits spread over hundreds: many below e^-87 of the maximum
    inputs = (q, k, v)
    logits = (q @ k.transpose(-1, -2)) / 4
    assert ((logits.amax(-1, keepdim=True) - logits) > 87).float().mean() > 0.3
    x86, ref = both(Sdpa(causal).eval(), inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
