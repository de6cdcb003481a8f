"""Target amx: the software model of the AMX instructions against hand-computed
cases, the generated tile kernels against the interpreter (through that
model, since this CPU has no AMX), and the native build's compile check."""

import ctypes
import shutil
import struct
import subprocess

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn as nn

import hetc
from hetc.backends.amx import HERE as AMX_HERE
from hetc.backends.c.emitter import read_headers, shared_headers
from hetc.backends.x86 import FLAGS, HERE as X86_HERE, KERNEL_HEADERS
from hetc.backends.c.build import build
from hetc.core.errors import TargetError, UsageError
from hetc.core.targets import cpu_flags
from models import examples

REL_TOL = 1e-5
HAS_AMX = "amx_tile" in cpu_flags()

# A C harness exposing each emulated instruction (tile numbers are literals
# in real code; a switch keeps them literal here too).
HARNESS = r"""
#include "kernels.h"
#include "amx_emu.h"
void cfg(const void *c) { _tile_loadconfig(c); }
void release(void) { _tile_release(); }
void zero(int t) { switch (t) { case 0: _tile_zero(0); break; case 1: _tile_zero(1); break;
                                default: _tile_zero(2); } }
void load(int t, const void *p, long s) { switch (t) { case 0: _tile_loadd(0, p, s); break;
    case 1: _tile_loadd(1, p, s); break; case 2: _tile_loadd(2, p, s); break;
    default: _tile_loadd(7, p, s); } }
void store(int t, void *p, long s) { switch (t) { case 0: _tile_stored(0, p, s); break;
    case 1: _tile_stored(1, p, s); break; case 2: _tile_stored(2, p, s); break;
    default: _tile_stored(7, p, s); } }
void dp(int kind, int same) {
    if (same) { _tile_dpbssd(0, 0, 2); return; }
    switch (kind) { case 0: _tile_dpbssd(0, 1, 2); break; case 1: _tile_dpbsud(0, 1, 2); break;
                    case 2: _tile_dpbusd(0, 1, 2); break; case 3: _tile_dpbuud(0, 1, 2); break;
                    default: _tile_dpbf16ps(0, 1, 2); } }
static hetc_status st;
void begin(void) { hetc_status_now = &st; }  /* faults of this thread's calls go to st */
const char *fault(void) { return st.text; }
int take(void) { int f = st.failed; st.failed = 0; return f; }
"""


@pytest.fixture(scope="module")
def emu():
    headers = read_headers(AMX_HERE, ["amx_emu.h"]) | read_headers(X86_HERE, KERNEL_HEADERS) | \
        shared_headers()
    path = build({"model.c": HARNESS, **headers}, FLAGS, what="amx-emu-test")
    lib = ctypes.CDLL(path)
    lib.fault.restype = ctypes.c_char_p
    lib.begin()
    for name in ("load", "store"):
        getattr(lib, name).argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_long]
    yield lib
    lib.take()


def config(shapes, palette=1):
    """64-byte LDTILECFG block: shapes = {tile: (rows, colsb)}."""
    raw = bytearray(64)
    raw[0] = palette
    for t, (rows, colsb) in shapes.items():
        struct.pack_into("<H", raw, 16 + 2 * t, colsb)
        raw[48 + t] = rows
    return (ctypes.c_uint8 * 64)(*raw)


def store(emu, t, rows, colsb, dtype):
    out = np.zeros((rows, colsb), np.uint8)
    emu.store(t, out.ctypes.data, colsb)
    return out.view(dtype)


def tmul(emu, kind, a, b, c, shapes):
    emu.cfg(config(shapes))
    for t, arr in ((0, c), (1, a), (2, b)):
        arr = np.ascontiguousarray(arr)
        emu.load(t, arr.ctypes.data, arr.strides[0])
    emu.dp(kind, 0)
    assert emu.take() == 0, emu.fault()


def test_int8_dot_products_of_each_signedness(emu):
    """C[m][n] += sum_k sum_i A[m][4k+i] B[k][4n+i], bytes signed or unsigned
    as the mnemonic says, wrapping modulo 2^32."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3, 8), dtype=np.uint8)  # M=3 rows, K=2 dwords
    b = rng.integers(0, 256, (2, 12), dtype=np.uint8)  # K=2 rows, N=3 dwords
    c = rng.integers(-1000, 1000, (3, 3), dtype=np.int32)
    c[0, 0] = 2**31 - 10  # wraps
    for kind, (sa, sb) in enumerate([(1, 1), (1, 0), (0, 1), (0, 0)]):
        av = a.view(np.int8).astype(np.int64) if sa else a.astype(np.int64)
        bv = b.view(np.int8).astype(np.int64) if sb else b.astype(np.int64)
        want = c.astype(np.int64).copy()
        for m in range(3):
            for n in range(3):
                for k in range(2):
                    want[m, n] += sum(av[m, 4 * k + i] * bv[k, 4 * n + i] for i in range(4))
        want = ((want + 2**31) % 2**32 - 2**31).astype(np.int32)
        tmul(emu, kind, a, b, c, {0: (3, 12), 1: (3, 8), 2: (2, 12)})
        assert np.array_equal(store(emu, 0, 3, 12, np.int32), want), kind
    assert want[0, 0] < 0 or kind != 0  # the wrap case really wrapped


def bf16(values):
    return np.asarray(values, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)


def test_bf16_dot_products_round_even_and_odd_sums_separately(emu):
    # one row, K=2 pairs, N=1: even products 2^24 then 1, odd products 1 then 1
    a = bf16([[2.0**12, 1.0, 1.0, 1.0]])
    b = bf16([[2.0**12, 1.0], [1.0, 1.0]])
    c = np.array([[0.5]], np.float32)
    tmul(emu, 4, a, b, c, {0: (1, 4), 1: (1, 8), 2: (2, 4)})
    # even: 2^24 + 1 rounds to 2^24 (tie to even); odd: 2; then 2^24 + 2, + 0.5 -> 2^24 + 2
    assert store(emu, 0, 1, 4, np.float32)[0, 0] == np.float32(2.0**24 + 2)
    # a plain fp32 dot in sequence would give 2^24 + 4 (2^24 + 1 + 1 + 1 with each step rounded)


def test_bf16_denormals_read_as_zero_and_results_flush(emu):
    tiny_in = np.array([[0x0040, 0x0000]], np.uint16)  # a bf16 denormal, then +0
    big = bf16([[2.0**100, 0.0]])
    c = np.zeros((1, 1), np.float32)
    tmul(emu, 4, tiny_in, big, c, {0: (1, 4), 1: (1, 4), 2: (1, 4)})
    assert store(emu, 0, 1, 4, np.float32)[0, 0] == 0.0  # DAZ: not 2^-121 * 2^100
    small = bf16([[2.0**-100, 0.0]])
    tmul(emu, 4, small, bf16([[2.0**-30, 0.0]]), c, {0: (1, 4), 1: (1, 4), 2: (1, 4)})
    assert store(emu, 0, 1, 4, np.float32)[0, 0] == 0.0  # FTZ: 2^-130 is an f32 denormal
    tmul(emu, 4, bf16([[1.5, 2.0]]), bf16([[2.0, -0.25]]), np.array([[1.0]], np.float32),
         {0: (1, 4), 1: (1, 4), 2: (1, 4)})
    assert store(emu, 0, 1, 4, np.float32)[0, 0] == 3.5  # 1 + 3 - 0.5


def test_loads_and_stores_follow_stride_and_zero_the_rest(emu):
    src = np.arange(4 * 100, dtype=np.uint32).astype(np.uint8).reshape(4, 100)
    emu.cfg(config({7: (3, 10)}))
    emu.load(7, src.ctypes.data, 100)  # rows 0..2, 10 bytes each, stride 100
    out = np.full((16, 64), 0xEE, np.uint8)
    emu.store(7, out.ctypes.data, 64)
    assert np.array_equal(out[:3, :10], src[:3, :10])
    assert (out[:3, 10:] == 0xEE).all() and (out[3:] == 0xEE).all()  # only the shape is stored
    emu.cfg(config({7: (3, 10)}))  # a new configuration clears the tiles
    emu.store(7, out.ctypes.data, 64)
    assert (out[:3, :10] == 0).all()
    assert emu.take() == 0


def test_faults_the_hardware_would_raise_are_reported(emu):
    emu.release()
    emu.zero(0)
    assert emu.take() == 1 and "not configured" in emu.fault().decode()
    emu.cfg(config({0: (2, 8)}, palette=2))
    assert emu.take() == 1 and "#GP" in emu.fault().decode()
    emu.cfg(config({0: (17, 8)}))
    assert emu.take() == 1 and "rows > 16" in emu.fault().decode()
    emu.cfg(config({0: (2, 8), 1: (2, 8), 2: (3, 8)}))  # A.colsb/4 = 2 != B.rows = 3
    emu.dp(0, 0)
    assert emu.take() == 1 and "#UD" in emu.fault().decode()
    emu.cfg(config({0: (2, 8), 1: (2, 8), 2: (2, 8)}))
    emu.dp(0, 1)  # C and A the same tile
    assert emu.take() == 1 and "not distinct" in emu.fault().decode()


@pytest.mark.parametrize("name, model, inputs", examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_models_match_the_interpreter(name, model, inputs):
    amx = hetc.compile(model, target="amx", example_inputs=inputs, emulate=True)
    ref = hetc.compile(model, target="ref", example_inputs=inputs)
    y, want = np.asarray(amx(*inputs)), np.asarray(ref(*inputs))
    assert np.linalg.norm(y - want) / np.linalg.norm(want) < REL_TOL


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 72), nn.GELU(), nn.Linear(72, 40))


@pytest.mark.parametrize("config, kernel", [
    ({"precision": "int8"}, "linear amx tdpbssd int8 act x int8 g256"),
    # N:M int8 rows on tiles with their zeros
    ({"precision": {"0": "int8"}, "sparsity": {"0": "1:4"}},
     "linear amx tdpbssd int8 act x 1:4 as zeros, int8 g256"),
    # int4's scales per group of 32-128: the x86 VNNI kernels, faster here
    ({"precision": "int4"}, "linear int8 act x int4 g128"),
    ({"precision": {"0": "int4-g64"}, "sparsity": {"0": "2:4"}}, "linear int8 act x 2:4 int4 g64"),
], ids=["int8", "1:4+int8", "int4", "2:4+int4-g64"])
@pytest.mark.parametrize("batch", [1, 19, 37])  # 37: blocks of 32 tokens, then 5
def test_tile_kernels_match_the_interpreter(config, kernel, batch):
    model, inputs = _model(), (torch.randn(batch, 256),)
    amx = hetc.compile(model, target="amx", example_inputs=inputs, emulate=True,
                       activations="int8", **config)
    ref = hetc.compile(model, target="ref", example_inputs=inputs, activations="int8", **config)
    y, want = amx(*inputs), ref(*inputs)
    assert np.linalg.norm(y - want) / np.linalg.norm(want) < REL_TOL
    assert kernel in amx.artifact.extra["kernels"], amx.artifact.extra["kernels"]
    assert any("software model" in n for n in amx.report.notes)


@pytest.mark.skipif(not HAS_AMX, reason="this host has no AMX: the software model stands in")
@pytest.mark.parametrize("config", [
    {"precision": "int8", "activations": "int8"},
    {"precision": "int8", "sparsity": "2:4", "activations": "int8"},
    {"precision": "bf16"}], ids=["int8", "2:4+int8", "bf16"])
def test_the_hardware_and_the_software_model_agree_bit_for_bit(config):
    """On a host with AMX the native build runs; its outputs must be the
    software model's exactly (same instructions, same order of sums)."""
    model, inputs = _model(), (torch.randn(19, 256),)
    native = hetc.compile(model, target="amx", example_inputs=inputs, **config)
    emulated = hetc.compile(model, target="amx", example_inputs=inputs, emulate=True, **config)
    assert not any("software model" in n for n in native.report.notes)
    assert np.array_equal(np.asarray(native(*inputs)), np.asarray(emulated(*inputs)))


def test_bf16_tiles_round_the_activations_to_bf16():
    """TDPBF16PS multiplies bf16 by bf16: the interpreter keeps f32
    activations, so compare with the activations rounded as the kernel does."""
    model = nn.Sequential(nn.Linear(256, 48))
    x = torch.randn(17, 256)
    amx = hetc.compile(model, target="amx", example_inputs=(x,), emulate=True, precision="bf16")
    w = model[0].weight.detach().numpy().astype(ml_dtypes.bfloat16).astype(np.float64)
    xb = x.numpy().astype(ml_dtypes.bfloat16).astype(np.float64)
    want = xb @ w.T + model[0].bias.detach().numpy()
    y = amx(x).numpy()
    assert np.linalg.norm(y - want) / np.linalg.norm(want) < 1e-6
    ref = hetc.compile(model, target="ref", example_inputs=(x,), precision="bf16")(x).numpy()
    assert np.linalg.norm(y - ref) / np.linalg.norm(ref) < 1e-2  # the activation rounding
    assert amx.artifact.extra["kernels"] == {"linear amx tdpbf16ps bf16": 1}


def test_whole_models_run_with_layers_off_the_tiles_on_avx512():
    """ViT with int8 weights and activations: tiles for the linear layers, the
    x86 kernels for the rest. Integer sums are exact on both targets, so amx
    and x86 agree closely; against the interpreter, f32 rounding differences
    upstream flip a few int8 activation codes (same on x86), hence 1e-3."""
    from families import vit

    model, inputs = vit()
    kw = dict(example_inputs=inputs, precision="int8", activations="int8")
    amx = hetc.compile(model, target="amx", emulate=True, **kw)
    y = amx(*inputs).numpy()
    want = hetc.compile(model, target="ref", **kw)(*inputs).numpy()
    x86 = hetc.compile(model, target="x86", **kw)(*inputs).numpy()
    assert np.linalg.norm(y - x86) / np.linalg.norm(x86) < 1e-6
    assert np.linalg.norm(y - want) / np.linalg.norm(want) < 1e-3
    assert sum(n for k, n in amx.artifact.extra["kernels"].items() if "tdpbssd" in k) == 12


def test_bert_runs_emulated():
    from families import minilm

    model, inputs = minilm()
    amx = hetc.compile(model, target="amx", example_inputs=inputs, emulate=True)
    ref = hetc.compile(model, target="ref", example_inputs=inputs)
    y, want = np.asarray(amx(*inputs)), np.asarray(ref(*inputs))
    assert np.linalg.norm(y - want) / np.linalg.norm(want) < REL_TOL


@pytest.mark.parametrize("make", ["gpt2_tiny", "llama_tiny"])
def test_decoders_with_kv_cache_run_their_int8_layers_on_tiles(make):
    """Prefill and one decode step with int8 weights and activations. The tile
    kernels compute x86's exact integer sums, so the two agree to f32
    rounding. Against the interpreter the difference is larger: an f32
    rounding difference upstream that moves an activation across an int8
    rounding boundary changes its code by one, and in a deep network that
    change moves later codes too (the weight-only run shows the kernels
    themselves are exact)."""
    import families

    step = families.KVStep(getattr(families, make)())
    ids = torch.randint(0, 256, (1, 6), generator=torch.Generator().manual_seed(1))
    inputs = (ids, step.empty_cache())
    for _ in range(2):
        amx = hetc.compile(step, target="amx", example_inputs=inputs, emulate=True,
                           precision="int8", activations="int8")
        x86 = hetc.compile(step, target="x86", example_inputs=inputs, precision="int8",
                           activations="int8")
        ref = hetc.compile(step, target="ref", example_inputs=inputs, precision="int8",
                           activations="int8")
        (logits, _), (x_logits, _), (want, want_cache) = amx(*inputs), x86(*inputs), ref(*inputs)
        assert np.linalg.norm(logits - x_logits) / np.linalg.norm(x_logits) < 1e-5
        assert np.linalg.norm(logits - want) / np.linalg.norm(want) < 5e-2
        assert any("tdpbssd" in k for k in amx.artifact.extra["kernels"])
        inputs = (want[:, -1:].argmax(-1), want_cache)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="objdump (binutils) not installed")
def test_the_native_build_has_the_amx_instructions():
    from hetc.backends.amx import AMX_FLAGS

    model = nn.Sequential(nn.Linear(256, 128), nn.GELU(), nn.Linear(128, 40))
    inputs = (torch.randn(2, 256),)
    mod = hetc.compile(model, target="amx", example_inputs=inputs,
                       precision={"0": "bf16", "2": "int8"}, activations="int8")
    assert set(mod.artifact.extra["kernels"]) == {"linear amx tdpbf16ps bf16",
                                                  "linear amx tdpbssd int8 act x int8 g128"}
    path = build(mod.artifact.sources, FLAGS + AMX_FLAGS)  # built (so cached) by the compile
    text = subprocess.run(["objdump", "-d", path], capture_output=True, text=True).stdout
    for insn in ("ldtilecfg", "tileloadd", "tdpbf16ps", "tdpbssd", "tilestored", "tilerelease"):
        assert insn in text, insn


@pytest.mark.skipif(HAS_AMX, reason="this host has AMX: running natively is allowed")
def test_running_without_amx_or_emulation_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("HETC_EMULATE", raising=False)
    model, inputs = _model(), (torch.randn(2, 256),)
    mod = hetc.compile(model, target="amx", example_inputs=inputs)  # compiling always works
    with pytest.raises(TargetError, match="no AMX.*target='x86'.*emulate=True"):
        mod(*inputs)
    monkeypatch.setenv("HETC_EMULATE", "1")  # the same artifact, emulated at run time
    mod = hetc.compile(model, target="amx", example_inputs=inputs)
    assert mod(*inputs).shape == (2, 40)


def test_compiling_without_a_c_compiler_says_the_check_was_skipped(monkeypatch):
    monkeypatch.setenv("CC", "no-such-cc")
    model, inputs = _model(), (torch.randn(2, 256),)
    mod = hetc.compile(model, target="amx", example_inputs=inputs)
    assert any("not compile-checked" in n for n in mod.report.notes)


def test_emulate_is_only_for_targets_with_a_software_model():
    model, inputs = _model(), (torch.randn(2, 256),)
    with pytest.raises(UsageError, match="emulate= does not apply to target .x86.*amx"):
        hetc.compile(model, target="x86", example_inputs=inputs, emulate=True)


def test_cli_compiles_saves_and_runs_emulated(tmp_path):
    from hetc.driver.cli import main

    model, inputs = _model(), (torch.randn(3, 256),)
    program = torch.export.export(model, inputs)
    pt2 = tmp_path / "m.pt2"
    torch.export.save(program, str(pt2))
    out = tmp_path / "out"
    assert main(["compile", str(pt2), "--target", "amx", "--emulate", "--precision", "int8",
                 "--activations", "int8", "-o", str(out), "-q"]) == 0
    loaded = hetc.load(out)
    assert loaded.artifact.build["emulate"] is True
    ref = hetc.compile(model, target="ref", example_inputs=inputs, precision="int8",
                       activations="int8")
    y, want = loaded(*inputs), ref(*inputs)
    assert np.linalg.norm(y - want) / np.linalg.norm(want) < REL_TOL
