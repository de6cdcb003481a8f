"""Errors hetc reports to users.

Every error a user can cause is a HetcError: it carries a message that names
the problem and where it is, and the exit code the CLI uses. Anything else
escaping to the CLI is a bug in hetc.
"""


class HetcError(Exception):
    """A problem with the model, the IR or the environment (exit code 1)."""

    exit_code = 1


class UsageError(HetcError):
    """The command or API was called wrongly (exit code 2)."""

    exit_code = 2


class IRError(HetcError):
    """The IR is malformed: a parse error or a verifier finding."""


class ParseError(IRError):
    def __init__(self, message, file="<string>", line=None, column=None):
        self.file, self.line, self.column = file, line, column
        where = file if line is None else f"{file}:{line}:{column}"
        super().__init__(f"{where}: {message}")


class VerifyError(IRError):
    pass


class FrontendError(HetcError):
    """The input model uses something the importer cannot translate."""


class TargetError(HetcError):
    """The target cannot compile or run this here (and says why)."""


def printable(text) -> str:
    """`text` with control characters (terminal escapes among them) shown as
    escapes: names from a model file reach messages and tables this way."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)
