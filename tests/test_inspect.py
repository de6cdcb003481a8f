"""The HTML view of a graph (hetc/driver/html_view.py, `hetc show --html`,
`hetc compile --html`): one self-contained page; what reaches it from a
model is escaped; in a headless Chromium (when installed) its script runs
and a click shows a node's details."""

import html.parser
import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import hetc
from families import bert_layer
from hetc.driver.html_view import render

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.nodes, self.rows, self.urls, self.data, self.tags = 0, 0, [], None, []
        self._in_data = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.nodes += tag == "g" and a.get("class") == "node"
        self.rows += tag == "tr"
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self._in_data = a.get("id") == "details-data"

    def handle_data(self, data):
        if self._in_data:
            self.data, self._in_data = json.loads(data), False


def _page(module, dumps=None):
    parser = _Page()
    text = render(module.graph, module.report, dumps)
    parser.feed(text)
    return text, parser


def test_the_page_of_a_compressed_encoder_layer():
    """A BERT layer at 2:4 with int8 weights: a node per op, its details as
    JSON, a table row per layer (and the header), the IR after each pass
    with a diff; nothing loaded from elsewhere."""
    dumps = io.StringIO()
    x = torch.randn(1, 16, 384)
    module = hetc.compile(bert_layer(), target="ref", example_inputs=(x,), sparsity="2:4",
                          precision="int8", print_ir_after_all=True, ir_stream=dumps)
    text, page = _page(module, dumps.getvalue())
    ops = [op for op in module.graph.ops if op.kind != "const"]
    assert page.nodes == len(ops) == len(page.data)
    assert page.rows == len(module.report.layers) + 1
    assert sum(d.get("layer", {}).get("pattern") == "2:4" for d in page.data) == 6
    assert page.urls == [] and "http" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert text.count("<details>") == len(module.report.passes) > 3
    assert "@@" in text  # a diff between two passes


def test_names_from_the_model_are_escaped():
    from hetc.ir.parser import parse
    graph = parse('graph @evil(%x: tensor<2xf32>) -> (tensor<2xf32>) {\n'
                  '  %y = relu(%x) : tensor<2xf32>\n  return %y\n}\n')
    graph.name = "</script><script>alert(1)</script><b>"
    module = hetc.compile(graph, target="ref")
    text, page = _page(module)
    assert "<script>alert(1)" not in text and "&lt;/script&gt;" in text
    assert page.tags.count("script") == 2 and "b" not in page.tags


def test_the_cli_writes_the_page(tmp_path):
    hir = os.path.join(os.path.dirname(__file__), "lit", "fold.hir")
    out = tmp_path / "view.html"
    p = subprocess.run([sys.executable, "-m", "hetc", "show", hir, "--html", str(out)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")
    p = subprocess.run([sys.executable, "-m", "hetc", "compile", hir, "-o", str(tmp_path / "a"),
                        "-q", "--print-ir-after-all", "--html", str(tmp_path / "c.html")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "IR Dump" not in p.stderr and "<details>" in (tmp_path / "c.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install chromium)")
def test_the_page_runs_in_a_headless_browser(tmp_path):
    """Chromium loads the page, its script runs to the end and a click on
    the first node fills the details panel; a screenshot shows the graph."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 4))
    module = hetc.compile(model, target="ref", example_inputs=(torch.randn(2, 16),),
                          sparsity="2:4")
    path = tmp_path / "view.html"
    path.write_text(render(module.graph, module.report))
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    dom = subprocess.run([*flags, "--dump-dom", f"file://{path}#click-first"],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-ready="yes"' in dom
    details = re.search(r'<pre id="details">(.*?)</pre>', dom, re.S).group(1)
    assert '"op": "linear"' in details.replace("&quot;", '"')
    shot = tmp_path / "view.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,600", f"file://{path}"],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 5000


def test_ir_dumps_go_to_a_file_per_pass(tmp_path):
    """--ir-dump-dir: each dump --print-ir-after-all selects in its own .hir
    file, numbered in pipeline order, nothing on stderr; each file parses."""
    from hetc.ir.parser import parse_file
    hir = os.path.join(os.path.dirname(__file__), "lit", "fold.hir")
    p = subprocess.run([sys.executable, "-m", "hetc", "opt", hir, "-p", "fold,dce",
                        "--print-ir-after-all", "--ir-dump-dir", str(tmp_path / "ir")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "IR Dump" not in p.stderr, p.stderr
    files = sorted(os.listdir(tmp_path / "ir"))
    assert files == ["001_after_fold.hir", "002_after_dce.hir"]
    for name in files:
        text = (tmp_path / "ir" / name).read_text()
        assert text.startswith(f"// -----// IR Dump After {name[10:-4]} //----- //")
        parse_file(str(tmp_path / "ir" / name))


def _model_explorer_schema():
    """Model Explorer's own dataclasses (graph_builder, node_data_builder),
    read from its installed files without running its package's __init__
    (which starts importing its web server's dependencies)."""
    import importlib
    import importlib.util
    import types
    spec = importlib.util.find_spec("model_explorer")
    if spec is None:
        pytest.skip("ai-edge-model-explorer is not installed (pip install --no-deps "
                    "ai-edge-model-explorer)")
    package = types.ModuleType("_model_explorer_schema")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["_model_explorer_schema"] = package
    return (importlib.import_module("_model_explorer_schema.graph_builder"),
            importlib.import_module("_model_explorer_schema.node_data_builder"))


def test_the_model_explorer_files_load_with_its_schema(tmp_path):
    """`hetc show --model-explorer`: the graph JSON builds Model Explorer's
    GraphCollection dataclasses field for field (an unknown or missing field
    fails), every edge joins two nodes, the layers carry the report's
    decisions; the bytes and sensitivity overlays build its GraphNodeData."""
    import dataclasses
    gb, nd = _model_explorer_schema()
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64), nn.ReLU(),
                          nn.Linear(64, 16))
    module = hetc.compile(model, target="x86", example_inputs=(torch.randn(8, 64),),
                          sparsity="auto", precision="auto", accuracy_budget=0.05)
    module.save(str(tmp_path / "art"))
    out = tmp_path / "me.json"
    p = subprocess.run([sys.executable, "-m", "hetc", "show", str(tmp_path / "art"),
                        "--model-explorer", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())

    def kv(items):
        return [gb.KeyValue(**a) for a in items]
    nodes = []
    for n in data["graphs"][0]["nodes"]:
        n = dict(n, attrs=kv(n.get("attrs", [])),
                 incomingEdges=[gb.IncomingEdge(**e) for e in n.get("incomingEdges", [])],
                 outputsMetadata=[gb.MetadataItem(id=m["id"], attrs=kv(m["attrs"]))
                                  for m in n.get("outputsMetadata", [])],
                 inputsMetadata=[gb.MetadataItem(id=m["id"], attrs=kv(m["attrs"]))
                                 for m in n.get("inputsMetadata", [])])
        if "style" in n:
            n["style"] = gb.GraphNodeStyle(**n["style"])
        nodes.append(gb.GraphNode(**n))
    collection = gb.GraphCollection(label=data["label"],
                                    graphs=[gb.Graph(id=data["graphs"][0]["id"], nodes=nodes)])
    built = dataclasses.asdict(collection)
    assert built["label"] == data["label"] and len(built["graphs"][0]["nodes"]) == len(nodes)
    ids = {n.id for n in nodes}
    assert all(e.sourceNodeId in ids for n in nodes for e in n.incomingEdges)
    layers = [n for n in nodes if any(a.key == "hetc.precision" for a in n.attrs)]
    assert len(layers) == len(module.report.layers) == 3
    assert all({a.key: a.value for a in n.attrs}["hetc.precision"] ==
               module.report.layers[i].precision for i, n in enumerate(layers))
    for field in ("bytes", "sensitivity"):
        overlay = json.loads((tmp_path / f"me.{field}.json").read_text())
        graph_data = overlay[data["graphs"][0]["id"]]
        built = nd.GraphNodeData(
            name=graph_data["name"],
            results={k: nd.NodeDataResult(**v) for k, v in graph_data["results"].items()},
            gradient=[nd.GradientItem(**g) for g in graph_data["gradient"]])
        assert set(built.results) == {n.id for n in layers}
    assert f"wrote {out}" in p.stdout
