"""Keep docs/ true to the code: the examples in them run, the op table is complete."""

import os
import re

from filecheck import filecheck
from hetc.ir import parse, print_graph
from hetc.ir.ops import OPS
from hetc.passes.pipeline import PASSES, PassManager, parse_pipeline

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def _read(name):
    with open(os.path.join(DOCS, name)) as f:
        return f.read()


def _blocks(text, lang):
    """Contents of the fenced code blocks tagged `lang` ("" for untagged)."""
    blocks, current, tag = [], None, None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, tag = [], line[3:].strip()
            else:
                if tag == lang:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_every_op_is_in_the_ir_doc_table():
    text = _read("ir-text.md")
    documented = set(re.findall(r"`([a-z_0-9]+)`", "\n".join(
        line.split("|")[1] for line in text.splitlines() if line.startswith("| `"))))
    assert set(OPS) == documented


def test_ir_doc_example_parses_and_prints_back():
    example = _blocks(_read("ir-text.md"), "")[0]
    import ml_dtypes
    import numpy as np

    from hetc.ir import WeightStore, aux_key

    weights = WeightStore({
        "fc1.weight": np.tile(np.array([1, 0, -2, 0], ml_dtypes.int4), (3072, 192)),
        aux_key("fc1.weight", "scale"): np.ones((3072, 6), np.float16),
        "fc1.bias": np.zeros(3072, np.float32),
    })
    g = parse(example, "ir-text.md", weights)
    assert print_graph(g) == example


def test_writing_a_pass_example_runs(monkeypatch):
    text = _read("writing-a-pass.md")
    code = _blocks(text, "python")[0]
    parse_pipeline("dce")  # built-in passes registered before the registry is swapped
    monkeypatch.setattr("hetc.passes.pipeline.PASSES", dict(PASSES))  # do not leak the example pass
    import hetc.passes.pipeline

    namespace = {}
    exec(compile(code, "writing-a-pass.md", "exec"), namespace)
    case = _blocks(text, "")[0]
    pipeline = re.search(r"// PIPELINE: (.*)", case).group(1)
    out = print_graph(PassManager.from_text(pipeline).run(parse(case)))
    filecheck(out, case)
    assert "drop-double-relu" in hetc.passes.pipeline.PASSES


def test_backend_options_table_matches_the_registry():
    from hetc.backends import option_fields

    text = _read("writing-a-backend.md").split("## Options of the built backends")[1]
    rows = {line.split("|")[1].strip(" `"): line.split("|")[2].strip()
            for line in text.splitlines() if line.startswith("| `")}
    assert rows == {name: ", ".join(targets) for name, (_, targets) in option_fields().items()}
