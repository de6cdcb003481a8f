"""hetc.compile and hetc.load.

torch is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import os

from hetc.backends import get_backend, options_for
from hetc.core.errors import HetcError, TargetError, UsageError
from hetc.core.progress import stderr_progress
from hetc.core.targets import get_target
from hetc.driver import compression_options
from hetc.frontends.decoder import CALIBRATION_NOTE, import_decoder
from hetc.frontends.mlir_import import import_mlir
from hetc.frontends.onnx import import_onnx
from hetc.frontends.pt2 import load_pt2
from hetc.frontends.torch_fx import import_exported, import_module
from hetc.ir.graph import Graph
from hetc.ir.parser import parse_file
from hetc.ir.report import Report
from hetc.ir.verify import verify
from hetc.passes.pipeline import PassContext, PassManager
from hetc.runtime import artifact as artifact_io
from hetc.runtime.module import Module


def import_model(model, example_inputs=None, input_shapes=None, freeze_inputs=None) -> Graph:
    """Any supported model form -> a verified Graph.

    `model` is a torch.nn.Module (with `example_inputs`), a torch.export
    ExportedProgram, a Graph, or a path to a `.pt2` (saved torch.export
    program), `.hir` (hetc IR, weights in the .npz beside it), `.onnx` or `.mlir` file,
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
        return import_onnx(model, input_shapes=input_shapes, example_inputs=example_inputs,
                           freeze_inputs=freeze_inputs)
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        return import_exported(model)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise UsageError("compiling a torch.nn.Module needs example_inputs=(tensor, ...) "
                             "to fix the input shapes")
        return import_module(model, example_inputs)
    raise UsageError(f"cannot compile a {type(model).__name__}: expected a torch.nn.Module, an "
                     f"ExportedProgram, a hetc Graph or a path to a .pt2, .hir, .onnx or .mlir file")


def _import_file(path, example_inputs, input_shapes, freeze_inputs):
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if ext == ".hir":
        return parse_file(path)
    if ext == ".pt2":
        ep = load_pt2(path)
        name = os.path.splitext(os.path.basename(path))[0]
        return import_exported(ep, name=name.replace("-", "_") or "main")
    if ext == ".onnx":
        return import_onnx(path, input_shapes=input_shapes, example_inputs=example_inputs,
                           freeze_inputs=freeze_inputs)
    if ext == ".mlir":
        return import_mlir(path)
    raise UsageError(f"{path}: unknown model file type '{ext}' (expected .pt2, .hir, .onnx "
                     f"or .mlir)")


def compile(model, target="ref", example_inputs=None, pipeline=None, *, input_shapes=None,
            freeze_inputs=None, sparsity=None, precision=None, calibration=None,
            accuracy_budget=None, accuracy_metric=None, bits_budget=None, activations=None,
            criterion=None, decoder=None, rounding="nearest", print_ir_after_all=False,
            print_ir_after=(), print_ir_before=(), verify_each=True, ir_stream=None,
            ir_dump_dir=None,
            **target_options):
    """Compile `model` for `target`; returns a callable hetc.runtime.Module.

    pipeline: a pass pipeline string (default: the target's own), e.g.
      "canonicalize,fold,cse,dce"; a target's storage passes (npu:
      store-floats, f16 weights) run last either way.
    input_shapes / freeze_inputs: for ONNX models, fix symbolic input
      dimensions ({name: shape}) or make inputs constants ({name: array}).
    sparsity: "2:4", "1:4", ... or {layer regex: pattern}; precision: "int8",
      "int4", "int4-g64", "int4-asym", "int3", "mx4", "mx3", "fp8", "bf16", ... or
      {layer regex: format}; "auto" for either searches per layer under the
      accuracy budget ("auto:int8|mx4|mx3": among these candidates only).
      See docs/compression.md.
    calibration: a list of input samples, for activation statistics (the
      wanda criterion) and the accuracy check; default: the example inputs.
    accuracy_budget: the largest relative L2 output error allowed against the
      uncompressed model on held-out calibration samples (default 0.01); the
      report says whether the compiled model meets it.
    accuracy_metric: a callable scoring a runnable model (lower is better,
      e.g. perplexity on given text); the budget then bounds its relative
      increase over the uncompressed model (0.05: at most 5% worse).
    bits_budget: for "auto", the average stored bits per weight over the
      compressible layers; the search picks the lowest predicted error that
      fits it (the accuracy budget is then checked, not searched).
    activations: "int8" quantizes the inputs of integer-weight linear layers
      per token and weight group at run time (integer dot products on x86
      VNNI and AMX); default: they stay in their float dtype.
    criterion: "wanda" (default when calibration data exist), "magnitude" or
      "sparsegpt" (prunes with the layer Hessian and updates kept weights).
    rounding: "nearest" (default) or "gptq" (second-order, needs calibration).
    **target_options: the options of the target's backend (its Options
      dataclass; `hetc compile --help` lists them all): emulate= for amx,
      device= and parts= for npu. An option of another target is an error
      that names the target it belongs to.
    decoder: True or {"max_context": 256, "chunk": 8} for a transformers
      causal LM: compile one generation step with a static KV cache (see
      hetc.frontends.decoder); the module then has `generate()`.
    print_ir_after_all / print_ir_after=("fold",) / print_ir_before=(...):
      dump the IR around passes to `ir_stream` (stderr by default), or to one
      .hir file per dump in the folder `ir_dump_dir`.
    """
    tgt = get_target(target)
    backend = get_backend(tgt)  # fails early, before any import work, if not built
    options = options_for(backend, tgt, target_options)
    spec = None
    if decoder is not None and decoder is not False:
        if example_inputs is not None or input_shapes is not None or freeze_inputs is not None:
            raise UsageError("decoder= builds the step's inputs itself: leave out "
                             "example_inputs, input_shapes and freeze_inputs")
        graph, spec, example_inputs = import_decoder(model, decoder)
    else:
        graph = import_model(model, example_inputs, input_shapes, freeze_inputs)
    text = tgt.default_pipeline if pipeline is None else pipeline
    auto = compression_options.is_auto(sparsity) or compression_options.is_auto(precision)
    if criterion is None and calibration is not None and not auto:
        criterion = "wanda"  # the better criterion whenever there are activations to weigh by
    budget = compression_options.DEFAULT_BUDGET if accuracy_budget is None else accuracy_budget
    compress = compression_options.passes_for(sparsity, precision, criterion, rounding, budget,
                                              bits_budget, activations)
    if not compress and (calibration is not None or accuracy_budget is not None
                         or accuracy_metric is not None or criterion is not None
                         or rounding != "nearest"):
        raise UsageError("calibration, accuracy_budget, accuracy_metric and criterion apply to "
                         "compression: give sparsity= or precision= too")
    if accuracy_metric is not None and not callable(accuracy_metric):
        raise UsageError(f"accuracy_metric must be a callable scoring a model, got "
                         f"{type(accuracy_metric).__name__}")

    ctx = PassContext(target=tgt, progress=stderr_progress, metric=accuracy_metric is not None,
                      evaluator=compression_options.Evaluators())
    what = ""  # what the accuracy budget bounds, once measurable
    if compress:
        text = ",".join(t for t in (text, compress, "dce") if t)
        stats, held_out = compression_options.split(
            compression_options.samples(calibration, example_inputs, graph))
        ctx.calibration, ctx.held_out = stats, held_out
        reference = graph.copy()  # the uncompressed model, for the accuracy check
        if held_out or accuracy_metric is not None:
            ctx.measure, what = compression_options.measure(reference, held_out, accuracy_metric)
    text = ",".join(t for t in (text, tgt.storage_pipeline) if t)
    manager = PassManager.from_text(
        text, verify_each=verify_each, print_ir_after_all=print_ir_after_all,
        print_ir_after=tuple(_names(print_ir_after)), print_ir_before=tuple(_names(print_ir_before)),
        stream=ir_stream, dump_dir=ir_dump_dir)
    graph = manager.run(graph, ctx)
    notes = list(graph.notes) + [f"pipeline: {text or '(empty)'}"] + ctx.notes
    notes += [f"calibration samples ran on {what}" for what in ctx.evaluator.used]
    if spec is not None and compress and calibration is None:
        notes.append(CALIBRATION_NOTE)
    summary = {}
    if compress:
        summary, more = _accuracy(graph, ctx, what, accuracy_budget)
        notes += more
    artifact = backend.lower(graph, tgt, options)
    if spec is not None:
        artifact.extra["decoder"] = spec.to_dict()
    notes += artifact.extra.get("notes", [])
    if tgt.name == "ref":
        notes.append("target ref runs the numpy reference interpreter")
    report = Report.of(graph, tgt.name, manager.timings, notes, ctx.decisions, summary)
    module = Module(artifact, report, backend.load)
    if backend.builds_at_compile and tgt.availability().ok:
        # the C compiler runs now (cached by source), not on the first call;
        # a host that cannot build (no compiler) still compiles, and running
        # says what is missing
        stderr_progress(0, 1, f"building the {tgt.name} code")
        try:
            module.prepare()
        except TargetError:
            pass
        stderr_progress(1, 1, f"building the {tgt.name} code")
    return module


def _accuracy(graph, ctx, what, budget):
    """The compressed model's error (ctx.measure: output error on held-out
    calibration samples, or a user metric's increase) and what the report
    should say about it."""
    budget = compression_options.DEFAULT_BUDGET if budget is None else float(budget)
    summary, notes = {"budget": budget}, []
    if ctx.measure is None:
        notes.append("no calibration inputs: the output error was not measured")
        return summary, notes
    error = ctx.measure(graph)
    summary.update(error=error, held_out=len(ctx.held_out or []), measure=what)
    if error > budget:
        notes.append(f"{what} {error:.3g} EXCEEDS the accuracy budget {budget:g}")
    if ctx.held_out is ctx.calibration and what == "output error":
        notes.append("one calibration sample: the error is measured on the inputs the "
                     "statistics came from (give several samples for a held-out check)")
    return summary, notes


def _names(x):
    return [x] if isinstance(x, str) else list(x)


def load(folder):
    """Load a compiled module saved with `module.save(folder)` or `hetc
    compile -o`. Safe on folders from strangers (docs/reliability.md)."""
    folder = os.fspath(folder)
    artifact, report = artifact_io.load(folder)
    try:
        report = Report.from_dict(report)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise HetcError(f"{os.path.join(folder, artifact_io.REPORT_FILE)}: not a hetc report "
                        f"({e})") from None
    return Module(artifact, report, get_backend(get_target(artifact.target)).load)
