"""Every public class spells out its arguments: what static tools read
(griffe, as the docs build reads the sources, IDEs, type checkers) equals
what Python sees (``inspect.signature``), names, types and defaults."""

import ast
import importlib
import inspect
import os

import griffe
import keras
import pytest

from keras_feedback import _api

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(_api.__file__)))


def _own_constructor(symbol):
    """Whether ``symbol``'s ``__init__`` is written in keras_feedback's
    sources (not inherited from Keras or TFDS, nor generated)."""
    owner = next(c for c in symbol.__mro__ if "__init__" in vars(c))
    try:
        source = inspect.getsourcefile(owner.__init__) or ""
    except TypeError:
        return False
    return source.startswith(os.path.join(ROOT, "keras_feedback"))


CLASSES = sorted(
    path
    for path, symbol in _api.PUBLIC_SYMBOLS.items()
    if isinstance(symbol, type) and _own_constructor(symbol)
)
# The constructors that route a cell's arguments: nothing may hide in **kwargs.
SPELLED_OUT = (
    "keras_feedback.layers.Feedback",
    "keras_feedback.layers.FeedbackCell",
    "keras_feedback.layers.ConvFeedback2D",
    "keras_feedback.layers.FeedbackLoop",
    "keras_feedback.layers.Equilibrium",
)


@pytest.fixture(scope="module")
def package():
    return griffe.load("keras_feedback", search_paths=[ROOT], resolve_aliases=False)


def _static_init(package, symbol):
    """The griffe (static) parameters of ``symbol.__init__``, from the class
    that defines it."""
    owner = next(c for c in symbol.__mro__ if "__init__" in vars(c))
    module = package[owner.__module__.removeprefix("keras_feedback.")]
    return owner, module[owner.__name__].members["__init__"].parameters


def _value(text, namespace):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return eval(text, namespace)  # a name such as a module constant


@pytest.mark.parametrize("path", CLASSES)
def test_static_signature_equals_the_runtime_one(package, path):
    symbol = _api.PUBLIC_SYMBOLS[path]
    owner, static = _static_init(package, symbol)
    runtime = inspect.signature(owner.__init__).parameters
    assert [p.name for p in static] == list(runtime), path
    namespace = vars(importlib.import_module(owner.__module__))
    for parameter in static:
        expected = runtime[parameter.name]
        if parameter.name == "self":
            continue
        variadic = expected.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if parameter.annotation is not None:
            assert eval(str(parameter.annotation), namespace) == expected.annotation, (
                path,
                parameter.name,
            )
        else:
            assert expected.annotation is inspect.Parameter.empty, (path, parameter)
        if variadic:
            continue
        if parameter.default is None:
            assert expected.default is inspect.Parameter.empty, (path, parameter)
        else:
            assert _value(str(parameter.default), namespace) == expected.default, (
                path,
                parameter.name,
            )


@pytest.mark.parametrize("path", SPELLED_OUT)
def test_every_argument_is_named_and_typed(path):
    symbol = _api.PUBLIC_SYMBOLS[path]
    parameters = inspect.signature(symbol.__init__).parameters
    assert "__signature__" not in vars(symbol.__init__), path
    named = [p for p in parameters.values() if p.name != "self"]
    assert [p.kind for p in named][-1] is inspect.Parameter.VAR_KEYWORD
    for parameter in named[:-1]:
        assert parameter.annotation is not inspect.Parameter.empty, (path, parameter)
    # Every key of the layer's own config is an argument of its own, so a
    # saved config round-trips through the spelled-out constructor.
    base = set(keras.layers.Layer().get_config())
    examples = {
        "keras_feedback.layers.Feedback": lambda cls: cls(4),
        "keras_feedback.layers.FeedbackCell": lambda cls: cls(4),
        "keras_feedback.layers.ConvFeedback2D": lambda cls: cls(2, 3),
        "keras_feedback.layers.FeedbackLoop": lambda cls: cls(keras.layers.Dense(2), 2),
        "keras_feedback.layers.Equilibrium": lambda cls: cls(keras.layers.Dense(2)),
    }
    config = examples[path](symbol).get_config()
    missing = sorted(set(config) - base - set(parameters))
    assert not missing, (path, missing)
