"""Running a cuda model: the launch table (emit.CudaLowered.steps) played
on a device, the same way on a GPU and in the simulation.

A call binds the buffers the table refers to (A: the activation arena, W:
the weights, uploaded once, in/out: the call's inputs and outputs) to
addresses, launches each kernel with its grid, block and argument
addresses, and performs the copies that produce outputs which are inputs,
constants or views. Only the device differs:

- `SimDevice`: host memory, and each launch one call into the simulation
  library (hetc_launch in the generated file, built with -DHETC_SIM);
- `GpuDevice` (gpu.py): the CUDA driver API through `cuda-bindings`.

So everything but the driver calls themselves is exercised by every
emulated run here."""

from __future__ import annotations

import contextlib
import ctypes
import time

import numpy as np

from hetc.core.errors import TargetError


def play(device, steps, address):
    """Each step of the table on `device`, in order, with its buffer
    references turned into addresses by `address`."""
    for step in steps:
        if "copy" in step:
            c = step["copy"]
            device.copy(address(c["dst"]), address(c["src"]), c["bytes"])
        else:
            device.launch(step["kernel"], step["grid"], step["block"],
                          [address(r) for r in step["args"]])


class SimDevice:
    """The CPU simulation: buffers are host memory, kernels run through the
    built library's hetc_launch."""

    name = "cuda (emulated)"

    def __init__(self, path, kernels):
        self.lib = ctypes.CDLL(path)
        self.lib.hetc_launch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self.lib.hetc_error.restype = ctypes.c_char_p
        self.index = {name: i for i, name in enumerate(kernels)}

    def upload(self, blob):
        return _HostBuffer(blob)

    def context(self, arena_bytes, in_types, out_types):
        return _HostContext(arena_bytes, out_types)

    def launch(self, kernel, grid, block, addresses):
        dims = (ctypes.c_uint * 6)(*grid, *block)
        args = (ctypes.c_void_p * max(1, len(addresses)))(*addresses)
        if self.lib.hetc_launch(self.index[kernel], dims, args):
            raise TargetError(f"target cuda: the generated code failed: "
                              f"{self.lib.hetc_error().decode(errors='replace')}")

    def copy(self, dst, src, nbytes):
        ctypes.memmove(dst, src, nbytes)

    def play(self, ctx, steps, address):
        play(self, steps, address)

    def time(self, run, repeats):
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        return (time.perf_counter() - start) / repeats


class _HostBuffer:
    def __init__(self, array):
        self.array = array  # kept alive: kernels read it
        self.address = array.ctypes.data


class _HostContext:
    """An arena of host memory; inputs are read where they are, outputs
    written into arrays made per call."""

    def __init__(self, arena_bytes, out_types):
        self.arena = np.empty(max(arena_bytes, 64) + 64, np.uint8)
        self.arena_address = -(-self.arena.ctypes.data // 64) * 64  # cache-line aligned
        self.out_types = out_types

    def bind(self, arrays):
        self.ins = arrays
        self.outs = [np.empty(s, d) for s, d in self.out_types]
        return [a.ctypes.data for a in arrays], [o.ctypes.data for o in self.outs]

    def finish(self):
        outs, self.ins, self.outs = self.outs, None, None
        return outs


class Executor:
    """A loaded cuda model: `executor(arrays) -> outputs` plays the launch
    table on `device`. Safe to call from several threads at once: a call
    takes a context (an arena and its buffers) from a pool and puts it
    back, making one more when all are in use."""

    def __init__(self, graph, lowered, device):
        self.device, self.steps = device, lowered.steps
        self.arena_bytes = lowered.arena_bytes
        self.weights = device.upload(lowered.blob)
        self.in_types = [(tuple(v.type.shape), v.type.dtype.storage) for v in graph.inputs]
        self.out_types = [(tuple(v.type.shape), v.type.dtype.storage) for v in graph.outputs]
        self.free = [self._context()]  # pop and append are atomic under the GIL

    def _context(self):
        return self.device.context(self.arena_bytes, self.in_types, self.out_types)

    @contextlib.contextmanager
    def _borrowed(self):
        try:
            ctx = self.free.pop()
        except IndexError:  # every context is in use by another thread
            ctx = self._context()
        try:
            yield ctx
        finally:
            self.free.append(ctx)

    def _address(self, ctx, ins, outs):
        """The function turning a table's buffer reference into an address."""
        base = {"A": [ctx.arena_address], "W": [self.weights.address], "in": ins, "out": outs}
        return lambda ref: base[ref[0]][ref[1]] + ref[2]

    def __call__(self, arrays):
        with self._borrowed() as ctx:
            address = self._address(ctx, *ctx.bind([np.ascontiguousarray(a) for a in arrays]))
            self.device.play(ctx, self.steps, address)
            return ctx.finish()

    def kernel_seconds(self, arrays, repeats=20):
        """Seconds per call of the kernels alone: the inputs bound once,
        nothing read back, the table played `repeats` times (on a GPU timed
        by its events, the KV cache of a decoder step staying there)."""
        with self._borrowed() as ctx:
            address = self._address(ctx, *ctx.bind([np.ascontiguousarray(a) for a in arrays]))

            def run():
                self.device.play(ctx, self.steps, address)
            run()  # warm up (and, on a GPU, capture the graph)
            seconds = self.device.time(run, repeats)
            ctx.finish()
            return seconds

    @property
    def takes_gpu_tensors(self):
        return getattr(self.device, "takes_gpu_tensors", False)

    def call_gpu_tensors(self, tensors):
        """torch CUDA tensors in, torch CUDA tensors out, read and written
        where they are (no copies); the table runs kernel by kernel, as
        the buffers differ from call to call, after the work torch queued."""
        import torch  # the caller's tensors are torch's

        from hetc.runtime.convert import torch_dtype

        ins = [t.contiguous() for t in tensors]
        outs = [torch.empty(s, dtype=torch_dtype(d), device=ins[0].device)
                for s, d in self.out_types]
        with self._borrowed() as ctx:
            torch.cuda.current_stream(ins[0].device).synchronize()
            play(self.device, self.steps, self._address(
                ctx, [t.data_ptr() for t in ins], [o.data_ptr() for o in outs]))
            self.device.synchronize("running the kernels")
        return outs
