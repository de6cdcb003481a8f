"""A short seeded run of the fuzzers (`make fuzz` runs the long one): no
mutant of a .hir file, an ONNX model, an MLIR module or a saved artifact
folder may crash hetc or hang it; each gets an answer or a HetcError."""

import importlib.util

import pytest

import fuzzing

COUNTS = {"hir": 10000, "onnx": 6000, "artifacts": 1000, "mlir": 200}


@pytest.mark.parametrize("name", list(COUNTS))
def test_no_mutant_crashes_or_hangs(name):
    if name == "mlir" and importlib.util.find_spec("torch_mlir") is None:
        pytest.skip("torch-mlir's MLIR bindings are not installed (pip install --no-deps "
                    "torch-mlir)")
    counts, bugs = fuzzing.run(name, COUNTS[name], seed=20261201, jobs=2)
    assert sum(counts.values()) == COUNTS[name]
    assert not bugs, "\n".join(f"{sig}: {detail} (replay: python tests/fuzzing.py --replay "
                               f"{name}:20261201:{index})" for sig, (index, detail) in bugs.items())
    # the mutants reach past the first check: some are accepted and run
    assert counts["ok"] > COUNTS[name] // 50 and counts["refused"] > COUNTS[name] // 2
