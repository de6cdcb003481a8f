"""A small FileCheck: check that text contains expected lines, in order.

Directives (in a check text, one per line, after an optional comment marker):
  CHECK: pat        pat occurs at or after the previous match
  CHECK-NEXT: pat   pat occurs on the line right after the previous match
  CHECK-LABEL: pat  like CHECK; CHECK-NOT regions do not cross a label
  CHECK-NOT: pat    pat does not occur between the surrounding matches
Patterns are literal text, except `{{regex}}` pieces; runs of blanks match
any run of blanks.
"""

import re

_DIRECTIVE = re.compile(r"^\s*(?://|#)?\s*(CHECK(?:-NEXT|-LABEL|-NOT)?):\s?(.*)$")


class FileCheckError(AssertionError):
    pass


def _regex(pattern: str):
    parts = re.split(r"(\{\{.*?\}\})", pattern.strip())
    out = []
    for p in parts:
        if p.startswith("{{") and p.endswith("}}"):
            out.append("(?:" + p[2:-2] + ")")
        else:
            out.append(r"[ \t]+".join(re.escape(w) for w in re.split(r"[ \t]+", p)))
    return re.compile("".join(out))


def directives(check_text: str):
    """[(kind, pattern, line number in the check text)]."""
    found = []
    for n, line in enumerate(check_text.splitlines(), 1):
        m = _DIRECTIVE.match(line)
        if m:
            found.append((m.group(1), m.group(2), n))
    return found


def filecheck(output: str, check_text: str):
    """Raise FileCheckError if `output` does not satisfy the directives."""
    checks = directives(check_text)
    if not checks:
        raise FileCheckError("no CHECK directives found")
    pos = 0
    prev_line_end = None  # end of the line of the previous match (for CHECK-NEXT)
    nots = []
    for kind, pat, n in checks:
        rx = _regex(pat)
        if kind == "CHECK-NOT":
            nots.append((rx, pat, n))
            continue
        m = rx.search(output, pos)
        if m is None:
            raise _fail(output, pos, f"check line {n}: {kind}: {pat!r} not found")
        if kind == "CHECK-NEXT":
            if prev_line_end is None:
                raise FileCheckError(f"check line {n}: CHECK-NEXT without a previous match")
            next_end = output.find("\n", prev_line_end + 1)
            next_end = len(output) if next_end < 0 else next_end
            if not (prev_line_end < m.start() <= next_end):
                raise _fail(output, prev_line_end + 1,
                            f"check line {n}: CHECK-NEXT: {pat!r} is not on the next line")
        region = output[pos:m.start()]
        for nrx, npat, nn in nots:
            bad = nrx.search(region)
            if bad:
                raise _fail(output, pos + bad.start(), f"check line {nn}: CHECK-NOT: {npat!r} found")
        nots = []
        pos = m.end()
        end = output.find("\n", m.end())
        prev_line_end = len(output) if end < 0 else end
    for nrx, npat, nn in nots:
        bad = nrx.search(output, pos)
        if bad:
            raise _fail(output, bad.start(), f"check line {nn}: CHECK-NOT: {npat!r} found")


def _fail(output, pos, message):
    line = output.count("\n", 0, pos) + 1
    lines = output.splitlines()
    context = "\n".join(f"{i + 1:4d}| {lines[i]}" for i in range(max(0, line - 2),
                                                                 min(len(lines), line + 3)))
    return FileCheckError(f"{message}\n  (searching from output line {line}):\n{context}")
