"""The one way hetc keeps a table of handlers filled by decorators: op
semantics in the interpreter, each backend's lowerings, the importers' op
tables.

    LOWER = Registry("x86 lowerings")

    @LOWER.register("relu", "gelu")
    def _unary(emitter, op): ...

A key registered twice is an error at import, so two handlers can never
silently shadow each other.
"""

from __future__ import annotations


class Registry(dict):
    """key -> handler, filled by `register(*keys)` decorators."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def register(self, *keys):
        """Decorator: the function handles each of `keys`."""
        def deco(fn):
            for key in keys:
                if key in self:
                    raise ValueError(f"{self.what}: {key!r} is registered twice "
                                     f"({self[key].__name__} and {fn.__name__})")
                self[key] = fn
            return fn
        return deco
