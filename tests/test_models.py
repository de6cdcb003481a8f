"""Whole models through hetc.compile(target="ref") against PyTorch, and the
torch frontend's errors."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hetc
from hetc.core.errors import FrontendError, UsageError
from models import examples

REL_TOL = 1e-5  # relative L2 error against PyTorch in f32 (the bar)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name, model, inputs", examples(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_models_match_pytorch(name, model, inputs):
    module = hetc.compile(model, target="ref", example_inputs=inputs)
    with torch.no_grad():
        expected = model(*inputs)
    got = module(*inputs)
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape
    assert rel_err(got, expected) < REL_TOL
    # new inputs of the same shape, and numpy in gives numpy out
    fresh = tuple(torch.randn_like(x) for x in inputs)
    with torch.no_grad():
        expected = model(*fresh)
    got = module(*(x.numpy() for x in fresh))
    assert isinstance(got, np.ndarray)
    assert rel_err(torch.from_numpy(got), expected) < REL_TOL


@pytest.mark.parametrize("fn", [
    lambda x: F.pad(x, (1, 2, 0, 3), value=-1.5),
    lambda x: F.pad(x, (2, 1, 1, 0), mode="reflect"),
    lambda x: F.pad(x, (1, 1, 2, 2), mode="replicate"),
    lambda x: F.pad(x, (1, 0, 0, 2), mode="circular"),
    lambda x: F.pad(x, (-1, 1)),  # negative pads crop
    lambda x: F.hardtanh(x, -0.5, 1.5),
    F.relu6,
], ids=["constant", "reflect", "replicate", "circular", "crop", "hardtanh", "relu6"])
def test_padding_and_clipping_functions(fn):
    class M(nn.Module):
        def forward(self, x):
            return fn(x) * 2

    x = torch.randn(2, 3, 5, 6) * 4
    got = hetc.compile(M(), example_inputs=(x,))(x)
    assert torch.equal(got, M()(x))


def test_transformer_block_imports_high_level_ops():
    name, model, inputs = examples()[2]
    module = hetc.compile(model, example_inputs=inputs)
    kinds = {op.kind for op in module.graph.ops}
    assert {"attention", "layer_norm", "linear", "gelu", "split"} <= kinds
    attn = next(op for op in module.graph.ops if op.kind == "attention")
    assert attn.attrs["causal"] is True
    assert [r.name for r in module.report.layers][:3] == ["ln1", "qkv", "proj"]


class _TwoOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.register_buffer("offset", torch.linspace(-1, 1, 4))

    def forward(self, x, y):
        h = self.fc(x) + self.offset
        return h.softmax(-1), torch.cat([h, y * 2.0 - 1], dim=1).mean(dim=0, keepdim=True)


def test_several_inputs_and_outputs_by_position_and_name():
    m = _TwoOut().eval()
    x, y = torch.randn(3, 6), torch.randn(3, 2)
    module = hetc.compile(m, example_inputs=(x, y))
    assert module.input_names == ["x", "y"]
    with torch.no_grad():
        ex = m(x, y)
    for got in (module(x, y), module(y=y, x=x)):
        assert isinstance(got, tuple) and len(got) == 2
        for g, e in zip(got, ex):
            assert rel_err(g, e) < REL_TOL


def test_wrong_input_shape_is_a_clear_error():
    name, model, inputs = examples()[0]
    module = hetc.compile(model, example_inputs=inputs)
    with pytest.raises(UsageError, match=r"input 'x' must have shape \[8, 64\], got \[2, 64\]"):
        module(torch.randn(2, 64))
    with pytest.raises(UsageError, match="takes 1 inputs"):
        module()


class _Unsupported(nn.Module):
    def forward(self, x):
        return torch.cummax(x, 0).values


def test_unsupported_op_names_node_op_and_source_line():
    with pytest.raises(FrontendError) as info:
        hetc.compile(_Unsupported(), example_inputs=(torch.randn(3),))
    msg = str(info.value)
    assert "aten.cummax" in msg and "test_models.py" in msg and "not supported" in msg


class _InPlace(nn.Module):
    """A residual block written with in-place ops, as HF ResNet and Falcon are."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        h = self.conv(x)
        h += x
        h.mul_(0.5).relu_()
        return h


def test_in_place_ops_are_imported_through_functionalization():
    """torch's functionalization turns them into functional ops (it
    regenerates Python from the graph, so it runs only on plain names:
    tests/test_reliability.py tries hostile ones)."""
    torch.manual_seed(0)
    model, x = _InPlace().eval(), torch.randn(1, 4, 6, 6)
    want = model(x.clone()).detach().numpy()
    for target in ("ref", "x86"):
        module = hetc.compile(model, target=target, example_inputs=(x,))
        np.testing.assert_allclose(module(x).numpy(), want, rtol=1e-5, atol=1e-5)


class _TrainingDropout(nn.Module):
    def forward(self, x):
        return F.dropout(x, 0.5, training=True)


def test_training_only_ops_are_refused():
    with pytest.raises(FrontendError, match="dropout"):
        hetc.compile(_TrainingDropout(), example_inputs=(torch.randn(3),))


def test_module_without_example_inputs_is_a_usage_error():
    with pytest.raises(UsageError, match="needs example_inputs"):
        hetc.compile(examples()[0][1])


def test_exported_program_and_pt2_file(tmp_path):
    name, model, inputs = examples()[1]
    ep = torch.export.export(model, inputs)
    path = tmp_path / "cnn.pt2"
    torch.export.save(ep, path)
    with torch.no_grad():
        expected = model(*inputs)
    for source in (ep, str(path)):
        module = hetc.compile(source)
        assert rel_err(module(*inputs), expected) < REL_TOL


class _ScalarBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        return (x * self.scale).sum()  # a 0-d weight in, a 0-d result out


def test_zero_dim_weights_and_outputs():
    m = _ScalarBuffer()
    x = torch.randn(3, 4)
    got = hetc.compile(m, example_inputs=(x,))(x)
    assert got.shape == () and torch.allclose(got, m(x))


def test_numpy_example_inputs_for_a_torch_model():
    """A torch model traced with numpy example inputs, as a user may pass them."""
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    module = hetc.compile(model, example_inputs=(x,))
    np.testing.assert_allclose(module(x), model(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-6, atol=1e-6)
