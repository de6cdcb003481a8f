"""ONNX frontend: an .onnx file or ModelProto becomes a hetc Graph.

Initializers become named weights; every node is translated by the handler
registered for its (domain, op type) in `onnx_opmap`. Shapes are static: graph
inputs take their shapes from the model, and symbolic dimensions are fixed
from the example inputs or `input_shapes=` (the graph's notes say which).
Values known at compile time (initializers, Constant, Shape and anything
computed only from those) are also kept as numpy arrays, so shape arithmetic
feeds attributes such as a reshape's target shape.

onnx is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import os

import numpy as np

from hetc.core.errors import FrontendError, HetcError, UsageError
from hetc.ir import dtypes
from hetc.ir.graph import Graph, Value
from hetc.ir.interpret import load_const, run_graph
from hetc.ir.ops import InferError
from hetc.ir.types import TensorType
from hetc.ir.verify import verify

from . import onnx_opmap
from .onnx_tensors import MAX_STATIC_ELEMENTS, onnx_dtype, to_array

MIN_OPSET = 13
# Largest constant a handler builds from the model's shapes (an identity
# matrix, a mask, resize weights); a model asking for more is refused before
# anything is allocated.
MAX_BUILT_ELEMENTS = 1 << 26
_KIND_LETTER = {"int": "i", "uint": "u", "float": "f", "bool": "b"}  # for static_scalar's kinds


def load(model, base_dir=None):
    """A ModelProto from a path or a ModelProto, with external data loaded."""
    import onnx

    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            proto = onnx.load(path, load_external_data=False)
        except Exception as e:  # protobuf says little; say which file
            raise FrontendError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
        base_dir = os.path.dirname(os.path.abspath(path))
    elif isinstance(model, onnx.ModelProto):
        proto = model
    else:
        raise UsageError(f"expected an ONNX ModelProto or path, got {type(model).__name__}")
    _check_text(proto.graph)
    for tensor in _tensors(proto.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _load_external(tensor, base_dir or os.getcwd())
    return proto


def _check_text(graph):
    """FrontendError if a name in the graph is not UTF-8 text (protobuf hands
    such fields over as bytes)."""
    fields = [graph.name]
    for vs in (graph.input, graph.output, graph.value_info, graph.initializer):
        fields += [v.name for v in vs]
    for n in graph.node:
        fields += [n.name, n.op_type, n.domain, *n.input, *n.output]
        for a in n.attribute:
            fields.append(a.name)
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _check_text(sub)
    bad = next((f for f in fields if not isinstance(f, str)), None)
    if bad is not None:
        raise FrontendError(f"the model holds a name that is not UTF-8 text: {bad[:60]!r}")


def _tensors(graph):
    """Every TensorProto of a graph: initializers and node attributes, in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(sub)


def _load_external(tensor, base_dir):
    """Read a tensor's external data into it. The model names the file, so
    the name must stay inside the model's folder (no absolute path, no '..',
    no symlink leading out), be a regular file, and hold the bytes asked for."""
    import onnx

    what = f"tensor '{tensor.name}'" if tensor.name else "a tensor"
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    try:
        offset, length = int(info.get("offset") or 0), info.get("length")
        length = None if length in (None, "") else int(length)
    except ValueError:
        raise FrontendError(f"{what}: external data offset/length are not integers") from None
    if not location or os.path.isabs(location) or ".." in location.replace("\\", "/").split("/"):
        raise FrontendError(f"{what}: external data location {location!r} must be a file name "
                            f"relative to the model's folder, without '..'")
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if not path.startswith(root + os.sep):
        raise FrontendError(f"{what}: external data {location!r} leads outside the model's "
                            f"folder {root} (through a symlink)")
    try:
        if not os.path.exists(path):
            raise FrontendError(f"{what}: its external data file {location!r} is missing (looked "
                                f"in {root})")
        if not os.path.isfile(path):  # checked before opening: a FIFO would block
            raise FrontendError(f"{what}: external data {location!r} is not a regular file")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            end = size if length is None else offset + length
            if offset < 0 or (length is not None and length < 0) or end > size:
                raise FrontendError(f"{what}: external data asks for bytes {offset}..{end} of "
                                    f"{location!r}, which has {size}")
            f.seek(offset)
            tensor.raw_data = f.read(end - offset)
    except OSError as e:
        raise FrontendError(f"{what}: cannot read external data {location!r} beside the model: "
                            f"{e.strerror}") from None
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


class _ReadTracking(dict):
    """Attributes that remember which of them a handler read."""

    def __init__(self, *a):
        super().__init__(*a)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


class NeedsFrozenInput(FrontendError):
    """A graph input feeds something hetc must know at compile time (a shape,
    axes); compiling needs its value through `freeze_inputs`."""

    def __init__(self, message, input_name):
        super().__init__(message)
        self.input_name = input_name


class OnnxImporter:
    """Translates one ONNX graph; handlers call back into it."""

    def __init__(self, proto, input_shapes=None, name=None, freeze_inputs=None):
        self.proto = proto
        self.opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
        self.g = Graph(_graph_name(name or proto.graph.name))
        self.env: dict[str, Value] = {}
        self.static: dict[str, np.ndarray] = {}
        self._consts: dict[str, Value] = {}  # const ops made for static values
        self.initializers = {t.name: t for t in proto.graph.initializer}
        self.input_shapes = dict(input_shapes or {})
        self.frozen = dict(freeze_inputs or {})
        self.graph_inputs = {i.name for i in proto.graph.input} - set(self.initializers)
        self.node = None
        self.notes: list[str] = []

    @property
    def opset(self) -> int:
        """The default-domain opset version of the model."""
        return self.opsets.get("ai.onnx", 0)

    # -- helpers for handlers ----------------------------------------------------------
    def error(self, message) -> FrontendError:
        n = self.node
        if n is None:
            return FrontendError(message)
        domain = n.domain or "ai.onnx"
        label = f"node '{n.name}'" if n.name else f"node #{self.node_index}"
        return FrontendError(f"{label} ({domain}::{n.op_type}, opset "
                             f"{self.opsets.get(domain, '?')}): {message}")

    def attrs(self) -> dict:
        from onnx import helper

        out = {}
        for a in self.node.attribute:
            if a.ref_attr_name:
                raise self.error(f"attribute '{a.name}' refers to a function attribute")
            v = helper.get_attribute_value(a)
            try:
                if isinstance(v, bytes):
                    v = v.decode()
                elif isinstance(v, list) and v and isinstance(v[0], bytes):
                    v = [x.decode() for x in v]
            except UnicodeDecodeError:
                raise self.error(f"attribute '{a.name}' is not UTF-8 text") from None
            out[a.name] = v
        return out

    def has_input(self, i) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def input(self, i) -> Value | None:
        """Input i of the current node as an IR value (None when absent)."""
        if not self.has_input(i):
            return None
        return self.value(self.node.input[i])

    def value(self, name) -> Value:
        """The IR value of an ONNX value; compile-time values become constants
        (so later folding sees them as such)."""
        if name in self.static:
            v = self._consts.get(name)
            if v is None:
                arr = self.static[name]
                if name in self.initializers:  # a weight keeps its name, whatever its size
                    v = self.g.const(arr, name=name, inline=False)
                else:
                    v = self.g.const(arr, name=f"const.{name}", inline=None)
                self._consts[name] = v
            return v
        v = self.env.get(name)
        if v is None:
            raise self.error(f"input '{name}' is not defined before this node")
        return v

    def static_input(self, i, what="") -> np.ndarray | None:
        """Input i as a numpy array known at compile time (None when absent)."""
        if not self.has_input(i):
            return None
        name = self.node.input[i]
        if name not in self.static:
            label = f"input {i} ('{name}'{', ' + what if what else ''})"
            if name in self.graph_inputs:
                err = self.error(f"{label} is a graph input whose value hetc needs at compile "
                                 f"time (it sets a shape); freeze it: freeze_inputs={{'{name}': ...}}")
                raise NeedsFrozenInput(str(err), name)
            raise self.error(f"{label} must be known at compile time; hetc compiles static shapes")
        return self.static[name]

    def static_scalar(self, i, what="", kinds="iuf"):
        """Input i, known at compile time and holding exactly one number of a
        kind in `kinds` (i int, u uint, f float, b bool), as a 0-d array."""
        arr = np.asarray(self.static_input(i, what))
        kind = _KIND_LETTER[dtypes.from_numpy(arr.dtype).kind]
        if arr.size != 1 or kind not in kinds:
            one = "integer" if kinds == "iu" else "number"
            raise self.error(f"input {i} ({what}) must be one {one}, got {arr.dtype} of shape "
                             f"{list(arr.shape)}")
        return arr.reshape(())

    def static_ints(self, i, what="") -> list[int]:
        """Input i, known at compile time: its integers in order, whatever its shape."""
        arr = np.asarray(self.static_input(i, what))
        if not dtypes.from_numpy(arr.dtype).is_int:
            raise self.error(f"input {i} ({what}) must hold integers, got {arr.dtype}")
        return [int(v) for v in arr.reshape(-1)]

    def static_int(self, i, what="") -> int:
        """Input i, known at compile time and holding exactly one integer."""
        return int(self.static_scalar(i, what, "iu"))

    def room(self, what, count):
        """FrontendError unless a constant of `count` elements may be built."""
        if count > MAX_BUILT_ELEMENTS:
            raise self.error(f"{what} would be a constant of {count:,} elements, more than the "
                             f"{MAX_BUILT_ELEMENTS:,} hetc builds at import")

    def is_static(self, i) -> bool:
        return self.has_input(i) and self.node.input[i] in self.static

    def add(self, kind, inputs, attrs=None, **kw):
        try:
            return self.g.add(kind, inputs, attrs, name=self._hint(), **kw)
        except InferError as e:
            raise self.error(f"translating to {kind}: {e}") from None

    def const(self, array, dtype=None) -> Value:
        arr = np.asarray(array)
        if dtype is not None:
            arr = arr.astype(dtype.storage)
        return self.g.const(arr, name=f"const.{self._hint() or 'value'}", inline=None)

    def cast(self, v: Value, dt: dtypes.DType) -> Value:
        return v if v.type.dtype == dt else self.add("cast", [v], {"dtype": dt})

    def _hint(self):
        n = self.node
        return (n.output[0] if n is not None and n.output and n.output[0] else None)

    # -- the walk ---------------------------------------------------------------------
    def run(self) -> Graph:
        graph = self.proto.graph
        for name, tensor in self.initializers.items():
            self.static[name] = to_array(tensor)
        self._inputs(graph)
        for i, node in enumerate(graph.node):
            self.node, self.node_index = node, i
            self._translate(node)
        self.node = None
        outs = []
        for o in graph.output:
            if o.name not in self.env and o.name not in self.static:
                raise FrontendError(f"graph output '{o.name}' is not produced by any node")
            outs.append(self.value(o.name))
        self.g.outputs = outs
        return self.g

    def _inputs(self, graph):
        for what, given in (("input_shapes", self.input_shapes), ("freeze_inputs", self.frozen)):
            unknown = set(given) - self.graph_inputs
            if unknown:
                raise UsageError(f"{what} names unknown inputs: {', '.join(sorted(unknown))} "
                                 f"(model inputs: {', '.join(sorted(self.graph_inputs))})")
        for inp in graph.input:
            if inp.name in self.initializers:
                continue  # an initializer listed as input (old exporters): a weight
            if inp.name in self.frozen:
                dt = onnx_dtype(inp.type.tensor_type.elem_type, f"graph input '{inp.name}'")
                self.static[inp.name] = np.asarray(self.frozen[inp.name]).astype(dt.storage)
                self.notes.append(f"input {inp.name} frozen to a constant for this compile")
                continue
            t = inp.type
            if t.WhichOneof("value") != "tensor_type":
                raise FrontendError(f"graph input '{inp.name}' is of type {t.WhichOneof('value')}; "
                                    f"only tensors are supported")
            dt = onnx_dtype(t.tensor_type.elem_type, f"graph input '{inp.name}'")
            dims = t.tensor_type.shape.dim if t.tensor_type.HasField("shape") else None
            shape = self._resolve_shape(inp.name, dims)
            self.env[inp.name] = self.g.add_input(inp.name, TensorType(shape, dt))

    def _resolve_shape(self, name, dims):
        given = self.input_shapes.get(name)
        if dims is None:
            if given is None:
                raise UsageError(f"graph input '{name}' has no shape in the model; "
                                 f"give it with input_shapes={{'{name}': [...]}} or example inputs")
            return tuple(given)
        # a negative dim_value (written by some exporters) means unknown, like a dim_param
        model_dims = [d.dim_value if d.HasField("dim_value") and d.dim_value >= 0
                      else (d.dim_param or "?") for d in dims]
        if given is None:
            symbolic = [d for d in model_dims if isinstance(d, str)]
            if symbolic:
                raise UsageError(f"graph input '{name}' has symbolic dimensions "
                                 f"{model_dims}; give its shape with example inputs or "
                                 f"input_shapes={{'{name}': [...]}}")
            return tuple(model_dims)
        given = tuple(int(d) for d in given)
        if len(given) != len(model_dims) or any(isinstance(m, int) and m != g
                                                for m, g in zip(model_dims, given)):
            raise UsageError(f"graph input '{name}' has shape {model_dims} in the model; "
                             f"cannot use {list(given)}")
        fixed = [f"{m}={g}" for m, g in zip(model_dims, given) if isinstance(m, str)]
        if fixed:
            self.notes.append(f"input {name}: symbolic dims fixed for this compile: {', '.join(fixed)}")
        return given

    def _translate(self, node):
        domain = node.domain or "ai.onnx"
        handler = onnx_opmap.lookup(domain, node.op_type)
        if handler is None:
            raise self.error("this op is not supported by the ONNX frontend yet")
        self._check_schema(node)
        start = len(self.g.ops)
        attrs = _ReadTracking(self.attrs())
        results = handler(self, attrs)
        unread = sorted(set(attrs) - attrs.read)
        if unread:  # an attribute the handler never looked at could change the meaning
            raise self.error(f"attribute{'s' if len(unread) > 1 else ''} "
                             f"{', '.join(unread)} not supported")
        results = results if isinstance(results, (list, tuple)) else [results]
        for i, out_name in enumerate(node.output):
            if not out_name:
                continue
            r = results[i] if i < len(results) else None
            if r is None:
                raise self.error(f"output {i} ('{out_name}') is not supported")
            if isinstance(r, np.ndarray):
                self.static[out_name] = r
            else:
                self.env[out_name] = r
        self._fold(node, start)

    def _check_schema(self, node):
        """The node against its ONNX schema: required inputs present, no
        inputs beyond the last, required attributes present and every known
        attribute of its declared type. Handlers then meet only well-formed
        nodes."""
        from onnx import defs

        domain = node.domain or "ai.onnx"
        try:
            schema = defs.get_schema(node.op_type, self.opsets.get(domain, 10**6),
                                     "" if domain == "ai.onnx" else domain)
        except defs.SchemaError:
            return  # an op onnx has no schema for: its handler checks what it reads
        inputs = list(node.input)
        if len(inputs) > schema.max_input or len(inputs) < schema.min_input:
            want = (f"{schema.min_input}" if schema.min_input == schema.max_input else
                    f"{schema.min_input} to {schema.max_input}")
            raise self.error(f"takes {want} inputs, the node has {len(inputs)}")
        option = defs.OpSchema.FormalParameterOption
        for i, formal in enumerate(schema.inputs):
            if formal.option == option.Single and (i >= len(inputs) or not inputs[i]):
                raise self.error(f"input {i} ({formal.name}) is required but missing")
            if formal.option == option.Variadic and not all(inputs[i:]):
                raise self.error(f"inputs {i}... ({formal.name}) may not be left empty")
        given = {a.name: a for a in node.attribute}
        for name, attr in schema.attributes.items():
            a = given.get(name)
            if a is None:
                if attr.required:
                    raise self.error(f"attribute '{name}' is required but missing")
            elif not a.ref_attr_name and a.type != attr.type.value:
                from onnx import AttributeProto

                raise self.error(f"attribute '{name}' must be "
                                 f"{AttributeProto.AttributeType.Name(attr.type.value)}, got "
                                 f"{AttributeProto.AttributeType.Name(a.type)}")

    def _fold(self, node, start):
        """Record outputs computed only from constants as compile-time values."""
        names = [n for n in node.output if n and n in self.env]
        outs = [self.env[n] for n in names]
        if not outs or any(v.type.numel > MAX_STATIC_ELEMENTS for v in outs):
            return
        if all(v.producer is not None and v.producer.kind == "const" for v in outs):
            for n, v in zip(names, outs):
                self.static[n] = np.asarray(load_const(v.producer, self.g))
            return
        new_ops = self.g.ops[start:]
        produced = {v for op in new_ops for v in op.outputs}
        deps = {}
        for op in new_ops:
            for v in op.inputs:
                if v not in produced:
                    if v.producer is None or v.producer.kind != "const":
                        return  # depends on a runtime value
                    deps[v.producer] = None
        if not all(v in produced for v in outs):
            return
        sub = Graph("fold", self.g.weights)
        sub.ops = list(deps) + new_ops
        sub.outputs = outs
        for n, arr in zip(names, run_graph(sub, [])):
            self.static[n] = np.asarray(arr)


def _graph_name(name):
    import re

    return re.sub(r"[^A-Za-z0-9_]", "_", name or "") or "main"


def import_onnx(model, input_shapes=None, example_inputs=None, name=None,
                freeze_inputs=None) -> Graph:
    """Translate an ONNX model (path or ModelProto) into a verified Graph.

    Symbolic input dimensions take their sizes from `example_inputs` (a
    sequence in input order, or a dict by name) or `input_shapes` (a dict
    name -> shape). `freeze_inputs` ({name: array}) turns graph inputs into
    constants, for inputs that set shapes (a Reshape's shape, reduction axes);
    the compiled graph then no longer takes them.
    """
    proto = load(model)
    if not isinstance(model, (str, os.PathLike)):
        name = name or proto.graph.name
    else:
        name = name or os.path.splitext(os.path.basename(os.fspath(model)))[0]
    shapes = dict(input_shapes or {})
    frozen = dict(freeze_inputs or {})
    if example_inputs is not None:
        init = {t.name for t in proto.graph.initializer}
        names = [i.name for i in proto.graph.input if i.name not in init and i.name not in frozen]
        if isinstance(example_inputs, dict):
            items = example_inputs.items()
        else:
            example_inputs = list(example_inputs)
            if len(example_inputs) != len(names):
                raise UsageError(f"the model takes {len(names)} inputs ({', '.join(names)}), "
                                 f"got {len(example_inputs)} example inputs")
            items = zip(names, example_inputs)
        for n, x in items:
            shapes.setdefault(n, tuple(np.shape(x)))
    proto = _upgrade(proto)
    importer = OnnxImporter(proto, shapes, name, frozen)
    try:
        g = importer.run()
    except HetcError:
        raise
    except Exception as e:  # noqa: BLE001 - malformed input, or a bug: the checker tells which
        problem = _invalid(proto)
        if problem is None:
            raise  # a valid model hetc failed on: a bug in hetc
        raise importer.error(f"the model is not valid ONNX ({problem}); hetc cannot import it "
                             f"({type(e).__name__}: {str(e)[:120]})") from None
    g.notes = importer.notes + g.notes
    verify(g)
    return g


def _invalid(proto) -> str | None:
    """What ONNX's own checker (with strict shape inference) finds wrong with
    the model, or None when it finds nothing."""
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # noqa: BLE001 - any complaint of the checker's is the answer
        return " ".join(str(e).split())[:300] or type(e).__name__
    return None


def _upgrade(proto):
    """Models older than opset 13 are converted with ONNX's version converter."""
    version = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None or version >= MIN_OPSET:
        return proto
    from onnx import version_converter

    problem = _invalid(proto)  # the converter (C++) assumes a valid model: it crashes on others
    if problem is not None:
        raise FrontendError(f"model opset {version} is older than {MIN_OPSET}, and hetc upgrades "
                            f"only valid models: this one is not ({problem})")
    try:
        return version_converter.convert_version(proto, MIN_OPSET)
    except Exception as e:  # the converter's errors are terse; keep its gist
        raise FrontendError(f"model opset {version} is older than {MIN_OPSET} and ONNX's version "
                            f"converter could not upgrade it: {str(e).splitlines()[0]}") from None
