"""The `hetc` command line.

    hetc compile MODEL --target T -o OUTDIR [--pipeline P] [--print-ir-after-all]
    hetc run OUTDIR --input NAME=FILE.npy ... [--output OUT.npz]
    hetc opt FILE.hir -p PIPELINE [--print-ir-after-all] [-o OUT.hir]
    hetc show MODEL|FILE.hir|OUTDIR
    hetc targets
    hetc cache [show|clean]

Exit codes: 0 ok, 1 a model/IR/environment problem, 2 a usage error, 3 an
internal error (a bug in hetc; --debug shows the traceback).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys

import numpy as np
from rich.console import Console
from rich.table import Table

from hetc.backends import option_fields
from hetc.core.errors import HetcError, UsageError, printable
from hetc.core.fsutil import atomic_write_text, cache_root
from hetc.core.progress import stderr_progress
from hetc.core.targets import TARGETS
from hetc.core.version import __version__
from hetc.driver import conformance, html_view, model_explorer, ops_table
from hetc.driver.api import compile as hetc_compile
from hetc.driver.api import import_model, load
from hetc.ir.mlir import QUANT_FORMS, to_mlir
from hetc.ir.parser import parse_file, save
from hetc.ir.printer import print_graph
from hetc.ir.report import Report
from hetc.ir.weights import WeightStore
from hetc.passes.pipeline import PassManager


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2 with our prefix
        self.print_usage(sys.stderr)
        self.exit(2, f"hetc: error: {message}\n")


def _console():
    return Console(soft_wrap=False, width=max(120, os.get_terminal_size().columns)
                   if sys.stdout.isatty() else 140)


def _add_mlir_quant_option(p):
    p.add_argument("--mlir-quant", choices=QUANT_FORMS, default="dequantize",
                   help="quantized weights in MLIR: codes and a dequantizing generic "
                        "(default), quant.uniform types, or decoded to f32")


def _add_ir_dump_options(p):
    p.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass (stderr)")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                   help="print the IR after the named pass (repeatable)")
    p.add_argument("--print-ir-before", action="append", default=[], metavar="PASS",
                   help="print the IR before the named pass (repeatable)")
    p.add_argument("--ir-dump-dir", metavar="DIR",
                   help="write each IR dump to its own .hir file in DIR instead of stderr")
    p.add_argument("--no-verify-each", action="store_true",
                   help="do not run the verifier after every pass")


def build_parser():
    parser = _Parser(prog="hetc", description="hetc: compile PyTorch models for x86, AMX, "
                     "CUDA, NPU and FPGA targets with per-layer sparsity and precision.")
    parser.add_argument("--version", action="version", version=f"hetc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # --debug after the command too (SUPPRESS: the subcommand's default never hides the global one)
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")

    p = sub.add_parser("compile", parents=[common],
                       help="compile a model into an artifact folder")
    p.add_argument("model", help="a .pt2 (saved torch.export program), .hir, .onnx or .mlir file")
    p.add_argument("--target", "-t", default="ref", choices=list(TARGETS), help="target (default: ref)")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="artifact folder to write")
    p.add_argument("--pipeline", "-p", default=None, help="pass pipeline (default: the target's)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="fix the symbolic dimensions of an ONNX input (repeatable)")
    p.add_argument("--sparsity", action="append", default=[], metavar="[REGEX=]N:M",
                   help="N:M sparsity for all layers, or for layers matching REGEX (repeatable; "
                        "first match wins)")
    p.add_argument("--precision", action="append", default=[], metavar="[REGEX=]FORMAT",
                   help="weight precision (int8, int4, int4-g64, int4-asym, int3, mx4, mx3, fp8, "
                        "bf16, ...); 'auto' or 'auto:int8|mx4|mx3' searches per layer")
    p.add_argument("--activations", choices=["none", "int8"],
                   help="int8: quantize integer-weight linear layers' inputs per token and group")
    p.add_argument("--calibration", metavar="FILE.npz",
                   help="calibration inputs: one array per input name, samples on the first axis")
    p.add_argument("--accuracy-budget", type=float, metavar="E",
                   help="largest relative output error allowed (default 0.01)")
    p.add_argument("--bits-budget", type=float, metavar="B",
                   help="with 'auto': average stored bits per weight over the compressible layers")
    p.add_argument("--criterion", choices=["magnitude", "wanda", "sparsegpt"],
                   help="pruning criterion (default: wanda with calibration, else magnitude)")
    p.add_argument("--rounding", choices=["nearest", "gptq"], default="nearest",
                   help="weight rounding: to nearest, or GPTQ with calibration Hessians")
    _add_target_options(p)
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the report")
    p.add_argument("--mlir", metavar="FILE.mlir",
                   help="also write the compiled graph as upstream MLIR text (docs/mlir.md)")
    _add_mlir_quant_option(p)
    p.add_argument("--html", metavar="FILE.html",
                   help="also write a page drawing the graph with the report's decisions (and, "
                        "with --print-ir-after-all, the IR after each pass; docs/inspect.md)")
    _add_ir_dump_options(p)

    p = sub.add_parser("run", parents=[common], help="run a compiled artifact on .npy inputs")
    p.add_argument("artifact", metavar="OUTDIR")
    p.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input by name (repeat for each input)")
    p.add_argument("--output", "-o", metavar="OUT.npz", help="write the outputs here")

    p = sub.add_parser("opt", parents=[common],
                       help="run a pass pipeline on a .hir (or .mlir, .onnx, .pt2) file and "
                            "print the result")
    p.add_argument("file", metavar="FILE.hir")
    p.add_argument("-p", "--pipeline", required=True, help='e.g. "canonicalize,fold,cse,dce"')
    p.add_argument("-o", "--output", metavar="OUT.hir", help="write the IR (and its .npz) here")
    p.add_argument("--emit", choices=["hir", "mlir"], default="hir",
                   help="hir (default), or upstream MLIR text (docs/mlir.md)")
    _add_mlir_quant_option(p)
    _add_ir_dump_options(p)

    p = sub.add_parser("show", parents=[common],
                       help="summarize a model, .hir file or artifact folder")
    p.add_argument("what", metavar="MODEL|FILE.hir|OUTDIR")
    p.add_argument("--ir", action="store_true", help="also print the IR")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead")
    p.add_argument("--html", metavar="FILE.html",
                   help="write a page drawing the graph with the report's decisions")
    p.add_argument("--model-explorer", metavar="FILE.json",
                   help="write the graph for Model Explorer (and FILE.bytes.json, "
                        "FILE.sensitivity.json: per-layer data to overlay)")

    sub.add_parser("targets", parents=[common],
                   help="list targets, their capabilities and availability here")

    p = sub.add_parser("ops", parents=[common],
                       help="which targets lower each op of the IR, or why they refuse it")
    p.add_argument("--markdown", metavar="FILE", help="write the table as Markdown here instead")

    p = sub.add_parser("cache", parents=[common], help="show or empty hetc's build cache")
    p.add_argument("action", nargs="?", choices=["show", "clean"], default="show",
                   help="show (default): where it is and its size; clean: delete it")

    p = sub.add_parser("conformance", parents=[common],
                       help="run a conformance suite (ONNX node tests, ONNX models)")
    p.add_argument("suite", choices=["onnx", "onnx-models"],
                   help="onnx: the ONNX backend node tests; onnx-models: the models stored in "
                        "the onnx wheel")
    p.add_argument("--target", "-t", default="ref", choices=list(TARGETS))
    p.add_argument("-k", dest="pattern", default=None, metavar="PATTERN",
                   help="only cases whose name matches this regular expression")
    p.add_argument("--jobs", "-j", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--markdown", metavar="FILE", help="also write the table as Markdown here")
    p.add_argument("--json", metavar="FILE", help="also write every case's result as JSON here")
    p.add_argument("--show-failures", action="store_true", help="list every wrong or crashing case")
    return parser


def _add_target_options(p):
    """One flag per option of the backends' Options dataclasses (--emulate,
    --device, ...), its help saying which targets take it."""
    for name, (f, targets) in option_fields().items():
        flag = "--" + name.replace("_", "-")
        help_text = f"target {', '.join(targets)}: {f.metadata['help']}"
        if "bool" in str(f.type):
            p.add_argument(flag, action="store_true", default=None, help=help_text)
        elif f.metadata.get("choices"):
            p.add_argument(flag, choices=list(f.metadata["choices"]), default=None, help=help_text)
        else:
            p.add_argument(flag, type=type(f.default), default=None, metavar="N" if isinstance(
                f.default, int) else "VALUE", help=help_text)


def _target_options(args) -> dict:
    return {name: getattr(args, name) for name in option_fields()}


def _pipeline_kwargs(args):
    return dict(print_ir_after_all=args.print_ir_after_all,
                print_ir_after=tuple(args.print_ir_after),
                print_ir_before=tuple(args.print_ir_before),
                verify_each=not args.no_verify_each, ir_dump_dir=args.ir_dump_dir)


def cmd_compile(args):
    dumps = io.StringIO() if args.html and args.print_ir_after_all else None
    module = hetc_compile(args.model, target=args.target, pipeline=args.pipeline,
                          input_shapes=_input_shapes(args.input_shape) or None,
                          sparsity=_per_layer(args.sparsity, "--sparsity"),
                          precision=_per_layer(args.precision, "--precision"),
                          calibration=_calibration(args.calibration),
                          accuracy_budget=args.accuracy_budget, bits_budget=args.bits_budget,
                          activations=args.activations,
                          criterion=args.criterion,
                          rounding=args.rounding, **_target_options(args),
                          **_pipeline_kwargs(args), ir_stream=dumps)
    # refused before anything is written
    mlir = module.to_mlir(quant=args.mlir_quant) if args.mlir else None
    module.save(args.output)
    if mlir is not None:
        atomic_write_text(args.mlir, mlir)
    if args.html:
        atomic_write_text(args.html, html_view.render(module.graph, module.report,
                                                      dumps and dumps.getvalue()))
    if not args.quiet:
        module.report.render(_console())
    print(f"wrote {args.output}" + (f" and {args.mlir}" if mlir is not None else ""))


def _per_layer(specs, flag):
    """["2:4"] -> "2:4"; ["fc1=2:4", "fc2=int8"...] -> {regex: choice} (first match wins)."""
    if not specs:
        return None
    if len(specs) == 1 and "=" not in specs[0]:
        return specs[0]
    out = {}
    for spec in specs:
        regex, eq, choice = spec.rpartition("=")
        if not eq or not choice:
            raise UsageError(f"{flag} {spec!r}: expected CHOICE or REGEX=CHOICE")
        out[regex] = choice
    return out


def _calibration(path):
    """Samples from an .npz: one array per input name, samples along the first axis."""
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {n: data[n] for n in data.files}
    except (OSError, ValueError) as e:
        raise UsageError(f"--calibration: cannot read {path}: {e}") from None
    counts = {len(a) for a in arrays.values()}
    if len(counts) != 1:
        raise UsageError(f"--calibration {path}: inputs have different sample counts {sorted(counts)}")
    return [{n: a[i] for n, a in arrays.items()} for i in range(counts.pop())]


def _input_shapes(specs):
    shapes = {}
    for spec in specs:
        name, eq, dims = spec.partition("=")
        try:
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",")]
        except ValueError:
            shapes[name] = None
        if not eq or not name or shapes[name] is None:
            raise UsageError(f"--input-shape {spec!r}: expected NAME=D0,D1,... (e.g. x=1,3,224,224)")
    return shapes


def _load_input(spec, names):
    name, eq, path = spec.partition("=")
    if not eq or not name or not path:
        raise UsageError(f"--input {spec!r}: expected NAME=FILE.npy")
    if name not in names:
        raise UsageError(f"--input {name}: the model has no input '{name}' "
                         f"(inputs: {', '.join(names)})")
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise UsageError(f"--input {name}: {path} is not a .npy file (write one with "
                                 f"numpy.save)")
        return name, np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"--input {name}: cannot read {path}: {e}") from None


def cmd_run(args):
    module = load(args.artifact)
    names = module.input_names
    inputs = dict(_load_input(s, names) for s in args.input)
    missing = [n for n in names if n not in inputs]
    if missing:
        raise UsageError(f"missing --input for: {', '.join(missing)}")
    outs = module(**inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    out_names = [v.name for v in module.graph.outputs]
    if args.output:
        WeightStore(zip(out_names, outs)).save(args.output)
        print(f"wrote {args.output}")
    for name, o in zip(out_names, outs):
        flat = np.asarray(o, np.float64).ravel() if o.dtype.kind != "V" else o.ravel()
        head = ", ".join(f"{x:.6g}" for x in flat[:6]) + (", ..." if flat.size > 6 else "")
        print(f"{name}: {list(o.shape)} {o.dtype} [{head}]")


def cmd_opt(args):
    # .hir, or any model file (a .mlir module from another compiler, ...)
    graph = parse_file(args.file) if args.file.endswith(".hir") else import_model(args.file)
    kw = _pipeline_kwargs(args)
    manager = PassManager.from_text(args.pipeline, verify_each=kw["verify_each"],
                                    print_ir_after_all=kw["print_ir_after_all"],
                                    print_ir_after=kw["print_ir_after"],
                                    print_ir_before=kw["print_ir_before"],
                                    dump_dir=kw["ir_dump_dir"])
    graph = manager.run(graph)
    if args.emit == "mlir":
        text = to_mlir(graph, quant=args.mlir_quant)
        if args.output:
            atomic_write_text(args.output, text)
        else:
            sys.stdout.write(text)
    elif args.output:
        save(graph, args.output)
    else:
        sys.stdout.write(print_graph(graph))


def cmd_show(args):
    what = args.what
    if os.path.isdir(what):
        module = load(what)
        report, graph = module.report, module.graph
    else:
        graph = import_model(what)
        report = Report.of(graph, "-", notes=["imported, not compiled"])
    if args.html or args.model_explorer:
        if args.html:
            atomic_write_text(args.html, html_view.render(graph, report))
            print(f"wrote {args.html}")
        if args.model_explorer:
            for path in model_explorer.write(graph, report, args.model_explorer):
                print(f"wrote {path}")
        return
    if args.json:
        print(report.to_json())
        return
    report.render(_console())
    if args.ir:
        sys.stdout.write(print_graph(graph))


def cmd_targets(args):
    table = Table(title="hetc targets", title_justify="left")
    for col in ("target", "emits", "N:M patterns", "weight dtypes", "roofline (nominal)",
                "backend", "available here"):
        table.add_column(col)
    for t in TARGETS.values():
        avail = t.availability()
        pats = ", ".join(f"{n}:{m}" for n, m in t.nm_patterns) or (
            "none (N:M stored as zeros)" if t.nm_as_zeros else "dense only")
        peak = max(t.cost.peak_gops.items(), key=lambda kv: kv[1])
        roof = f"{t.cost.reference_part}: {t.cost.bandwidth_gbs:g} GB/s, {peak[0]} {peak[1]:g} GOP/s"
        table.add_row(t.name, t.emits, pats, ", ".join(t.weight_dtypes), roof,
                      "built" if t.backend else "not built yet",
                      ("yes: " if avail.ok else "no: ") + avail.detail)
    _console().print(table)


def cmd_ops(args):
    if args.markdown:
        atomic_write_text(args.markdown, ops_table.markdown(f"hetc ops --markdown {args.markdown}"))
    else:
        _console().print(ops_table.table())


def cmd_conformance(args):
    results = conformance.run_suite(args.target, args.pattern, args.jobs,
                                    progress=stderr_progress, suite=args.suite)
    if not results:
        raise UsageError(f"no case matches -k {args.pattern!r}")
    conformance.render(results, _console(), show_cases=args.show_failures, suite=args.suite)
    if args.markdown:
        command = f"hetc conformance {args.suite}" + (f" --target {args.target}" if args.target != "ref" else "") \
            + (f" -k '{args.pattern}'" if args.pattern else "") + f" --markdown {args.markdown}"
        atomic_write_text(args.markdown, conformance.markdown(results, args.target, command,
                                                              args.suite))
    if args.json:
        atomic_write_text(args.json, conformance.to_json(results))
    s = conformance.summary(results)
    if s["wrong"] or s["crash"]:
        raise HetcError(f"{s['wrong'] + s['crash']} case(s) failed (wrong answer or crash)")


def cmd_cache(args):
    root = cache_root()
    if args.action == "clean":
        shutil.rmtree(root, ignore_errors=True)
        print(f"removed {root}")
        return
    kinds = sorted(os.listdir(root)) if os.path.isdir(root) else []
    print(f"{root} ($HETC_CACHE moves it; `hetc cache clean` deletes it):")
    for kind in kinds:
        path = os.path.join(root, kind)
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
                   if not os.path.islink(os.path.join(d, f)))
        entries = len(os.listdir(path)) if os.path.isdir(path) else 1
        print(f"  {kind}: {entries} entries, {size / 1e6:.1f} MB")
    if not kinds:
        print("  empty")


COMMANDS = {"compile": cmd_compile, "run": cmd_run, "opt": cmd_opt, "show": cmd_show,
            "targets": cmd_targets, "ops": cmd_ops, "conformance": cmd_conformance,
            "cache": cmd_cache}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        COMMANDS[args.command](args)
        return 0
    except HetcError as e:
        if getattr(args, "debug", False):
            raise
        print(f"hetc: error: {printable(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("hetc: interrupted", file=sys.stderr)
        return 130
    except MemoryError:  # the machine's limit, not a bug
        if getattr(args, "debug", False):
            raise
        print("hetc: error: out of memory (the model needs more than this machine gives; "
              "--debug shows where)", file=sys.stderr)
        return 1
    except Exception as e:  # a bug in hetc, not in the user's input
        if getattr(args, "debug", False):
            raise
        print(f"hetc: internal error: {type(e).__name__}: {printable(e)}\n"
              f"(this is a bug in hetc; rerun with --debug for the traceback)", file=sys.stderr)
        return 3
