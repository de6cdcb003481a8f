"""Targets as data: what each kind of hardware can exploit and what it costs.

A Target names the N:M patterns and dtypes its kernels make fast, a roofline
cost model, its default pipeline and the backend that lowers for it, and can
tell whether this host can run it (and why not). Passes ask the target; they
never branch on its name.

openvino is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable

from hetc.core import fpga_model
from hetc.core.errors import UsageError

#: N:M patterns software decompression handles at no extra cost model penalty.
COMMON_NM = ((2, 4), (1, 4), (1, 3), (2, 8), (4, 8))


@dataclass(frozen=True)
class CostModel:
    """Roofline: time = max(bytes / bandwidth, ops / peak rate for the dtype).

    Figures are nominal datasheet-level numbers for the named reference part,
    to be calibrated by the benchmarks; they rank choices, they do not promise
    timings.
    """

    reference_part: str
    bandwidth_gbs: float
    peak_gops: dict = field(default_factory=dict)  # dtype name -> G ops/s (dense)
    sparse_speedup: dict = field(default_factory=dict)  # "n:m" -> compute speedup

    def seconds(self, nbytes: float, ops: float, dtype: str) -> float:
        peak = self.peak_gops.get(dtype) or max(self.peak_gops.values())
        return max(nbytes / (self.bandwidth_gbs * 1e9), ops / (peak * 1e9))


@dataclass(frozen=True)
class DataflowCost(CostModel):
    """A spatial accelerator's cost (hetc's FPGA processing elements,
    core/fpga_model.py): each layer has its own multipliers, so its time is
    its own cycles at the clock, whatever the bytes: N:M patterns cut the
    cycles (fewer kept weights per multiplier), narrower weights do not
    (they save memory, which the backend's fitting accounts)."""

    clock_mhz: float = 300.0

    def layer_seconds(self, weight, axis, x, output) -> float:
        """Seconds of one call of a linear (convolution) layer whose weight
        has type `weight` (its reduction axis `axis`), input `x` and result
        `output`, with the default multipliers."""
        k, n = weight.shape[axis], weight.shape[0]
        taps = weight.numel // (n * k)
        group = weight.quant.group if weight.quant is not None and weight.quant.group else k
        nm = weight.nm
        if nm is not None and (group % nm.m or nm.axis % weight.rank != axis % weight.rank):
            nm = None  # the dense unit, zeros stored
        kept = group * nm.n // nm.m if nm else group
        p = fpga_model.multipliers(kept)
        rows = output.numel // n
        cycles = fpga_model.quantize_cycles(k, x.numel // k) + \
            fpga_model.mac_cycles(rows, taps, k // group, n, kept // p, p)
        return cycles / (self.clock_mhz * 1e6)


@dataclass(frozen=True)
class Availability:
    ok: bool
    detail: str


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    emits: str
    nm_patterns: tuple  # (n, m) pairs the kernels exploit; () means dense only
    weight_dtypes: tuple
    activation_dtypes: tuple
    cost: CostModel
    default_pipeline: str
    backend: str | None  # module under hetc.backends; None: not built yet
    probe: Callable[[], Availability] = field(repr=False, compare=False, default=None)
    # an explicit N:M request outside nm_patterns: False keeps the layer dense;
    # True prunes it anyway and stores the zeros densely (no speedup, said so)
    nm_as_zeros: bool = False
    # passes that run after compression, whatever the pipeline: how the
    # target stores what compression left alone (e.g. f16 weights on an NPU)
    # and what it fuses (x86: epilogues into the kernel before them)
    storage_pipeline: str = ""
    # which convolutions (ungrouped ones) quantize-activations gives int8
    # activations (act_group) besides linear layers; None: none
    int8_convolutions: Callable | None = field(repr=False, compare=False, default=None)

    def availability(self) -> Availability:
        return _cached_probe(self.name)

    def supports_nm(self, n, m) -> bool:
        return (n, m) in self.nm_patterns


TARGETS: dict[str, Target] = {}


def register_target(t: Target):
    TARGETS[t.name] = t
    return t


def get_target(name) -> Target:
    if isinstance(name, Target):
        return name
    try:
        return TARGETS[name]
    except KeyError:
        raise UsageError(f"unknown target '{name}' (known: {', '.join(TARGETS)})") from None


@functools.lru_cache(maxsize=None)
def _cached_probe(name) -> Availability:
    return TARGETS[name].probe()


# -- probes of this host --------------------------------------------------------

@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def c_compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return next((p for p in map(shutil.which, ("cc", "gcc", "clang")) if p), None)


def cxx_compiler() -> str | None:
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    return next((p for p in map(shutil.which, ("c++", "g++", "clang++")) if p), None)


def _probe_ref():
    return Availability(True, "numpy interpreter")


def _probe_x86():
    flags = cpu_flags()
    isa = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None)
    cc = c_compiler()
    if isa is None:
        return Availability(False, "CPU has neither AVX-512 nor AVX2")
    if cc is None:
        return Availability(False, f"{isa} present but no C compiler (set CC or install gcc)")
    extras = [n for f, n in (("avx512_bf16", "BF16"), ("avx512_vnni", "VNNI")) if f in flags]
    return Availability(True, f"{isa}{' + ' + ', '.join(extras) if extras else ''}; {cc}")


def _probe_amx():
    if "amx_tile" in cpu_flags():
        return Availability(True, "AMX tiles present")
    return Availability(False, "CPU has no AMX (no amx_tile flag): compiling works; running "
                               "needs emulate=True (hetc's software AMX model) or target x86")


def _probe_cuda():
    gpu = os.path.exists("/dev/nvidia0") or os.path.exists("/dev/nvidiactl")
    nvcc = shutil.which("nvcc") or (os.path.exists("/usr/local/cuda/bin/nvcc") and
                                     "/usr/local/cuda/bin/nvcc")
    tools = "NVRTC checks the generated code" + (f"; nvcc at {nvcc}" if nvcc else "")
    if gpu:
        return Availability(True, f"NVIDIA GPU present ({tools}; the kernels run through the "
                                  f"driver API, a path not yet run on a GPU by hetc's tests)")
    return Availability(False, f"no NVIDIA GPU ({tools}); emulate=True runs the generated "
                               f"kernels on the CPU")


def _probe_npu():
    try:
        import openvino
    except ImportError:
        return Availability(False, "openvino is not installed (pip install 'hetc[openvino]')")
    devices = openvino.Core().available_devices
    if "NPU" in devices:
        return Availability(True, "OpenVINO lists an NPU")
    return Availability(False, f"OpenVINO lists no NPU (devices: {', '.join(devices)}); "
                               "runs on the CPU plugin as a stand-in")


def _probe_fpga():
    if shutil.which("vitis_hls") or shutil.which("v++"):
        return Availability(True, "Vitis HLS found (hetc runs C simulation; build the "
                                  "project's build_prj.tcl with it)")
    return Availability(False, "no Vitis HLS here: the generated HLS runs as C simulation "
                               "(g++); synthesis needs Vitis")


# -- the registry ----------------------------------------------------------------

_ALL_FLOATS = ("f32", "f16", "bf16", "f8e4m3", "f8e5m2")
_CANON = "canonicalize,fold,cse,dce"
# CPU kernels (and OpenVINO's compressed-weight matmuls) want linear layers
# (GPT-2's Conv1D matmuls, transposed) and rms_norm (Llama's written-out
# one) before compression sees the layers
_CPU = "canonicalize,fold,cse,raise-patterns,dce"
# x86 and amx also fold pads and batch norms into convolutions before
# compression sees the layers, and fuse epilogues into kernels after it
_X86 = "canonicalize,fold,cse,raise-patterns,fold-conv,dce"
_X86_LAST = "fuse"

#: positions per image up to which x86 runs a 1x1 convolution on its
#: channel-lane kernels (hetc.backends.x86): output channels in the lanes
PANEL_POSITIONS = 256


def _any_convolution(op) -> bool:
    return True


def _x86_int8_convolution(op) -> bool:
    """x86's integer convolution kernels (k_conv1x1_q8 and its row tiles):
    1x1, stride 1, unpadded, one scale per output channel (so one per pixel
    for the activations), where they beat the float kernels. Quantizing
    costs about the same per input value whatever the layer, the integer
    sums save in proportion to the output channels; so: on at most
    PANEL_POSITIONS positions; with more output than input channels (an
    inverted residual block's expand, which then runs inside the depthwise
    convolution after it); or with at least 32 output channels (64 on planes
    of more than 4096 positions). Measured one layer at a time on 2 threads, int8 against f32:
    240 -> 40 on 28x28 0.050 against 0.075 ms, 128 -> 32 on 56x56 0.096
    against 0.117, 64 -> 64 on 112x112 0.44 against 0.52; kept in floats:
    144 -> 24 on 56x56 0.100 against 0.099, 64 -> 48 on 112x112 0.396
    against 0.378."""
    x, w = op.inputs[0].type, op.inputs[1].type
    positions, outputs = x.shape[2] * x.shape[3], w.shape[0]
    wide = outputs >= (32 if positions <= 4096 else 64)
    return w.shape[2:] == (1, 1) and tuple(op.attrs.get("stride", (1, 1))) == (1, 1) and \
        not any(op.attrs.get("padding", (0, 0, 0, 0))) and \
        (positions <= PANEL_POSITIONS or outputs > w.shape[1] or wide) and \
        w.quant is not None and w.quant.group in (0, None, w.shape[1])


register_target(Target(
    "ref", "reference: the numpy interpreter, the ground truth", "nothing",
    COMMON_NM, _ALL_FLOATS + ("i8", "u8", "i4", "u4", "i3", "u3"), _ALL_FLOATS + ("i8",),
    # the interpreter's speed means nothing: a memory-bound model, so the
    # search weighs choices by the bytes they move
    CostModel("memory-bound reference (bytes moved)", 50.0, {"f32": 1e9}),
    _CANON, "ref", _probe_ref))

register_target(Target(
    "x86", "x86-64 CPU, AVX-512 (AVX2 fallback), one native entry point", "C with intrinsics",
    COMMON_NM, ("f32", "bf16", "i8", "i4", "u4"), ("f32", "bf16", "i8"),
    CostModel("2-core AVX-512 CPU, DDR5", 50.0, {"f32": 200.0, "bf16": 400.0, "i8": 800.0}),
    _X86, "x86", _probe_x86, storage_pipeline=_X86_LAST,
    int8_convolutions=_x86_int8_convolution))

register_target(Target(
    "amx", "Intel AMX (Sapphire Rapids+), tiles for bf16 and int8", "C with AMX intrinsics",
    COMMON_NM, ("bf16", "i8", "i4", "u4"), ("bf16", "i8"),
    CostModel("Xeon 8480+ socket, 8ch DDR5", 300.0,
              {"f32": 3000.0, "bf16": 200000.0, "i8": 400000.0}),
    _X86, "amx", _probe_amx, storage_pipeline=_X86_LAST,
    int8_convolutions=_x86_int8_convolution))

register_target(Target(
    "cuda", "NVIDIA GPU, sm_80+, 2:4 sparse tensor cores", "CUDA C++",
    # 1:4 and 2:8 never keep more than two of four: they run as 2:4 on
    # mma.sp; 4:8 does when its data allow (else densely, zeros stored)
    ((2, 4), (1, 4), (2, 8), (4, 8)), ("f16", "bf16", "i8", "i4", "f8e4m3"),
    ("f16", "bf16", "i8"),
    CostModel("A100 SXM 80GB", 2039.0, {"f32": 19500.0, "f16": 312000.0, "bf16": 312000.0,
                                        "i8": 624000.0},
              {"2:4": 2.0, "1:4": 2.0, "2:8": 2.0, "4:8": 1.0}),
    _CPU, "cuda", _probe_cuda))

register_target(Target(
    "npu", "Intel NPU through OpenVINO (static shapes)", "OpenVINO IR (.xml/.bin)",
    (), ("f16", "i8", "i4", "u4"), ("f16", "i8"),
    CostModel("Core Ultra 200V NPU", 136.0, {"f16": 24000.0, "i8": 48000.0}),
    _CPU, "openvino", _probe_npu, nm_as_zeros=True, storage_pipeline="store-floats{dtype=f16}"))

register_target(Target(
    "fpga", "FPGA through Vitis-style HLS C++", "HLS C++ (ap_int/ap_fixed)",
    ((2, 4), (1, 4), (1, 3)), ("i8", "i4", "u4", "f16"), ("i8", "f16"),
    # the processing elements' cycles at the U250's 300 MHz (the roofline
    # figures stay for what asks them)
    DataflowCost("Alveo U250", 77.0, {"i8": 30000.0, "f16": 3000.0},
                 {"2:4": 2.0, "1:4": 4.0, "1:3": 3.0}, 300.0),
    # the datapath is integer: int8 weights and activations unless chosen otherwise
    _CPU, "fpga", _probe_fpga, storage_pipeline="quantize{format=int8},quantize-activations",
    int8_convolutions=_any_convolution))
