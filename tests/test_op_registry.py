"""The op table is the one source of facts about ops: its traits are
consistent, and the op x target matrix (docs/ops.md) derived from it and the
backends' support tables is complete and published."""

import os

from hetc.backends import support_matrix
from hetc.driver import ops_table
from hetc.ir.ops import OPS

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")


def test_every_built_backend_lowers_or_refuses_every_op():
    missing = {target: sorted(k for k, (status, _) in table.items() if status == "missing")
               for target, table in support_matrix().items() if table is not None}
    assert not any(missing.values()), f"ops neither lowered nor refused: {missing}"


def test_refusals_say_why():
    for target, table in support_matrix().items():
        for kind, (status, why) in (table or {}).items():
            assert status != "refused" or len(why) > 10, (target, kind, why)


def test_published_op_matrix_is_current():
    with open(os.path.join(DOCS, "ops.md")) as f:
        published = f.read()
    assert published == ops_table.markdown("hetc ops --markdown docs/ops.md"), \
        "docs/ops.md is stale: run `hetc ops --markdown docs/ops.md`"


def test_traits_are_consistent():
    for kind, d in OPS.items():
        if d.broadcasting or d.epilogue:
            assert d.elementwise, kind
        if d.commutative or d.identity is not None:
            assert d.broadcasting and len(d.operands) == 2, kind
        if d.weight is not None:
            assert d.weight[0] < len(d.operands) and d.takes_epilogue, kind
        assert all(i < len(d.operands) for i in d.stored_floats), kind
        assert not (d.view and d.elementwise), kind
    # what the passes rely on: the compressible layers and their reduction axes
    assert {k: d.weight for k, d in OPS.items() if d.weight} == \
        {"linear": (1, -1), "matmul": (1, 0), "conv2d": (1, 1)}
