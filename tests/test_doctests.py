"""Every docstring example of the package runs, as a doctest.

One test per module that has examples (found by walking the package), so a
new module's examples are run without being listed here.
"""

import doctest
import importlib
import pkgutil

import keras
import numpy as np
import pytest

import keras_feedback


def _modules_with_examples():
    names = []
    for info in pkgutil.walk_packages(keras_feedback.__path__, "keras_feedback."):
        module = importlib.import_module(info.name)
        tests = doctest.DocTestFinder().find(module)
        if any(test.examples for test in tests):
            names.append(info.name)
    return names


MODULES = _modules_with_examples()


def test_the_walk_finds_the_documented_modules():
    assert {
        "keras_feedback.layers._feedback",
        "keras_feedback.layers._recurrent",
        "keras_feedback.layers._conv_feedback",
        "keras_feedback.export._litert",
    } <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    globs = {"keras": keras, "keras_feedback": keras_feedback, "np": np}
    runner = doctest.DocTestRunner(
        optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    )
    examples = 0
    for test in doctest.DocTestFinder().find(module, globs=dict(globs)):
        examples += len(test.examples)
        runner.run(test)
    assert examples > 0
    assert runner.summarize(verbose=False).failed == 0
