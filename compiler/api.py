"""hetc.compile and hetc.load."""

from __future__ import annotations

import os

from .errors import UsageError
from .ir.graph import Graph
from .ir.verify import verify
from .pipeline import PassContext, PassManager
from .report import Report
from .targets import get_target


def import_model(model, example_inputs=None, input_shapes=None, freeze_inputs=None) -> Graph:
    """Any supported model form -> a verified Graph.

    `model` is a torch.nn.Module (with `example_inputs`), a torch.export
    ExportedProgram, a Graph, or a path to a `.pt2` (saved torch.export
    program), `.hir` (hetc IR, weights in the .npz beside it) or `.onnx` file,
    or an onnx ModelProto. `input_shapes` ({name: shape}) fixes symbolic
    dimensions of ONNX inputs when no example inputs are given; `freeze_inputs`
    ({name: array}) makes ONNX graph inputs constants (see import_onnx).
    """
    if isinstance(model, Graph):
        verify(model)
        return model
    if isinstance(model, (str, os.PathLike)):
        return _import_file(os.fspath(model), example_inputs, input_shapes, freeze_inputs)
    if type(model).__name__ == "ModelProto":
        from hetc.frontends.onnx import import_onnx

        return import_onnx(model, input_shapes=input_shapes, example_inputs=example_inputs,
                           freeze_inputs=freeze_inputs)
    import torch

    from hetc.frontends.torch_fx import import_exported, import_module

    if isinstance(model, torch.export.ExportedProgram):
        return import_exported(model)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise UsageError("compiling a torch.nn.Module needs example_inputs=(tensor, ...) "
                             "to fix the input shapes")
        return import_module(model, example_inputs)
    raise UsageError(f"cannot compile a {type(model).__name__}: expected a torch.nn.Module, an "
                     f"ExportedProgram, a hetc Graph or a path to a .pt2, .hir or .onnx file")


def _import_file(path, example_inputs, input_shapes, freeze_inputs):
    from .errors import HetcError

    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if ext == ".hir":
        from .ir.parser import parse_file

        return parse_file(path)
    if ext == ".pt2":
        import torch

        from hetc.frontends.torch_fx import import_exported

        try:
            ep = torch.export.load(path)
        except Exception as e:  # corrupt or foreign file: say which
            raise HetcError(f"{path}: not a loadable torch.export program "
                            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
        name = os.path.splitext(os.path.basename(path))[0]
        return import_exported(ep, name=name.replace("-", "_") or "main")
    if ext == ".onnx":
        from hetc.frontends.onnx import import_onnx

        return import_onnx(path, input_shapes=input_shapes, example_inputs=example_inputs,
                           freeze_inputs=freeze_inputs)
    raise UsageError(f"{path}: unknown model file type '{ext}' (expected .pt2, .hir or .onnx)")


def compile(model, target="ref", example_inputs=None, pipeline=None, *, input_shapes=None,
            freeze_inputs=None, print_ir_after_all=False, print_ir_after=(), print_ir_before=(),
            verify_each=True, ir_stream=None, **options):
    """Compile `model` for `target`; returns a callable hetc.runtime.Module.

    pipeline: a pass pipeline string (default: the target's own), e.g.
      "canonicalize,fold,cse,dce".
    input_shapes / freeze_inputs: for ONNX models, fix symbolic input
      dimensions ({name: shape}) or make inputs constants ({name: array}).
    print_ir_after_all / print_ir_after=("fold",) / print_ir_before=(...):
      dump the IR around passes to `ir_stream` (stderr by default).
    """
    from hetc.backends import get_backend
    from hetc.runtime.module import Module

    if options:
        raise UsageError(f"unknown compile option(s): {', '.join(sorted(options))} "
                         f"(compression options arrive with the compression passes)")
    tgt = get_target(target)
    backend = get_backend(tgt)  # fails early, before any import work, if not built
    graph = import_model(model, example_inputs, input_shapes, freeze_inputs)
    text = tgt.default_pipeline if pipeline is None else pipeline
    manager = PassManager.from_text(
        text, verify_each=verify_each, print_ir_after_all=print_ir_after_all,
        print_ir_after=tuple(_names(print_ir_after)), print_ir_before=tuple(_names(print_ir_before)),
        stream=ir_stream)
    ctx = PassContext(target=tgt)
    graph = manager.run(graph, ctx)
    artifact = backend.lower(graph, tgt)
    notes = list(graph.notes) + [f"pipeline: {text or '(empty)'}"]
    if tgt.name == "ref":
        notes.append("target ref runs the numpy reference interpreter")
    report = Report.of(graph, tgt.name, manager.timings, notes)
    return Module(artifact, report)


def _names(x):
    return [x] if isinstance(x, str) else list(x)


def load(folder):
    """Load a compiled module saved with `module.save(folder)` or `hetc compile -o`."""
    from hetc.runtime.module import Module

    return Module.load(os.fspath(folder))
