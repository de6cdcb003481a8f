"""Every op case of test_ops_vs_torch on every built target that runs here,
against the interpreter.

Per target, the cases its backend accepts (its support table says why it
refuses the others) are placed side by side in one graph, compiled once and
run once; each case's results must match the interpreter's on the same
graph. Refused cases must be refused for a reason the message names.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_ops_vs_torch import CASES, add_case

import hetc
from hetc.backends import get_backend
from hetc.core.targets import get_target
from hetc.ir import Graph, dtypes

# Targets and their options; each is skipped where it cannot run.
# make gpu-check runs the cuda cases on a GPU instead of the simulation
TARGETS = {"x86": {}, "amx": {"emulate": True},
           "cuda": {"emulate": os.environ.get("HETC_TEST_CUDA_ON_GPU") != "1"}, "npu": {}}
# x86 computes transcendental functions with its own vector approximations and
# sums in another order; OpenVINO's CPU plugin likewise. Integer and bool
# results must be equal.
TOL = {"f32": dict(rtol=2e-5, atol=2e-6), "bf16": dict(rtol=1.6e-2, atol=1e-4),
       "f16": dict(rtol=2e-3, atol=1e-5)}

# Wrong answers this test found on npu (OpenVINO's CPU plugin standing in for
# the NPU) that are not fixed yet; docs/npu.md lists them. The test fails when
# another case goes wrong and when one of these is fixed (remove it here).
KNOWN_WRONG = {"npu": {
    **{c: "i64 bitwise ops and shifts are computed in 32 bits" for c in (
        "bitwise_not-int64", "bitwise_and-i64", "bitwise_or-i64", "bitwise_xor-i64",
        "shift_left-int64", "shift_right-int64")},
    "div-i64-large": "i64 division is computed in 32 bits",
    "div-i32-extremes": "i32 division goes through f32 near the type's limits",
    "mod-i32-extremes": "i32 remainders near the type's limits",
    "fmod-i32-extremes": "i32 remainders near the type's limits",
}}


def _case_graph(c, j, g=None):
    """Case `c` as ops of `g` (a new graph when None), names prefixed by j;
    returns (graph, feeds, outputs)."""
    g = g or Graph(f"case{j}")
    feeds, outs = add_case(c, g, f"c{j}_")
    return g, feeds, outs


def _accepted(backend, target):
    """(accepted cases, {case id: refusal}) for this backend."""
    ok, refused = [], {}
    for j, c in enumerate(CASES):
        g, _, outs = _case_graph(c, j)
        g.outputs = outs
        problems = backend.problems(g, target)
        if problems:
            refused[c.id] = problems
        else:
            ok.append((j, c))
    return ok, refused


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_op_case_matches_the_interpreter_on_each_target(name):
    target = get_target(name)
    avail = target.availability()
    if name == "npu":
        pytest.importorskip("openvino")
    elif name in ("amx", "cuda"):  # emulated: a C/C++ compiler is enough
        if not get_target("x86").availability().ok:
            pytest.skip(get_target("x86").availability().detail)
    elif not avail.ok:
        pytest.skip(avail.detail)
    backend = get_backend(target)
    ok, refused = _accepted(backend, target)
    assert ok, f"{name} accepts none of the {len(CASES)} op cases"
    for cid, problems in refused.items():  # each refusal says what and why
        assert all(p.startswith("op #") or "%" in p for p in problems), (cid, problems)

    g, feeds, spans = Graph(f"ops_on_{name}"), [], []
    for j, c in enumerate(ok):
        _, f, outs = _case_graph(c[1], c[0], g)
        feeds += f
        spans.append((c[1], len(g.outputs), len(outs)))
        g.outputs += outs
    want = hetc.interpret(g, feeds)
    got = hetc.compile(g, target=name, **TARGETS[name])(*feeds)
    got = got if isinstance(got, (list, tuple)) else [got]
    bad, known = [], KNOWN_WRONG.get(name, {})
    for c, start, n in spans:
        for k in range(start, start + n):
            a, b = np.asarray(got[k]), want[k]
            dt = dtypes.from_numpy(b.dtype)
            try:
                assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.dtype)
                if dt.is_float and not c.exact:
                    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32),
                                               **TOL[dt.name])
                elif dt.is_float:  # equal values (any NaN equals any NaN), as test_ops_vs_torch
                    np.testing.assert_array_equal(a.astype(np.float32), b.astype(np.float32))
                else:
                    np.testing.assert_array_equal(a, b)
            except AssertionError as e:
                bad.append((c.id, f"{c.id} result {k - start}: {str(e).strip().splitlines()[:6]}"))
    new = [text for cid, text in bad if cid not in known]
    assert not new, f"{len(new)} of {len(ok)} op cases differ on {name}:\n" + "\n".join(new)
    fixed = set(known) - {cid for cid, _ in bad}
    assert not fixed, f"now right on {name} (remove from KNOWN_WRONG): {sorted(fixed)}"
