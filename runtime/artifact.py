"""What a backend produces: the final IR, generated sources, a build recipe
and a manifest; saved to and loaded from a folder."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from hetc import __version__
from hetc.errors import HetcError
from hetc.ir.graph import Graph

FORMAT = "hetc-artifact"
FORMAT_VERSION = 1
MANIFEST, IR_FILE, REPORT_FILE, SOURCES_DIR = "manifest.json", "model.hir", "report.json", "sources"


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


def read_manifest(folder: str) -> dict:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise HetcError(f"{folder}: not a folder (expected a compiled artifact from "
                        f"`hetc compile -o`)")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise HetcError(f"{folder}: no {MANIFEST}; not a hetc artifact") from None
    except json.JSONDecodeError as e:
        raise HetcError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if manifest.get("format") != FORMAT:
        raise HetcError(f"{path}: not a hetc artifact manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise HetcError(f"{path}: artifact format version {manifest.get('format_version')}, "
                        f"this hetc reads {FORMAT_VERSION}; recompile the model")
    return manifest
