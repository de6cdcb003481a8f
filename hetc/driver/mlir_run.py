"""Compile and run hetc's MLIR export with upstream MLIR itself: the
Python bindings that ship with torch-mlir (`pip install --no-deps
torch-mlir`; `make venv` installs them), MLIR's `sparsifier` pipeline
(dense and N:M structured sparse tensors down to LLVM, without its runtime
library) and its ExecutionEngine on this CPU. An independent second
reference for hetc's semantics (tests/test_mlir.py)."""

from __future__ import annotations

import ctypes

import numpy as np

from hetc.backends.c.build import build
from hetc.core.errors import TargetError

# composite ops are calls of private functions (hetc/ir/mlir.py): inlined first;
# quant.dcast of quant.uniform weights lowered by MLIR's own pass
PIPELINE = ("builtin.module(inline, func.func(lower-quant-ops), "
            "sparsifier{enable-runtime-library=false})")

# The one function of MLIR's C runner utilities that the lowered code calls
# (memref.copy of a strided view: slices, pads, reshapes) and that torch-mlir's
# wheel does not ship: an element-by-element copy between two ranked
# descriptors ({allocated, aligned, offset, sizes[rank], strides[rank]}).
RUNTIME = r"""
#include <stdint.h>
#include <string.h>
typedef struct { int64_t rank; void *descriptor; } unranked;
void memrefCopy(int64_t size, unranked *src, unranked *dst) {
    int64_t rank = src->rank;
    int64_t *s = (int64_t *)src->descriptor, *d = (int64_t *)dst->descriptor;
    char *sp = (char *)s[1] + s[2] * size, *dp = (char *)d[1] + d[2] * size;
    int64_t *sizes = s + 3, *ss = s + 3 + rank, *ds = d + 3 + rank;
    int64_t index[64] = {0}, n = 1;
    if (rank > 64) return;
    for (int64_t i = 0; i < rank; i++) n *= sizes[i];
    for (int64_t k = 0; k < n; k++) {
        int64_t so = 0, dof = 0;
        for (int64_t i = 0; i < rank; i++) { so += index[i] * ss[i]; dof += index[i] * ds[i]; }
        memcpy(dp + dof * size, sp + so * size, (size_t)size);
        for (int64_t i = rank - 1; i >= 0 && ++index[i] == sizes[i]; i--) index[i] = 0;
    }
}
"""


def bindings():
    """torch-mlir's MLIR modules, or TargetError saying how to get them."""
    try:
        from torch_mlir import execution_engine, ir, passmanager, runtime
    except ImportError:
        raise TargetError("running MLIR needs the MLIR Python bindings of torch-mlir: "
                          "pip install --no-deps torch-mlir") from None
    return ir, passmanager, execution_engine, runtime


def runtime_library() -> str:
    """The shared library of RUNTIME, built once (and cached) with the C compiler."""
    return build({"mlir_runtime.c": RUNTIME}, ["-O2", "-fPIC", "-shared"], what="mlir_runtime",
                 main="mlir_runtime.c")


def verify(text) -> None:
    """Parse and verify the module (MLIRError names the first problem)."""
    ir = bindings()[0]
    with ir.Context():
        ir.Module.parse(text).operation.verify()


def run(text, inputs, output_shapes, output_dtypes=None) -> list:
    """The outputs (arrays of the given shapes, float32 unless
    `output_dtypes` says) of @main for `inputs` (arrays of its argument types)."""
    ir, passmanager, execution_engine, rt = bindings()
    dts = [np.dtype(d) for d in (output_dtypes or [np.float32] * len(output_shapes))]
    with ir.Context():
        module = ir.Module.parse(text)
        passmanager.PassManager.parse(PIPELINE).run(module.operation)
        engine = execution_engine.ExecutionEngine(module, opt_level=2,
                                                  shared_libs=[runtime_library()])
        kinds = [rt.make_nd_memref_descriptor(len(s), rt.as_ctype(d))
                 for s, d in zip(output_shapes, dts)]
        # the C interface returns one descriptor, or a struct of them, through its first argument
        results = type("Results", (ctypes.Structure,),
                       {"_fields_": [(f"r{i}", k) for i, k in enumerate(kinds)]})()
        arrays = [np.ascontiguousarray(x) for x in inputs]  # kept alive
        ins = [ctypes.pointer(ctypes.pointer(rt.get_ranked_memref_descriptor(a)))
               for a in arrays]
        engine.invoke("main", ctypes.pointer(ctypes.pointer(results)), *ins)
        return [rt.ranked_memref_to_numpy(ctypes.pointer(getattr(results, f"r{i}"))).copy()
                .reshape(s) for i, s in enumerate(output_shapes)]
