"""tests/conftest.py's rule that a test which trains a model is marked ``slow``, run on an inner test
file with the real conftest (pytester, in a subprocess so the outer run's modules stay untouched).

The guard makes building a :class:`asrbench.training.trainer.Trainer` fail in a test not marked slow, during
its setup too (a module- or session-scoped fixture that trains counts for the first test using it),
and patches nothing at import: a slow test sees the class's own ``__init__``. Tests that train in a
subprocess (``python -m asrbench train``) are outside any in-process guard.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")
GUARD = "this test trains a model: mark it @pytest.mark.slow"

INNER = """
import pytest

import asrbench.training.trainer

AT_IMPORT = asrbench.training.trainer.Trainer.__init__  # after the conftest was imported, at collection


def build():
    asrbench.training.trainer.Trainer(None, None, None, None, "cpu")


def test_fast_builds_a_trainer():
    build()


@pytest.fixture(scope="module")
def trained():
    build()


def test_fast_uses_a_fixture_that_trains(trained):
    pass


@pytest.mark.slow
def test_slow_sees_the_class_itself():
    assert AT_IMPORT.__module__ == "asrbench.training.trainer" and AT_IMPORT.__qualname__ == "Trainer.__init__"
    assert asrbench.training.trainer.Trainer.__init__ is AT_IMPORT
    with pytest.raises(AttributeError):  # the real __init__ runs (and fails on config=None)
        build()


def test_fast_again_after_a_slow_one():
    build()
"""


def test_a_fast_test_that_trains_fails_with_the_guards_message(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makeini("[pytest]\nmarkers =\n    slow: trains\n    e2e: real corpus\n")
    pytester.makepyfile(test_inner=INNER)
    monkeypatch.setenv("COLUMNS", "400")  # the short summary keeps the whole message
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-rA")
    result.assert_outcomes(passed=1, failed=2, errors=1)
    for line in (
        f"FAILED test_inner.py::test_fast_builds_a_trainer - AssertionError: {GUARD}*",
        f"ERROR test_inner.py::test_fast_uses_a_fixture_that_trains - AssertionError: {GUARD}*",
        "PASSED test_inner.py::test_slow_sees_the_class_itself",
        f"FAILED test_inner.py::test_fast_again_after_a_slow_one - AssertionError: {GUARD}*",
    ):
        result.stdout.fnmatch_lines([line])
