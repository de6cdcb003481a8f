"""Core ATen coverage of the PyTorch importer: one sample call for each op of
torch's Core ATen opset (the ops tagged `torch.Tag.core`), run as a user's
model would be: torch.export of a module making the call, hetc import, the
reference interpreter, compared with PyTorch.

Each op either imports and matches PyTorch, or is refused by the importer
with a reason it states (torch_opmap.REFUSED). tests/test_core_aten.py checks
every op; `python tests/core_aten.py --markdown docs/torch-core-aten.md`
writes the table (the test checks that the committed table is current).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

A = torch.ops.aten


def core_ops() -> list[str]:
    """Every overload torch tags as Core ATen, as "aten.NAME.OVERLOAD" (from
    the dispatcher's registry: torch.ops.aten lists only the ops used so far)."""
    names = set()
    for full in torch._C._dispatch_get_all_op_names():
        if not full.startswith("aten::"):
            continue
        name, _, overload = full[len("aten::"):].partition(".")
        op = getattr(getattr(A, name, None), overload or "default", None)
        if op is not None and torch.Tag.core in op.tags:
            names.add(str(op))
    return sorted(names)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def R(*shape, seed=0, scale=1.0):
    """Random normal f32."""
    return torch.randn(*shape, generator=_gen(seed)) * scale


def P(*shape, seed=0):
    """Random positive f32 in [0.1, 2.1)."""
    return torch.rand(*shape, generator=_gen(seed)) * 2 + 0.1


def U(*shape, seed=0, lo=-0.9, hi=0.9):
    """Random uniform f32 in [lo, hi)."""
    return torch.rand(*shape, generator=_gen(seed)) * (hi - lo) + lo


def I(*shape, high=5, seed=0, dtype=torch.int64):  # noqa: E743
    """Random integers in [0, high)."""
    return torch.randint(0, high, shape, generator=_gen(seed), dtype=dtype)


def B(*shape, seed=0):
    return torch.rand(*shape, generator=_gen(seed)) > 0.5


@dataclass
class Sample:
    fn: object  # called with the inputs, makes the op's call
    inputs: tuple


S = Sample

# One call of each Core ATen op (None: torch.export never puts the op in a
# static-shape program, so there is nothing to call; the reason is in
# torch_opmap.REFUSED).
SAMPLES: dict[str, Sample | None] = {
    "aten._adaptive_avg_pool2d.default": S(lambda x: A._adaptive_avg_pool2d(x, [2, 3]), (R(2, 3, 6, 9),)),
    "aten._adaptive_avg_pool2d_backward.default": S(
        lambda g, x: A._adaptive_avg_pool2d_backward(g, x), (R(1, 2, 2, 2), R(1, 2, 4, 4))),
    "aten._adaptive_avg_pool3d.default": S(lambda x: A._adaptive_avg_pool3d(x, [2, 1, 3]),
                                           (R(1, 2, 4, 3, 6),)),
    "aten._cdist_forward.default": S(lambda a, b: A._cdist_forward(a, b, 2.0, None),
                                     (R(2, 5, 3), R(2, 4, 3, seed=1))),
    "aten._embedding_bag.default": S(lambda w, i, o: A._embedding_bag(w, i, o)[0],
                                     (R(10, 4), I(6, high=10), torch.tensor([0, 2]))),
    "aten._fft_c2r.default": S(lambda x: A._fft_c2r(torch.complex(x, x), [1], 0, 8), (R(2, 5),)),
    "aten._fft_r2c.default": S(lambda x: torch.view_as_real(A._fft_r2c(x, [1], 0, True)), (R(2, 8),)),
    "aten._local_scalar_dense.default": S(lambda x: x * A._local_scalar_dense(x.sum()), (R(3),)),
    "aten._log_softmax.default": S(lambda x: A._log_softmax(x, 1, False), (R(3, 5),)),
    "aten._native_batch_norm_legit.default": S(
        lambda x: A._native_batch_norm_legit(x, None, None, torch.zeros(3), torch.ones(3),
                                             True, 0.1, 1e-5)[0], (R(2, 3, 4),)),
    "aten._native_batch_norm_legit.no_stats": S(
        lambda x: A._native_batch_norm_legit.no_stats(x, None, None, True, 0.1, 1e-5)[0],
        (R(2, 3, 4),)),
    "aten._native_batch_norm_legit_no_training.default": S(
        lambda x: A._native_batch_norm_legit_no_training(
            x, torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.1, 0.2, 0.3]),
            torch.tensor([0.5, -0.5, 0.0]), torch.tensor([1.0, 2.0, 3.0]), 0.1, 1e-5)[0],
        (R(2, 3, 4),)),
    "aten._pdist_forward.default": S(lambda x: A._pdist_forward(x, 2.0), (R(5, 3),)),
    "aten._softmax.default": S(lambda x: A._softmax(x, -1, False), (R(3, 5),)),
    "aten._to_copy.default": S(lambda x: A._to_copy(x, dtype=torch.int32), (R(3, 4, scale=5),)),
    "aten.abs.default": S(A.abs, (R(3, 4),)),
    "aten.acos.default": S(A.acos, (U(3, 4),)),
    "aten.acosh.default": S(A.acosh, (P(3, 4) + 1,)),
    "aten.add.Scalar": S(lambda x: A.add.Scalar(x, 2.5, 2), (R(3, 4),)),
    "aten.add.Tensor": S(lambda x, y: A.add.Tensor(x, y, alpha=3), (R(3, 4), R(4, seed=1))),
    "aten.addmm.default": S(lambda b, x, w: A.addmm(b, x, w, beta=0.5, alpha=2),
                            (R(5), R(3, 4, seed=1), R(4, 5, seed=2))),
    "aten.alias.default": S(lambda x: A.alias(x) + 1, (R(3),)),
    "aten.amax.default": S(lambda x: A.amax(x, [0, 2], True), (R(3, 4, 5),)),
    "aten.amin.default": S(lambda x: A.amin(x, [1]), (R(3, 4, 5),)),
    "aten.any.default": S(lambda x: A.any(x), (B(3, 4),)),
    "aten.any.dim": S(lambda x: A.any.dim(x, 1, True), (B(3, 4),)),
    "aten.any.dims": S(lambda x: A.any.dims(x, [0, 2]), (B(3, 4, 2),)),
    "aten.arange.start_step": S(lambda x: x + A.arange.start_step(2, 10, 2), (R(3, 4),)),
    "aten.argmax.default": S(lambda x: A.argmax(x, 1, True), (R(3, 4),)),
    "aten.argmin.default": S(lambda x: A.argmin(x, 0), (R(3, 4),)),
    "aten.as_strided.default": S(lambda x: A.as_strided(x + 0, [3, 2], [1, 3], 1), (R(4, 3),)),
    "aten.asin.default": S(A.asin, (U(3, 4),)),
    "aten.asinh.default": S(A.asinh, (R(3, 4),)),
    "aten.atan.default": S(A.atan, (R(3, 4),)),
    "aten.atan2.default": S(A.atan2, (R(3, 4), R(3, 4, seed=1))),
    "aten.atan2.out": S(lambda y, x: A.atan2.out(y, x, out=torch.empty(3, 4)), (R(3, 4), R(3, 4, seed=1))),
    "aten.atanh.default": S(A.atanh, (U(3, 4),)),
    "aten.adaptive_avg_pool1d.default": S(lambda x: A.adaptive_avg_pool1d(x, [3]), (R(2, 3, 9),)),
    "aten.avg_pool1d.default": S(lambda x: A.avg_pool1d(x, [3], [2], [1], True, False),
                                 (R(2, 3, 10),)),
    "aten.avg_pool2d.default": S(lambda x: A.avg_pool2d(x, [3, 3], [2, 2], [1, 1], True, False),
                                 (R(1, 2, 7, 8),)),
    "aten.avg_pool2d_backward.default": S(
        lambda g, x: A.avg_pool2d_backward(g, x, [2, 2], [2, 2], [0, 0], False, True, None),
        (R(1, 2, 2, 2), R(1, 2, 4, 4))),
    "aten.avg_pool3d.default": S(lambda x: A.avg_pool3d(x, [2, 2, 2]), (R(1, 2, 4, 4, 4),)),
    "aten.bitwise_and.Scalar": S(lambda x: A.bitwise_and.Scalar(x, 6), (I(3, 4, high=16),)),
    "aten.bitwise_and.Tensor": S(A.bitwise_and.Tensor, (I(3, 4, high=16), I(3, 4, high=16, seed=1))),
    "aten.bitwise_not.default": S(A.bitwise_not, (I(3, 4, high=16),)),
    "aten.bitwise_or.Scalar": S(lambda x: A.bitwise_or.Scalar(x, 5), (I(3, 4, high=16),)),
    "aten.bitwise_or.Tensor": S(A.bitwise_or.Tensor, (I(3, 4, high=16), I(3, 4, high=16, seed=1))),
    "aten.bitwise_xor.Scalar": S(lambda x: A.bitwise_xor.Scalar(x, 5), (I(3, 4, high=16),)),
    "aten.bitwise_xor.Tensor": S(A.bitwise_xor.Tensor, (I(3, 4, high=16), I(3, 4, high=16, seed=1))),
    "aten.bmm.default": S(A.bmm, (R(2, 3, 4), R(2, 4, 5, seed=1))),
    "aten.cat.default": S(lambda x, y: A.cat([x, y], 1), (R(2, 3), R(2, 4, seed=1))),
    "aten.ceil.default": S(A.ceil, (R(3, 4, scale=3),)),
    "aten.clamp.Tensor": S(lambda x, lo: A.clamp.Tensor(x, lo, lo + 1), (R(3, 4), R(4, seed=1))),
    "aten.clamp.default": S(lambda x: A.clamp(x, -0.5, 0.7), (R(3, 4),)),
    "aten.clone.default": S(lambda x: A.clone(x) * 2, (R(3),)),
    "aten.col2im.default": S(lambda x: A.col2im(x, [4, 5], [2, 2], [1, 1], [0, 0], [1, 1]),
                             (R(1, 8, 12),)),
    "aten.constant_pad_nd.default": S(lambda x: A.constant_pad_nd(x, [1, 2, 0, 1], 0.5), (R(2, 3, 4),)),
    "aten.convolution.default": S(
        lambda x, w, b: A.convolution(x, w, b, [2, 1], [1, 0], [1, 1], False, [0, 0], 2),
        (R(1, 4, 7, 6), R(6, 2, 3, 3, seed=1), R(6, seed=2))),
    "aten.convolution_backward.default": S(
        lambda g, x, w: A.convolution_backward(g, x, w, None, [1, 1], [0, 0], [1, 1], False,
                                               [0, 0], 1, [True, False, False])[0],
        (R(1, 2, 2, 2), R(1, 1, 4, 4), R(2, 1, 3, 3))),
    "aten.copy.default": S(lambda x, y: A.copy(x, y), (R(3, 4), I(4, high=9, seed=1))),
    "aten.cos.default": S(A.cos, (R(3, 4),)),
    "aten.cosh.default": S(A.cosh, (R(3, 4),)),
    "aten.cumsum.default": S(lambda x: A.cumsum(x, 1), (R(3, 4),)),
    "aten.diagonal.default": S(lambda x: A.diagonal(x, 1, 2, 0) * 1, (R(4, 3, 5),)),
    "aten.div.Scalar": S(lambda x: A.div.Scalar(x, 4.0), (R(3, 4),)),
    "aten.div.Scalar_mode": S(lambda x: A.div.Scalar_mode(x, 3, rounding_mode="floor"),
                              (R(3, 4, scale=5),)),
    "aten.div.Tensor": S(A.div.Tensor, (R(3, 4), P(3, 4, seed=1))),
    "aten.div.Tensor_mode": S(lambda x, y: A.div.Tensor_mode(x, y, rounding_mode="trunc"),
                              (R(3, 4, scale=5), P(3, 4, seed=1))),
    "aten.elu.default": S(lambda x: A.elu(x, 0.5, 1.5, 2.0), (R(3, 4),)),
    "aten.embedding.default": S(lambda w, i: A.embedding(w, i), (R(10, 4), I(2, 3, high=10))),
    "aten.embedding_dense_backward.default": S(
        lambda g, i: A.embedding_dense_backward(g, i, 10, -1, False), (R(2, 3, 4), I(2, 3, high=10))),
    "aten.empty.memory_format": S(lambda x: x + A.empty.memory_format([3, 4]).zero_(), (R(3, 4),)),
    "aten.empty_strided.default": S(lambda x: x + A.empty_strided([3, 4], [4, 1]).zero_(), (R(3, 4),)),
    "aten.eq.Scalar": S(lambda x: A.eq.Scalar(x, 2), (I(3, 4),)),
    "aten.eq.Tensor": S(A.eq.Tensor, (I(3, 4), I(3, 4, seed=1))),
    "aten.erf.default": S(A.erf, (R(3, 4),)),
    "aten.exp.default": S(A.exp, (R(3, 4),)),
    "aten.expand.default": S(lambda x: A.expand(x, [2, 3, 4]), (R(3, 1),)),
    "aten.expm1.default": S(A.expm1, (R(3, 4),)),
    "aten.fill.Scalar": S(lambda x: A.fill.Scalar(x, 1.5) + x, (R(3, 4),)),
    "aten.flip.default": S(lambda x: A.flip(x, [0, 2]), (R(2, 3, 4),)),
    "aten.floor.default": S(A.floor, (R(3, 4, scale=3),)),
    "aten.fmod.Scalar": S(lambda x: A.fmod.Scalar(x, 1.5), (R(3, 4, scale=4),)),
    "aten.fmod.Tensor": S(A.fmod.Tensor, (R(3, 4, scale=4), P(3, 4, seed=1))),
    "aten.full.default": S(lambda x: x * A.full([3, 4], 2.5), (R(3, 4),)),
    "aten.full_like.default": S(lambda x: A.full_like(x, 7.0) - x, (R(3, 4),)),
    "aten.gather.default": S(lambda x, i: A.gather(x, 1, i), (R(3, 4), I(3, 2, high=4))),
    "aten.ge.Scalar": S(lambda x: A.ge.Scalar(x, 0.1), (R(3, 4),)),
    "aten.ge.Tensor": S(A.ge.Tensor, (R(3, 4), R(3, 4, seed=1))),
    "aten.gelu.default": S(lambda x: A.gelu(x, approximate="tanh"), (R(3, 4),)),
    "aten.grid_sampler_2d.default": S(lambda x, g: A.grid_sampler_2d(x, g, 0, 0, False),
                                      (R(1, 2, 4, 4), U(1, 3, 3, 2, seed=1))),
    "aten.gt.Scalar": S(lambda x: A.gt.Scalar(x, 0.1), (R(3, 4),)),
    "aten.gt.Tensor": S(A.gt.Tensor, (R(3, 4), R(3, 4, seed=1))),
    "aten.hardtanh.default": S(lambda x: A.hardtanh(x, -0.5, 0.5), (R(3, 4),)),
    "aten.index.Tensor": S(lambda x, i: A.index.Tensor(x, [None, i]), (R(3, 4), I(2, high=4))),
    "aten.index_put.default": S(lambda x, i, v: A.index_put(x, [i], v), (R(5, 3), I(2, high=5), R(2, 3))),
    "aten.index_select.default": S(lambda x, i: A.index_select(x, 1, i), (R(3, 4), I(5, high=4))),
    "aten.isinf.default": S(lambda x: A.isinf(x / (x > 0).float()), (R(3, 4),)),
    "aten.isnan.default": S(lambda x: A.isnan(x.sqrt()), (R(3, 4),)),
    "aten.le.Scalar": S(lambda x: A.le.Scalar(x, 0.1), (R(3, 4),)),
    "aten.le.Tensor": S(A.le.Tensor, (R(3, 4), R(3, 4, seed=1))),
    "aten.leaky_relu.default": S(lambda x: A.leaky_relu(x, 0.2), (R(3, 4),)),
    "aten.log.default": S(A.log, (P(3, 4),)),
    "aten.log10.default": S(A.log10, (P(3, 4),)),
    "aten.log1p.default": S(A.log1p, (P(3, 4),)),
    "aten.log2.default": S(A.log2, (P(3, 4),)),
    "aten.logical_and.default": S(A.logical_and, (B(3, 4), B(3, 4, seed=1))),
    "aten.logical_not.default": S(A.logical_not, (B(3, 4),)),
    "aten.logical_or.default": S(A.logical_or, (B(3, 4), B(3, 4, seed=1))),
    "aten.logical_xor.default": S(A.logical_xor, (B(3, 4), B(3, 4, seed=1))),
    "aten.lt.Scalar": S(lambda x: A.lt.Scalar(x, 0.1), (R(3, 4),)),
    "aten.lt.Tensor": S(A.lt.Tensor, (R(3, 4), R(3, 4, seed=1))),
    "aten.masked_scatter.default": S(A.masked_scatter, (R(3, 4), B(3, 4), R(12, seed=1))),
    "aten.max.dim": S(lambda x: A.max.dim(x, 1), (R(3, 4),)),
    "aten.max_pool2d_with_indices.default": S(
        lambda x: A.max_pool2d_with_indices(x, [3, 3], [2, 2], [1, 1])[0], (R(1, 2, 7, 8),)),
    "aten.max_pool2d_with_indices_backward.default": S(
        lambda g, x, i: A.max_pool2d_with_indices_backward(g, x, [2, 2], [2, 2], [0, 0], [1, 1],
                                                           False, i),
        (R(1, 1, 2, 2), R(1, 1, 4, 4), I(1, 1, 2, 2, high=16))),
    "aten.max_pool3d_with_indices.default": S(
        lambda x: A.max_pool3d_with_indices(x, [2, 2, 2])[0], (R(1, 2, 4, 4, 4),)),
    "aten.maximum.default": S(A.maximum, (R(3, 4), R(4, seed=1))),
    "aten.mean.default": S(lambda x: A.mean(x), (R(3, 4),)),
    "aten.mean.dim": S(lambda x: A.mean.dim(x, [1], True), (R(3, 4),)),
    "aten.min.dim": S(lambda x: A.min.dim(x, 0, True), (R(3, 4),)),
    "aten.minimum.default": S(A.minimum, (R(3, 4), R(4, seed=1))),
    "aten.mm.default": S(A.mm, (R(3, 4), R(4, 5, seed=1))),
    "aten.mul.Scalar": S(lambda x: A.mul.Scalar(x, -1.5), (R(3, 4),)),
    "aten.mul.Tensor": S(A.mul.Tensor, (R(3, 4), R(3, 1, seed=1))),
    "aten.native_dropout.default": S(lambda x: A.native_dropout(x, 0.5, False)[0], (R(3, 4),)),
    "aten.native_group_norm.default": S(
        lambda x, w, b: A.native_group_norm(x, w, b, 2, 4, 6, 2, 1e-5)[0],
        (R(2, 4, 6), R(4, seed=1), R(4, seed=2))),
    "aten.native_group_norm_backward.default": S(
        lambda g, x: A.native_group_norm_backward(g, x, torch.zeros(1, 1), torch.ones(1, 1), None,
                                                  1, 2, 4, 1, [True, False, False])[0],
        (R(1, 2, 4), R(1, 2, 4))),
    "aten.native_layer_norm.default": S(
        lambda x, w, b: A.native_layer_norm(x, [4], w, b, 1e-5)[0], (R(3, 4), R(4, seed=1), R(4, seed=2))),
    "aten.native_layer_norm_backward.default": S(
        lambda g, x: A.native_layer_norm_backward(g, x, [4], torch.zeros(3, 1), torch.ones(3, 1),
                                                  None, None, [True, False, False])[0],
        (R(3, 4), R(3, 4))),
    "aten.ne.Scalar": S(lambda x: A.ne.Scalar(x, 2), (I(3, 4),)),
    "aten.ne.Tensor": S(A.ne.Tensor, (I(3, 4), I(3, 4, seed=1))),
    "aten.neg.default": S(A.neg, (R(3, 4),)),
    "aten.nonzero.default": S(A.nonzero, (B(3, 4),)),
    "aten.permute.default": S(lambda x: A.permute(x, [2, 0, 1]), (R(2, 3, 4),)),
    "aten.pow.Scalar": S(lambda x: A.pow.Scalar(2.0, x), (R(3, 4),)),
    "aten.pow.Tensor_Scalar": S(lambda x: A.pow.Tensor_Scalar(x, 3), (R(3, 4),)),
    "aten.pow.Tensor_Tensor": S(A.pow.Tensor_Tensor, (P(3, 4), R(3, 4, seed=1))),
    "aten.prod.default": S(lambda x: A.prod(x), (P(3, 4),)),
    "aten.prod.dim_int": S(lambda x: A.prod.dim_int(x, 1, True), (P(3, 4),)),
    "aten.rand.default": S(lambda x: x + A.rand([3, 4]), (R(3, 4),)),
    "aten.randn.default": S(lambda x: x + A.randn([3, 4]), (R(3, 4),)),
    "aten.randperm.default": S(lambda x: x[A.randperm(3)], (R(3, 4),)),
    "aten.reciprocal.default": S(A.reciprocal, (P(3, 4),)),
    "aten.reflection_pad1d.default": S(lambda x: A.reflection_pad1d(x, [2, 1]), (R(2, 3, 5),)),
    "aten.reflection_pad2d.default": S(lambda x: A.reflection_pad2d(x, [1, 2, 2, 0]), (R(1, 2, 4, 5),)),
    "aten.reflection_pad3d.default": S(lambda x: A.reflection_pad3d(x, [1, 0, 1, 2, 0, 1]),
                                       (R(1, 2, 3, 4, 5),)),
    "aten.relu.default": S(A.relu, (R(3, 4),)),
    "aten.remainder.Scalar": S(lambda x: A.remainder.Scalar(x, 1.5), (R(3, 4, scale=4),)),
    "aten.remainder.Tensor": S(A.remainder.Tensor, (R(3, 4, scale=4), R(3, 4, seed=1))),
    "aten.repeat.default": S(lambda x: A.repeat(x, [2, 1, 3]), (R(3, 4),)),
    "aten.replication_pad2d.default": S(lambda x: A.replication_pad2d(x, [1, 2, 2, 0]),
                                        (R(1, 2, 4, 5),)),
    "aten.replication_pad3d.default": S(lambda x: A.replication_pad3d(x, [1, 0, 1, 2, 0, 1]),
                                        (R(1, 2, 3, 4, 5),)),
    "aten.resize_.default": S(lambda x: A.resize_(x.clone(), [2, 3]) + 1, (R(3, 4),)),
    "aten.round.default": S(A.round, (R(3, 4, scale=3),)),
    "aten.rsqrt.default": S(A.rsqrt, (P(3, 4),)),
    "aten.scalar_tensor.default": S(lambda x: x * A.scalar_tensor(3.0), (R(3, 4),)),
    "aten.scatter.src": S(lambda x, i, s: A.scatter.src(x, 1, i, s), (R(3, 4), I(3, 1, high=4), R(3, 1))),
    "aten.scatter.value": S(lambda x, i: A.scatter.value(x, 1, i, 2.0), (R(3, 4), I(3, 1, high=4))),
    "aten.scatter_add.default": S(lambda x, i, s: A.scatter_add(x, 1, i, s),
                                  (R(3, 4), I(3, 2, high=4), R(3, 2))),
    "aten.scatter_reduce.two": S(lambda x, i, s: A.scatter_reduce.two(x, 1, i, s, "amax"),
                                 (R(3, 4), I(3, 2, high=4), R(3, 2))),
    "aten.select.int": S(lambda x: A.select.int(x, 1, -1), (R(3, 4),)),
    "aten.select_scatter.default": S(lambda x, s: A.select_scatter(x, s, 1, 2), (R(3, 4, 2), R(3, 2))),
    "aten.sigmoid.default": S(A.sigmoid, (R(3, 4),)),
    "aten.sign.default": S(A.sign, (R(3, 4),)),
    "aten.sin.default": S(A.sin, (R(3, 4),)),
    "aten.sinh.default": S(A.sinh, (R(3, 4),)),
    "aten.slice.Tensor": S(lambda x: A.slice.Tensor(x, 1, 1, -1, 2), (R(3, 8),)),
    "aten.slice_scatter.default": S(lambda x, s: A.slice_scatter(x, s, 1, 1, 7, 2), (R(3, 8), R(3, 3))),
    "aten.sort.default": S(lambda x: A.sort(x, 1, True), (R(3, 6),)),
    "aten.split_with_sizes.default": S(lambda x: A.split_with_sizes(x, [1, 3], 1), (R(3, 4),)),
    "aten.sqrt.default": S(A.sqrt, (P(3, 4),)),
    "aten.squeeze.dim": S(lambda x: A.squeeze.dim(x, 1), (R(3, 1, 4),)),
    "aten.squeeze.dims": S(lambda x: A.squeeze.dims(x, [0, 2]), (R(1, 3, 1, 4),)),
    "aten.sub.Scalar": S(lambda x: A.sub.Scalar(x, 1.5, 2), (R(3, 4),)),
    "aten.sub.Tensor": S(lambda x, y: A.sub.Tensor(x, y, alpha=0.5), (R(3, 4), R(3, 4, seed=1))),
    "aten.sum.dim_IntList": S(lambda x: A.sum.dim_IntList(x, [0, 2], True), (R(3, 4, 5),)),
    "aten.sym_is_contiguous.default": None,
    "aten.sym_numel.default": None,
    "aten.sym_size.int": None,
    "aten.sym_storage_offset.default": None,
    "aten.sym_stride.int": None,
    "aten.tan.default": S(A.tan, (U(3, 4),)),
    "aten.tanh.default": S(A.tanh, (R(3, 4),)),
    "aten.topk.default": S(lambda x: A.topk(x, 3, 1), (R(4, 7),)),
    "aten.trunc.default": S(A.trunc, (R(3, 4, scale=3),)),
    "aten.unsqueeze.default": S(lambda x: A.unsqueeze(x, -1), (R(3, 4),)),
    "aten.upsample_bilinear2d.vec": S(lambda x: A.upsample_bilinear2d.vec(x, [6, 7], False, None),
                                      (R(1, 2, 3, 4),)),
    "aten.upsample_nearest2d.vec": S(lambda x: A.upsample_nearest2d.vec(x, None, [2.0, 1.5]),
                                     (R(1, 2, 3, 4),)),
    "aten.var.correction": S(lambda x: A.var.correction(x, [1], correction=0, keepdim=True), (R(3, 5),)),
    "aten.var.dim": S(lambda x: A.var.dim(x, [0, 1]), (R(3, 5, 2),)),
    "aten.view.default": S(lambda x: A.view(x, [4, 3]), (R(3, 4),)),
    "aten.where.self": S(A.where.self, (B(3, 4), R(3, 4), R(4, seed=1))),
}



def T(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


# Values where an op written with other IR ops could go wrong: tiny and huge
# arguments, zeros and signs, negative integers, odd offsets and steps.
EDGES: dict[str, Sample] = {
    "log1p": S(A.log1p, (T(0.0, 1e-10, -1e-7, 3e-8, -0.5, 1e6, -1.0, 5.0),)),
    "expm1": S(A.expm1, (T(0.0, 1e-10, -1e-7, 3e-8, -0.5, 20.0, -200.0, 100.0, -1e-30),)),
    "atan2": S(A.atan2, (T(0.0, 1.0, -1.0, 0.0, 2.0, -3.0, 1.0, 0.0),
                         T(0.0, 0.0, 0.0, -1.0, -2.0, -0.5, 1e-30, 5.0))),
    "trunc": S(A.trunc, (T(-2.5, -0.5, -0.0, 0.4, 3.9, -7.0),)),
    "floor_divide_int": S(lambda x, y: A.div.Tensor_mode(x, y, rounding_mode="floor"),
                          (T(7, -7, 7, -7, 0, -1, 6, dtype=torch.int64),
                           T(2, 2, -2, -2, 3, 4, -3, dtype=torch.int64))),
    "trunc_divide_int": S(lambda x, y: A.div.Tensor_mode(x, y, rounding_mode="trunc"),
                          (T(7, -7, 7, -7, 0, -1, 6, dtype=torch.int64),
                           T(2, 2, -2, -2, 3, 4, -3, dtype=torch.int64))),
    "floor_divide_float": S(lambda x: A.div.Scalar_mode(x, -2, rounding_mode="floor"),
                            (T(7.0, -7.0, 0.5, -0.5, 4.0),)),
    "remainder_int": S(A.remainder.Tensor, (T(7, -7, 7, -7, 0, dtype=torch.int64),
                                             T(3, 3, -3, -3, 5, dtype=torch.int64))),
    "remainder_float": S(A.remainder.Tensor, (T(7.5, -7.5, 7.5, -7.5), T(2.0, 2.0, -2.0, -2.0))),
    "fmod_int": S(A.fmod.Tensor, (T(7, -7, 7, -7, dtype=torch.int64),
                                  T(3, 3, -3, -3, dtype=torch.int64))),
    "elu": S(lambda x: A.elu(x), (T(-1e-8, -100.0, 0.0, 3.0, -2.0),)),
    "diagonal_negative_offset": S(lambda x: A.diagonal(x, -2) + 0, (R(5, 3),)),
    "diagonal_past_the_end": S(lambda x: A.diagonal(x, 4, 0, 1) + 0, (R(3, 4, 2),)),
    "flip_one_axis": S(lambda x: A.flip(x, [-1]), (R(2, 1, 5),)),
    "slice_scatter_tail": S(lambda x, s: A.slice_scatter(x, s, 0, -2, None, 1), (R(5, 3), R(2, 3))),
    "select_scatter_negative": S(lambda x, s: A.select_scatter(x, s, 0, -1), (R(4, 3), R(3))),
    "var_unbiased_all": S(lambda x: A.var.correction(x), (R(3, 5),)),
    "cdist_p1": S(lambda a, b: A._cdist_forward(a, b, 1.0, None), (R(4, 3), R(5, 3, seed=1))),
    "cdist_pinf": S(lambda a, b: A._cdist_forward(a, b, float("inf"), None),
                    (R(4, 3), R(5, 3, seed=1))),
    "cdist_p3": S(lambda a, b: A._cdist_forward(a, b, 3.0, None), (R(4, 3), R(5, 3, seed=1))),
    "index_select_scalar": S(lambda x, i: A.index_select(x, 0, i), (R(4, 3), torch.tensor(2))),
    "bitwise_xor_bool": S(lambda x: A.bitwise_xor.Scalar(x, True), (B(3, 4),)),
    "logical_and_floats": S(A.logical_and, (T(0.0, 1.0, -2.0, 0.0), T(3.0, 0.0, 1.0, 0.0))),
    "max_dim_ties": S(lambda x: A.max.dim(x, 1), (T(1.0, 3.0, 3.0, 2.0, 5.0, 5.0).reshape(2, 3),)),
    "median_dim": S(lambda x: A.median.dim(x, 1), (R(3, 6),)),
    "kthvalue_keepdim": S(lambda x: A.kthvalue(x, 2, 0, True), (R(5, 3),)),
    "log2_int": S(A.log2, (T(1, 2, 8, 1024, dtype=torch.int64),)),
}


class _Call(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


@dataclass
class Outcome:
    op: str
    status: str  # "ok", "refused", "wrong", "error"
    detail: str  # IR ops made, the refusal's reason, or what went wrong


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _close(got, want):
    want = want.detach().numpy()
    got = np.asarray(got)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"result {got.dtype}{list(got.shape)}, PyTorch's {want.dtype}{list(want.shape)}"
    if want.dtype.kind == "f":
        ok = np.allclose(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    else:
        ok = np.array_equal(got, want)
    return "" if ok else f"max difference {np.max(np.abs(got.astype(float) - want.astype(float)))}"


def run(op: str, sample: Sample | None = None) -> Outcome:
    """Import one op's sample (or the sample given) and check it against PyTorch."""
    import hetc
    from hetc.core.errors import HetcError
    from hetc.frontends import torch_opmap

    sample = sample or SAMPLES[op]
    reason = torch_opmap.refusal(op)
    if sample is None:
        return Outcome(op, "refused" if reason else "error", reason or "no sample")
    with torch.no_grad():
        want = _flat(sample.fn(*sample.inputs))
    try:
        module = hetc.compile(_Call(sample.fn), example_inputs=sample.inputs, target="ref")
    except HetcError as e:
        if reason and reason in str(e):
            return Outcome(op, "refused", reason)
        return Outcome(op, "error", f"{type(e).__name__}: {e}")
    got = _flat(module(*[x.numpy() for x in sample.inputs]))
    if len(got) != len(want):
        return Outcome(op, "wrong", f"{len(got)} results, PyTorch gives {len(want)}")
    for g, w in zip(got, want):
        problem = _close(g, w)
        if problem:
            return Outcome(op, "wrong", problem)
    kinds = sorted({o.kind for o in module.graph.ops if o.kind != "const"})
    return Outcome(op, "ok", ", ".join(kinds) or "(constants only)")


def markdown(outcomes: list[Outcome]) -> str:
    ok = sum(o.status == "ok" for o in outcomes)
    refused = sum(o.status == "refused" for o in outcomes)
    lines = [
        "# Core ATen coverage of the PyTorch importer",
        "",
        "Generated by `python tests/core_aten.py --markdown docs/torch-core-aten.md`;",
        "tests/test_core_aten.py checks every row and that this file is current.",
        "",
        f"Each of torch {torch.__version__.split('+')[0]}'s {len(outcomes)} Core ATen ops "
        "(tagged `torch.Tag.core`) is called",
        "by a one-op model (tests/core_aten.py), exported with torch.export, imported",
        "by hetc and run on the reference interpreter against PyTorch (f32 within",
        "1e-5, integers and booleans exactly): "
        f"**{ok} imported and equal, {refused} refused** with the reason below.",
        "",
        "| Core ATen op | result | hetc IR ops, or the reason it is refused |",
        "| --- | --- | --- |",
    ]
    for o in outcomes:
        lines.append(f"| `{o.op}` | {o.status} | {o.detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", type=Path, help="write the coverage table here")
    args = ap.parse_args(argv)
    outcomes = [run(op) for op in core_ops()]
    for o in outcomes:
        if o.status not in ("ok", "refused"):
            print(f"{o.op}: {o.status}: {o.detail}", file=sys.stderr)
    text = markdown(outcomes)
    if args.markdown:
        args.markdown.write_text(text)
    else:
        print(text)
    return 0 if all(o.status in ("ok", "refused") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
