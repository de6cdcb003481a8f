"""Built-in passes; importing this package registers them by name."""

from . import activations, canonicalize, cleanup, compress, fuse, search, storage  # noqa: F401
