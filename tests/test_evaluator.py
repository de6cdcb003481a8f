"""Evaluators: the interpreter and an x86 build running the calibration
samples of compression passes, with weights replaced between calls."""

import numpy as np
import pytest
import torch
import torch.nn as nn

import hetc
from hetc.core.errors import HetcError, TargetError
from hetc.core.targets import get_target
from hetc.driver import compression_options
from hetc.driver.api import import_model
from hetc.passes.layers import find_layers
from hetc.passes.pipeline import PassContext, PassManager
from hetc.runtime.evaluator import Interpreted
from test_compression import _fragile_calibration

pytestmark = pytest.mark.skipif(not get_target("x86").availability().ok,
                                reason="this host cannot build x86 code")

RNG = np.random.default_rng(3)


class _Tied(nn.Module):
    """An embedding whose table the output layer reuses (tied weights)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(40, 32)
        self.up, self.down = nn.Linear(32, 48), nn.Linear(48, 32)

    def forward(self, ids):
        h = self.emb(ids)
        h = h + self.down(torch.nn.functional.gelu(self.up(h)))
        return torch.nn.functional.linear(h, self.emb.weight)  # as transformers ties them


class _Convs(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 12, 1)
        self.head = nn.Linear(12 * 5 * 5, 10)

    def forward(self, x):
        h = torch.relu(self.pw(torch.relu(self.dw(torch.relu(self.stem(x))))))
        return self.head(h.flatten(1))


def _graph(model, example):
    g = import_model(model.eval(), example)
    return PassManager.from_text(get_target("ref").default_pipeline).run(g, PassContext())


def _cases():
    ids = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(0))
    yield "tied", _Tied(), (ids,), [(ids,), (torch.flip(ids, (1,)),)]
    x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    yield "convs", _Convs(), (x,), [(x,), (x * 0.5 + 1,)]


@pytest.mark.parametrize("name, model, example, samples", list(_cases()),
                         ids=[c[0] for c in _cases()])
def test_x86_build_computes_what_the_interpreter_does_with_replaced_weights(
        name, model, example, samples):
    from hetc.backends.x86.evaluator import X86Evaluator

    g = _graph(model, example)
    layers = find_layers(g)
    probes = list(dict.fromkeys(ly.activation for ly in layers))
    ref, fast = Interpreted(g, probes), X86Evaluator(g, probes)
    samples = [[np.asarray(a) for a in s] for s in samples]

    def close(a, b):
        for x, y in zip(a, b):
            np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32),
                                       rtol=2e-4, atol=2e-5)

    first = [np.copy(o) for o in fast(samples[0])[0]]
    before = dict(g.weights)
    for sample in samples:
        (outs, seen), (routs, rseen) = fast(sample), ref(sample)
        close(outs, routs)
        close(seen, rseen)
    for ly in layers:
        w = g.weights[ly.weight_name]
        other = (RNG.standard_normal(w.shape) * np.std(w)).astype(np.float32)
        with fast.replaced({ly.weight_name: other}), ref.replaced({ly.weight_name: other}):
            changed, rchanged = fast(samples[0])[0], ref(samples[0])[0]
            close(changed, rchanged)
            assert not np.allclose(changed[0], first[0], rtol=1e-3)
    again = fast(samples[0])[0]
    assert all(np.array_equal(a, b) for a, b in zip(again, first))  # the compiled bytes came back
    assert dict(g.weights).keys() == before.keys()
    assert all(g.weights[k] is v for k, v in before.items())  # the caller's table untouched


def test_tied_weight_is_replaced_in_every_use():
    from hetc.backends.x86.evaluator import X86Evaluator

    model, ids = _Tied(), torch.zeros(1, 5, dtype=torch.int64)
    g = _graph(model, (ids,))
    fast = X86Evaluator(g)
    name = next(n for n in fast.lib.slots if n.startswith("emb"))
    assert len(fast.lib.slots[name]) == 2  # the gather's table and the output layer's panels
    zero = np.zeros_like(g.weights[name])
    with fast.replaced({name: zero}):
        assert not np.any(fast([np.asarray(ids)])[0][0])  # zero embeddings, zero logits


def test_replacing_what_a_build_cannot_repack_is_an_error():
    from hetc.backends.x86.evaluator import X86Evaluator

    x = torch.randn(2, 16)
    module = hetc.compile(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8)).eval(),
                          example_inputs=(x,), precision="int8")
    g = module.graph
    fast = X86Evaluator(g)
    with pytest.raises(TargetError, match="cannot be replaced"):
        fast.set_weight("0.weight", np.zeros((32, 16), np.float32))
    with pytest.raises(HetcError, match="quantized"):
        Interpreted(g).set_weight("0.weight", np.zeros((32, 16), np.float32))
    dense = X86Evaluator(_graph(nn.Linear(16, 32).eval(), (x,)))
    with pytest.raises(TargetError, match="needs 2048 bytes"):
        dense.set_weight("weight", np.zeros((16, 16), np.float32))


@pytest.mark.parametrize("options", [
    {"precision": "auto:int8|int4|mx3", "bits_budget": 6.0},
    {"sparsity": "auto", "precision": "auto", "accuracy_budget": 0.02},
    {"precision": "int4", "rounding": "gptq"},
], ids=["bits", "accuracy", "gptq"])
def test_searches_on_an_x86_build_choose_what_the_interpreter_chooses(monkeypatch, options):
    model, cal = _fragile_calibration()  # two nearly equal layers whose difference counts
    runs = {}
    for build_from in (float("inf"), 0):  # never, always
        monkeypatch.setattr(compression_options, "BUILD_FROM", build_from)
        module = hetc.compile(model, example_inputs=cal[0], calibration=cal, **options)
        runs[build_from] = module
    slow, fast = runs[float("inf")].report, runs[0].report
    assert [(r.name, r.precision, r.pattern) for r in fast.layers] == \
        [(r.name, r.precision, r.pattern) for r in slow.layers]
    assert fast.compression["error"] == pytest.approx(slow.compression["error"], rel=1e-3)
    assert "calibration samples ran on an x86 build of the graph" in fast.notes
    assert "calibration samples ran on the reference interpreter" in slow.notes


class _Blocks(nn.Module):
    """A few residual blocks whose intermediate results are probed and read
    later (what a resumed run must restore)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(24), nn.Linear(24, 40), nn.GELU(),
                                                  nn.Linear(40, 24)) for _ in range(3))
        self.head = nn.Linear(24, 6)

    def forward(self, x):
        for b in self.blocks:
            x = x + b(x)
        return self.head(x), x


@pytest.mark.parametrize("budget", [None, 4096, 0], ids=["all", "some", "none"])
@pytest.mark.parametrize("name, model, example", [
    ("blocks", _Blocks(), (torch.randn(2, 5, 24),)),
    ("convs", _Convs(), (torch.randn(2, 3, 10, 10),)),
    ("tied", _Tied(), (torch.randint(0, 40, (2, 7)),)),
], ids=["blocks", "convs", "tied"])
def test_resumed_runs_equal_whole_runs(name, model, example, budget):
    from hetc.backends.x86.evaluator import MEMORY, X86Evaluator

    g = _graph(model, example)
    layers = find_layers(g)
    fast = X86Evaluator(g, list(dict.fromkeys(ly.activation for ly in layers)))
    sample = [np.asarray(a) for a in example]
    refs = fast.remember(sample, MEMORY if budget is None else budget)
    if budget is None:
        assert len(fast.starts) == len({min(s.step for s in slots)
                                        for slots in fast.lib.slots.values()} - {0})
    else:
        assert sum(d.nbytes for kept in fast.saved.values() for _, d in kept) <= budget
    order = layers + layers[::-1]  # forwards, then back to earlier layers
    others, expected = [], []
    for ly in order:
        w = g.weights[ly.weight_name]
        others.append((RNG.standard_normal(w.shape) * np.std(w)).astype(np.float32))
        with fast.replaced({ly.weight_name: others[-1]}):
            expected.append(fast(sample)[0])
    fast.remember(sample, MEMORY if budget is None else budget)
    for i, (ly, other, want) in enumerate(zip(order, others, expected)):
        if i == len(layers):
            fast(sample)  # a plain call in between: again() then restores everything
        with fast.replaced({ly.weight_name: other}):
            got = fast.again([ly.weight_name])
            assert all(np.array_equal(a, b) for a, b in zip(got, want)), ly.name
    assert all(np.array_equal(a, b) for a, b in zip(fast.again(), refs))


class _Masked(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x, m):
        return self.lin(x) * (m & 1).float()


def test_a_graph_x86_cannot_run_is_calibrated_in_the_interpreter(monkeypatch):
    x, m = torch.randn(4, 8), torch.randint(0, 4, (4, 8))
    g = _graph(_Masked().eval(), (x, m))
    monkeypatch.setattr(compression_options, "BUILD_FROM", 0)
    made = compression_options.Evaluators()
    ev = made(g, [find_layers(g)[0].activation], runs=10)
    assert isinstance(ev, Interpreted)
    assert "no x86 build" in made.used[0] and "bitwise_and" in made.used[0]
    outs, (seen,) = ev([np.asarray(x), np.asarray(m)])
    np.testing.assert_array_equal(seen, np.asarray(x))
    monkeypatch.setattr(compression_options, "BUILD_FROM", float("inf"))
    assert made.used[0] not in [made(g, [], runs=10).what]  # small work: the plain interpreter


def test_a_build_too_large_for_memory_is_not_made(monkeypatch):
    g = _graph(nn.Linear(16, 32).eval(), (torch.randn(2, 16),))
    monkeypatch.setattr(compression_options, "BUILD_FROM", 0)
    monkeypatch.setattr(compression_options, "_available_memory", lambda: 1024)
    made = compression_options.Evaluators()
    assert isinstance(made(g, [], runs=10), Interpreted)
    assert "GiB of memory are free" in made.used[0]
