"""What a backend produces: the final IR, generated sources, a build recipe
and a manifest; saved to and loaded from a folder.

A saved folder may come from a stranger, so loading trusts nothing in it:
the manifest must have the shape written here (every source a plain file
name inside `sources/`), every file must have the size and SHA-256 the
manifest lists (a folder changed, damaged or caught half-way through
another process's save is reported or read again, never half-used), and
the IR and weights are parsed and verified like any model file. Nothing in
the folder is ever built or run as it is: native targets generate their
code again from model.hir.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field

from hetc.core.errors import HetcError
from hetc.core.fsutil import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_text,
    check_file_name,
    read_file,
)
from hetc.core.targets import TARGETS
from hetc.core.version import __version__
from hetc.ir.graph import Graph
from hetc.ir.parser import parse
from hetc.ir.parser import save as save_ir
from hetc.ir.weights import WeightStore

FORMAT = "hetc-artifact"
FORMAT_VERSION = 2
MANIFEST, IR_FILE, WEIGHTS_FILE, REPORT_FILE, SOURCES_DIR = \
    "manifest.json", "model.hir", "model.npz", "report.json", "sources"
_READ_ATTEMPTS = 4  # a folder replaced while being read is read again, at most this often
_MANIFEST_LIMIT = 1 << 24  # bytes


@dataclass
class Artifact:
    target: str
    graph: Graph
    sources: dict = field(default_factory=dict)  # file name -> text (bytes: a binary file)
    build: dict = field(default_factory=dict)  # compiler, flags, ...
    extra: dict = field(default_factory=dict)  # backend-specific manifest entries

    def manifest(self) -> dict:
        def sig(values):
            return [{"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype.name}
                    for v in values]
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "hetc_version": __version__,
                "target": self.target, "graph": self.graph.name,
                "inputs": sig(self.graph.inputs), "outputs": sig(self.graph.outputs),
                "sources": sorted(self.sources),
                "binary_sources": sorted(k for k, v in self.sources.items() if isinstance(v, bytes)),
                "build": self.build, "extra": self.extra}


def is_artifact(folder) -> bool:
    """Whether `folder` holds a saved artifact (of any format version): the
    only kind of non-empty folder a save may replace."""
    try:
        return json.loads(read_file(os.path.join(folder, MANIFEST), _MANIFEST_LIMIT) or b"{}"
                          ).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, HetcError):
        return False


def save(folder, artifact: Artifact, report_json: str):
    """Write `artifact` to `folder` atomically (a failed save leaves nothing)."""
    for name in artifact.sources:
        check_file_name(name, "generated source")
    with atomic_dir(folder, replaceable=is_artifact) as tmp:
        save_ir(artifact.graph, os.path.join(tmp, IR_FILE))
        atomic_write_text(os.path.join(tmp, REPORT_FILE), report_json)
        for name, content in artifact.sources.items():
            path = os.path.join(tmp, SOURCES_DIR, name)
            if isinstance(content, bytes):
                atomic_write_bytes(path, content)
            else:
                atomic_write_text(path, content)
        manifest = artifact.manifest()
        manifest["files"] = {rel: _fingerprint(read_file(os.path.join(tmp, rel)))
                             for rel in _file_list(manifest)}
        atomic_write_text(os.path.join(tmp, MANIFEST), json.dumps(manifest, indent=2))
    return folder


def load(folder) -> tuple[Artifact, dict]:
    """(artifact, report as a dict) saved in `folder`; HetcError naming the
    file and what is wrong when the folder is not one save wrote whole."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise HetcError(f"{folder}: not a folder (expected a compiled artifact from "
                        f"`hetc compile -o`)")
    previous = None
    for _ in range(_READ_ATTEMPTS):
        manifest = read_manifest(folder)
        files, changed = _read_listed(folder, manifest["files"])
        if changed is None or manifest == previous:
            break  # read whole, or damaged: the same manifest twice means no save was under way
        previous = manifest  # another process may have replaced the folder meanwhile: again
    if changed is not None:
        raise HetcError(f"{os.path.join(folder, changed)}: missing, or not what the manifest "
                        f"lists (changed or damaged since it was saved); recompile the model")
    try:
        text = files[IR_FILE].decode("utf-8")
    except UnicodeDecodeError as e:
        raise HetcError(f"{os.path.join(folder, IR_FILE)}: not UTF-8 text ({e.reason})") from None
    weights = WeightStore.load(io.BytesIO(files[WEIGHTS_FILE]), os.path.join(folder, WEIGHTS_FILE))
    graph = parse(text, os.path.join(folder, IR_FILE), weights)
    _check_signature(manifest, graph, folder)
    binary = set(manifest["binary_sources"])
    sources = {}
    for name in manifest["sources"]:
        data = files[f"{SOURCES_DIR}/{name}"]
        try:
            sources[name] = data if name in binary else data.decode("utf-8")
        except UnicodeDecodeError:
            raise HetcError(f"{folder}: source {name} is not UTF-8 text") from None
    try:
        report = json.loads(files[REPORT_FILE])
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        raise HetcError(f"{os.path.join(folder, REPORT_FILE)}: unreadable: {e}") from None
    return Artifact(manifest["target"], graph, sources, manifest["build"], manifest["extra"]), report


def _read_listed(folder, listed) -> tuple[dict, str | None]:
    """({file: bytes}, None), or (partial, the first file that is missing or
    differs from its listed size and hash)."""
    files = {}
    if os.path.islink(os.path.join(folder, SOURCES_DIR)):
        raise HetcError(f"{os.path.join(folder, SOURCES_DIR)}: a symlink; a saved folder holds "
                        f"its sources itself")
    for rel, fp in listed.items():
        path = os.path.join(folder, rel)
        try:
            data = read_file(path, limit=fp["bytes"])
        except FileNotFoundError:
            return files, rel
        except OSError as e:
            raise HetcError(f"{path}: cannot read: {e.strerror}") from None
        if data is None or _fingerprint(data) != fp:  # larger than listed, or other bytes
            return files, rel
        files[rel] = data
    return files, None


def read_manifest(folder: str) -> dict:
    """The manifest of `folder`, checked for the shape `save` writes."""
    path = os.path.join(folder, MANIFEST)
    try:
        data = read_file(path, _MANIFEST_LIMIT)
        if data is None:
            raise HetcError(f"{path}: larger than any manifest hetc writes")
        manifest = json.loads(data)
    except FileNotFoundError:
        raise HetcError(f"{folder}: no {MANIFEST}; not a hetc artifact") from None
    except OSError as e:
        raise HetcError(f"{path}: cannot read: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise HetcError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except ValueError as e:  # not UTF-8
        raise HetcError(f"{path}: not a JSON text ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise HetcError(f"{path}: not a hetc artifact manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise HetcError(f"{path}: artifact format version {str(version)[:20]}, this hetc reads "
                        f"{FORMAT_VERSION}; recompile the model")
    problem = _manifest_problem(manifest)
    if problem:
        raise HetcError(f"{path}: damaged manifest: {problem}")
    return manifest


def _manifest_problem(m) -> str | None:
    kinds = {"target": str, "graph": str, "inputs": list, "outputs": list, "sources": list,
             "binary_sources": list, "build": dict, "extra": dict, "files": dict}
    for key, kind in kinds.items():
        if not isinstance(m.get(key), kind):
            return f"'{key}' must be a {kind.__name__}"
    if m["target"] not in TARGETS:
        return f"unknown target {m['target'][:40]!r}"
    try:
        names = [check_file_name(n, "source") for n in m["sources"]]
    except HetcError as e:
        return str(e)
    if len(set(names)) != len(names) or not all(isinstance(n, str) for n in m["binary_sources"]) \
            or not set(m["binary_sources"]) <= set(names):
        return "'sources' repeats a name, or 'binary_sources' names one it lacks"
    if set(m["files"]) != set(_file_list(m)):
        return "'files' does not list exactly the model, its weights, report and sources"
    for rel, fp in m["files"].items():
        if not (isinstance(fp, dict) and isinstance(fp.get("bytes"), int)
                and isinstance(fp.get("sha256"), str) and len(fp) == 2):
            return f"'files' entry {rel!r} must be {{bytes, sha256}}"
    for key in ("inputs", "outputs"):
        for v in m[key]:
            if not (isinstance(v, dict) and isinstance(v.get("name"), str)
                    and isinstance(v.get("shape"), list) and isinstance(v.get("dtype"), str)):
                return f"'{key}' entries must be {{name, shape, dtype}}"
    return None


def _check_signature(manifest, graph, folder):
    saved = Artifact(manifest["target"], graph).manifest()
    for key in ("graph", "inputs", "outputs"):
        if manifest[key] != saved[key]:
            raise HetcError(f"{os.path.join(folder, MANIFEST)}: its '{key}' does not match "
                            f"{IR_FILE}; the folder was changed since it was saved")


def _file_list(manifest) -> list[str]:
    return [IR_FILE, WEIGHTS_FILE, REPORT_FILE] + [f"{SOURCES_DIR}/{n}" for n in manifest["sources"]]


def _fingerprint(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
