"""Progress of long work (conformance runs, compression searches) on a terminal."""

import sys


def stderr_progress(done, total, what):
    """Rewrite one status line on stderr; silent when stderr is not a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{what} {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
