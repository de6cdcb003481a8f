"""Compile and run hetc's MLIR export with upstream MLIR itself: the
Python bindings that ship with torch-mlir (`pip install --no-deps
torch-mlir`; `make venv` installs them), MLIR's `sparsifier` pipeline
(dense and N:M structured sparse tensors down to LLVM, without its runtime
library) and its ExecutionEngine on this CPU. An independent second
reference for hetc's semantics (tests/test_mlir.py)."""

from __future__ import annotations

import ctypes

import numpy as np

from hetc.core.errors import TargetError

PIPELINE = "builtin.module(sparsifier{enable-runtime-library=false})"


def bindings():
    """torch-mlir's MLIR modules, or TargetError saying how to get them."""
    try:
        from torch_mlir import execution_engine, ir, passmanager, runtime
    except ImportError:
        raise TargetError("running MLIR needs the MLIR Python bindings of torch-mlir: "
                          "pip install --no-deps torch-mlir") from None
    return ir, passmanager, execution_engine, runtime


def verify(text) -> None:
    """Parse and verify the module (MLIRError names the first problem)."""
    ir = bindings()[0]
    with ir.Context():
        ir.Module.parse(text).operation.verify()


def run(text, inputs, output_shapes) -> list:
    """The outputs (float32 arrays of the given shapes) of @main for `inputs`."""
    ir, passmanager, execution_engine, rt = bindings()
    with ir.Context():
        module = ir.Module.parse(text)
        passmanager.PassManager.parse(PIPELINE).run(module.operation)
        engine = execution_engine.ExecutionEngine(module, opt_level=2)
        kinds = [rt.make_nd_memref_descriptor(len(s), rt.as_ctype(np.float32))
                 for s in output_shapes]
        # the C interface returns one descriptor, or a struct of them, through its first argument
        results = type("Results", (ctypes.Structure,),
                       {"_fields_": [(f"r{i}", k) for i, k in enumerate(kinds)]})()
        arrays = [np.ascontiguousarray(x, np.float32) for x in inputs]  # kept alive
        ins = [ctypes.pointer(ctypes.pointer(rt.get_ranked_memref_descriptor(a)))
               for a in arrays]
        engine.invoke("main", ctypes.pointer(ctypes.pointer(results)), *ins)
        return [rt.ranked_memref_to_numpy(ctypes.pointer(getattr(results, f"r{i}"))).copy()
                .reshape(s) for i, s in enumerate(output_shapes)]
