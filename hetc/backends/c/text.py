"""The one way text from a model reaches generated C-family source.

Names in a model (graph, value, weight and op names) come from whoever wrote
the model file, so they may hold anything: `*/`, quotes, backslashes,
newlines, NUL, `#`, unicode, megabytes. Generated code never pastes them raw:
a comment gets a cleaned and shortened copy, a string literal escapes every
byte, an identifier is mangled to C's alphabet, a number is written from a
Python int or float. Code generators import these functions and nothing else
for the purpose.
"""

from __future__ import annotations

import hashlib
import math
import string

# Characters a comment may show as they are: no '*' or '/' (no way to end or
# nest a comment), no '\\' (line splices), no '?' (trigraphs), no controls.
_COMMENT_SAFE = frozenset(string.ascii_letters + string.digits + " _.,:;=+-%@<>()[]{}#!&|^~'\"$")
COMMENT_LIMIT = 96
# Characters a string literal keeps as they are (octal escapes, which never
# run on into a following digit as hex escapes do, for all others).
_STRING_SAFE = frozenset(string.ascii_letters + string.digits + " _.,:;=+-@<>()[]{}#!&|^~'$")


def comment(text, limit: int = COMMENT_LIMIT) -> str:
    """`text` as a whole C comment, `/* ... */`: characters outside a safe
    set become '_', and text beyond `limit` characters is cut (marked '...')."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit] + "..."
    return "/* " + "".join(c if c in _COMMENT_SAFE else "_" for c in text) + " */"


def string_literal(text) -> str:
    """`text` (UTF-8) as a C string literal; every byte other than letters,
    digits and a few plain marks is an octal escape."""
    out = []
    for b in str(text).encode("utf-8", "surrogatepass"):
        ch = chr(b)
        out.append(ch if ch in _STRING_SAFE else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def identifier(text, prefix: str = "hetc_") -> str:
    """A C identifier standing for `text`: `prefix` + its letters, digits and
    '_' (others become '_', cut at 48), plus a hash of the full text when
    anything was changed, so distinct names stay distinct."""
    text = str(text)
    clean = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in text)[:48]
    if clean != text:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        clean = f"{clean}_{digest}"
    return prefix + clean


def float_literal(x) -> str:
    """An f32 literal that reads back to the same value (INFINITY, NAN included)."""
    x = float(x)
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "-INFINITY"
    return repr(x) + "f"
