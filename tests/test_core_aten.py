"""Every op of torch's Core ATen opset is imported by the PyTorch frontend
and matches PyTorch on the reference interpreter, or is refused with the
reason the importer states; docs/torch-core-aten.md is the current table."""

from pathlib import Path

import pytest

import core_aten

DOC = Path(__file__).resolve().parents[1] / "docs" / "torch-core-aten.md"


def test_every_core_aten_op_has_a_sample():
    assert set(core_aten.core_ops()) == set(core_aten.SAMPLES)


def test_core_aten_ops_import_and_match_pytorch_or_are_refused_with_a_reason():
    outcomes = [core_aten.run(op) for op in core_aten.core_ops()]
    bad = [f"{o.op}: {o.status}: {o.detail}" for o in outcomes if o.status not in ("ok", "refused")]
    assert not bad, "\n".join(bad)
    ok = sum(o.status == "ok" for o in outcomes)
    assert ok >= 150, f"only {ok} Core ATen ops import"
    assert DOC.read_text() == core_aten.markdown(outcomes), (
        "docs/torch-core-aten.md is out of date: python tests/core_aten.py "
        "--markdown docs/torch-core-aten.md")


@pytest.mark.parametrize("name", sorted(core_aten.EDGES))
def test_ops_written_with_other_ir_ops_match_pytorch_at_edge_values(name):
    outcome = core_aten.run(name, core_aten.EDGES[name])
    assert outcome.status == "ok", outcome.detail


def test_random_ops_are_refused_not_frozen_into_constants():
    import torch

    import hetc
    from hetc.core.errors import FrontendError

    class Noisy(torch.nn.Module):
        def forward(self, x):
            return x + torch.randn(3)

    with pytest.raises(FrontendError, match="random numbers at run time"):
        hetc.compile(Noisy(), example_inputs=(torch.zeros(3),), target="ref")


def test_ops_without_a_handler_are_decomposed_by_torch():
    """lerp, addcmul, mish, selu, logsigmoid, softsign, logit, glu and celu
    have no handler: torch's Core ATen decompositions write them with ops
    that have one."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    import hetc

    class Mixed(torch.nn.Module):
        def forward(self, x):
            return (torch.lerp(x, x * 2, 0.3) + torch.addcmul(x, x, x) + F.mish(x) + F.selu(x)
                    + F.logsigmoid(x) + F.softsign(x) + torch.logit(torch.sigmoid(x))
                    + F.glu(x.repeat(1, 2)) + F.celu(x) + F.rrelu(x) + torch.hypot(x, x))

    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    module = hetc.compile(Mixed(), example_inputs=(x,), target="ref")
    np.testing.assert_allclose(module(x.numpy()), Mixed()(x).numpy(), rtol=1e-5, atol=1e-5)
    kinds = {o.kind for o in module.graph.ops}
    assert "softplus" not in kinds and {"tanh", "log", "exp"} <= kinds
