"""Models and folders from strangers: nothing in them runs, nothing outside
their folder is read or written, every bad input is a clear HetcError, and
modules answer right from several threads at once (docs/reliability.md)."""

import json
import os
import pickle
import re
import stat
import subprocess
import sys
import threading
import zipfile

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import hetc
from hetc.backends.c.text import comment, identifier, string_literal
from hetc.core.errors import FrontendError, HetcError, UsageError
from hetc.ir import Graph, TensorType, WeightStore, dtypes, parse
from models import examples

# A name that, pasted raw into a C comment or string, ends it and defines a
# function the loader runs; its marker file proves it ran.
MARKER = "/tmp/hetc-test-injected-{pid}"
PAYLOAD = ('x */\n#include <stdio.h>\n__attribute__((constructor)) static void injected(void) '
           '{ FILE *f = fopen("' + MARKER + '", "w"); if (f) fclose(f); }\n/* "\\ \'')
HOSTILE = [PAYLOAD, 'q"u\'o`te', "back\\slash\\", "new\nline\r\n", "#define x 1", "nul\x00byte",
           "ünï 名前 \u202e", "*/ */ /* //", "??/ trigraph", "a" * 100_000]


def marker():
    return MARKER.replace("{pid}", str(os.getpid()))


def payload():
    return PAYLOAD.replace("{pid}", str(os.getpid()))


def names():
    return [payload()] + HOSTILE[1:]


# -- what reaches generated code ----------------------------------------------------------------

def test_text_helpers_keep_hostile_names_inert(tmp_path):
    """Every hostile name, as a comment, a string literal and an identifier,
    compiles to a C file whose only function returns the strings' lengths."""
    lines = ["#include <string.h>"]
    for i, name in enumerate(names()):
        lines += [comment(name), f"static const char s{i}[] = {string_literal(name)};",
                  f"static int {identifier(name)}_{i} = {i};"]
    lines.append("long total(void) { return " + " + ".join(
        f"(long)strlen(s{i}) + {identifier(n)}_{i}" for i, n in enumerate(names())) + "; }")
    src = tmp_path / "t.c"
    src.write_text("\n".join(lines))
    subprocess.run(["gcc", "-shared", "-fPIC", "-Werror", "-o", tmp_path / "t.so", src], check=True)
    import ctypes

    lib = ctypes.CDLL(str(tmp_path / "t.so"))
    lib.total.restype = ctypes.c_long
    want = sum(len(n.encode().split(b"\0")[0]) + i for i, n in enumerate(names()))
    assert lib.total() == want
    assert not os.path.exists(marker())
    assert all(len(comment(n)) < 120 for n in names())
    assert identifier("a b") != identifier("a_b")  # mangled names stay distinct


def _hir(graph_name, weight_name):
    return (f"graph @{json.dumps(graph_name)}(%x: tensor<4xf32>) -> (tensor<4xf32>) {{\n"
            f"  %w = const @{json.dumps(weight_name)} : tensor<4xf32>\n"
            f"  %0 = add(%x, %w) : tensor<4xf32>\n  %1 = relu(%0) : tensor<4xf32>\n"
            f"  return %1\n}}\n")


def _onnx(name):
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), name)
    g = helper.make_graph([helper.make_node("Add", [name + "in", name], [name + "out"], name=name),
                           helper.make_node("Relu", [name + "out"], ["y"], name=name + "2")],
                          name, [helper.make_tensor_value_info(name + "in", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


class Buffers(torch.nn.Module):
    def __init__(self, name):
        super().__init__()
        self.register_buffer(name, torch.arange(4, dtype=torch.float32))
        self.key = name

    def forward(self, x):
        return torch.relu(x + getattr(self, self.key))


class InPlaceBuffers(Buffers):
    def forward(self, x):
        y = x + 0
        y += getattr(self, self.key)  # an in-place op: the importer functionalizes plain names
        return torch.relu(y)


def test_hostile_names_never_reach_torchs_code_generation():
    """Functionalizing in-place ops regenerates Python from the graph: with
    a hostile buffer name it is skipped, and the in-place op is refused by
    name (no code runs); with a plain name the model compiles."""
    x = torch.zeros(4)
    for name in names():
        torch_name = name.replace(".", "_") or "b"
        if "\x00" in torch_name:
            continue
        try:
            module = hetc.compile(InPlaceBuffers(torch_name), example_inputs=(x,))
        except FrontendError as e:
            assert "aten.add_" in str(e), str(e)
            continue
        np.testing.assert_allclose(np.asarray(module(x)), np.arange(4, dtype=np.float32))
    assert not os.path.exists(marker())
    module = hetc.compile(InPlaceBuffers("plain_name"), example_inputs=(x,))
    np.testing.assert_allclose(np.asarray(module(x)), np.arange(4, dtype=np.float32))


def _frontends(name, tmp_path):
    """(model, example inputs) of one hostile name through each frontend."""
    hir = tmp_path / "m.hir"
    g = parse(_hir(name, name), weights=WeightStore({name: np.arange(4, dtype=np.float32)}))
    from hetc.ir.parser import save

    save(g, str(hir))
    out = [(str(hir), None), (_onnx(name.replace("\x00", "")), None)]  # protobuf strings hold no NUL
    torch_name = name.replace(".", "_") or "b"
    if "\x00" not in torch_name:
        out.append((Buffers(torch_name), (torch.zeros(4),)))
    return out


@pytest.mark.parametrize("target, options", [("x86", {}), ("amx", {"emulate": True}),
                                             ("npu", {})], ids=["x86", "amx", "npu"])
def test_hostile_names_through_every_frontend_and_target(target, options, tmp_path):
    x = np.array([-3.0, -0.5, 0.5, 2.0], np.float32)
    want = np.maximum(x + np.arange(4, dtype=np.float32), 0)
    for name in names():
        for model, inputs in _frontends(name, tmp_path):
            try:
                module = hetc.compile(model, target=target, example_inputs=inputs, **options)
            except FrontendError as e:  # an importer may refuse a name, clearly
                assert "name" in str(e)
                continue
            got = module(torch.from_numpy(x) if inputs else x)
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6)
            module.save(tmp_path / "saved")
            again = hetc.load(tmp_path / "saved")  # x86 and amx rebuild from model.hir here
            np.testing.assert_allclose(np.asarray(again(x)), want, rtol=1e-6)
    assert not os.path.exists(marker())


def test_a_tampered_saved_hir_cannot_inject_code(tmp_path):
    """The issue's exploit: a saved x86 module whose model.hir was rewritten
    (and its manifest fixed up) so its graph name carries a constructor."""
    name, model, inputs = examples()[0]
    folder = tmp_path / "m"
    hetc.compile(model, target="x86", example_inputs=inputs).save(folder)
    text = (folder / "model.hir").read_text()
    text = re.sub(r"^graph @[^(]+", lambda m: "graph @" + json.dumps(payload()), text, count=1)
    assert "constructor" in text
    (folder / "model.hir").write_text(text)
    manifest = json.loads((folder / "manifest.json").read_text())
    from hetc.runtime.artifact import _fingerprint

    manifest["graph"] = payload()
    manifest["files"]["model.hir"] = _fingerprint(text.encode())
    (folder / "manifest.json").write_text(json.dumps(manifest))
    module = hetc.load(folder)
    module(*inputs)
    assert not os.path.exists(marker())


# -- saved folders ---------------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    name, model, inputs = examples()[0]
    folder = tmp_path / "saved"
    hetc.compile(model, target="npu", example_inputs=inputs).save(folder)
    return folder, inputs


def _edit_manifest(folder, **changes):
    m = json.loads((folder / "manifest.json").read_text())
    m.update(changes)
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("bad", ["../../outside.txt", "/etc/passwd", "sub/x", "..", ""])
def test_manifest_source_names_must_stay_in_the_folder(saved, bad, tmp_path):
    folder, _ = saved
    (tmp_path / "outside.txt").write_text("secret")
    m = json.loads((folder / "manifest.json").read_text())
    m["sources"].append(bad)
    m["files"][f"sources/{bad}"] = {"bytes": 6, "sha256": "0" * 64}
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(HetcError, match="not a plain file name inside the folder"):
        hetc.load(folder)


def test_save_never_writes_outside_its_folder(saved, tmp_path):
    folder, _ = saved
    module = hetc.load(folder)
    module.artifact.sources["../escaped.txt"] = "x"
    with pytest.raises(HetcError, match="not a plain file name"):
        module.save(tmp_path / "copy")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "copy").exists()


def test_tampered_folders_are_clear_errors(saved, tmp_path):
    folder, inputs = saved
    import shutil

    def fresh():
        d = tmp_path / "t"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(folder, d)
        return d

    cases = {
        "truncated npz": lambda d: (d / "model.npz").write_bytes((d / "model.npz").read_bytes()[:50]),
        "garbage hir": lambda d: (d / "model.hir").write_text("graph @x(%"),
        "damaged bin": lambda d: (d / "sources" / "model.bin").write_bytes(b"\0" * 10),
        "damaged xml": lambda d: (d / "sources" / "model.xml").write_text("<net>"),
        "manifest list": lambda d: (d / "manifest.json").write_text("[1, 2]"),
        "manifest keys": lambda d: _edit_manifest(d, files=None),
        "symlinked hir": lambda d: ((d / "model.hir").unlink(),
                                    (d / "model.hir").symlink_to("/dev/zero")),
    }
    for what, damage in cases.items():
        d = fresh()
        damage(d)
        with pytest.raises(HetcError) as e:
            hetc.load(d)(*inputs)
        assert str(d) in str(e.value), what


def test_output_folder_is_replaced_only_when_it_holds_an_artifact(tmp_path):
    name, model, inputs = examples()[0]
    module = hetc.compile(model, example_inputs=inputs)
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    with pytest.raises(HetcError, match="other files in it"):
        module.save(project)
    assert (project / "notes.txt").read_text() == "mine"
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", os.path.join(
        os.path.dirname(__file__), "lit", "fold.hir"), "-o", "."], cwd=project,
        capture_output=True, text=True)
    assert p.returncode == 1 and "other files in it" in p.stderr
    assert sorted(os.listdir(project)) == ["notes.txt"]
    out = tmp_path / "out"
    module.save(out)
    module.save(out)  # an artifact may be replaced
    old = os.umask(0o022)
    try:
        module.save(out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "model.hir").st_mode) == 0o644


# -- model files ------------------------------------------------------------------------------

def _pt2(tmp_path, edit):
    """A saved torch.export program with one archive entry rewritten."""
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x)

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(M(), (torch.randn(2, 4),)), good)
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for n in zin.namelist():
            data = edit(n, zin.read(n))
            if data is not None:
                zout.writestr(n, data)
        if edit("extra", None) is not None:
            zout.writestr(zin.namelist()[0].split("/")[0] + "/data/aotinductor/model/x.so", b"ELF")
    return good, bad


class _Evil:
    def __reduce__(self):
        return (open, (marker(), "w"))


def _pickled_weight(n, d):
    if n is None or d is None:
        return None
    if n.endswith("model_weights_config.json"):
        c = json.loads(d)
        c["config"]["fc.weight"]["use_pickle"] = True
        return json.dumps(c)
    return pickle.dumps(_Evil()) if n.endswith("weights/weight_0") else d


def _pickled_inputs(n, d):
    if n is None or d is None:
        return None
    return pickle.dumps(_Evil()) if n.endswith("sample_inputs/model.pt") else d


def _aoti(n, d):
    return b"" if n == "extra" else d


@pytest.mark.parametrize("edit, message", [
    (_pickled_weight, "stored as a pickle"), (_pickled_inputs, "weights_only=True"),
    (_aoti, "compiled native code")], ids=["pickled weight", "pickled inputs", "aoti"])
def test_pt2_files_load_without_running_pickles(edit, message, tmp_path):
    good, bad = _pt2(tmp_path, edit)
    hetc.compile(str(good))
    with pytest.raises(FrontendError, match=message):
        hetc.compile(str(bad))
    assert not os.path.exists(marker())


def _external(tmp_path, location, offset=None, length=None):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            e = w.external_data.add()
            e.key, e.value = key, str(value)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [w])
    path = tmp_path / "ext" / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


@pytest.mark.parametrize("location, offset, length, message", [
    ("missing.bin", None, None, "is missing"),
    ("../outside.bin", None, None, "without '..'"),
    ("/etc/passwd", None, None, "relative to the model's folder"),
    ("link.bin", None, None, "leads outside the model's folder"),
    ("w.bin", 0, 1000, "asks for bytes 0..1000"),
    ("w.bin", 100, 8, "asks for bytes 100..108"),
    ("w.bin", "x", None, "not integers"),
    ("fifo", None, None, "not a regular file"),
])
def test_onnx_external_data_stays_in_the_model_folder(tmp_path, location, offset, length, message):
    (tmp_path / "ext").mkdir()
    np.ones(16, np.float32).tofile(tmp_path / "ext" / "w.bin")
    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    os.symlink(tmp_path / "outside.bin", tmp_path / "ext" / "link.bin")
    os.mkfifo(tmp_path / "ext" / "fifo")
    good = hetc.compile(_external(tmp_path, "w.bin"))
    np.testing.assert_array_equal(good(np.ones((2, 4), np.float32)), np.full((2, 4), 4, np.float32))
    with pytest.raises(FrontendError, match=message):
        hetc.compile(_external(tmp_path, location, offset, length))


def _onnx_model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def test_malformed_onnx_models_are_clear_errors():
    x, y = _vi("x", [2, 3]), _vi("y", [2, 3])
    empty = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[2, 3])
    cases = {
        "an initializer without data": (
            _onnx_model([helper.make_node("Add", ["x", "W"], ["y"])], [x], [y], [empty]),
            "does not fit its type"),
        "a required input omitted": (
            _onnx_model([helper.make_node("Add", ["x", ""], ["y"])], [x], [y]),
            "input 1 .* is required"),
        "Cast without to": (_onnx_model([helper.make_node("Cast", ["x"], ["y"])], [x], [y]),
                            "attribute 'to' is required"),
        "Reshape with 3 inputs": (
            _onnx_model([helper.make_node("Reshape", ["x", "s", "x"], ["y"])], [x], [y],
                        [numpy_helper.from_array(np.array([3, 2]), "s")]), "takes 2 inputs"),
        "Expand with a float shape": (
            _onnx_model([helper.make_node("Expand", ["x", "s"], ["y"])], [x], [y],
                        [numpy_helper.from_array(np.array([2.0, 3.0], np.float32), "s")]),
            "Expand|shape"),
        "ReduceMean with an axis twice": (
            _onnx_model([helper.make_node("ReduceMean", ["x", "a"], ["y"])], [x], [_vi("y", [2])],
                        [numpy_helper.from_array(np.array([1, -1]), "a")], opset=18),
            "name an axis twice"),
    }
    for what, (model, message) in cases.items():
        with pytest.raises(HetcError, match=message):
            hetc.compile(model)


def test_an_onnx_name_that_is_not_utf8(tmp_path):
    model = _onnx_model([helper.make_node("Relu", ["x"], ["y"], name="NODENAME")],
                        [_vi("x", [2])], [_vi("y", [2])])
    data = model.SerializeToString().replace(b"NODENAME", b"\xff\xfeODENAME")
    (tmp_path / "m.onnx").write_bytes(data)
    with pytest.raises(FrontendError, match="not UTF-8|not a readable ONNX model"):
        hetc.compile(str(tmp_path / "m.onnx"))


@pytest.mark.parametrize("text, message", [
    ("graph @g(%x: tensor<4xfx32>) -> (tensor<4xf32>) {\n  return %x\n}", "unknown dtype 'fx32'"),
    ("graph @g(%x: tensor<1x1x4x4xf32>, %w: tensor<1x1x2x2xf32>) -> (tensor<1x1x3x3xf32>) {\n"
     "  %0 = conv2d(%x, %w) {stride = []} : tensor<1x1x3x3xf32>\n  return %0\n}",
     "stride must be two positive integers"),
    ('graph @"a\x01\\q"(%x: tensor<4xf32>) -> (tensor<4xf32>) {\n  return %x\n}', "bad string"),
])
def test_hir_inputs_fuzzing_found(text, message):
    with pytest.raises(HetcError, match=message):
        parse(text)


# -- weights under names hetc uses itself --------------------------------------------------------

@pytest.mark.parametrize("name", ["W:scale", "W:zero", "__hetc_dtypes__", "__hetc_store__",
                                  "__hetc_aux0", "a" * 3000])
def test_weight_names_never_collide_with_hetc_keys(name, tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 64)).astype(np.float32)
    s = rng.standard_normal(16).astype(np.float32)
    model = _onnx_model([helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
                         helper.make_node("Add", ["h", name], ["y"])], [_vi("x", [2, 64])],
                        [_vi("y", [2, 16])], [numpy_helper.from_array(w, "W"),
                                              numpy_helper.from_array(s, name)])
    x = rng.standard_normal((2, 64)).astype(np.float32)
    module = hetc.compile(model, precision="int8")
    want = x @ w.T + s
    assert np.abs(module(x) - want).max() < 0.3  # int8 rounding, not s overwritten by scales
    module.save(tmp_path / "m")
    np.testing.assert_array_equal(hetc.load(tmp_path / "m")(x), module(x))


# -- threads ----------------------------------------------------------------------------------

@pytest.mark.parametrize("target, options", [
    ("ref", {}), ("x86", {}), ("x86", {"precision": "int4", "activations": "int8"}),
    ("amx", {"emulate": True, "precision": "int8", "activations": "int8"}), ("npu", {}),
    ("cuda", {"emulate": True})],
    ids=["ref", "x86", "x86-int4", "amx", "npu", "cuda"])
def test_a_module_called_from_several_threads_answers_each_right(target, options):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(128, 256), torch.nn.GELU(),
                                torch.nn.Linear(256, 64)).eval()
    module = hetc.compile(model, target=target, example_inputs=(torch.randn(4, 128),), **options)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((4, 128)).astype(np.float32) for _ in range(16)]
    want = [module(x) for x in xs]
    wrong = []

    def work(k):
        for i in range(60):
            j = (i * 7 + k) % len(xs)
            if not np.array_equal(module(xs[j]), want[j]):
                wrong.append(j)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_concurrent_save_and_load_never_fail(tmp_path):
    """One process saves over a folder again and again while another loads
    it: every load gets a whole artifact."""
    name, model, inputs = examples()[0]
    folder = tmp_path / "m"
    module = hetc.compile(model, example_inputs=inputs)
    module.save(folder)
    writer = subprocess.Popen([sys.executable, "-c", (
        "import hetc, sys\n"
        f"m = hetc.load({str(folder)!r})\n"
        "for _ in range(150): m.save(sys.argv[1])\n"), str(folder)])
    failures, loads = [], 0
    try:
        while writer.poll() is None:
            try:
                hetc.load(folder)
                loads += 1
            except HetcError as e:
                failures.append(str(e))
    finally:
        writer.wait()
    assert writer.returncode == 0 and loads > 20 and not failures, failures[:3]


def test_concurrent_builds_of_one_model_share_the_cache(tmp_path):
    code = ("import hetc, torch\nfrom models import examples\n"
            "name, model, inputs = examples()[0]\n"
            "hetc.compile(model, target='x86', example_inputs=inputs)(*inputs)\n")
    env = {**os.environ, "HETC_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "examples"),
                                          os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
             for _ in range(3)]
    results = [(p.wait(), p.stderr.read().decode()) for p in procs]
    assert all(code == 0 for code, _ in results), results
    entries = [e for e in os.listdir(tmp_path / "cache" / "builds") if not e.startswith(".")]
    # one model and the kernel library it links (built once too)
    assert len(entries) == 2 and not [e for e in os.listdir(tmp_path / "cache" / "builds")
                                      if e.startswith(".tmp")]


# -- what users meet ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["ref", "x86", "npu"])
def test_two_compiles_save_identical_folders(target, tmp_path):
    name, model, inputs = examples()[2]
    for k in range(2):
        hetc.compile(model, target=target, example_inputs=inputs, precision="int8").save(
            tmp_path / f"m{k}")
    files = sorted(os.path.relpath(os.path.join(r, f), tmp_path / "m0")
                   for r, _, fs in os.walk(tmp_path / "m0") for f in fs)
    assert "report.json" in files and "model.npz" in files
    for f in files:
        assert (tmp_path / "m0" / f).read_bytes() == (tmp_path / "m1" / f).read_bytes(), f


def test_compile_leaves_the_models_training_mode_alone():
    name, model, inputs = examples()[1]
    model.train()
    next(model.children()).eval()  # mixed modes come back as they were
    modes = [m.training for m in model.modules()]
    assert len(set(modes)) == 2
    hetc.compile(model, example_inputs=inputs)
    assert [m.training for m in model.modules()] == modes


def test_wrong_example_shapes_are_one_line(capfd):
    name, model, inputs = examples()[0]
    with pytest.raises(FrontendError) as e:
        hetc.compile(model, example_inputs=(torch.randn(8, 65),))
    assert "example inputs of shapes [8, 65]" in str(e.value) and e.value.__cause__ is None
    assert "Traceback" not in capfd.readouterr().err


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hetc", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_debug_after_the_command_and_clear_input_errors(tmp_path):
    hir = os.path.join(os.path.dirname(__file__), "lit", "fold.hir")
    p = _cli("compile", hir, "-o", tmp_path / "o", "--debug", "-q")
    assert p.returncode == 0, p.stderr
    (tmp_path / "x.txt").write_text("1 2 3")
    p = _cli("run", tmp_path / "o", "--input", f"x={tmp_path / 'x.txt'}")
    assert p.returncode == 2 and "is not a .npy file" in p.stderr
    p = _cli("show", tmp_path / "o")
    assert p.returncode == 0
    (tmp_path / "bad.hir").write_text('graph @"\x1b[2J"(%x: tensor<2xfx32>) -> () {}')
    p = _cli("compile", tmp_path / "bad.hir", "-o", tmp_path / "b")
    assert p.returncode == 1 and "\x1b" not in p.stderr and "Traceback" not in p.stderr


def test_cache_show_and_clean(tmp_path):
    env = {**os.environ, "HETC_CACHE": str(tmp_path / "c")}
    (tmp_path / "c" / "x86" / "k").mkdir(parents=True)
    (tmp_path / "c" / "x86" / "k" / "model.so").write_bytes(b"\0" * 1000)
    p = subprocess.run([sys.executable, "-m", "hetc", "cache"], capture_output=True, text=True,
                       env=env)
    assert p.returncode == 0 and "x86: 1 entries, 0.0 MB" in p.stdout
    p = subprocess.run([sys.executable, "-m", "hetc", "cache", "clean"], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0 and not (tmp_path / "c").exists()


def test_running_out_of_memory_is_a_hetc_error():
    g = Graph("big")
    x = g.add_input("x", TensorType((1,), dtypes.f32))
    big = g.add("expand", [x], {"shape": [1 << 40]})
    g.outputs = [g.add("add", [big, big])]
    with pytest.raises(HetcError, match="not enough memory"):
        hetc.compile(g)(np.ones(1, np.float32))


def test_usage_errors_are_usage_errors():
    name, model, inputs = examples()[0]
    with pytest.raises(UsageError):
        hetc.compile(model, example_inputs=inputs, precision={"nolayer": "int8"})
