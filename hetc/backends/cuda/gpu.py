"""The GPU side of launch.py: a device made of CUDA driver API calls
(`cuda-bindings`, the `cuda` extra): the cubin NVRTC builds for the GPU's
own architecture, loaded once; buffers by cuMemAlloc; every launch and copy
on one stream; inputs copied to the GPU and outputs back per call.

This machine has no GPU: the code below is the part of the cuda target
that is not run by the tests here (everything it is driven by is, through
launch.SimDevice). Without a driver or a GPU, opening it raises a
TargetError that says so and how to run the same kernels on the CPU."""

from __future__ import annotations

import ctypes

import numpy as np

from hetc.core.errors import TargetError

from . import toolchain
from .launch import play

RUN_ON_CPU = ("compile with emulate=True (hetc compile --emulate) or set HETC_EMULATE=1 to "
              "run the same kernels on the CPU")


def driver():
    """cuda.bindings.driver, initialized; TargetError when there is no
    driver or no GPU."""
    try:
        from cuda.bindings import driver as d  # optional: the `cuda` extra
    except ImportError:
        raise TargetError("target cuda: running on a GPU needs cuda-bindings "
                          f"(pip install 'hetc[cuda]'); or {RUN_ON_CPU}") from None
    try:
        (err,) = d.cuInit(0)
    except Exception as e:  # DynamicLibNotFoundError: libcuda is not installed
        raise TargetError(f"target cuda: no NVIDIA driver on this machine ({type(e).__name__}: "
                          f"{e}); {RUN_ON_CPU}") from None
    if err != d.CUresult.CUDA_SUCCESS:
        raise TargetError(f"target cuda: the NVIDIA driver found no usable GPU "
                          f"({_name(d, err)}); {RUN_ON_CPU}")
    return d


def _name(d, err):
    got = d.cuGetErrorName(err)
    return got[1].decode() if got[0] == d.CUresult.CUDA_SUCCESS else str(err)


def _ok(d, result, what):
    """The values of a driver call's result, or TargetError naming the call."""
    err, *values = result
    if err != d.CUresult.CUDA_SUCCESS:
        hint = (" (a kernel trapped: an index out of range, e.g. an embedding id or a "
                "gather index; the GPU context is unusable until the process restarts)"
                if "LAUNCH_FAILED" in _name(d, err) or "ILLEGAL" in _name(d, err) else "")
        raise TargetError(f"target cuda: {what} failed on the GPU: {_name(d, err)}{hint}")
    return values[0] if len(values) == 1 else values


def architecture(d, dev) -> str:
    """sm_XY of a device (sm_90a on Hopper: the cubins use its features)."""
    attr = d.CUdevice_attribute
    major = _ok(d, d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
                "cuDeviceGetAttribute")
    minor = _ok(d, d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev),
                "cuDeviceGetAttribute")
    if major < 8:
        raise TargetError(f"target cuda: the GPU is sm_{major}{minor}; the kernels need sm_80 "
                          f"(Ampere) or newer")
    return f"sm_{major}{minor}" + ("a" if major == 9 else "")


class GpuDevice:
    """GPU `ordinal`, with the generated kernels loaded."""

    takes_gpu_tensors = True  # torch CUDA tensors are used where they are

    def __init__(self, sources, kernels, compiler="nvrtc", ordinal=0):
        d = self.d = driver()
        dev = _ok(d, d.cuDeviceGet(ordinal), "cuDeviceGet")
        self.arch = architecture(d, dev)
        self.ctx = _ok(d, d.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        _ok(d, d.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")
        gpu = _ok(d, d.cuDeviceGetName(64, dev), "cuDeviceGetName")
        gpu = bytes(gpu).split(b"\0")[0].decode(errors="replace")
        self.name = f"cuda ({gpu}, {self.arch})"
        try:  # a cubin for this GPU's own architecture (cached when built before)
            code, _ = toolchain.build(sources, self.arch, compiler=compiler)
        except TargetError:  # an architecture the compiler does not know: the driver's JIT
            code, _ = toolchain.build(sources, toolchain.PTX, compiler=compiler)
            code += b"\0"  # the driver reads PTX as a C string
        self.module = _ok(d, d.cuModuleLoadData(code), "cuModuleLoadData")
        self.functions = {k: _ok(d, d.cuModuleGetFunction(self.module, k.encode()),
                                 f"cuModuleGetFunction {k}") for k in kernels}
        self.stream = _ok(d, d.cuStreamCreate(0), "cuStreamCreate")

    def alloc(self, nbytes):
        return _DeviceBuffer(self, nbytes)

    def upload(self, blob):
        buf = self.alloc(blob.nbytes)
        _ok(self.d, self.d.cuMemcpyHtoD(buf.address, blob.ctypes.data, blob.nbytes),
            "uploading the weights")
        return buf

    def context(self, arena_bytes, in_types, out_types):
        return _GpuContext(self, arena_bytes, in_types, out_types)

    def launch(self, kernel, grid, block, addresses):
        values = (ctypes.c_uint64 * max(1, len(addresses)))(*addresses)
        size = ctypes.sizeof(ctypes.c_uint64)
        params = (ctypes.c_void_p * max(1, len(addresses)))(
            *[ctypes.addressof(values) + size * i for i in range(len(addresses))])
        _ok(self.d, self.d.cuLaunchKernel(self.functions[kernel], *grid, *block, 0, self.stream,
                                          ctypes.addressof(params), 0), f"launching {kernel}")

    def copy(self, dst, src, nbytes):
        _ok(self.d, self.d.cuMemcpyDtoDAsync(dst, src, nbytes, self.stream), "a device copy")

    def copy2d(self, dst, dst_pitch, src, src_pitch, width, rows):
        """`rows` rows of `width` bytes, device to device, on the stream."""
        d = self.d
        m = d.CUDA_MEMCPY2D()
        m.srcMemoryType = m.dstMemoryType = d.CUmemorytype.CU_MEMORYTYPE_DEVICE
        m.srcDevice, m.srcPitch, m.dstDevice, m.dstPitch = src, src_pitch, dst, dst_pitch
        m.WidthInBytes, m.Height = width, rows
        _ok(d, d.cuMemcpy2DAsync(m, self.stream), "a device copy")

    def play(self, ctx, steps, address):
        """The table as one CUDA graph, captured at a context's first call
        (its buffers never move, so the graph replays as it is): one launch
        per call instead of one per kernel."""
        d = self.d
        if ctx.graph is None:
            mode = d.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
            _ok(d, d.cuStreamBeginCapture(self.stream, mode), "cuStreamBeginCapture")
            try:
                play(self, steps, address)
            finally:
                graph = _ok(d, d.cuStreamEndCapture(self.stream), "capturing the launches")
            ctx.graph = _ok(d, d.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        _ok(d, d.cuGraphLaunch(ctx.graph, self.stream), "launching the kernels' graph")

    def time(self, run, repeats):
        """Seconds per `run()` by the GPU's own clock (events on the stream)."""
        d = self.d
        start, end = (_ok(d, d.cuEventCreate(0), "cuEventCreate") for _ in range(2))
        _ok(d, d.cuEventRecord(start, self.stream), "cuEventRecord")
        for _ in range(repeats):
            run()
        _ok(d, d.cuEventRecord(end, self.stream), "cuEventRecord")
        self.synchronize("running the kernels")
        ms = _ok(d, d.cuEventElapsedTime(start, end), "cuEventElapsedTime")
        return ms / 1e3 / repeats

    def synchronize(self, what):
        _ok(self.d, self.d.cuStreamSynchronize(self.stream), what)


class _DeviceBuffer:
    def __init__(self, device, nbytes):
        self.device = device
        self.address = int(_ok(device.d, device.d.cuMemAlloc(max(nbytes, 256)),
                               f"allocating {nbytes:,} bytes"))

    def __del__(self):
        try:
            self.device.d.cuMemFree(self.address)
        except Exception:  # interpreter shutdown: the driver may be gone
            pass


class _GpuContext:
    """An arena and the inputs' and outputs' buffers on the GPU, made once;
    a call copies inputs in and outputs out on the device's stream."""

    def __init__(self, device, arena_bytes, in_types, out_types):
        self.device = device
        self.graph = None  # the captured launches (device.play)
        self.arena = device.alloc(arena_bytes)
        self.arena_address = self.arena.address
        self.out_types = out_types
        self.ins = [device.alloc(_bytes(t)) for t in in_types]
        self.outs = [device.alloc(_bytes(t)) for t in out_types]

    def bind(self, arrays, resident=()):
        """Copies the inputs to the GPU, except those in `resident` (which
        the buffers hold already, e.g. a decoder's KV cache)."""
        d = self.device
        for i, (buf, a) in enumerate(zip(self.ins, arrays)):
            if i in resident:
                continue
            _ok(d.d, d.d.cuMemcpyHtoDAsync(buf.address, a.ctypes.data, a.nbytes, d.stream),
                "copying an input to the GPU")
        self.held = arrays  # the host memory must live until the copies are done
        return [b.address for b in self.ins], [b.address for b in self.outs]

    def finish(self):
        d = self.device
        outs = [np.empty(s, t) for s, t in self.out_types]
        for buf, o in zip(self.outs, outs):
            _ok(d.d, d.d.cuMemcpyDtoHAsync(o.ctypes.data, buf.address, o.nbytes, d.stream),
                "copying an output from the GPU")
        d.synchronize("running the kernels")
        self.held = None
        return outs


def _bytes(t):
    shape, dtype = t
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
