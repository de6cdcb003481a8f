"""x86 convolutions (implicit GEMM, depthwise), the fold-conv pass and fused
epilogues: the generated C against the reference interpreter, on AVX-512
and in portable C."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import hetc

from hetc.driver.api import import_model
from hetc.ir.interpret import run_graph
from hetc.passes.pipeline import PassManager

from test_x86 import REL_TOL, both, rel_err


class Convs(nn.Module):
    """Every convolution path: a 7x7 stride-2 stem on 3 channels (implicit
    GEMM), depthwise 3x3 stride 1 and 5x5 stride 2 after a TensorFlow-style
    asymmetric pad, depthwise with a channel multiplier, stride 3 and
    dilation 2, grouped and dilated, pointwise on positions that leave partial tiles, all
    with batch norms and ReLU6, a per-channel scale and a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 13, 7, stride=2, padding=3, bias=False)
        self.bn0 = nn.BatchNorm2d(13)
        self.dw1 = nn.Conv2d(13, 13, 3, padding=1, groups=13)
        self.dw2 = nn.Conv2d(13, 13, 5, stride=2, groups=13, bias=False)
        self.bn2 = nn.BatchNorm2d(13)
        self.mult = nn.Conv2d(13, 26, 3, stride=3, dilation=2, padding=2, groups=13)
        self.grouped = nn.Conv2d(26, 10, 3, padding=2, dilation=2, groups=2)
        self.pw = nn.Conv2d(10, 37, 1)
        self.back = nn.Conv2d(37, 10, 1, bias=False)
        self.gamma = nn.Parameter(torch.linspace(0.5, 2.0, 10))
        for bn in (self.bn0, self.bn2):  # statistics a trained model would have
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        x = F.relu6(self.bn0(self.stem(x)))
        x = F.relu6(self.dw1(x))
        x = F.pad(x, (1, 2, 1, 2))
        x = F.relu6(self.bn2(self.dw2(x)))
        x = torch.relu(self.mult(x))
        x = self.grouped(x) * self.gamma[:, None, None]
        return x + self.back(F.silu(self.pw(x)))


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_convolutions_match_the_interpreter(portable, monkeypatch):
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = Convs().eval()
    for shape in ((1, 3, 45, 37), (2, 3, 64, 64)):
        inputs = (torch.randn(*shape),)
        x86, ref = both(model, inputs)
        assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL, shape
        with torch.no_grad():
            assert rel_err(x86(*inputs), model(*inputs)) < 1e-4, shape
        kernels = x86.artifact.extra["kernels"]
        # the pointwise layers run on 7x16 (and 12x13) positions: the channel-lane kernel
        assert kernels == {"conv2d f32": 2, "conv2d f32 depthwise": 3,
                           "conv2d f32 1x1 few positions": 2}, kernels
        # the batch norms and the pad went into the convolutions, the
        # activations and the residual add into their kernels
        ops = [op.kind for op in x86.artifact.graph.ops if op.kind != "const"]
        assert "batch_norm" not in ops and "pad" not in ops, ops
        assert any("elementwise ops run as epilogues" in n for n in x86.report.notes)


class Pointwise(nn.Module):
    """A 1x1 convolution with a per-channel scale and ReLU6 in its epilogue,
    then one with a residual add and ReLU6."""

    def __init__(self, c, o):
        super().__init__()
        self.pw = nn.Conv2d(c, o, 1)
        self.back = nn.Conv2d(o, c, 1, bias=False)
        self.gamma = nn.Parameter(torch.linspace(0.5, 2.0, o))

    def forward(self, x):
        y = F.relu6(self.pw(x) * self.gamma[:, None, None])
        return F.relu6(x + self.back(y)), y  # y too: each layer's positions checked alone


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("shape, o, kernel", [
    ((1, 3, 7, 7), 37, "conv2d f32 1x1 few positions"),  # 49 positions: a tile of 1; panels of 5
    ((2, 19, 5, 3), 5, "conv2d f32 1x1 few positions"),  # batch 2, fewer channels than a panel
    ((1, 16, 16, 16), 48, "conv2d f32 1x1 few positions"),  # 256: the last on channel lanes
    # more channels than positions: threads split the panels (7: 3 and 2 + 2; batch 2: 20)
    ((1, 24, 5, 5), 100, "conv2d f32 1x1 few positions"),
    ((2, 40, 7, 7), 320, "conv2d f32 1x1 few positions"),
    ((2, 8, 1, 257), 17, "conv2d f32 1x1"),  # 257 positions: the row tiles, a partial one
])
def test_pointwise_kernels_on_edge_shapes(shape, o, kernel, portable, monkeypatch):
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = Pointwise(shape[1], o).eval()
    inputs = (torch.randn(*shape) * 3,)  # values beyond the clamp's ends
    x86, ref = both(model, inputs)
    with torch.no_grad():
        for got, want, torch_says in zip(x86(*inputs), ref(*inputs), model(*inputs)):
            assert rel_err(got, want) < REL_TOL
            assert rel_err(got, torch_says) < 1e-5
    assert x86.artifact.extra["kernels"] == {kernel: 2}


class Stem(nn.Module):
    """A convolution with few output channels (k_conv2d_gemm's path from
    padded rows, no im2col), its batch norm, an activation, and a residual
    add of `skip` (a 1x1 convolution of the input, strided) when given."""

    def __init__(self, c, o, k, stride, padding, dilation=1, act=nn.ReLU6, skip=False):
        super().__init__()
        self.conv = nn.Conv2d(c, o, k, stride, padding, dilation, bias=False)
        self.bn = nn.BatchNorm2d(o)
        self.bn.running_mean.uniform_(-0.5, 0.5)
        self.bn.running_var.uniform_(0.5, 2.0)
        self.act = act()
        self.skip = nn.Conv2d(c, o, 1, stride) if skip else None

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        if self.skip is not None:
            s = self.skip(x)
            y = y + s[..., :y.shape[2], :y.shape[3]]
        return y


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("shape, args, kw", [
    ((1, 3, 224, 224), (32, 3, 2, 1), {}),  # EfficientNet-Lite0's stem
    ((2, 3, 45, 37), (13, 7, 2, 3), {}),  # batch 2, odd sizes: a part strip and column tile
    ((1, 5, 30, 41), (20, 5, (2, 1), (0, 2), 2), dict(act=nn.SiLU)),  # strides 2 x 1, dilation 2
    ((1, 4, 33, 34), (64, 3, 1, 1), dict(act=nn.Identity, skip=True)),  # the residual add
    ((1, 8, 19, 70), (9, (3, 5), 2, (1, 0), (1, 2)), dict(act=nn.Hardswish)),  # 3x5, columns dilated
])
def test_convolutions_with_few_output_channels(shape, args, kw, portable, monkeypatch):
    """k_conv2d_gemm from padded rows (AVX-512) or im2col (portable): the
    interpreter's and PyTorch's numbers, batch, strips of rows and column
    tiles that are not full, strides, dilation and epilogues."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = Stem(shape[1], *args, **kw).eval()
    inputs = (torch.randn(*shape) * 3,)
    x86, ref = both(model, inputs)
    with torch.no_grad():
        torch_says = model(*inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert rel_err(x86(*inputs), torch_says) < 1e-5
    assert x86.artifact.extra["kernels"].get("conv2d f32") == 1, x86.artifact.extra["kernels"]


class InvertedResidual(nn.Module):
    """1x1 expand, depthwise, 1x1 project (MobileNetV2's and EfficientNet's
    block), with ReLU6 or another activation after the first two, and the
    residual add when the shapes allow; `pad` is a TensorFlow-style
    asymmetric pad ahead of the depthwise convolution."""

    def __init__(self, c, hidden, k=3, stride=1, dilation=1, act=nn.ReLU6, pad=None,
                 expose=False):
        super().__init__()
        same = dilation * (k - 1) // 2 if pad is None else 0
        self.expand = nn.Conv2d(c, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, k, stride, same, dilation, groups=hidden)
        self.project = nn.Conv2d(hidden, c, 1)
        self.act, self.pad, self.expose = act(), pad, expose

    def forward(self, x):
        h = self.act(self.expand(x))
        d = self.act(self.dw(h if self.pad is None else F.pad(h, self.pad)))
        y = self.project(d)
        y = x + y if y.shape == x.shape else y
        return (y, h) if self.expose else y


BLOCKED = "conv2d f32 depthwise, 16-channel blocks"
DEPTHWISE = "conv2d f32 depthwise"
FUSED = "conv2d f32 1x1 + depthwise, one kernel"


def _check_block(model, inputs, kernel):
    """x86 against the interpreter and PyTorch; the depthwise convolution
    ran as `kernel`, and no other depthwise kernel ran."""
    x86, ref = both(model, inputs)
    got, want = x86(*inputs), ref(*inputs)
    with torch.no_grad():
        torch_says = model(*inputs)
    for g, w, t in zip(*(o if isinstance(o, (tuple, list)) else (o,)
                         for o in (got, want, torch_says))):
        assert rel_err(g, w) < REL_TOL
        assert rel_err(g, t) < 1e-5
    kernels = x86.artifact.extra["kernels"]
    for name in (BLOCKED, DEPTHWISE, FUSED):
        assert kernels.get(name, 0) == (name == kernel), kernels


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("shape, kw, kernel", [
    ((1, 24, 7, 7), dict(hidden=48, k=5), BLOCKED),  # 7x7, 5x5, the residual add
    ((2, 16, 14, 14), dict(hidden=32, stride=2), BLOCKED),  # batch 2, stride 2: 14x14 -> 7x7
    ((1, 8, 9, 11), dict(hidden=64, dilation=2, act=nn.Identity), BLOCKED),  # no clamp at all
    ((1, 16, 12, 13), dict(hidden=32, k=5, stride=2, pad=(1, 2, 1, 2)), BLOCKED),  # asymmetric pad
    ((1, 16, 12, 13), dict(hidden=40), DEPTHWISE),  # 40 channels: not in blocks of 16
    ((1, 16, 7, 7), dict(hidden=32, act=nn.SiLU), DEPTHWISE),  # an epilogue that is not a clamp
    ((1, 16, 7, 7), dict(hidden=32, expose=True), DEPTHWISE),  # the expanded tensor is an output
    # planes of more than 4096 positions: NCHW, in bands of rows per thread (the
    # expanded tensor an output, so that the 1x1 convolution is not fused)
    ((2, 8, 72, 70), dict(hidden=24, k=5, stride=2, pad=(1, 2, 2, 1), expose=True), DEPTHWISE),
    ((1, 8, 67, 65), dict(hidden=32, dilation=2, act=nn.Hardtanh, expose=True),
     DEPTHWISE),  # 65 rows: uneven bands
    # strips of 8 output rows (a whole plane's buffer over 32 KB), an epilogue run per strip
    ((1, 8, 66, 80), dict(hidden=16, act=nn.SiLU, expose=True), DEPTHWISE),
])
def test_depthwise_in_blocks_of_16_channels(shape, kw, kernel, portable, monkeypatch):
    """A depthwise convolution between channel-lane 1x1 convolutions runs on
    blocks of 16 channels (layout.py) where it may, NCHW elsewhere, with
    the interpreter's numbers either way."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    _check_block(InvertedResidual(shape[1], **kw).eval(), (torch.randn(*shape) * 3,), kernel)


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("shape, kw, kernel", [
    ((1, 16, 24, 24), dict(hidden=96, stride=2), FUSED),  # 12 blocks of 8 channels
    ((1, 16, 24, 24), dict(hidden=32, stride=2, pad=(0, 0, 0, 0)), FUSED),  # a row read by none
    ((2, 12, 20, 21), dict(hidden=44, k=5, act=nn.SiLU), FUSED),  # batch 2, part blocks, not clamps
    ((1, 8, 40, 9), dict(hidden=16), FUSED),  # rows of 9: a vector of a tile spans 2 or 3 rows
    ((1, 8, 30, 31), dict(hidden=32, stride=3, dilation=2), FUSED),  # stride 3: portable sums
    ((1, 8, 17, 19), dict(hidden=40, k=5, stride=2, pad=(2, 1, 1, 2), act=nn.Identity), FUSED),
    ((1, 8, 17, 19), dict(hidden=24), DEPTHWISE),  # 3 blocks for 2 threads: apart
])
def test_a_1x1_convolution_into_a_depthwise_one(shape, kw, kernel, portable, monkeypatch):
    """A 1x1 convolution on a plane too large for the channel lanes whose
    result only a depthwise convolution reads runs with it as one kernel,
    its result never stored, when there are blocks of 8 channels enough for
    the threads: padding, strides, batch, channel blocks that are not full,
    tiles across rows, epilogues on both."""
    monkeypatch.setenv("HETC_THREADS", "2")  # the choice depends on it
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    _check_block(InvertedResidual(shape[1], **kw).eval(), (torch.randn(*shape) * 3,), kernel)


def test_a_1x1_convolution_into_a_depthwise_one_keeps_its_input_alive(monkeypatch):
    """The 1x1 part runs in the depthwise convolution's step, so its input
    (here the stem's result, read by nothing else) must stay in the arena
    until then, not give its place to the depthwise result."""
    monkeypatch.setenv("HETC_THREADS", "2")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 64, 1), nn.ReLU6(),
                          nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.Conv2d(64, 8, 1)).eval()
    _check_block(model, (torch.randn(1, 3, 24, 24),), FUSED)


class ExpandPlus(nn.Module):
    """A 1x1 convolution whose epilogue adds a whole tensor, into a depthwise one."""

    def __init__(self, c, hidden):
        super().__init__()
        self.expand = nn.Conv2d(c, hidden, 1)
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)

    def forward(self, x, t):
        return self.dw(torch.relu(self.expand(x) + t))


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_a_1x1_epilogue_with_a_tensor_operand_into_a_depthwise_one(portable, monkeypatch):
    """The 1x1 part's epilogue indexes its tensor operand as the unstored
    result is laid out, not as the tile is."""
    monkeypatch.setenv("HETC_THREADS", "2")
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    inputs = (torch.randn(2, 8, 18, 20), torch.randn(2, 20, 18, 20) * 2)
    _check_block(ExpandPlus(8, 20).eval(), inputs, FUSED)


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("shape", [(2, 40, 7, 7), (1, 1300, 7, 7), (3, 5, 1, 1), (1, 3, 4, 8)])
def test_global_average_pooling(shape, portable, monkeypatch):
    """Means of planes of 49 (a masked tail), 1 and 32 values, over enough
    rows to split among threads."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    inputs = (torch.randn(*shape) + 1,)
    x86, ref = both(model, inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < 1e-6


def test_fold_conv_keeps_the_numbers_and_the_layer_names():
    torch.manual_seed(0)
    model = Convs().eval()
    x = torch.randn(1, 3, 32, 32)
    graph = import_model(model, (x,))
    before = run_graph(graph, [x.numpy()])[0]
    names = {op.attrs.get("name") for op in graph.ops if op.kind == "const"}
    folded = PassManager.from_text("fold-conv").run(graph)
    kinds = [op.kind for op in folded.ops]
    assert "batch_norm" not in kinds and "pad" not in kinds
    assert {"stem.weight", "dw2.weight"} <= names
    kept = {op.attrs.get("name") for op in folded.ops if op.kind == "const"}
    assert {"stem.weight", "dw2.weight"} <= kept
    assert rel_err(run_graph(folded, [x.numpy()])[0], before) < 1e-6


def test_fold_conv_leaves_what_it_cannot_fold():
    """A pad with a nonzero value, one also read by another op, and a batch
    norm after a convolution whose result is read twice stay as they are."""

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)
            self.bn = nn.BatchNorm2d(4).eval()

        def forward(self, x):
            p = F.pad(x, (1, 1, 1, 1), value=1.0)
            q = F.pad(x, (1, 1, 1, 1))
            y = self.b(q)
            return self.a(p) + self.bn(y) + y + q.mean()

    x = torch.randn(1, 4, 9, 9)
    graph = import_model(M().eval(), (x,))
    before = run_graph(graph, [x.numpy()])[0]
    folded = PassManager.from_text("fold-conv").run(graph)
    kinds = [op.kind for op in folded.ops]
    assert kinds.count("pad") == 2 and kinds.count("batch_norm") == 1, kinds
    assert rel_err(run_graph(folded, [x.numpy()])[0], before) < 1e-6


class Epilogues(nn.Module):
    """Fused regions of every shape: a linear layer with GELU and a residual
    add (steps after the kernel), a per-feature scale on the last axis, an
    elementwise chain with no anchor, a step whose operand broadcasts the
    result larger (run op by op), and an integer chain."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(24, 24)
        self.scale = nn.Parameter(torch.randn(24))

    def forward(self, x, n):
        y = F.gelu(self.fc(x)) + x
        y = y * self.scale - 0.5
        z = torch.sigmoid(torch.exp(-x.abs()))
        grown = torch.relu(x[:, :1, :]) + torch.zeros(3, 5, 24)
        k = (n + 3) * 2
        return y + z, grown, k


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_fused_epilogues_match_the_interpreter(portable, monkeypatch):
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    inputs = (torch.randn(3, 5, 24), torch.arange(6).reshape(2, 3))
    x86, ref = both(Epilogues().eval(), inputs)
    assert any(op.kind == "fused" for op in x86.artifact.graph.ops)
    for got, want in zip(x86(*inputs), ref(*inputs)):
        if want.dtype == np.int64:
            np.testing.assert_array_equal(got, want)
        else:
            assert rel_err(got, want) < REL_TOL


LANES8 = "conv2d 1x1 int8 act x int8, channel lanes"
LANES4 = "conv2d 1x1 int8 act x int4, channel lanes"
EMULATED = {"conv2d f32 (act emulated)": 1}


@pytest.mark.parametrize("precision, sparsity, kernels", [
    ("int8", None, {LANES8: 3}),
    # N:M weights stored densely on channel lanes, zeros included
    ("int8", "2:4", {"conv2d 1x1 int8 act x 2:4 as zeros, int8, channel lanes": 3}),
    # scales per 32 channels: the 64-channel layer takes the row-block kernel
    # over pixels (2:4: only the kept values read)
    ("int4-g32", None, {LANES4: 2, "conv2d 1x1 int8 act x int4 g32": 1}),
    ("int4-g32", "2:4", {"conv2d 1x1 int8 act x 2:4 as zeros, int4, channel lanes": 2,
                         "conv2d 1x1 int8 act x 2:4 int4 g32": 1}),
])
@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
def test_convolutions_with_int8_activations_match_the_interpreter(precision, sparsity, kernels,
                                                                  portable, monkeypatch):
    """A graph whose convolutions carry int8 activations (act_group, as the
    fpga pipeline makes them: every ungrouped one) compiled for x86: 1x1
    convolutions with one scale per output channel run the channel-lane
    integer kernel, those with scales per group of channels the integer
    row-block kernel over pixels, the 3x3 one quantizes its input and
    convolves in floats."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(8, 32, 1), nn.ReLU(),
                                      nn.Conv2d(32, 16, 3, padding=1), nn.Conv2d(16, 64, 1),
                                      nn.ReLU(), nn.Conv2d(64, 40, 1))
            self.gamma = nn.Parameter(torch.linspace(0.5, 2.0, 40)[:, None, None])

        def forward(self, x):  # a per-channel step in the last kernel's epilogue
            return self.body(x) * self.gamma

    model = Net().eval()
    x = torch.randn(2, 8, 9, 7)
    graph = hetc.compile(model, "fpga", (x,), sparsity=sparsity,
                         precision=precision).artifact.graph
    assert all(op.attrs.get("act_group") for op in graph.ops if op.kind == "conv2d")
    module = hetc.compile(graph, "x86")
    want = run_graph(module.artifact.graph, [x.numpy()])[0]
    assert rel_err(module(x.numpy()), want) < REL_TOL
    assert module.artifact.extra["kernels"] == {**kernels, **EMULATED}


def test_a_convolution_with_a_computed_weight_is_named_in_the_report():
    """A weight computed at run time has no packed kernel: the plain loop
    runs (matching the interpreter) and the report says which layers."""

    class M(nn.Module):
        def forward(self, x, w):
            return F.conv2d(x, w * 2.0, padding=1)

    inputs = (torch.randn(1, 3, 9, 9), torch.randn(4, 3, 3, 3))
    x86, ref = both(M(), inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert any("1 layer(s) run a generic loop" in n for n in x86.report.notes), x86.report.notes


def test_an_elementwise_chain_of_any_length_is_one_pass():
    """A chain without an anchor over a prime number of elements above 4096
    (runs of 4096, a shorter last one): one kernel and its epilogue."""
    inputs = (torch.randn(4099),)
    x86, ref = both(nn.Sequential(nn.Tanh(), nn.ReLU(), nn.Sigmoid()).eval(), inputs)
    assert rel_err(x86(*inputs), ref(*inputs)) < REL_TOL
    assert "k_epilogue(" in x86.sources["model.c"]


class TwoPointwise(nn.Module):
    """Two 1x1 convolutions reading the input: ReLU6 and a per-channel scale
    after one, a residual add after the other. Both quantize the graph's
    input, so their codes are the interpreter's exactly."""

    def __init__(self, c, o):
        super().__init__()
        self.pw = nn.Conv2d(c, o, 1)
        self.same = nn.Conv2d(c, c, 1, bias=False)
        self.gamma = nn.Parameter(torch.linspace(0.5, 2.0, o)[:, None, None])

    def forward(self, x):
        return F.relu6(self.pw(x)) * self.gamma, F.relu6(x + self.same(x))


LANES = {"conv2d 1x1 int8 act x int8, channel lanes": 2}
ROWS = {"conv2d 1x1 int8 act x int8": 1, "conv2d f32 1x1": 1}


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("shape, o, kernels", [
    ((1, 3, 7, 7), 37, LANES),  # 3 channels: one padded step of 4; 49 positions: a tile of 1
    ((2, 19, 5, 3), 5, LANES),  # batch 2, a partial step, fewer channels than a panel
    ((1, 16, 16, 16), 48, LANES),  # 256 positions: the last on channel lanes
    ((1, 24, 5, 5), 100, LANES),  # more channels than positions: threads split the panels
    ((2, 40, 7, 7), 320, LANES),
    # more positions: the row tiles for the 1x1 to more channels, f32 for the other
    ((2, 5, 17, 19), 13, ROWS),  # a padded step, a partial block of 8, a tile of 3 positions
    ((1, 16, 20, 20), 40, ROWS),  # 400 positions: a partial tile of 16
])
def test_int8_pointwise_kernels_on_edge_shapes(shape, o, kernels, portable, monkeypatch):
    """x86's own pipeline gives 1x1 convolutions int8 activations (with int8
    weights and activations="int8") on few positions (the channel-lane
    integer kernel) and, on more, where they have more output than input
    channels (the integer row tiles); both match the interpreter on x86's
    graph, their epilogues (a clamp in registers, then a scale; a residual
    add) included."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    x = torch.randn(*shape) * 3
    module = hetc.compile(TwoPointwise(shape[1], o).eval(), "x86", (x,), precision="int8",
                          activations="int8")
    assert module.artifact.extra["kernels"] == kernels
    for got, want in zip(module(x.numpy()), run_graph(module.artifact.graph, [x.numpy()])):
        assert rel_err(got, want) < REL_TOL


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("shape, kw", [
    ((1, 16, 24, 24), dict(hidden=96)),  # 576 positions: 18 tiles
    ((2, 8, 17, 19), dict(hidden=36, k=5, stride=2)),  # batch 2, a partial block, stride 2
    ((1, 5, 23, 23), dict(hidden=40, pad=(1, 2, 1, 2), k=3, stride=2)),  # an asymmetric pad
])
def test_an_int8_1x1_convolution_into_a_depthwise_one(shape, kw, portable, monkeypatch):
    """An inverted residual block on a large plane with int8 weights and
    activations: the expand (int8 activations) and the depthwise
    convolution (f32) run as one kernel; the expand quantizes the graph's
    input, so its codes are the interpreter's and the result matches it."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = InvertedResidual(shape[1], **kw).eval()
    x = torch.randn(*shape)
    module = hetc.compile(model, "x86", (x,), precision="int8", activations="int8")
    kernels = module.artifact.extra["kernels"]
    assert kernels["conv2d 1x1 int8 act x int8 + depthwise f32, one kernel"] == 1, kernels
    assert rel_err(module(x.numpy()), run_graph(module.artifact.graph, [x.numpy()])[0]) < REL_TOL


def test_n_m_pointwise_weights_with_int8_activations_are_stored_densely():
    """2:4 weights with int8 activations on x86: the integer kernels store
    the zeros (the row-block kernel's transposes cost more than the skipped
    products save), and the kernels entry says so."""
    torch.manual_seed(0)
    model = InvertedResidual(24, 96).eval()
    x = torch.randn(1, 24, 14, 14)
    module = hetc.compile(model, "x86", (x,), precision="int8", sparsity="2:4",
                          activations="int8")
    assert module.artifact.extra["kernels"] == {
        "conv2d 1x1 int8 act x 2:4 as zeros, int8, channel lanes": 2,
        "conv2d f32 depthwise, 16-channel blocks": 1}
    want = run_graph(module.artifact.graph, [x.numpy()])[0]
    assert rel_err(module(x.numpy()), want) < 1e-3  # the second layer's codes: see above


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("batch, hidden", [(1, 16), (2, 48), (1, 80), (1, 112)])
def test_an_int8_projection_quantizes_blocks_of_16_channels(batch, hidden, portable,
                                                            monkeypatch):
    """The projection after a depthwise layer in blocks of 16 channels
    quantizes that layout (1, 3, 5 and 7 blocks: groups of four blocks,
    whole and partial). Its input is a computed tensor, so a code on a
    rounding tie may flip against the interpreter: 1e-3, as above."""
    if portable:
        monkeypatch.setenv("HETC_X86_PORTABLE", "1")
    torch.manual_seed(0)
    model = InvertedResidual(24, hidden).eval()
    x = torch.randn(batch, 24, 7, 7) * 3
    module = hetc.compile(model, "x86", (x,), precision="int8", activations="int8")
    assert module.artifact.extra["kernels"] == {
        "conv2d 1x1 int8 act x int8, channel lanes": 2, BLOCKED: 1}
    want = run_graph(module.artifact.graph, [x.numpy()])[0]
    assert rel_err(module(x.numpy()), want) < 1e-3


@pytest.mark.parametrize("c, o, hw, integer", [
    (48, 40, 17, True),  # 289 positions, 40 output channels: int8
    (48, 24, 17, False),  # 24: floats
    (48, 48, 72, False),  # 5184 positions: 48 is too few there
    (16, 64, 72, True),  # more output than input channels
    (96, 64, 72, True),
])
def test_x86s_rule_for_int8_projections_on_large_planes(c, o, hw, integer):
    """A 1x1 convolution on more than 256 positions with fewer output than
    input channels takes int8 activations (the integer row tiles) from 32
    output channels on, 64 on planes of more than 4096 positions; its
    input is the graph's, so it matches the interpreter either way."""
    torch.manual_seed(0)
    x = torch.randn(1, c, hw, hw)
    module = hetc.compile(nn.Conv2d(c, o, 1).eval(), "x86", (x,), precision="int8",
                          activations="int8")
    kernel = "conv2d 1x1 int8 act x int8" if integer else "conv2d f32 1x1"
    assert module.artifact.extra["kernels"] == {kernel: 1}
    assert rel_err(module(x.numpy()), run_graph(module.artifact.graph, [x.numpy()])[0]) < REL_TOL


def test_x86_keeps_float_activations_where_its_float_kernels_are_faster():
    """On a plane of more than 256 positions a projection (fewer output than
    input channels) reads more than it computes, so it keeps f32 activations,
    as do the depthwise and 3x3 convolutions (no integer kernel); the expand
    takes int8 activations inside the depthwise kernel. The report says why
    for each."""
    torch.manual_seed(0)
    model = nn.Sequential(InvertedResidual(16, 64), nn.Conv2d(16, 8, 3)).eval()
    x = torch.randn(1, 16, 17, 17)
    module = hetc.compile(model, "x86", (x,), precision="int8", activations="int8")
    assert module.artifact.extra["kernels"] == {
        "conv2d 1x1 int8 act x int8 + depthwise f32, one kernel": 1, "conv2d f32 1x1": 1,
        "conv2d f32": 1}
    why = [w for r in module.report.layers for w in r.why if w.startswith("activations")]
    assert sorted(w.split(":")[0].split(" per ")[0] for w in why) == \
        ["activations int8"] + ["activations kept"] * 3, why
