"""File and folder writes that never leave anything half-written, and never
touch what they were not asked to: hetc's one way to write files.

Files and folders get the permissions the user's umask gives new files
(temporary files start owner-only; they are opened up before they take
their final name). A folder is replaced in one atomic step where Linux
offers it (renameat2 RENAME_EXCHANGE), so a reader never finds it missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager

from hetc.core.errors import HetcError


def umask() -> int:
    """The process's umask, read without changing it where Linux tells it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)  # elsewhere: the classic read-by-setting (briefly process-wide)
    os.umask(old)
    return old


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
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_text(path, text):
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path, data):
    with atomic_open(path, "wb") as f:
        f.write(data)


@contextmanager
def atomic_dir(path, replaceable=None):
    """Yield a temporary folder beside `path`; it replaces `path` on success
    and is removed on failure. An existing `path` is replaced only when it
    is empty or `replaceable(path)` says it may be (say, it holds what an
    earlier save wrote); otherwise HetcError, before anything is written."""
    path = os.path.abspath(path)
    if os.path.lexists(path):
        if not os.path.isdir(path) or os.path.islink(path):
            raise HetcError(f"{path} exists and is not a folder; not replacing it")
        if os.listdir(path) and not (replaceable and replaceable(path)):
            raise HetcError(f"{path} is a folder with other files in it; hetc replaces only "
                            f"folders it wrote itself: choose a new or empty folder")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-" + os.path.basename(path)[:64] + "-")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp made it owner-only; its files came by atomic_open
        if os.path.isdir(path):
            if _exchange(tmp, path):  # tmp now holds the old folder
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                old = tmp + ".old"
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a, b) -> bool:
    """Swap the folders at paths a and b in one step (Linux renameat2);
    False where the OS or file system cannot."""
    libc = _libc()
    fn = getattr(libc, "renameat2", None) if libc is not None else None
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0


@functools.lru_cache(maxsize=1)
def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def check_file_name(name, what="file name") -> str:
    """`name` if it is a plain file name (no folder part, no '..', no control
    characters); else HetcError. Names from saved folders go through this
    before they become paths."""
    if not isinstance(name, str) or not name or name in (".", "..") or len(name) > 255 \
            or any(c in name for c in "/\\") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise HetcError(f"{what} {str(name)[:80]!r} is not a plain file name inside the folder")
    return name


def read_file(path, limit=None) -> bytes:
    """The bytes of the regular file at `path`, not following a symlink at
    its last component (a saved folder's symlink to /dev/zero or a FIFO must
    not hang a reader); None when it holds more than `limit` bytes. OSError
    as open() raises it; HetcError for a symlink or another kind of file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HetcError(f"{path}: a symbolic link, not a file") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HetcError(f"{path}: not a regular file")
        if limit is not None and st.st_size > limit:
            return None
        return f.read()


def cache_root() -> str:
    """Where hetc caches generated test data and built libraries ($HETC_CACHE)."""
    return os.environ.get("HETC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hetc")
