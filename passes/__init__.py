"""Built-in passes; importing this package registers them by name."""

from . import canonicalize, cleanup, compress, search  # noqa: F401
