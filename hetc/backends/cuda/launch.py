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

    def copy2d(self, dst, dst_pitch, src, src_pitch, width, rows):
        for r in range(rows):
            ctypes.memmove(dst + r * dst_pitch, src + r * src_pitch, width)

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

    def bind(self, arrays, resident=()):
        """Addresses of the inputs and of new outputs (inputs in `resident`
        are where they were last time: here, always where they are)."""
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

    def decoder_cache(self, spec):
        """A decoder's KV cache kept in the device's own input buffers (GPU
        memory on a GPU) for a whole generation: a step uploads only its
        ids, positions and mask, and `append` moves the new keys and values
        from the output buffers into their slots on the device."""
        return _DeviceCache(self, spec)

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


class _DeviceCache:
    """runtime.generate's cache protocol (step, append, close) over a
    context of its own: inputs 3.. of the step graph are the cache layers,
    outputs 1.. their new keys and values ([2, 1, kv heads, chunk, head
    dim] each)."""

    def __init__(self, executor, spec):
        self.x, self.spec = executor, spec
        self.ctx = executor._context()
        shape, dtype = executor.in_types[3]
        self.layers = [np.zeros(shape, dtype) for _ in range(spec.layers)]  # the first upload
        self.item = np.dtype(dtype).itemsize
        self.resident = ()

    def step(self, ids, positions, mask):
        arrays = [np.ascontiguousarray(a) for a in (ids, positions, mask)] + self.layers
        self.ins, self.outs = self.ctx.bind(arrays, self.resident)
        self.resident = range(3, 3 + self.spec.layers)  # uploaded once, then kept
        self.x.device.play(self.ctx, self.x.steps, self.x._address(self.ctx, self.ins, self.outs))
        self.got = self.ctx.finish()  # kept alive: append reads the new keys and values
        return self.got[0]

    def append(self, pos, n):
        s, row = self.spec, self.spec.head_dim * self.item
        for layer in range(s.layers):
            self.x.device.copy2d(self.ins[3 + layer] + pos * row, s.max_context * row,
                                 self.outs[1 + layer], s.chunk * row, n * row,
                                 2 * s.kv_heads)

    def close(self):
        self.ctx = self.got = None
