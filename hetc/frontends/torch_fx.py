"""PyTorch frontend: a torch.export program becomes a hetc Graph.

An Interpreter-style walk over the exported FX graph: parameters and buffers
become named constants (their names are the module's state-dict names), user
inputs become graph inputs with the example inputs' static shapes, and every
call is translated by the handler registered for its ATen op in
`torch_opmap`. Nothing here matches raw FX targets but that table.

torch is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings
from contextlib import contextmanager

import numpy as np

from hetc.core.errors import FrontendError
from hetc.ir import dtypes
from hetc.ir.graph import Graph, Value
from hetc.ir.ops import InferError
from hetc.ir.types import TensorType
from hetc.ir.verify import verify
from hetc.runtime.convert import to_numpy, to_torch

from . import torch_opmap
from .moe import dense_experts


def torch_dtype(tdt) -> dtypes.DType:
    import torch

    table = {torch.float32: dtypes.f32, torch.float16: dtypes.f16, torch.bfloat16: dtypes.bf16,
             torch.float64: dtypes.f64, torch.int64: dtypes.i64, torch.int32: dtypes.i32,
             torch.int16: dtypes.i16, torch.int8: dtypes.i8, torch.uint8: dtypes.u8,
             torch.bool: dtypes.boolean, torch.float8_e4m3fn: dtypes.f8e4m3,
             torch.float8_e5m2: dtypes.f8e5m2}
    if tdt not in table:
        raise FrontendError(f"torch dtype {tdt} has no hetc equivalent")
    return table[tdt]


def source_location(node) -> str:
    """`file.py:LINE` of the user code that produced an FX node, if known."""
    trace = node.meta.get("stack_trace") or ""
    found = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)', trace)
    if not found:
        return ""
    path, line, fn, code = found[-1]
    return f"{os.path.relpath(path) if not path.startswith('<') else path}:{line} (in {fn}: {code.strip()})"


# Largest result evaluated with torch at import time (elements); bigger ones
# computed only from constants stay graph ops.
MAX_STATIC_ELEMENTS = 1 << 24


class _Unavailable:
    """A result of a multi-result op that hetc does not compute; using it is an error."""

    def __init__(self, message):
        self.message = message


class _Scope:
    """Values of one FX graph being walked: IR values and compile-time tensors."""

    def __init__(self):
        self.env: dict = {}  # node name -> Value, or list of Values
        self.static: dict = {}  # node name -> torch value known at compile time
        self.consts: dict = {}  # node name -> const Value made for a static tensor
        self.derived: dict = {}  # node name -> state-dict name of the weight it is a part of


class Importer:
    """Walks one ExportedProgram; handlers call back into it.

    A node whose operands are all known at compile time (parameters, tensor
    constructors such as arange, and anything computed only from those) is
    evaluated with torch itself and becomes a constant; only nodes that
    depend on the model's inputs are translated by the op table.
    """

    def __init__(self, ep, name, strip=""):
        self.ep = ep
        self.strip = strip  # a wrapper's attribute prefix, left out of weight names
        self.g = Graph(name)
        self.node = None
        self.scope = _Scope()
        sig = ep.graph_signature
        self.params = {}  # placeholder name -> state-dict name
        for spec in sig.input_specs:
            if spec.kind.name in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
                self.params[spec.arg.name] = spec.target
            elif spec.kind.name != "USER_INPUT":
                raise FrontendError(f"exported program input {spec.arg.name} of kind "
                                    f"{spec.kind.name} is not supported")
        for spec in sig.output_specs:
            if spec.kind.name != "USER_OUTPUT":
                raise FrontendError(f"the model mutates {spec.target} ({spec.kind.name}); "
                                    f"hetc compiles inference graphs without state updates")

    # -- helpers for handlers -------------------------------------------------------
    def error(self, message) -> FrontendError:
        node = self.node
        loc = source_location(node) if node is not None else ""
        what = f"node %{node.name} ({node.target})" if node is not None else "model"
        return FrontendError(f"{loc + ': ' if loc else ''}{what}: {message}")

    def out_type(self, index=None) -> TensorType:
        val = self.node.meta.get("val")
        if index is not None:
            val = val[index]
        return TensorType(tuple(int(d) for d in val.shape), torch_dtype(val.dtype))

    def value(self, arg, like: TensorType | None = None) -> Value:
        """A Value for an FX argument: a node, or a Python scalar made an
        inline constant of `like`'s dtype."""
        import torch.fx

        if isinstance(arg, torch.fx.Node):
            sc = self.scope
            if arg.name in sc.static:
                return self._const_of(arg.name)
            v = sc.env.get(arg.name)
            if isinstance(v, _Unavailable):
                raise self.error(v.message)
            if not isinstance(v, Value):
                raise self.error(f"operand %{arg.name} is not a tensor here")
            return v
        if isinstance(arg, (bool, int, float)):
            dt = like.dtype if like is not None else dtypes.f32
            return self.g.const(np.array(arg, dtype=dt.storage), inline=True)
        raise self.error(f"cannot use {type(arg).__name__} {arg!r} as a tensor operand")

    def static_value(self, arg):
        """The compile-time value of an FX argument (a tensor, number or list)."""
        import torch.fx

        if isinstance(arg, torch.fx.Node):
            if arg.name not in self.scope.static:
                raise self.error(f"operand %{arg.name} must be known at compile time")
            return self.scope.static[arg.name]
        return arg

    def add(self, kind, inputs, attrs=None, **kw):
        try:
            return self.g.add(kind, inputs, attrs, name=self.node.name if self.node else None, **kw)
        except InferError as e:
            raise self.error(f"translating to {kind}: {e}") from None

    def cast(self, v: Value, dt: dtypes.DType) -> Value:
        return v if v.type.dtype == dt else self.add("cast", [v], {"dtype": dt})

    def _const_of(self, name):
        sc = self.scope
        v = sc.consts.get(name)
        if v is None:
            v = sc.consts[name] = self._tensor_const(sc.static[name], name, f"operand %{name}")
        return v

    def _tensor_const(self, value, name, what):
        """A compile-time torch tensor as a constant; a parameter keeps its
        state-dict name whatever its size, other values go inline when small."""
        import torch

        if not isinstance(value, torch.Tensor):
            raise self.error(f"{what} is a {type(value).__name__}, not a tensor")
        arr = np.require(to_numpy(value), requirements="C")
        if name in self.params:
            return self.g.const(arr, name=self.params[name].removeprefix(self.strip), inline=False)
        if name in self.scope.derived:
            return self.g.const(arr, name=self.scope.derived[name], inline=None)
        return self.g.const(arr, name=f"const.{name}", inline=None)

    def _param_tensor(self, placeholder):
        target = self.params[placeholder]
        tensor = self.ep.state_dict.get(target)
        if tensor is None:
            tensor = self.ep.constants.get(target)
        if tensor is None:
            raise FrontendError(f"exported program has no data for {target}")
        return tensor

    # -- the walk ------------------------------------------------------------------------
    def run(self) -> Graph:
        for name in self.params:
            self.scope.static[name] = self._param_tensor(name)
        self.g.outputs = self.walk(self.ep.graph_module, None)
        return self.g

    def walk(self, module, args):
        """Translate the FX graph of `module`; `args` feed its placeholders
        (None: the top-level graph, whose user inputs become graph inputs)."""
        graph = module.graph
        import torch

        sc = self.scope
        placeholders = iter(args or [])
        for node in graph.nodes:
            self.node = node
            if node.op == "placeholder":
                if args is not None:
                    kind, value = next(placeholders)
                    (sc.static if kind == "static" else sc.env)[node.name] = value
                    continue
                if node.name in self.params:
                    continue
                val = node.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    raise self.error(f"input {node.name} is a {type(val).__name__}, "
                                     f"only tensor inputs are supported")
                sc.env[node.name] = self.g.add_input(node.name, self.out_type())
            elif node.op == "get_attr":
                sc.static[node.name] = getattr(module, node.target)
            elif node.op == "call_function":
                self._call(node)
            elif node.op == "output":
                outs = node.args[0]
                outs = outs if isinstance(outs, (list, tuple)) else [outs]
                self.node = None
                if args is not None:
                    return [self._scoped(o) for o in outs]
                return [self.value(o) for o in outs]
            else:
                raise self.error(f"FX node kind {node.op} is not supported")
        raise FrontendError("FX graph has no output node")

    def _scoped(self, arg):
        """An FX argument as ("static", torch value) or ("value", Value)."""
        import torch.fx

        if isinstance(arg, torch.fx.Node) and arg.name in self.scope.static:
            return ("static", self.scope.static[arg.name])
        return ("value", self.value(arg))

    def _call(self, node):
        import operator

        import torch

        sc = self.scope
        refused = torch_opmap.refusal(node.target) if node.target is not operator.getitem else ""
        if refused:  # before evaluating: a random op must not become a constant
            raise self.error(refused)
        if self._all_static(node):
            args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs),
                                                 lambda n: sc.static[n.name])
            try:
                with torch.no_grad():
                    result = node.target(*args, **kwargs)
            except Exception as e:
                raise self.error(f"evaluating at compile time failed: {type(e).__name__}: {e}") from None
            if not _too_big(result):
                sc.static[node.name] = result
                self._name_part(node)
                return
        if node.target is operator.getitem:
            src, index = node.args
            items = sc.env.get(src.name)
            if not isinstance(items, (list, tuple)):
                raise self.error(f"%{src.name} has no results to take {index} of")
            # a result hetc does not compute (indices for training code) fails where used
            sc.env[node.name] = items[index] if items[index] is not None else _Unavailable(
                f"result {index} of %{src.name} ({src.target}) is not computed by hetc "
                f"(it serves training code)")
            return
        if node.target is torch.ops.higher_order.wrap_with_set_grad_enabled:
            sc.env[node.name] = self._inline(node.args[1], node.args[2:])
            return
        handler = torch_opmap.lookup(node.target)
        if handler is None:
            raise self.error("this op is not supported by the torch frontend yet")
        sc.env[node.name] = handler(self, torch_opmap.bind(node))

    def _name_part(self, node):
        """A weight's slice or view computed at compile time (one expert's
        matrix of a stacked parameter, a transpose) keeps the weight's name,
        with the index of a selected slice: `...experts.down_proj.3`."""
        import torch

        aten = torch.ops.aten
        src = node.args[0] if node.args else None
        base = getattr(src, "name", None)
        base = self.params.get(base, "").removeprefix(self.strip) or \
            self.scope.derived.get(base)
        if not base:
            return
        if node.target is aten.select.int:
            self.scope.derived[node.name] = f"{base}.{node.args[2]}"
        elif node.target in (aten.t.default, aten.transpose.int, aten.permute.default,
                             aten.view.default, aten.reshape.default, aten.contiguous.default,
                             aten.clone.default, aten.alias.default, aten.detach.default):
            self.scope.derived[node.name] = base

    def _all_static(self, node):
        import torch.fx

        nodes = []
        torch.fx.node.map_arg((node.args, node.kwargs), nodes.append)
        return all(n.name in self.scope.static for n in nodes) and \
            node.target is not torch.ops.higher_order.wrap_with_set_grad_enabled

    def _inline(self, body_node, args):
        """Translate a higher-order op's body graph in place of the call
        (gradient mode does not matter for inference)."""
        body = self.scope.static[body_node.name]
        outer = self.scope
        fed = [self._scoped(a) for a in args]
        self.scope = _Scope()
        try:
            results = self.walk(body, fed)
        finally:
            self.scope = outer
        return [value if kind == "value" else
                self._tensor_const(value, "body", "a higher-order op body's result")
                for kind, value in results]


def _too_big(result):
    import torch

    items = result if isinstance(result, (list, tuple)) else [result]
    return any(isinstance(t, torch.Tensor) and t.numel() > MAX_STATIC_ELEMENTS for t in items)


def import_exported(ep, name: str = "main", strip: str = "") -> Graph:
    """Translate a torch.export ExportedProgram into a verified Graph
    (weight names without the prefix `strip`)."""
    try:
        with _torch_logs_quiet():
            ep = _prepared(ep)
    except Exception as e:  # torch's own errors are many and deep: report the gist
        raise FrontendError(f"torch could not functionalize and decompose the program: "
                            f"{_gist(e)}") from None
    g = Importer(ep, name, strip).run()
    verify(g)
    return g


@contextmanager
def _eval_mode(module):
    """`module` in inference mode for the block; each submodule's own
    training flag is given back afterwards (compiling never changes the
    caller's model)."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def _torch_logs_quiet():
    """torch logs a failed trace's whole stack before raising; hetc reports
    the error in one line instead."""
    import logging

    loggers = [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)
               if n == "torch" or n.startswith("torch.")]
    levels = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in levels:
            lg.setLevel(level)


def import_module(module, example_inputs, name: str | None = None) -> Graph:
    """torch.export `module` (in inference mode) with `example_inputs` (a
    tuple of positional inputs, or a dict of keyword inputs), then import it.
    A transformers model compiles its forward without a cache, returning its
    logits (or last hidden state)."""
    import torch

    name = name or _graph_name(type(module).__name__)
    keywords = dict(example_inputs) if isinstance(example_inputs, dict) else {}
    if keywords:
        example_inputs = ()
    elif not isinstance(example_inputs, (tuple, list)):
        example_inputs = (example_inputs,)
    # numpy arrays as the tensors they hold (torch.export takes tensors only)
    example_inputs = [to_torch(x) if isinstance(x, np.ndarray) else x for x in example_inputs]
    keywords = {k: to_torch(x) if isinstance(x, np.ndarray) else x for k, x in keywords.items()}
    notes = []
    if _is_transformers_model(module):
        module, notes = transformers_forward(module), _transformers_notes(module)
    try:
        with torch.no_grad(), _eval_mode(module), _torch_logs_quiet(), dense_experts(module):
            ep = torch.export.export(module, tuple(example_inputs), kwargs=keywords)
    except Exception as e:  # torch's own errors are many and deep: report the gist
        shapes = ", ".join(str(list(x.shape)) for x in example_inputs if hasattr(x, "shape"))
        shapes = ", ".join([shapes] * bool(shapes) + [f"{k}={list(x.shape)}"
                                                       for k, x in keywords.items()
                                                       if hasattr(x, "shape")])
        raise FrontendError(f"torch.export could not trace {name} with example "
                            f"inputs of shapes {shapes or '(none)'}: {_gist(e)}") from None
    # hetc's own wrappers hold the user's model as `.model`: names are the model's
    graph = import_exported(ep, name, strip="model." if getattr(module, "wraps_model", False)
                            else "")
    graph.notes.extend(notes)
    return graph


def _gist(e: Exception) -> str:
    """An exception's type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _is_transformers_model(module) -> bool:
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers.")
               for c in type(module).__mro__)


def _transformers_notes(model):
    name = type(model).__name__
    notes = [f"{name}: its forward without a cache (use_cache=False), returning "
             f"its logits or last hidden state"]
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate) and can_generate():
        notes.append("for generation with a KV cache: hetc.compile(model, decoder=...), "
                     "then module.generate()")
    return notes


def transformers_forward(model):
    """A transformers model's forward as a tensor function: keyword inputs
    passed on, no cache (so no cache objects in the outputs), and the
    output's first tensor: the logits, or the last hidden state."""
    takes = inspect.signature(model.forward).parameters
    extra = {k: v for k, v in (("use_cache", False), ("return_dict", True)) if k in takes}

    def forward(model, *args, **kwargs):
        out = model(*args, **kwargs, **extra)
        if isinstance(out, (tuple, list)):
            return out[0]
        for key in ("logits", "last_hidden_state"):
            if getattr(out, key, None) is not None:
                return getattr(out, key)
        return out.to_tuple()[0]
    return wrapping(model, forward)


def wrapping(model, forward):
    """`forward(model, *args, **kwargs)` as a module holding `model` as
    `.model`; import_module leaves that prefix out of weight names, so they
    stay the model's own state-dict names."""
    import torch

    class ModelWrapper(torch.nn.Module):
        wraps_model = True

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args, **kwargs):
            return forward(self.model, *args, **kwargs)
    return ModelWrapper()


# names torch's FX code generation may print into the Python it regenerates
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


def _prepared(ep):
    """The program as the op table takes it. When it has in-place ops (`x +=
    y`, `relu_`) or ops hetc has no handler for, torch's own pass rewrites
    it (run_decompositions): in-place ops become functional, and each op
    without a handler is decomposed by torch's Core ATen decompositions,
    while the ops hetc lowers whole (linear, attention, norms, GELU, ...)
    are kept. That pass regenerates Python from the graph, so it runs only
    when every name in the program (nodes, parameters, buffers) is plain
    (letters, digits, '_', '.'); otherwise the program stays as it is and
    the importer names the op it refuses."""
    import torch

    graphs = [m.graph for m in ep.graph_module.modules() if isinstance(m, torch.fx.GraphModule)]
    ops = [n for g in graphs for n in g.nodes if n.op == "call_function"]
    in_place = any(getattr(getattr(n.target, "_schema", None), "is_mutable", False) for n in ops)
    table = torch.export.default_decompositions()
    static = _compile_time_nodes(ep)  # evaluated by torch at import: no handler needed
    unhandled = {n.target for n in ops if isinstance(n.target, torch._ops.OpOverload)
                 and n.name not in static and torch_opmap.lookup(n.target) is None
                 and not torch_opmap.refusal(n.target) and n.target in table}
    if not (in_place or unhandled):
        return ep
    names = [n.name for g in graphs for n in g.nodes] + list(ep.state_dict) + \
        [name for name, _ in ep.graph_module.named_modules() if name] + \
        [s.arg.name for s in ep.graph_signature.input_specs] + \
        [str(s.target) for s in ep.graph_signature.input_specs if s.target is not None]
    if not all(_PLAIN_NAME.match(n) for n in names):
        return ep
    for op in list(table.keys()):  # kept whole: lowered by hetc, or refused with a reason
        if torch_opmap.lookup(op) is not None or torch_opmap.refusal(op):
            table.pop(op)
    with warnings.catch_warnings():  # torch's own deprecation notices, not the user's
        warnings.simplefilter("ignore", FutureWarning)
        return ep.run_decompositions(table)


def _compile_time_nodes(ep) -> set:
    """Names of the top-level nodes computed only from parameters, buffers
    and constants (the importer evaluates them with torch)."""
    sig = ep.graph_signature
    static = set(sig.inputs_to_parameters) | set(sig.inputs_to_buffers) | \
        set(sig.inputs_to_lifted_tensor_constants)
    for n in ep.graph.nodes:
        if n.op == "get_attr" or (n.op == "call_function" and
                                  all(a.name in static for a in n.all_input_nodes)):
            static.add(n.name)
    return static


def _graph_name(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "main"
