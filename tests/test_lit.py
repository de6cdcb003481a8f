"""Text in -> pipeline -> FileCheck, one .hir file per case under tests/lit/.

Header comments of a case:
  // PIPELINE: p1,p2{opt=v}     passes to run (none: parse and print only)
  // WEIGHT name = dense<...> : tensor<...>   an array of the weight store
  // ERROR: text                 reading or running must fail with this text
  // CHECK...: ...               FileCheck directives on the printed result
Every successful case also checks that its output parses back to an equal graph.
"""

import glob
import os
import re

import pytest

from filecheck import filecheck
from hetc.core.errors import HetcError
from hetc.ir import WeightStore, aux_key, parse, print_graph
from hetc.ir.weights import AUX_KINDS
from hetc.passes.pipeline import PassManager

LIT_DIR = os.path.join(os.path.dirname(__file__), "lit")
CASES = sorted(glob.glob(os.path.join(LIT_DIR, "*.hir")))


def _header(text, key):
    return [m.group(1).strip() for m in re.finditer(rf"^// {key}:? (.*)$", text, re.M)]


def _weights(text):
    store = WeightStore()
    for spec in _header(text, "WEIGHT"):
        name, _, literal = spec.partition(" = ")
        value, _, ty = literal.rpartition(" : ")
        g = parse(f"graph @w() -> ({ty}) {{\n  %0 = const {value} : {ty}\n  return %0\n}}")
        base, _, kind = name.strip().rpartition(":")  # NAME:scale: a parameter array of NAME
        key = aux_key(base, kind) if kind in AUX_KINDS else name.strip()
        store[key] = g.ops[0].attrs["value"]
    return store


def run_case(path):
    with open(path) as f:
        text = f.read()
    graph = parse(text, os.path.basename(path), _weights(text))
    for pipeline in _header(text, "PIPELINE"):
        graph = PassManager.from_text(pipeline).run(graph)
    return graph, text


@pytest.mark.parametrize("path", CASES, ids=[os.path.basename(p)[:-4] for p in CASES])
def test_lit(path):
    with open(path) as f:
        text = f.read()
    errors = _header(text, "ERROR")
    if errors:
        with pytest.raises(HetcError) as info:
            run_case(path)
        assert errors[0] in str(info.value)
        return
    graph, _ = run_case(path)
    out = print_graph(graph)
    filecheck(out, text)
    assert parse(out, weights=graph.weights) == graph


def test_there_are_cases():
    assert len(CASES) >= 8
