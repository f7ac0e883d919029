"""The bundle error hook: one line for a bad-input error, the full traceback for anything else."""

from __future__ import annotations

import sys

import pytest

from monai_modan.utils import errors
from monai_modan.utils.errors import UserInputError, concise_bundle_errors, user_error


def _wrapped(inner: BaseException) -> RuntimeError:
    """What MONAI's ConfigExpression.evaluate raises: RuntimeError from the original."""
    try:
        try:
            raise inner
        except BaseException as e:
            raise RuntimeError("Failed to evaluate ConfigExpression: $x") from e
    except RuntimeError as outer:
        return outer


def test_our_message_is_chosen_over_a_library_inner_one():
    library = KeyError("(0028,0008)")
    ours = ValueError("scan.dcm: invalid NumberOfFrames 'ab'")
    ours.__cause__ = library
    assert user_error(_wrapped(ours)) is ours
    assert user_error(_wrapped(TypeError("bug"))) is None


@pytest.fixture
def hook(monkeypatch):
    calls = []
    monkeypatch.setattr(sys, "excepthook", lambda *args: calls.append(args))
    monkeypatch.delenv(errors.TRACEBACK_ENV, raising=False)
    assert concise_bundle_errors() and concise_bundle_errors()  # idempotent
    return calls


def test_hook_prints_one_line_for_bad_input(hook, capsys):
    error = _wrapped(UserInputError("epochs='abc' (training epochs): must be an integer >= 1"))
    sys.excepthook(type(error), error, error.__traceback__)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: epochs='abc'") and not hook


def test_hook_keeps_the_traceback_of_a_bug_or_when_asked(hook, capsys, monkeypatch):
    bug = _wrapped(ZeroDivisionError("division by zero"))
    sys.excepthook(type(bug), bug, bug.__traceback__)
    assert len(hook) == 1 and hook[0][1] is bug and not capsys.readouterr().err
    monkeypatch.setenv(errors.TRACEBACK_ENV, "1")
    bad = _wrapped(ValueError("x"))
    sys.excepthook(type(bad), bad, bad.__traceback__)
    assert len(hook) == 2
