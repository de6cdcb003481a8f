"""The `hetc` command line, run as a user would: exit codes, output, errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from models import examples

LIT = os.path.join(os.path.dirname(__file__), "lit")


def hetc(*args, cwd=None):
    p = subprocess.run([sys.executable, "-m", "hetc", *map(str, args)], capture_output=True,
                       text=True, cwd=cwd, env={**os.environ, "COLUMNS": "200"})
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture(scope="module")
def pt2(tmp_path_factory):
    name, model, inputs = examples()[0]
    path = tmp_path_factory.mktemp("m") / "mlp.pt2"
    torch.export.save(torch.export.export(model, inputs), path)
    with torch.no_grad():
        expected = model(*inputs).numpy()
    return path, inputs[0].numpy(), expected


def test_version_help_targets():
    assert hetc("--version").stdout.strip() == "hetc 0.1.0"
    p = hetc("--help")
    assert p.returncode == 0 and "compile" in p.stdout and "targets" in p.stdout
    p = hetc("targets")
    assert p.returncode == 0
    for name in ("ref", "x86", "amx", "cuda", "npu", "fpga"):
        assert name in p.stdout
    assert hetc().returncode == 2


def test_compile_run_show(pt2, tmp_path):
    path, x, expected = pt2
    out = tmp_path / "out"
    p = hetc("compile", path, "--target", "ref", "-o", out)
    assert p.returncode == 0, p.stderr
    assert "fc1" in p.stdout and f"wrote {out}" in p.stdout
    np.save(tmp_path / "x.npy", x)
    p = hetc("run", out, "--input", f"x={tmp_path / 'x.npy'}", "--output", tmp_path / "y.npz")
    assert p.returncode == 0, p.stderr
    assert "linear_2: [8, 10] float32" in p.stdout  # outputs go by their SSA names
    from hetc.ir.weights import WeightStore

    got = WeightStore.load(tmp_path / "y.npz")["linear_2"]
    assert float(np.linalg.norm(got - expected) / np.linalg.norm(expected)) < 1e-5
    p = hetc("show", out)
    assert p.returncode == 0 and "fc2" in p.stdout and "target ref" in p.stdout
    p = hetc("show", path, "--ir")
    assert p.returncode == 0 and "graph @mlp(%x: tensor<8x64xf32>)" in p.stdout


def test_compile_prints_ir_after_all(pt2, tmp_path):
    path, _, _ = pt2
    p = hetc("compile", path, "-o", tmp_path / "o", "--print-ir-after-all", "-q")
    assert p.returncode == 0
    assert p.stderr.count("// -----// IR Dump After") == 4


def test_opt_prints_the_result():
    p = hetc("opt", os.path.join(LIT, "cse-dce.hir"), "-p", "cse,dce")
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("relu(") == 1 and "tanh" not in p.stdout
    p = hetc("opt", os.path.join(LIT, "fold.hir"), "-p", "fold,dce", "--print-ir-before", "fold")
    assert "IR Dump Before fold" in p.stderr and "add(" in p.stderr and "add(" not in p.stdout


def test_opt_writes_a_file(tmp_path):
    out = tmp_path / "r.hir"
    p = hetc("opt", os.path.join(LIT, "fold-large.hir"), "-p", "fold{inline_elements=2},dce", "-o", out)
    assert p.returncode == 0 and out.exists() and (tmp_path / "r.npz").exists()
    assert hetc("opt", out, "-p", "dce").returncode == 0


@pytest.mark.parametrize("args, code, message", [
    (["opt", "missing.hir", "-p", "dce"], 1, "missing.hir: cannot read"),
    (["opt", os.path.join(LIT, "error-syntax.hir"), "-p", "dce"], 1,
     "error-syntax.hir:3:20: unexpected character ';'"),
    (["opt", os.path.join(LIT, "fold.hir"), "-p", "fold,nosuch"], 2, "unknown pass 'nosuch'"),
    (["compile", "nofile.pt2", "-o", "x"], 2, "nofile.pt2: no such file"),
    (["compile", os.path.join(LIT, "canonicalize-slices.hir"), "--target", "fpga", "-o", "x"], 1,
     "target fpga cannot lower"),
    (["compile", os.path.join(LIT, "fold.hir"), "--target", "tpu", "-o", "x"], 2,
     "invalid choice: 'tpu'"),
    (["run", "no-such-dir"], 1, "not a folder"),
])
def test_errors_have_exit_codes_and_no_traceback(args, code, message, tmp_path):
    p = hetc(*args, cwd=tmp_path)
    assert p.returncode == code, p.stderr
    assert message in p.stderr
    assert not os.path.exists(tmp_path / "x")  # nothing half-written


def test_run_input_errors(pt2, tmp_path):
    path, x, _ = pt2
    out = tmp_path / "o"
    assert hetc("compile", path, "-o", out, "-q").returncode == 0
    p = hetc("run", out)
    assert p.returncode == 2 and "missing --input for: x" in p.stderr
    p = hetc("run", out, "--input", "y=whatever.npy")
    assert p.returncode == 2 and "has no input 'y'" in p.stderr
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), np.float32))
    p = hetc("run", out, "--input", f"x={tmp_path / 'bad.npy'}")
    assert p.returncode == 2 and "must have shape [8, 64]" in p.stderr
