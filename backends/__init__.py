"""Backends: one module (or package) per target family, each with
`lower(graph, target) -> Artifact`."""

import importlib

from hetc.errors import TargetError


def get_backend(target):
    """The backend module for `target`, or a clear error if it is not built."""
    if target.backend is None:
        avail = target.availability()
        raise TargetError(
            f"target '{target.name}' ({target.description}) is defined, but its backend "
            f"({target.emits}) is not built yet in this hetc; use target='ref' for now. "
            f"Host: {avail.detail}.")
    return importlib.import_module(f"hetc.backends.{target.backend}")
