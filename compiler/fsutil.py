"""Atomic file and folder writes (nothing half-written is ever left behind)
and hetc's cache folder."""

import os
import shutil
import tempfile
from contextlib import contextmanager


@contextmanager
def atomic_open(path, mode="w"):
    """Open a temporary file beside `path`; it becomes `path` only if the
    block finishes without an exception."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    with atomic_open(path, "w") as f:
        f.write(text)


@contextmanager
def atomic_dir(path):
    """Yield a temporary folder beside `path`; it replaces `path` on success
    and is removed on failure."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(path) + "-")
    try:
        yield tmp
        if os.path.isdir(path):
            old = path + ".old-" + os.path.basename(tmp)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_root() -> str:
    """Where hetc caches generated test data and built libraries ($HETC_CACHE)."""
    return os.environ.get("HETC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hetc")
