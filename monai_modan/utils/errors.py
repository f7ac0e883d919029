"""One-line errors for bundle runs.

MONAI evaluates every ``$`` expression of a bundle config inside ``ConfigExpression.evaluate``, which re-raises any
error as ``RuntimeError("Failed to evaluate ConfigExpression ...")`` chained to the original, so a wrong
``--epochs`` prints ~60 lines of traceback whose last line names the expression, not the problem.
:func:`concise_bundle_errors` (called first in a bundle's ``initialize``) installs an exception hook that prints
the root cause in one line instead, when the root cause is a bad-input error (``ValueError`` and its subclasses,
``FileNotFoundError``, ``PermissionError``...) -- anything else (a bug) keeps its full traceback, and so does
everything when ``MONAI_MODAN_TRACEBACK=1``.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = ["TRACEBACK_ENV", "UserInputError", "concise_bundle_errors", "root_cause"]

TRACEBACK_ENV = "MONAI_MODAN_TRACEBACK"
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class UserInputError(ValueError):
    """A setting or input the user gave is wrong; the message names the key / file, the value and the cause."""


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of ``error``'s ``__cause__`` / ``__context__`` chain."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        nxt = error.__cause__ or error.__context__
        if nxt is None:
            break
        error = nxt
    return error


def concise_bundle_errors() -> bool:
    """Install the one-line exception hook (once; idempotent). Returns True, so a config can write
    ``"$monai_modan.utils.errors.concise_bundle_errors()"`` as an ``initialize`` expression."""
    if getattr(sys.excepthook, "_monai_modan", False):
        return True
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        root = root_cause(error)
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or not isinstance(root, _USER_ERRORS):
            previous(kind, error, tb)
            return
        message = " ".join(str(root).split()) or type(root).__name__
        print(f"error: {message}  (set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)

    hook._monai_modan = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
