"""The ONNX backend node test suite through hetc (target ref).

The suite runs once per session (about a second per hundred cases per core);
the published table in docs/ must match what this run finds.
"""

import os
import re

import pytest

from hetc import conformance

MIN_PASSED = 1100  # the bar set for the ONNX frontend
DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "onnx-conformance.md")


@pytest.fixture(scope="module")
def results():
    return conformance.run_suite("ref", jobs=2)


def test_no_case_gives_a_wrong_answer_or_crashes(results):
    bad = [f"{r.status} {r.name}: {r.detail}" for r in results if r.status in ("wrong", "crash")]
    assert not bad, "\n".join(bad)


def test_enough_cases_pass(results):
    s = conformance.summary(results)
    assert s["total"] > 1800  # the whole suite was generated and run
    assert s["passed"] >= MIN_PASSED


def test_every_unsupported_case_names_what_is_missing(results):
    named = re.compile(r"\(ai\.onnx[\w.]*::\w+, opset \d+\)|ONNX element type \w+|"
                       r"has (sequence|optional|map) values|graph input '[^']+'")
    vague = [f"{r.name}: {r.detail}" for r in results
             if r.status == "unsupported" and not named.search(r.detail)]
    assert not vague, "\n".join(vague)


def test_published_table_is_current(results):
    with open(DOC) as f:
        text = f.read()
    assert f"**{conformance.summary_line(results)}**" in text, (
        "docs/onnx-conformance.md is stale: regenerate it with `make conformance`")
