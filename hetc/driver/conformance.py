"""The ONNX backend node test suite, run through hetc.

The `onnx` wheel ships the generators of its node tests, not their data. The
first run writes every case (model.onnx plus input/output .pb files, as in the
ONNX repository's layout) into a cache; later runs read the cache. Each case
is imported, compiled for the target and run, and its outputs are compared
with the expected ones at the case's own tolerances.

Every case ends in one of: passed; unsupported (hetc refused it with an error
naming what is missing); wrong (an answer that does not match); crash (any
other error, a bug in hetc).

onnx is imported inside the functions that use it: `import hetc` must not
load heavy optional packages.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import tempfile
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass

import numpy as np
from rich.table import Table

import hetc
from hetc.core.errors import FrontendError, TargetError, UsageError
from hetc.core.fsutil import cache_root
from hetc.frontends.onnx import NeedsFrozenInput
from hetc.frontends.onnx_tensors import to_array

CASE_TIMEOUT_S = 60
# Narrow float outputs compare within two ulps at least: the suite's own runner
# does this for bfloat16; hetc applies the same rule to float16, whose
# expected values the generators compute with numpy's float16 rounding.
_ULP_RTOL = {"bfloat16": 2 ** -6, "float16": 2 ** -9}


@dataclass
class Result:
    name: str
    op: str  # the op type the case is about
    status: str  # passed | unsupported | wrong | crash
    detail: str = ""


SUITES = {
    "onnx": "the ONNX backend node tests (one op per case, from the onnx wheel's generators)",
    "onnx-models": "whole models shipped in the onnx wheel's test data: the 'light' model zoo "
                   "graphs (opset 9, constant weights) and the PyTorch-converted graphs",
}


def suite_dir(suite="onnx") -> str:
    import onnx

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}")
    return os.path.join(cache_root(), f"{suite}-tests-{onnx.__version__}")


# -- generating the cache ------------------------------------------------------------------

def _tensor_proto(x, name):
    from onnx import TensorProto, numpy_helper

    if isinstance(x, TensorProto):
        return x
    return numpy_helper.from_array(np.asarray(x), name)


def _main_op(case, by_name):
    """The op type a case is about: its only node, or that of its unexpanded twin."""
    nodes = case.model.graph.node
    if len(nodes) == 1:
        return nodes[0].op_type
    base = re.sub(r"_expanded.*$", "", case.name)
    twin = by_name.get(base)
    if twin is not None and len(twin.model.graph.node) == 1:
        return twin.model.graph.node[0].op_type
    return nodes[0].op_type if nodes else "?"


def _write_case(root, name, op, model, data_sets, rtol=1e-3, atol=1e-7):
    """One case folder: model.onnx, test_data_set_K/{input,output}_J.pb, meta.json."""
    import onnx

    folder = os.path.join(root, name)
    os.makedirs(folder)
    onnx.save(model, os.path.join(folder, "model.onnx"))
    meta = {"name": name, "op": op, "rtol": rtol, "atol": atol, "data_sets": len(data_sets),
            "non_tensor": ""}
    for k, (inputs, outputs) in enumerate(data_sets):
        ds = os.path.join(folder, f"test_data_set_{k}")
        os.makedirs(ds)
        for kind, values in (("input", inputs), ("output", outputs)):
            for j, x in enumerate(values):
                if x is None or isinstance(x, (list, tuple, dict)):
                    meta["non_tensor"] = "sequence" if isinstance(x, (list, tuple)) else \
                        "optional" if x is None else "map"
                    continue
                with open(os.path.join(ds, f"{kind}_{j}.pb"), "wb") as f:
                    f.write(_tensor_proto(x, f"{kind}_{j}").SerializeToString())
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f)


def _node_cases(root, progress):
    from onnx.backend.test.case import node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases()
    by_name = {c.name: c for c in cases}
    for i, case in enumerate(cases):
        _write_case(root, case.name, _main_op(case, by_name), case.model, case.data_sets,
                    case.rtol, case.atol)
        if progress:
            progress(i + 1, len(cases), "generating")


def _model_cases(root, progress):
    """The onnx wheel's stored models: folders with test data sets, and the
    'light' zoo graphs, whose inputs the suite's runner makes with
    generate_dummy_data and whose expected outputs are stored beside them."""
    import onnx
    from onnx.backend.test.runner import Runner

    data = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    for category in ("pytorch-converted", "pytorch-operator", "simple"):
        for name in sorted(os.listdir(os.path.join(data, category))):
            src = os.path.join(data, category, name)
            sets = sorted(d for d in os.listdir(src) if d.startswith("test_data_set_"))
            model = onnx.load(os.path.join(src, "model.onnx"))
            data_sets = [(_read_pbs(os.path.join(src, d), "input"),
                          _read_pbs(os.path.join(src, d), "output")) for d in sets]
            _write_case(root, name, category, model, data_sets)
    light = os.path.join(data, "light")
    for fname in sorted(f for f in os.listdir(light) if f.endswith(".onnx")):
        model = onnx.load(os.path.join(light, fname))
        base = fname[:-len(".onnx")]
        init = {t.name for t in model.graph.initializer}
        model_name = base[len("light_"):]
        inputs = [Runner.generate_dummy_data(x, seed=0, name=model_name, random=False)
                  for x in model.graph.input if x.name not in init]
        outputs = _read_pbs(light, f"{base}_output")
        rtol = 2e-3 if model_name == "densenet121" else 1e-3  # the suite's own tolerances
        _write_case(root, f"test_{model_name}", "light (model zoo)", model, [(inputs, outputs)], rtol)


def _read_pbs(folder, prefix):
    """Raw TensorProtos {prefix}_0.pb, {prefix}_1.pb, ... of a folder."""
    import onnx

    out, j = [], 0
    while os.path.exists(path := os.path.join(folder, f"{prefix}_{j}.pb")):
        t = onnx.TensorProto()
        with open(path, "rb") as f:
            t.ParseFromString(f.read())
        out.append(t)
        j += 1
    return out


_GENERATORS = {"onnx": _node_cases, "onnx-models": _model_cases}


def generate(suite="onnx", progress=None) -> str:
    """Write a suite into the cache (once); returns its folder."""
    dest = suite_dir(suite)
    if os.path.exists(os.path.join(dest, ".complete")):
        return dest
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(dest), prefix=f".tmp-{suite}-")
    try:
        _GENERATORS[suite](tmp, progress)
        open(os.path.join(tmp, ".complete"), "w").close()
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def case_dirs(suite="onnx", pattern=None) -> list[str]:
    root = generate(suite)
    names = sorted(n for n in os.listdir(root) if not n.startswith("."))
    if pattern:
        rx = re.compile(pattern)
        names = [n for n in names if rx.search(n)]
    return [os.path.join(root, n) for n in names]


# -- running a case ----------------------------------------------------------------------------

def _read_tensors(folder, kind):
    return [to_array(t) for t in _read_pbs(folder, kind)]


def _compare(expected, got, rtol, atol):
    if got.shape != expected.shape:
        return f"shape {list(got.shape)} != expected {list(expected.shape)}"
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype} != expected {expected.dtype}"
    if expected.dtype.kind in "biu" or expected.dtype == np.bool_:
        bad = np.count_nonzero(got != expected)
    else:
        if expected.dtype.name in _ULP_RTOL:
            rtol = max(rtol, _ULP_RTOL[expected.dtype.name])
        e, g = expected.astype(np.float64), got.astype(np.float64)
        close = np.isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
        bad = np.count_nonzero(~close)
    if bad:
        return f"{bad} of {expected.size} values differ beyond rtol={rtol}, atol={atol}"
    return ""


def _compile_case(folder, target, inputs):
    """Compile a case for its inputs. Inputs that set shapes (a Reshape's
    target, reduction axes) are frozen to this data set's values, as a static-
    shape compiler must; the module then takes the remaining inputs."""
    import onnx

    path = os.path.join(folder, "model.onnx")
    model = onnx.load(path)
    init = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in init]
    frozen = {}
    while True:
        rest = [(n, x) for n, x in zip(names, inputs) if n not in frozen]
        try:
            module = hetc.compile(model, target=target, example_inputs=dict(rest),
                                  freeze_inputs=frozen)
            return module, [x for _, x in rest]
        except NeedsFrozenInput as e:
            if e.input_name in frozen:
                raise
            frozen[e.input_name] = inputs[names.index(e.input_name)]


def _timeout(signum, frame):
    raise TimeoutError(f"case took longer than {CASE_TIMEOUT_S}s")


def run_case(folder: str, target: str = "ref") -> Result:
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    name, op = meta["name"], meta["op"]
    if meta["non_tensor"]:
        return Result(name, op, "unsupported",
                      f"the case has {meta['non_tensor']} values; hetc compiles tensors only")
    old = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        for k in range(meta["data_sets"]):
            ds = os.path.join(folder, f"test_data_set_{k}")
            inputs, expected = _read_tensors(ds, "input"), _read_tensors(ds, "output")
            module, inputs = _compile_case(folder, target, inputs)
            got = module(*inputs)
            got = list(got) if isinstance(got, tuple) else [got]
            if len(got) != len(expected):
                return Result(name, op, "wrong", f"{len(got)} outputs, expected {len(expected)}")
            for i, (e, g) in enumerate(zip(expected, got)):
                problem = _compare(e, np.asarray(g), meta["rtol"], meta["atol"])
                if problem:
                    return Result(name, op, "wrong", f"output {i}: {problem}")
        return Result(name, op, "passed")
    except (FrontendError, TargetError, UsageError) as e:
        return Result(name, op, "unsupported", str(e).splitlines()[0])
    except Exception as e:  # anything else is a bug in hetc, reported as such
        return Result(name, op, "crash", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def run_suite(target="ref", pattern=None, jobs=None, progress=None, suite="onnx") -> list[Result]:
    """Run every case of `suite` (matching `pattern`, a regex) in `jobs` processes."""
    dirs = case_dirs(suite, pattern)
    jobs = jobs or os.cpu_count() or 1
    results = []
    if jobs == 1 or len(dirs) < 8:
        for d in dirs:
            results.append(run_case(d, target))
            if progress:
                progress(len(results), len(dirs), "running")
    else:
        for r in _in_workers(dirs, target, jobs):
            results.append(r)
            if progress:
                progress(len(results), len(dirs), "running")
    return sorted(results, key=lambda r: r.name)


def _in_workers(dirs, target, jobs):
    """Results of the cases in `jobs` worker processes. A worker that dies (a
    crash inside a native library) breaks the pool: every case not finished
    then runs again, `jobs` at a time in fresh pools, and a batch that breaks
    runs one case per pool, so the culprit is reported as a crash."""
    # forkserver, not fork: a parent that already started OpenVINO's (or
    # OpenMP's) threads would leave forked workers deadlocked
    context = mp.get_context("forkserver")

    def run(batch, workers):
        done, lost = [], []
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(run_case, d, target): d for d in batch}
            for f in as_completed(futures):
                try:
                    done.append(f.result())
                except BrokenProcessPool:
                    lost.append(futures[f])
        return done, sorted(lost)

    done, lost = run(dirs, jobs)
    yield from done
    for start in range(0, len(lost), jobs):
        batch = lost[start:start + jobs]
        done, again = run(batch, jobs)
        yield from done
        for d in again:
            alone, died = run([d], 1)
            yield from alone or [_died(d) for d in died]


def _died(folder):
    with open(os.path.join(folder, "meta.json")) as f:
        meta = json.load(f)
    return Result(meta["name"], meta["op"], "crash",
                  "the process running it died (a crash in native code)")


# -- reporting ------------------------------------------------------------------------------------

STATUSES = ("passed", "wrong", "crash", "unsupported")


def summary(results) -> dict:
    c = Counter(r.status for r in results)
    return {s: c.get(s, 0) for s in STATUSES} | {"total": len(results)}


def summary_line(results) -> str:
    s = summary(results)
    return (f"{s['passed']} passed, {s['wrong'] + s['crash']} failed "
            f"({s['wrong']} wrong, {s['crash']} crash), {s['unsupported']} unsupported "
            f"of {s['total']} cases")


def by_op(results):
    rows = defaultdict(list)
    for r in results:
        rows[r.op].append(r)
    return dict(sorted(rows.items()))


def _reason(rs):
    """The most common reason among a group's non-passing cases."""
    reasons = Counter(re.sub(r"^node (?:'[^']*'|#\d+) \((?:ai\.onnx::)?([^,]+), opset \d+\)", r"\1",
                             r.detail) for r in rs if r.status != "passed")
    return reasons.most_common(1)[0][0] if reasons else ""


def markdown(results, target, command, suite="onnx") -> str:
    title = {"onnx": "ONNX node test conformance", "onnx-models": "ONNX stored models"}[suite]
    lines = [f"# {title} (target `{target}`)", "",
             f"Generated by `{command}` from {SUITES[suite]}, onnx {_onnx_version()}; "
             f"do not edit by hand.", "",
             "Each case is imported, compiled for the target with its default pipeline and run "
             "on every data set. Outputs compare at the case's own rtol/atol; bfloat16 and "
             "float16 outputs within at least two ulps (the suite's runner does this for "
             "bfloat16, hetc also for float16). Graph inputs that set shapes (a Reshape's "
             "target, reduction axes) are frozen to the data set's values, as a static-shape "
             "compiler must (`freeze_inputs`). *wrong* is an answer that does not match, "
             "*crash* any error that is not a clear refusal, *unsupported* a refusal naming "
             "what is missing.", "",
             f"**{summary_line(results)}**", "",
             "| op type | cases | passed | wrong | crash | unsupported | why not (most common) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for op, rs in by_op(results).items():
        c = Counter(r.status for r in rs)
        reason = _reason(rs).replace("|", "\\|")
        lines.append(f"| {op} | {len(rs)} | {c['passed']} | {c['wrong']} | {c['crash']} | "
                     f"{c['unsupported']} | {reason} |")
    if suite == "onnx-models":
        lines += ["", "| case | group | status | detail |", "| --- | --- | --- | --- |"]
        lines += [f"| {r.name} | {r.op} | {r.status} | {r.detail.replace('|', chr(92) + '|')} |"
                  for r in results]
    return "\n".join(lines) + "\n"


def _onnx_version():
    import onnx

    return onnx.__version__


def render(results, console, show_cases=False, suite="onnx"):
    table = Table(title=f"{suite}: {SUITES[suite]}", title_justify="left")
    for col in ("op type" if suite == "onnx" else "group", "cases", "passed", "wrong", "crash", "unsupported", "why not (most common)"):
        table.add_column(col, justify="right" if col in STATUSES or col == "cases" else "left")
    for op, rs in by_op(results).items():
        c = Counter(r.status for r in rs)
        table.add_row(op, str(len(rs)), str(c["passed"]), str(c["wrong"]), str(c["crash"]),
                      str(c["unsupported"]), _reason(rs)[:90])
    console.print(table)
    if show_cases:
        for r in results:
            if r.status in ("wrong", "crash"):
                console.print(f"{r.status.upper()} {r.name}: {r.detail}")
    console.print(summary_line(results))


def to_json(results) -> str:
    return json.dumps([asdict(r) for r in results], indent=1)
