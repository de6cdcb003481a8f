"""The ATen op table of the torch frontend: one handler per ATen overload.

A handler gets the Importer and the node's arguments bound by name (from the
op's schema, defaults filled in) and returns the Value (or list of Values) of
the node's result. This is the one place that knows ATen ops; the importer
only looks up this table.

torch is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import numpy as np

from hetc.core.registry import Registry
from hetc.ir import dtypes

_BY_NAME = Registry("ATen op handlers")  # "NAME.OVERLOAD" -> handler
_TABLE: dict = {}  # the same by torch op object, made on first lookup (torch imports late)
#: Register a handler for `torch.ops.aten.NAME.OVERLOAD` for each name.
aten = _BY_NAME.register


def lookup(target):
    if not _TABLE:
        import torch

        for name, fn in _BY_NAME.items():
            packet, _, overload = name.partition(".")
            _TABLE[getattr(getattr(torch.ops.aten, packet), overload or "default")] = fn
    return _TABLE.get(target)


_TRAINING = "a training (gradient) op: hetc compiles inference"
_RANDOM = "draws random numbers at run time: hetc compiles deterministic inference"
_SYMBOLIC = "a symbolic size: hetc compiles static shapes (one compile per input shape)"
_DATA_SHAPE = "its result's shape depends on the input's values: hetc compiles static shapes"
_SCATTER = "writes at positions computed at run time: the IR has no scatter op yet"

#: Ops refused by design, with the reason the importer gives ("NAME" for
#: every overload, or "NAME.OVERLOAD").
REFUSED = {
    **dict.fromkeys(("_adaptive_avg_pool2d_backward", "avg_pool2d_backward",
                     "convolution_backward", "embedding_dense_backward",
                     "max_pool2d_with_indices_backward", "native_group_norm_backward",
                     "native_layer_norm_backward"), _TRAINING),
    **dict.fromkeys(("_native_batch_norm_legit", "_native_batch_norm_legit_functional"),
                    "batch norm with the batch's own statistics (training mode): export the "
                    "model in eval mode"),
    **dict.fromkeys(("rand", "randn", "randperm", "randint", "rand_like", "randn_like",
                     "bernoulli", "normal", "uniform", "multinomial"), _RANDOM),
    **dict.fromkeys(("sym_numel", "sym_size", "sym_storage_offset", "sym_stride",
                     "sym_is_contiguous"), _SYMBOLIC),
    "resize_": "resizes a tensor's storage in place: use reshape or a new tensor",
    **dict.fromkeys(("nonzero", "masked_select"), _DATA_SHAPE),
    "_local_scalar_dense": "reads a tensor's value as a Python number (.item()) at run time",
    **dict.fromkeys(("scatter", "scatter_add", "scatter_reduce", "index_put",
                     "masked_scatter"), _SCATTER),
    **dict.fromkeys(("_fft_r2c", "_fft_c2r", "_fft_c2c", "complex", "view_as_complex",
                     "view_as_real", "polar"), "complex numbers: the IR has no complex dtype"),
    "_embedding_bag": "bags given by offsets at run time: their sizes depend on the values",
    "grid_sampler_2d": "samples at positions computed at run time: the IR has no gather "
                       "with interpolation",
    "col2im": "sums overlapping patches (nn.Fold): not in the IR",
    **dict.fromkeys(("avg_pool3d", "max_pool3d_with_indices", "_adaptive_avg_pool3d"),
                    "3-D pooling: the IR's pools are 2-D"),
}


def refusal(op) -> str:
    """The reason the importer refuses `op` (an ATen overload or its
    "aten.NAME.OVERLOAD" name), or ""."""
    name = str(op).removeprefix("aten.")
    return REFUSED.get(name) or REFUSED.get(name.rsplit(".", 1)[0], "")


def supported_ops():
    lookup(None)
    return sorted(str(k) for k in _TABLE)


def bind(node) -> dict:
    """The node's arguments by schema name, defaults filled in."""
    schema = node.target._schema
    out = {}
    for i, arg in enumerate(schema.arguments):
        if i < len(node.args):
            out[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            out[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            out[arg.name] = arg.default_value
        else:
            out[arg.name] = None
    return out


def _aten_name(cx):
    """The ATen op's name without namespace or overload: "add" for aten::add.Tensor."""
    return cx.node.target._schema.name.split("::")[1]


def _pair(v):
    v = list(v) if isinstance(v, (list, tuple)) else [v]
    return v * 2 if len(v) == 1 else v


def _pads(p):
    ph, pw = _pair(p)
    return [ph, pw, ph, pw]


# -- identity and shape -----------------------------------------------------------

@aten("contiguous", "clone", "alias", "detach", "lift_fresh_copy")
def _identity(cx, a):
    return cx.value(a["self"])


@aten("_assert_tensor_metadata", "_assert_scalar")
def _assertion(cx, a):
    return None  # checks of the traced program; the IR's types already hold them


@aten("to.device")
def _to_device(cx, a):
    x = cx.value(a["self"])
    return cx.cast(x, cx.out_type().dtype)


@aten("dropout", "native_dropout")
def _dropout(cx, a):
    if a["train"]:
        raise cx.error(f"dropout in training mode {_RANDOM}; call model.eval() before compiling")
    x = cx.value(a["input"])
    if _aten_name(cx) == "dropout":
        return x
    keep = cx.g.const(np.ones(x.type.shape, bool), name=f"const.{cx.node.name}", inline=None)
    return [x, keep]


@aten("copy")
def _copy(cx, a):
    """`src`'s values in `self`'s shape and dtype."""
    out = cx.out_type()
    src = cx.add("expand", [cx.value(a["src"])], {"shape": list(out.shape)})
    return cx.cast(src, out.dtype)


@aten("as_strided")
def _as_strided(cx, a):
    """A strided view of the (contiguous) tensor's elements: a gather from
    the flat tensor at the positions the strides name, known at compile time."""
    x = cx.value(a["self"])
    size, stride = list(a["size"]), list(a["stride"])
    where = sum((np.arange(n).reshape([-1] + [1] * (len(size) - i - 1)) * st
                 for i, (n, st) in enumerate(zip(size, stride))),
                np.zeros(size, np.int64)) + int(a["storage_offset"] or 0)
    if where.size and (where.min() < 0 or where.max() >= x.type.numel):
        raise cx.error(f"as_strided size {size} stride {stride} reads outside the "
                       f"{x.type.numel} elements of the tensor")
    flat = cx.add("reshape", [x], {"shape": [x.type.numel]})
    return cx.add("gather", [flat, cx.g.const(where.astype(np.int64), inline=None)], {"axis": 0})


@aten("diagonal")
def _diagonal(cx, a):
    """The two axes moved last and flattened, then a gather of the diagonal's
    positions (the result's last axis, as in torch)."""
    x = cx.value(a["self"])
    r, off = x.type.rank, a["offset"]
    d1, d2 = a["dim1"] % r, a["dim2"] % r
    rest = [i for i in range(r) if i not in (d1, d2)]
    y = cx.add("transpose", [x], {"perm": rest + [d1, d2]})
    n1, n2 = x.type.shape[d1], x.type.shape[d2]
    y = cx.add("reshape", [y], {"shape": [x.type.shape[i] for i in rest] + [n1 * n2]})
    rows = np.arange(max(0, -off), min(n1, n2 - off)) if n2 - off > 0 else np.arange(0)
    idx = (rows * n2 + rows + off).astype(np.int64)
    return cx.add("gather", [y, cx.g.const(idx, inline=None)], {"axis": len(rest)})


@aten("flip")
def _flip(cx, a):
    x = cx.value(a["self"])
    dims = [d % x.type.rank for d in a["dims"]]
    if not dims:
        return x
    return cx.add("slice", [x], {"axes": dims, "starts": [-1] * len(dims),
                                 "ends": [-x.type.shape[d] - 1 for d in dims],
                                 "steps": [-1] * len(dims)})


@aten("slice_scatter", "select_scatter")
def _slice_scatter(cx, a):
    """`src` written over `self` at a slice (or one index) of `dim`: where the
    slice's positions are, a gather of src along dim; elsewhere self."""
    x = cx.value(a["self"])
    src = cx.value(a["src"])
    dim = a["dim"] % x.type.rank
    n = x.type.shape[dim]
    if _aten_name(cx) == "select_scatter":
        kept = range(n)[a["index"]:][:1]
        src = cx.add("reshape", [src], {"shape": list(x.type.shape[:dim]) + [1] +
                                        list(x.type.shape[dim + 1:])})
    else:
        start = 0 if a["start"] is None else a["start"]
        end = n if a["end"] is None else a["end"]
        kept = range(n)[slice(start, end, a["step"])]
    if not kept:  # an empty slice writes nothing
        return x
    index = np.zeros(n, np.int64)
    mask = np.zeros(n, bool)
    index[list(kept)] = np.arange(len(kept))
    mask[list(kept)] = True
    axis_shape = [n if i == dim else 1 for i in range(x.type.rank)]
    placed = cx.add("gather", [src, cx.g.const(index, inline=None)], {"axis": dim})
    mask_v = cx.g.const(mask.reshape(axis_shape), inline=None)
    return cx.add("where", [mask_v, cx.cast(placed, x.type.dtype), x])


@aten("view", "reshape", "_unsafe_view", "flatten.using_ints", "unsqueeze", "squeeze.dim",
      "squeeze.dims", "squeeze", "unflatten.int", "reshape_as", "view_as")
def _reshape(cx, a):
    return cx.add("reshape", [cx.value(a["self"])], {"shape": list(cx.out_type().shape)})


@aten("expand", "expand_as")
def _expand(cx, a):
    return cx.add("expand", [cx.value(a["self"])], {"shape": list(cx.out_type().shape)})


@aten("transpose.int")
def _transpose(cx, a):
    x = cx.value(a["self"])
    perm = list(range(x.type.rank))
    d0, d1 = a["dim0"] % max(x.type.rank, 1), a["dim1"] % max(x.type.rank, 1)
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return cx.add("transpose", [x], {"perm": perm})


@aten("t")
def _t(cx, a):
    x = cx.value(a["self"])
    return x if x.type.rank < 2 else cx.add("transpose", [x], {"perm": [1, 0]})


@aten("permute")
def _permute(cx, a):
    x = cx.value(a["self"])
    return cx.add("transpose", [x], {"perm": [d % x.type.rank for d in a["dims"]]})


@aten("stack")
def _stack(cx, a):
    out = cx.out_type()
    dim = a["dim"] % out.rank
    xs = []
    for t in a["tensors"]:
        x = cx.cast(cx.value(t), out.dtype)
        shape = list(x.type.shape)
        xs.append(cx.add("reshape", [x], {"shape": shape[:dim] + [1] + shape[dim:]}))
    return cx.add("concat", xs, {"axis": dim})


@aten("repeat")
def _repeat(cx, a):
    x = cx.value(a["self"])
    reps = list(a["repeats"])
    shape = [1] * (len(reps) - x.type.rank) + list(x.type.shape)
    x = cx.add("reshape", [x], {"shape": shape})
    # [a, b] -> [1, a, 1, b] -> expand [ra, a, rb, b] -> [ra*a, rb*b]
    y = cx.add("reshape", [x], {"shape": [d for s in shape for d in (1, s)]})
    y = cx.add("expand", [y], {"shape": [d for r, s in zip(reps, shape) for d in (r, s)]})
    return cx.add("reshape", [y], {"shape": list(cx.out_type().shape)})


@aten("argmax", "argmin")
def _argmax(cx, a):
    x = cx.value(a["self"])
    if a["dim"] is None:
        x = cx.add("reshape", [x], {"shape": [-1]})
    return cx.add(_aten_name(cx), [x], {"axis": 0 if a["dim"] is None else a["dim"],
                                        "keepdims": bool(a["keepdim"])})


@aten("_log_softmax", "log_softmax.int")
def _log_softmax(cx, a):
    return cx.add("log_softmax", [cx.value(a["self"])], {"axis": a["dim"]})


@aten("cat")
def _cat(cx, a):
    out = cx.out_type()
    if out.numel == 0:
        return cx.g.const(np.zeros(out.shape, out.dtype.storage), inline=True)
    xs = [cx.cast(cx.value(t), out.dtype) for t in a["tensors"]]
    xs = [x for x in xs if x.type.numel]  # torch skips empty pieces, even of other ranks
    return cx.add("concat", xs, {"axis": a["dim"]})


def _split_sizes(cx, x, sizes, dim):
    return cx.add("split", [x], {"axis": dim, "sizes": sizes})


@aten("split.Tensor", "split_with_sizes", "chunk")
def _split(cx, a):
    x = cx.value(a["self"])
    results = cx.node.meta["val"]
    dim = a["dim"]
    sizes = [int(r.shape[dim]) for r in results]
    out = _split_sizes(cx, x, sizes, dim)
    return out if isinstance(out, list) else [out]


@aten("unbind.int")
def _unbind(cx, a):
    x = cx.value(a["self"])
    dim = a["dim"] % x.type.rank
    parts = _split_sizes(cx, x, [1] * x.type.shape[dim], dim)
    parts = parts if isinstance(parts, list) else [parts]
    return [cx.add("reshape", [p], {"shape": list(cx.out_type(i).shape)})
            for i, p in enumerate(parts)]


@aten("slice.Tensor")
def _slice(cx, a):
    x = cx.value(a["self"])
    start = 0 if a["start"] is None else a["start"]
    end = 2 ** 63 - 1 if a["end"] is None else a["end"]
    return cx.add("slice", [x], {"axes": [a["dim"]], "starts": [start], "ends": [end],
                                 "steps": [a["step"]]})


@aten("select.int")
def _select(cx, a):
    x = cx.value(a["self"])
    i = a["index"]
    end = i + 1 if i != -1 else 2 ** 63 - 1
    s = cx.add("slice", [x], {"axes": [a["dim"]], "starts": [i], "ends": [end]})
    return cx.add("reshape", [s], {"shape": list(cx.out_type().shape)})


# -- elementwise ----------------------------------------------------------------------

def _operands(cx, a, first="self", second="other"):
    """Both operands, cast to the result dtype as torch's type promotion does."""
    out = cx.out_type()
    x = cx.cast(cx.value(a[first], like=out), out.dtype)
    y = cx.cast(cx.value(a[second], like=out), out.dtype)
    return x, y


def _scaled(cx, y, alpha):
    if alpha in (None, 1):
        return y
    return cx.add("mul", [y, cx.value(alpha, like=y.type)])


@aten("add.Tensor", "add.Scalar", "sub.Tensor", "sub.Scalar")
def _add_sub(cx, a):
    x, y = _operands(cx, a)
    return cx.add(_aten_name(cx), [x, _scaled(cx, y, a.get("alpha"))])


@aten("rsub.Scalar", "rsub.Tensor")
def _rsub(cx, a):
    x, y = _operands(cx, a)
    return cx.add("sub", [y, _scaled(cx, x, a.get("alpha"))])


@aten("mul.Tensor", "mul.Scalar")
def _mul(cx, a):
    return cx.add("mul", list(_operands(cx, a)))


@aten("div.Tensor", "div.Scalar")
def _div(cx, a):
    return cx.add("div", list(_operands(cx, a)))


@aten("div.Tensor_mode", "div.Scalar_mode")
def _div_mode(cx, a):
    """Rounded division: integers divide truncating (the IR's rule), and floor
    as (x - x mod y) / y, exact for integers; floats round the quotient."""
    x, y = _operands(cx, a)
    mode = a["rounding_mode"]
    if mode is None:
        return cx.add("div", [x, y])
    if x.type.dtype.is_float:
        q = cx.add("div", [x, y])
        return _trunc(cx, q) if mode == "trunc" else cx.add("floor", [q])
    if mode == "trunc":
        return cx.add("div", [x, y])
    return cx.add("div", [cx.add("sub", [x, cx.add("mod", [x, y])]), y])


@aten("fmod.Tensor", "fmod.Scalar", "remainder.Tensor", "remainder.Scalar")
def _remainder(cx, a):
    """fmod takes the dividend's sign (C's fmod), remainder the divisor's
    (Python's %): the IR's fmod and mod."""
    return cx.add("fmod" if _aten_name(cx) == "fmod" else "mod", list(_operands(cx, a)))


@aten("hypot")
def _hypot(cx, a):
    x, y = _operands(cx, a)
    return cx.add("sqrt", [cx.add("add", [cx.add("mul", [x, x]), cx.add("mul", [y, y])])])


@aten("atan2")
def _atan2(cx, a):
    """atan(y / x) moved to the quadrant of (x, y); 0 at the origin."""
    y, x = _operands(cx, a)
    t = y.type

    def c(v):
        return cx.value(v, like=t)
    base = cx.add("atan", [cx.add("div", [y, x])])
    turn = cx.add("where", [cx.add("less", [y, c(0.0)]), c(-np.pi), c(np.pi)])
    base = cx.add("where", [cx.add("less", [x, c(0.0)]), cx.add("add", [base, turn]), base])
    origin = cx.add("logical_and", [cx.add("equal", [x, c(0.0)]), cx.add("equal", [y, c(0.0)])])
    return cx.add("where", [origin, c(0.0), base])


@aten("pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar")
def _pow(cx, a):
    return cx.add("pow", list(_operands(cx, a, "self", "exponent")))


@aten("maximum", "minimum")
def _maxmin(cx, a):
    return cx.add(_aten_name(cx), list(_operands(cx, a)))


_COMPARE = {"eq": "equal", "lt": "less", "gt": "greater", "le": "less_equal",
            "ge": "greater_equal"}


@aten(*(f"{k}.{o}" for k in (*_COMPARE, "ne") for o in ("Tensor", "Scalar")))
def _compare(cx, a):
    x = cx.value(a["self"])
    y = cx.value(a["other"], like=x.type)
    common = x.type.dtype if x.type.dtype.is_float or not y.type.dtype.is_float else y.type.dtype
    x, y = cx.cast(x, common), cx.cast(y, common)
    name = _aten_name(cx)
    if name == "ne":
        return cx.add("logical_not", [cx.add("equal", [x, y])])
    return cx.add(_COMPARE[name], [x, y])


_LOGICAL = {"__and__": "logical_and", "__or__": "logical_or", "__xor__": "logical_xor",
            "logical_and": "logical_and", "logical_or": "logical_or",
            "logical_xor": "logical_xor", "bitwise_and": "logical_and",
            "bitwise_or": "logical_or", "bitwise_xor": "logical_xor"}


@aten("logical_and", "logical_or", "logical_xor",
      *(f"{k}.{o}" for k in ("__and__", "__or__", "__xor__", "bitwise_and", "bitwise_or",
                             "bitwise_xor") for o in ("Tensor", "Scalar")))
def _logical(cx, a):
    x = cx.value(a["self"])
    y = cx.value(a["other"], like=x.type)
    if _aten_name(cx).startswith("logical"):  # any dtype, as truth values
        x, y = cx.cast(x, dtypes.boolean), cx.cast(y, dtypes.boolean)
    kind = _LOGICAL[_aten_name(cx)]
    if x.type.dtype != dtypes.boolean or y.type.dtype != dtypes.boolean:
        kind = kind.replace("logical", "bitwise")
    return cx.add(kind, [x, y])


@aten("logical_not", "bitwise_not")
def _not(cx, a):
    x = cx.value(a["self"])
    return cx.add("logical_not" if x.type.dtype == dtypes.boolean else "bitwise_not", [x])


@aten("index_select")
def _index_select(cx, a):
    idx = cx.value(a["index"])
    if idx.type.rank == 0:
        idx = cx.add("reshape", [idx], {"shape": [1]})
    return cx.add("gather", [cx.value(a["self"]), idx], {"axis": a["dim"]})


@aten("gather")
def _gather(cx, a):
    """torch.gather: each output element reads `self` at its own position
    with the index along `dim` (the IR's gather_elements)."""
    return cx.add("gather_elements", [cx.value(a["self"]), cx.value(a["index"])],
                  {"axis": a["dim"]})


@aten("index.Tensor")
def _index(cx, a):
    """x[i0, i1, ...] with index tensors on leading dims: one gather over the
    flattened leading dims (indices known at compile time), or a gather on
    the one indexed dim (a runtime index)."""
    import torch

    x = cx.value(a["self"])
    indices = a["indices"]
    used = [i for i, t in enumerate(indices) if t is not None]
    if len(used) == 1:
        idx = indices[used[0]]
        return cx.add("gather", [x, cx.value(idx)], {"axis": used[0]})
    if used != list(range(len(used))):
        raise cx.error("indexing with tensors on non-leading dims is not supported")
    static = [cx.static_value(t) for t in indices]
    lead = x.type.shape[:len(static)]
    idx = [t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in static]
    idx = [np.where(i < 0, i + d, i) for i, d in zip(idx, lead)]
    flat = np.ravel_multi_index(np.broadcast_arrays(*idx), lead).astype(np.int64)
    rest = list(x.type.shape[len(lead):])
    x2 = cx.add("reshape", [x], {"shape": [int(np.prod(lead))] + rest})
    return cx.add("gather", [x2, cx.g.const(flat, name=f"const.{cx.node.name}.index")], {"axis": 0})


@aten("masked_fill.Scalar", "masked_fill.Tensor")
def _masked_fill(cx, a):
    x = cx.value(a["self"])
    value = cx.cast(cx.value(a["value"], like=x.type), x.type.dtype)
    return cx.add("where", [cx.value(a["mask"]), value, x])


@aten("zeros_like", "ones_like", "full_like", "new_zeros", "new_ones", "new_full", "fill.Scalar")
def _filled_like(cx, a):
    out = cx.out_type()
    name = _aten_name(cx)
    fill = 0 if "zeros" in name else 1 if "ones" in name else \
        a["value"] if name == "fill" else a["fill_value"]
    return cx.g.const(np.full(out.shape, fill, out.dtype.storage), name=f"const.{cx.node.name}",
                      inline=None)


@aten("clamp", "clamp.Tensor", "hardtanh", "relu6")
def _clamp(cx, a):
    x = cx.value(a["self"])
    if _aten_name(cx) == "relu6":
        lo, hi = 0.0, 6.0
    elif "min_val" in a:  # hardtanh
        lo, hi = a["min_val"], a["max_val"]
    else:
        lo, hi = a.get("min"), a.get("max")
    if lo is not None:
        x = cx.add("maximum", [x, cx.cast(cx.value(lo, like=x.type), x.type.dtype)])
    if hi is not None:
        x = cx.add("minimum", [x, cx.cast(cx.value(hi, like=x.type), x.type.dtype)])
    return x


@aten("cumsum")
def _cumsum(cx, a):
    x = cx.cast(cx.value(a["self"]), cx.out_type().dtype)
    return cx.add("cumsum", [x], {"axis": a["dim"]})


@aten("where.self", "where.ScalarOther", "where.ScalarSelf", "where.Scalar")
def _where(cx, a):
    x, y = _operands(cx, a)
    return cx.add("where", [cx.value(a["condition"]), x, y])


@aten("hardswish", "hardsigmoid")
def _hard(cx, a):
    """relu6(x + 3) / 6, times x for hardswish (as torch defines them)."""
    x = cx.value(a["self"])
    t = x.type

    def k(v):
        return cx.value(float(v), like=t)
    gate = cx.add("div", [cx.add("minimum", [cx.add("maximum", [cx.add("add", [x, k(3)]),
                                                                k(0)]), k(6)]), k(6)])
    return cx.add("mul", [x, gate]) if _aten_name(cx) == "hardswish" else gate


@aten("softplus")
def _softplus(cx, a):
    """log(1 + exp(beta x)) / beta, x itself where beta x > threshold (as torch)."""
    x = cx.value(a["self"])
    t = x.type
    beta, threshold = float(a["beta"]), float(a["threshold"])
    bx = cx.add("mul", [x, cx.value(beta, like=t)])
    soft = cx.add("div", [cx.add("log", [cx.add("add", [cx.add("exp", [bx]),
                                                        cx.value(1.0, like=t)])]),
                          cx.value(beta, like=t)])
    return cx.add("where", [cx.add("greater", [bx, cx.value(threshold, like=t)]), x, soft])


@aten("repeat_interleave.self_int")
def _repeat_interleave(cx, a):
    """Each element repeated `repeats` times along `dim` (the flat tensor when
    none): a new axis after it, expanded, merged back."""
    x = cx.value(a["self"])
    r, dim = int(a["repeats"]), a["dim"]
    if dim is None:
        x, dim = cx.add("reshape", [x], {"shape": [x.type.numel]}), 0
    dim %= x.type.rank
    shape = list(x.type.shape)
    y = cx.add("reshape", [x], {"shape": shape[:dim + 1] + [1] + shape[dim + 1:]})
    y = cx.add("expand", [y], {"shape": shape[:dim + 1] + [r] + shape[dim + 1:]})
    return cx.add("reshape", [y], {"shape": list(cx.out_type().shape)})


@aten("roll")
def _roll(cx, a):
    """Each axis rolled as two slices swapped by a concat; no axes: the flat tensor."""
    x = cx.value(a["self"])
    shifts, dims = list(a["shifts"]), list(a["dims"] or [])
    if not dims:
        flat = cx.add("reshape", [x], {"shape": [x.type.numel]})
        rolled = _roll_axis(cx, flat, shifts[0], 0)
        return cx.add("reshape", [rolled], {"shape": list(x.type.shape)})
    for shift, dim in zip(shifts, dims):
        x = _roll_axis(cx, x, shift, dim % x.type.rank)
    return x


def _roll_axis(cx, x, shift, axis):
    n = x.type.shape[axis]
    s = shift % n if n else 0
    if s == 0:
        return x
    tail = cx.add("slice", [x], {"axes": [axis], "starts": [n - s], "ends": [n]})
    head = cx.add("slice", [x], {"axes": [axis], "starts": [0], "ends": [n - s]})
    return cx.add("concat", [tail, head], {"axis": axis})


_UNARY = {k: k for k in ("relu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "neg", "abs",
                         "silu", "erf", "sin", "cos", "tan", "floor", "ceil", "round",
                         "reciprocal", "sign", "isnan", "isinf", "asin", "acos", "atan", "sinh",
                         "cosh", "asinh", "acosh", "atanh")}


@aten(*_UNARY)
def _unary(cx, a):
    kind = _UNARY[_aten_name(cx)]
    return cx.add(kind, [cx.value(a["self"])])


def _trunc(cx, x):
    return cx.add("where", [cx.add("less", [x, cx.value(0.0, like=x.type)]),
                            cx.add("ceil", [x]), cx.add("floor", [x])])


@aten("trunc", "fix")
def _trunc_op(cx, a):
    x = cx.value(a["self"])
    return _trunc(cx, x) if x.type.dtype.is_float else x


def _expm1(cx, x):
    """exp(x) - 1 without losing the digits of small x: (u - 1) x / log(u)
    with u = exp(x) (Kahan's rearrangement); x itself where u rounds to 1,
    and u - 1 itself below -1 (no cancellation there; denormal u would spoil
    the log) and where u overflows."""
    def c(v):
        return cx.value(v, like=x.type)
    u = cx.add("exp", [x])
    um1 = cx.add("sub", [u, c(1.0)])
    y = cx.add("div", [cx.add("mul", [um1, x]), cx.add("log", [u])])
    plain = cx.add("logical_or", [cx.add("less", [x, c(-1.0)]),
                                  cx.add("greater", [u, c(3.4e38)])])
    y = cx.add("where", [plain, um1, y])
    return cx.add("where", [cx.add("equal", [u, c(1.0)]), x, y])


@aten("log2", "log10", "log1p", "expm1")
def _log_exp(cx, a):
    out = cx.out_type()
    x = cx.cast(cx.value(a["self"]), out.dtype)
    name = _aten_name(cx)

    def c(v):
        return cx.value(v, like=out)
    if name == "expm1":
        return _expm1(cx, x)
    if name == "log1p":  # log(u) x / (u - 1), u = 1 + x: exact for small x (Kahan)
        u = cx.add("add", [x, c(1.0)])
        d = cx.add("sub", [u, c(1.0)])
        y = cx.add("div", [cx.add("mul", [cx.add("log", [u]), x]), d])
        return cx.add("where", [cx.add("equal", [d, c(0.0)]), x, y])
    base = {"log2": 2.0, "log10": 10.0}[name]
    return cx.add("mul", [cx.add("log", [x]), c(1.0 / np.log(base))])


@aten("elu")
def _elu(cx, a):
    """scale * (x if x > 0 else alpha * expm1(input_scale * x))."""
    x = cx.value(a["self"])

    def c(v):
        return cx.value(float(v), like=x.type)
    neg = _expm1(cx, cx.add("mul", [x, c(a["input_scale"])]))
    neg = cx.add("mul", [neg, c(a["alpha"])])
    y = cx.add("where", [cx.add("greater", [x, c(0.0)]), x, neg])
    return cx.add("mul", [y, c(a["scale"])]) if a["scale"] != 1 else y


@aten("leaky_relu", "rrelu_with_noise_functional")
def _leaky_relu(cx, a):
    """rrelu in inference: the slope is the mean of its range."""
    x = cx.value(a["self"])
    rrelu = _aten_name(cx) != "leaky_relu"
    if rrelu and a["training"]:
        raise cx.error(f"rrelu in training mode {_RANDOM}; call model.eval() before compiling")
    slope = (a["lower"] + a["upper"]) / 2 if rrelu else a["negative_slope"]
    zero = cx.value(0.0, like=x.type)
    y = cx.add("where", [cx.add("greater", [x, zero]),
                         x, cx.add("mul", [x, cx.value(float(slope), like=x.type)])])
    return [y, cx.value(a["noise"])] if rrelu else y


@aten("gelu")
def _gelu(cx, a):
    return cx.add("gelu", [cx.value(a["self"])], {"approximate": a["approximate"]})


@aten("_to_copy", "to.dtype", "to.dtype_layout", "type_as")
def _to(cx, a):
    return cx.cast(cx.value(a["self"]), cx.out_type().dtype)


# -- linear algebra -------------------------------------------------------------------

@aten("linear")
def _linear(cx, a):
    ins = [cx.value(a["input"]), cx.value(a["weight"])]
    if a["bias"] is not None:
        ins.append(cx.value(a["bias"]))
    return cx.add("linear", ins)


@aten("matmul", "mm", "bmm")
def _matmul(cx, a):
    return cx.add("matmul", [cx.value(a["self"]), cx.value(a["other"] if "other" in a
                                                             else a["mat2"])])


@aten("addmm", "baddbmm")
def _addmm(cx, a):
    """beta * self + alpha * (mat1 @ mat2), batched for baddbmm."""
    first, second = ("mat1", "mat2") if "mat1" in a else ("batch1", "batch2")
    y = cx.add("matmul", [cx.value(a[first]), cx.value(a[second])])
    y = _scaled(cx, y, a["alpha"])
    return cx.add("add", [y, _scaled(cx, cx.value(a["self"]), a["beta"])])


@aten("conv2d", "conv2d.padding", "conv1d", "conv1d.padding", "convolution")
def _conv(cx, a):
    """2-D convolutions; 1-D ones as 2-D over a height of 1 (reshapes around
    conv2d, the weight's reshape folded into a constant by `fold`)."""
    x, w = cx.value(a["input"]), cx.value(a["weight"])
    if a.get("transposed"):
        raise cx.error("transposed convolution is not supported yet")
    one_d = w.type.rank == 3
    if w.type.rank not in (3, 4):
        raise cx.error(f"a {w.type.rank - 2}-D convolution is not supported yet")
    if one_d:
        lead = list(x.type.shape[:-2]) or [1]
        x = cx.add("reshape", [x], {"shape": lead + [x.type.shape[-2], 1, x.type.shape[-1]]})
        w = cx.add("reshape", [w], {"shape": [w.type.shape[0], w.type.shape[1], 1,
                                             w.type.shape[2]]})
    elif x.type.rank == 3:  # unbatched
        x = cx.add("reshape", [x], {"shape": [1] + list(x.type.shape)})

    def pair(v, height):  # (height, width); a 1-D convolution's height is 1 cell
        return [height, _pair(v)[0]] if one_d else _pair(v)
    stride, dilation = pair(a["stride"], 1), pair(a["dilation"], 1)
    padding = a["padding"]
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0, 0, 0]
        else:  # "same": torch puts the odd extra cell at the bottom/right
            tot = [d * (k - 1) for d, k in zip(dilation, w.type.shape[2:])]
            padding = [tot[0] // 2, tot[1] // 2, tot[0] - tot[0] // 2, tot[1] - tot[1] // 2]
    else:
        ph, pw = pair(padding, 0)
        padding = [ph, pw, ph, pw]
    ins = [x, w] + ([cx.value(a["bias"])] if a["bias"] is not None else [])
    y = cx.add("conv2d", ins, {"stride": stride, "padding": padding, "dilation": dilation,
                               "groups": a["groups"]})
    out = list(cx.out_type().shape)
    return y if list(y.type.shape) == out else cx.add("reshape", [y], {"shape": out})


_TORCH_PAD_MODES = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
                    "circular": "wrap"}


_NAMED_PADS = {"reflection_pad1d": "reflect", "reflection_pad2d": "reflect",
               "reflection_pad3d": "reflect", "replication_pad1d": "replicate",
               "replication_pad2d": "replicate", "replication_pad3d": "replicate"}


@aten("pad", "constant_pad_nd", *_NAMED_PADS)
def _pad(cx, a):
    """torch lists (begin, end) pairs from the last axis backwards; the IR all
    begins then all ends, first axis first."""
    x = cx.value(a["self"] if "self" in a else a["input"])
    mode = _NAMED_PADS.get(_aten_name(cx)) or a.get("mode", "constant")
    a = {**a, "pad": a["pad"] if "pad" in a else a["padding"]}
    if mode not in _TORCH_PAD_MODES:
        raise cx.error(f"pad mode {mode!r} is not supported")
    pairs = list(a["pad"])
    begins, ends = [0] * x.type.rank, [0] * x.type.rank
    for i in range(len(pairs) // 2):
        begins[x.type.rank - 1 - i], ends[x.type.rank - 1 - i] = pairs[2 * i], pairs[2 * i + 1]
    value = a.get("value")
    return cx.add("pad", [x], {"pads": begins + ends, "mode": _TORCH_PAD_MODES[mode],
                               "value": float(value or 0.0)})


# upsample op -> (interpolation, nearest rounding); align_corners picks the coordinates
_UPSAMPLE = {"upsample_nearest2d": ("nearest", "floor"),
             "_upsample_nearest_exact2d": ("nearest", "round_prefer_ceil"),
             "upsample_bilinear2d": ("linear", None), "upsample_bicubic2d": ("cubic", None),
             "upsample_nearest1d": ("nearest", "floor"), "upsample_linear1d": ("linear", None)}


@aten(*(f"{k}.vec" for k in _UPSAMPLE), *(f"{k}.default" for k in _UPSAMPLE))
def _upsample(cx, a):
    """Separable resizing as PyTorch computes it: per spatial axis a gather
    (nearest) or a matmul by a constant [in, out] weight matrix (linear,
    cubic with a = -0.75), from the coordinates of frontends/resize.py."""
    from . import resize as rz

    x = cx.value(a["input"] if "input" in a else a["self"])
    kind, rounding = _UPSAMPLE[_aten_name(cx)]
    out = cx.out_type().shape
    factors = a.get("scale_factors") or a.get("scales") or None
    spatial = range(2, x.type.rank)
    if not isinstance(factors, (list, tuple)):
        factors = [None] * len(spatial)
    align = bool(a.get("align_corners"))
    exact = _aten_name(cx).startswith("_upsample_nearest_exact")
    coord = "align_corners" if align else \
        "half_pixel" if kind != "nearest" or exact else "asymmetric"
    y = x if kind == "nearest" or x.type.dtype.bits >= 32 else cx.cast(x, dtypes.f32)
    for ax, factor in zip(spatial, factors):
        n_in, n_out = x.type.shape[ax], out[ax]
        # torch scales coordinates by a given factor, else by the sizes' ratio
        scale = float(factor) if factor else n_out / n_in
        coords, _ = rz.source_coords(coord, n_out, n_in, scale, None)
        if kind == "nearest":
            idx = rz.nearest_index(coords, n_in, rounding)
            y = cx.add("gather", [y, cx.g.const(idx, name=f"const.{cx.node.name}", inline=None)],
                       {"axis": ax})
        else:
            if kind == "linear" and not align:  # torch reads below 0 as at 0
                coords = np.maximum(coords, 0)
            m = rz.weight_matrix(coords, n_in, kind, -0.75, False)
            y = rz.apply_along(cx.add, lambda arr: cx.g.const(
                arr, name=f"const.{cx.node.name}", inline=None), y, ax, m)
    return cx.cast(y, x.type.dtype)


@aten("scaled_dot_product_attention")
def _sdpa(cx, a):
    if a["dropout_p"]:
        raise cx.error("attention dropout_p must be 0 for inference")
    if a.get("enable_gqa"):
        raise cx.error("scaled_dot_product_attention with enable_gqa is not supported yet")
    ins = [cx.value(a["query"]), cx.value(a["key"]), cx.value(a["value"])]
    q = ins[0].type.shape
    for i in (1, 2):  # keys and values shared by the heads (multi-query): one per head
        t = ins[i].type.shape
        if len(t) == len(q) >= 3 and t[-3] == 1 != q[-3]:
            ins[i] = cx.add("expand", [ins[i]], {"shape": list(t[:-3]) + [q[-3]] + list(t[-2:])})
    if a["attn_mask"] is not None:
        ins.append(cx.value(a["attn_mask"]))
    return cx.add("attention", ins, {"causal": bool(a["is_causal"]), "scale": a["scale"] or 0.0})


@aten("embedding")
def _embedding(cx, a):
    return cx.add("embedding", [cx.value(a["indices"]), cx.value(a["weight"])])


# -- normalization -----------------------------------------------------------------------

def _channel_const(cx, x, value, role):
    """A per-channel constant standing in for an absent affine parameter."""
    return cx.g.const(np.full((x.type.shape[1],), value, x.type.dtype.storage),
                      name=f"{cx.node.name}.{role}")


def _batch_norm_core(cx, a, eps):
    x = cx.value(a["input"])
    scale = cx.value(a["weight"]) if a["weight"] is not None else _channel_const(cx, x, 1, "weight")
    bias = cx.value(a["bias"]) if a["bias"] is not None else _channel_const(cx, x, 0, "bias")
    return cx.add("batch_norm", [x, scale, bias, cx.value(a["running_mean"]),
                                 cx.value(a["running_var"])], {"eps": eps})


@aten("batch_norm")
def _batch_norm(cx, a):
    if a["training"]:
        raise cx.error("batch_norm in training mode; call model.eval() before compiling")
    return _batch_norm_core(cx, a, a["eps"])


@aten("_native_batch_norm_legit_no_training")
def _batch_norm_legit(cx, a):
    return [_batch_norm_core(cx, a, a["eps"]), None, None]


@aten("group_norm", "native_group_norm")
def _group_norm(cx, a):
    """x (N, C, ...) normalized per sample and group of C / G channels: a
    layer norm over each group's values, then the per-channel affine."""
    x = cx.value(a["input"])
    n, c = x.type.shape[:2]
    groups = a["num_groups"] if "num_groups" in a else a["group"]
    eps = a["eps"]
    y = cx.add("reshape", [x], {"shape": [n, groups, x.type.numel // (n * groups)]})
    y = cx.add("layer_norm", [y], {"axis": -1, "eps": eps})
    y = cx.add("reshape", [y], {"shape": list(x.type.shape)})
    per_channel = [c] + [1] * (x.type.rank - 2)
    if a["weight"] is not None:
        y = cx.add("mul", [y, cx.add("reshape", [cx.value(a["weight"])],
                                      {"shape": per_channel})])
    if a["bias"] is not None:
        y = cx.add("add", [y, cx.add("reshape", [cx.value(a["bias"])], {"shape": per_channel})])
    return y if _aten_name(cx) == "group_norm" else [y, None, None]


@aten("layer_norm", "native_layer_norm")
def _layer_norm(cx, a):
    ins = [cx.value(a["input"])]
    if a["weight"] is not None:
        ins.append(cx.value(a["weight"]))
    if a["bias"] is not None:
        if a["weight"] is None:
            raise cx.error("layer_norm with a bias but no weight is not supported")
        ins.append(cx.value(a["bias"]))
    y = cx.add("layer_norm", ins, {"axis": -len(a["normalized_shape"]), "eps": a["eps"]})
    # native_layer_norm's mean and inverse deviation serve the backward pass
    return y if _aten_name(cx) == "layer_norm" else [y, None, None]


@aten("rms_norm")
def _rms_norm(cx, a):
    x = cx.value(a["input"])
    eps = a["eps"] if a["eps"] is not None else float(np.finfo(np.float32).eps)
    ins = [x] + ([cx.value(a["weight"])] if a["weight"] is not None else [])
    return cx.add("rms_norm", ins, {"axis": -len(a["normalized_shape"]), "eps": eps})


@aten("softmax.int", "_softmax")
def _softmax(cx, a):
    x = cx.value(a["self"])
    if a.get("dtype") is not None:
        x = cx.cast(x, cx.out_type().dtype)
    return cx.add("softmax", [x], {"axis": a["dim"]})


# -- reductions and pooling ----------------------------------------------------------------

def _reduce(kind):
    def handler(cx, a):
        x = cx.value(a["self"])
        if kind in ("reduce_sum", "reduce_mean"):  # torch sums booleans and integers as i64
            x = cx.cast(x, cx.out_type().dtype)
        return _reduced(cx, kind, x, a)
    return handler


def _reduced(cx, kind, x, a):
    """x reduced over the node's `dim` (all axes when none), keeping dims as asked."""
    dims = a.get("dim")
    axes = [] if dims is None else ([dims] if isinstance(dims, int) else list(dims))
    y = cx.add(kind, [x], {"axes": axes, "keepdims": bool(a.get("keepdim", False))})
    return cx.cast(y, cx.out_type().dtype)


aten("mean.dim", "mean")(_reduce("reduce_mean"))
aten("sum.dim_IntList", "sum")(_reduce("reduce_sum"))
aten("amax")(_reduce("reduce_max"))
aten("amin")(_reduce("reduce_min"))


@aten("prod", "prod.dim_int")
def _prod(cx, a):
    x = cx.cast(cx.value(a["self"]), cx.out_type().dtype)  # integers multiply in i64
    return _reduced(cx, "reduce_prod", x, a)


@aten("topk", "sort", "sort.stable")
def _topk(cx, a):
    """topk, and sort as a topk of the whole axis (values, indices); ties
    keep the lower index first (a stable sort), NaN counts as largest."""
    x = cx.value(a["self"])
    axis = a["dim"] if a["dim"] is not None else -1
    if x.type.rank == 0:
        return [x, cx.g.const(np.array(0, np.int64), inline=True)]
    if _aten_name(cx) == "topk":
        k, largest = a["k"], bool(a["largest"])
    else:
        k, largest = x.type.shape[axis], bool(a["descending"])
    return cx.add("topk", [x], {"k": k, "axis": axis, "largest": largest, "sorted": True})


@aten("median.dim", "kthvalue")
def _kthvalue(cx, a):
    """The k-th smallest along dim (median: the lower middle, k = (n + 1) // 2)
    and its index: the last of a smallest-k topk."""
    x = cx.value(a["self"])
    axis = a["dim"] % max(x.type.rank, 1)
    n = x.type.shape[axis] if x.type.rank else 1
    k = a["k"] if "k" in a else (n + 1) // 2
    if not 1 <= k <= n:
        raise cx.error(f"kthvalue k={k} is outside the {n} values of axis {a['dim']}")
    values, index = cx.add("topk", [x], {"k": k, "axis": axis, "largest": False, "sorted": True})
    picked = {"axes": [axis], "starts": [k - 1], "ends": [k]}
    values, index = cx.add("slice", [values], picked), cx.add("slice", [index], picked)
    if not a["keepdim"]:
        shape = [d for i, d in enumerate(x.type.shape) if i != axis]
        values = cx.add("reshape", [values], {"shape": shape})
        index = cx.add("reshape", [index], {"shape": shape})
    return [values, index]


@aten("max.dim", "min.dim")
def _max_min_dim(cx, a):
    """(values, indices): the extreme and the index of its first occurrence."""
    x = cx.value(a["self"])
    name = _aten_name(cx)
    keep = bool(a["keepdim"])
    values = cx.add(f"reduce_{name}", [x], {"axes": [a["dim"]], "keepdims": keep})
    index = cx.add(f"arg{name}", [x], {"axis": a["dim"], "keepdims": keep})
    return [values, index]


@aten("var.dim", "var.correction", "var")
def _var(cx, a):
    """Mean of squared deviations, divided by (count - correction)."""
    x = cx.value(a["self"])
    dims = a.get("dim")
    axes = list(range(x.type.rank)) if not dims else \
        [d % x.type.rank for d in ([dims] if isinstance(dims, int) else dims)]
    if "correction" in a:
        corr = 1 if a["correction"] is None else a["correction"]
    else:
        corr = 1 if a.get("unbiased", True) else 0
    count = int(np.prod([x.type.shape[d] for d in axes]))
    mean = cx.add("reduce_mean", [x], {"axes": axes, "keepdims": True})
    dev = cx.add("sub", [x, mean])
    ss = cx.add("reduce_sum", [cx.add("mul", [dev, dev])],
                {"axes": axes, "keepdims": bool(a.get("keepdim", False))})
    return cx.add("div", [ss, cx.value(float(max(count - corr, 0)), like=ss.type)])


def _p_norm(cx, ax, p, axes, keepdims):
    """The p-norm of ax = |x| over `axes` (all when empty): the max (p = inf),
    the min (-inf), the count of nonzeros (0), the sum (1), the root of the
    sum of squares (2), else (sum ax^p)^(1/p)."""
    def c(v):
        return cx.value(v, like=ax.type)

    def total(v):
        return cx.add("reduce_sum", [v], {"axes": axes, "keepdims": keepdims})
    if p in (float("inf"), float("-inf")):
        return cx.add("reduce_max" if p > 0 else "reduce_min", [ax],
                      {"axes": axes, "keepdims": keepdims})
    if p == 0:
        return total(cx.cast(cx.add("greater", [ax, c(0.0)]), ax.type.dtype))
    if p == 1:
        return total(ax)
    if p == 2:
        return cx.add("sqrt", [total(cx.add("mul", [ax, ax]))])
    return cx.add("pow", [total(cx.add("pow", [ax, c(p)])), c(1.0 / p)])


@aten("linalg_vector_norm", "norm.ScalarOpt_dim", "norm.Scalar")
def _vector_norm(cx, a):
    """torch.linalg.vector_norm and torch.norm (ConvNeXt V2's global
    response norm): _p_norm of |x| over `dim`."""
    x = cx.cast(cx.value(a["self"]), cx.out_type().dtype)
    p = a.get("ord", a.get("p"))
    p = 2.0 if p is None else float(p)
    dims = a.get("dim")
    axes = [] if dims is None else ([dims] if isinstance(dims, int) else list(dims))
    return _p_norm(cx, cx.add("abs", [x]), p, axes, bool(a.get("keepdim", False)))


@aten("_cdist_forward", "_pdist_forward")
def _dist(cx, a):
    """p-norm distances of every pair of rows, from their differences
    (pdist: the pairs i < j of one set, in torch's order)."""
    pdist = _aten_name(cx) == "_pdist_forward"
    x1 = cx.value(a["self"] if pdist else a["x1"])
    x2 = x1 if pdist else cx.value(a["x2"])
    p = float(a["p"])
    r = x1.type.rank
    a1 = cx.add("reshape", [x1], {"shape": list(x1.type.shape[:-1]) + [1, x1.type.shape[-1]]})
    a2 = cx.add("reshape", [x2], {"shape": list(x2.type.shape[:-2]) + [1] +
                                  list(x2.type.shape[-2:])})
    diff = cx.add("abs", [cx.add("sub", [a1, a2])])
    d = _p_norm(cx, diff, p, [r], False)
    if not pdist:
        return d
    n = x1.type.shape[0]
    i, j = np.triu_indices(n, 1)
    flat = cx.add("reshape", [d], {"shape": [n * n]})
    return cx.add("gather", [flat, cx.g.const((i * n + j).astype(np.int64), inline=None)],
                  {"axis": 0})


@aten("any", "any.dim", "any.dims", "all", "all.dim", "all.dims")
def _any_all(cx, a):
    """any / all: the max / min of the values as 0s and 1s (f32, which every
    target reduces), as booleans."""
    x = cx.cast(cx.cast(cx.value(a["self"]), dtypes.boolean), dtypes.f32)
    return _reduced(cx, "reduce_max" if _aten_name(cx) == "any" else "reduce_min", x, a)


def _pool_attrs(a):
    k = _pair(a["kernel_size"])
    return {"kernel": k, "stride": _pair(a["stride"]) if a["stride"] else k,
            "padding": _pads(a["padding"]), "ceil_mode": bool(a["ceil_mode"])}


@aten("max_pool2d", "max_pool2d_with_indices")
def _max_pool2d(cx, a):
    attrs = {**_pool_attrs(a), "dilation": _pair(a["dilation"])}
    y = cx.add("max_pool2d", [cx.value(a["self"])], attrs)
    # the indices serve max_unpool in training code; refused where used
    return y if _aten_name(cx) == "max_pool2d" else [y, None]


@aten("avg_pool2d")
def _avg_pool2d(cx, a):
    """With ceil_mode PyTorch lets the window reach past the input and its
    padding when one window covers the axis, and averages what the window
    clips to (Hugging Face EfficientNet's AvgPool2d(1280, ceil_mode=True) on
    a 3x3 map): the window of the padded axis, the same numbers."""
    if a["divisor_override"] is not None:
        raise cx.error("avg_pool2d with divisor_override is not supported")
    x = cx.value(a["self"])
    attrs = {**_pool_attrs(a), "count_include_pad": bool(a["count_include_pad"])}
    if attrs["ceil_mode"]:
        k, s = list(attrs["kernel"]), attrs["stride"]
        for d in (0, 1):
            room = x.type.shape[2 + d] + 2 * attrs["padding"][d]
            if k[d] > room > k[d] - s[d]:  # one window, past the padded axis
                k[d] = room
        attrs["kernel"] = k
    return cx.add("avg_pool2d", [x], attrs)


@aten("avg_pool1d")
def _avg_pool1d(cx, a):
    """avg_pool2d over a height of 1 between reshapes."""
    x = cx.value(a["self"])
    def one(v):  # int[1] arguments, given as a list or an int
        return int(v[0] if isinstance(v, (list, tuple)) else v)
    k, p = one(a["kernel_size"]), one(a["padding"])
    s = one(a["stride"]) if a["stride"] else k
    lead = list(x.type.shape[:-1])
    y = cx.add("reshape", [x], {"shape": lead + [1, x.type.shape[-1]]})
    y = cx.add("avg_pool2d", [y], {"kernel": [1, k], "stride": [1, s], "padding": [0, p, 0, p],
                                   "ceil_mode": bool(a["ceil_mode"]),
                                   "count_include_pad": bool(a["count_include_pad"])})
    return cx.add("reshape", [y], {"shape": lead + [y.type.shape[-1]]})


@aten("adaptive_avg_pool1d")
def _adaptive_avg_pool1d(cx, a):
    """Means over equal windows of the last axis (uneven windows refused)."""
    x = cx.value(a["self"])
    (out,), n = list(a["output_size"]), x.type.shape[-1]
    if n % out:
        raise cx.error(f"adaptive_avg_pool1d from {n} to {out} needs uneven windows; only "
                       f"evenly dividing sizes are supported")
    lead = list(x.type.shape[:-1])
    y = cx.add("reshape", [x], {"shape": lead + [out, n // out]})
    return cx.add("reduce_mean", [y], {"axes": [-1], "keepdims": False})


@aten("adaptive_avg_pool2d", "_adaptive_avg_pool2d")
def _adaptive_avg_pool2d(cx, a):
    x = cx.value(a["self"])
    oh, ow = _pair(a["output_size"])
    h, w = x.type.shape[-2:]
    if (oh, ow) == (1, 1):
        return cx.add("global_avg_pool", [x])
    if h % oh or w % ow:
        raise cx.error(f"adaptive_avg_pool2d from {h}x{w} to {oh}x{ow} needs uneven windows; "
                       f"only evenly dividing sizes are supported")
    return cx.add("avg_pool2d", [x], {"kernel": [h // oh, w // ow]})
