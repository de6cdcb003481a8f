"""The ONNX conformance suites through hetc (target ref): the backend node
tests, and the whole models stored in the onnx wheel; and the node tests on
target npu (OpenVINO's CPU plugin: half a minute). Each suite runs once per
session; the published tables in docs/ must match what the run finds."""

import os
import re

import pytest

from hetc.driver import conformance

MIN_NODE_PASSED = 1100  # the bar set for the ONNX frontend
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
MIN_NPU_PASSED = 1100  # the ops target npu lowers to OpenVINO
DOC = {("onnx", "ref"): "onnx-conformance.md", ("onnx-models", "ref"): "onnx-models.md",
       ("onnx", "npu"): "onnx-conformance-npu.md"}


@pytest.fixture(scope="module", params=list(DOC), ids=lambda p: "-".join(p))
def suite(request):
    name, target = request.param
    return request.param, conformance.run_suite(target, jobs=2, suite=name)


def test_no_case_gives_a_wrong_answer_or_crashes(suite):
    _, results = suite
    bad = [f"{r.status} {r.name}: {r.detail}" for r in results if r.status in ("wrong", "crash")]
    assert not bad, "\n".join(bad)


def test_enough_cases_pass(suite):
    (name, target), results = suite
    s = conformance.summary(results)
    if name == "onnx":
        assert s["total"] > 1800  # the whole suite was generated and run
        assert s["passed"] >= (MIN_NODE_PASSED if target == "ref" else MIN_NPU_PASSED)
    else:  # every model-zoo graph (ResNet-50, Inception, DenseNet, VGG, ...) runs
        zoo = [r for r in results if r.op.startswith("light")]
        assert len(zoo) == 9 and all(r.status == "passed" for r in zoo), zoo


def test_every_unsupported_case_names_what_is_missing(suite):
    _, results = suite
    # the frontend's refusals name the ONNX op; a backend's the IR op or dtype
    named = re.compile(r"\(ai\.onnx[\w.]*::\w+, opset \d+\)|ONNX element type \w+|"
                       r"has (sequence|optional|map) values|graph input '[^']+'|"
                       r"target \w+ cannot lower graph '[^']+': (op #\d+ \w+|%\S+: \w+ values|"
                       r"constant %\S+)|OpenVINO rejected \w+ %")
    vague = [f"{r.name}: {r.detail}" for r in results
             if r.status == "unsupported" and not named.search(r.detail)]
    assert not vague, "\n".join(vague)


def test_published_table_is_current(suite):
    key, results = suite
    with open(os.path.join(DOCS, DOC[key])) as f:
        text = f.read()
    assert f"**{conformance.summary_line(results)}**" in text, (
        f"docs/{DOC[key]} is stale: regenerate it with `make conformance`")
