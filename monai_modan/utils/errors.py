"""One-line errors for bundle runs.

MONAI evaluates every ``$`` expression of a bundle config inside ``ConfigExpression.evaluate``, which re-raises any
error as ``RuntimeError("Failed to evaluate ConfigExpression ...")`` chained to the original, so a wrong
``--epochs`` prints ~60 lines of traceback whose last line names the expression, not the problem.
:func:`concise_bundle_errors` (called first in a bundle's ``initialize``) installs an exception hook that prints
the bad-input error in one line instead, when the chain holds one (``ValueError`` and its subclasses,
``FileNotFoundError``, ``PermissionError``...) -- anything else (a bug) keeps its full traceback, and so does
everything when ``MONAI_MODAN_TRACEBACK=1``.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = ["TRACEBACK_ENV", "UserInputError", "concise_bundle_errors", "root_cause", "user_error"]

TRACEBACK_ENV = "MONAI_MODAN_TRACEBACK"
_USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class UserInputError(ValueError):
    """A setting or input the user gave is wrong; the message names the key / file, the value and the cause."""


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and its ``__cause__`` / ``__context__`` chain, outermost first."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of ``error``'s ``__cause__`` / ``__context__`` chain."""
    return _chain(error)[-1]


def user_error(error: BaseException) -> BaseException | None:
    """The outermost bad-input error of the chain, past MONAI's ``RuntimeError("Failed to evaluate/instantiate
    ...")`` wrappers: our own messages (which name the file or key) rather than a library's inner one (pydicom's,
    which may not); ``None`` when the chain holds none (a bug: it keeps its traceback)."""
    return next((e for e in _chain(error) if isinstance(e, _USER_ERRORS)), None)


def concise_bundle_errors() -> bool:
    """Install the one-line exception hook (once; idempotent). Returns True, so a config can write
    ``"$monai_modan.utils.errors.concise_bundle_errors()"`` as an ``initialize`` expression."""
    if getattr(sys.excepthook, "_monai_modan", False):
        return True
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        found = user_error(error)
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or found is None:
            previous(kind, error, tb)
            return
        message = " ".join(str(found).split()) or type(found).__name__
        print(f"error: {message}  (set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)

    hook._monai_modan = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
