"""Built-in passes; importing this package registers them by name."""

from . import (  # noqa: F401
    activations,
    autocompress,
    canonicalize,
    cleanup,
    compress,
    fold_conv,
    fuse,
    storage,
)
